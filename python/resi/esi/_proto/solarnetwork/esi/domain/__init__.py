"""Generated: messages and enums of solarnetwork.esi.domain."""
