"""Generated protobuf modules of proto/esi.proto and proto/resi.proto, for
the conformance suite (committed so that the wheel needs no protoc):

    python -m grpc_tools.protoc -Iproto --python_out=python/resi/conformance/_proto proto/esi.proto proto/resi.proto
"""
