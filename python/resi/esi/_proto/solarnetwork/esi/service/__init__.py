"""Generated: services of solarnetwork.esi.service."""
