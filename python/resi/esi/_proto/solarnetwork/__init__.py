"""Generated: mirrors the proto package solarnetwork."""
