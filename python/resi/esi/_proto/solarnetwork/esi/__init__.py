"""Generated: mirrors the proto package solarnetwork.esi."""
