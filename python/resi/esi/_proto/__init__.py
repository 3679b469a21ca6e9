"""Generated protobuf modules of the SolarNetwork ESI dialect (see tools/gen_esi_python.py)."""
