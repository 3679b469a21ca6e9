"""The grpcio service modules generated with :mod:`resi.esi`'s messages."""

from ..esi._proto.solarnetwork.esi.service import der_facility_exchange_pb2_grpc as exchange_grpc
from ..esi._proto.solarnetwork.esi.service import der_facility_exchange_registry_pb2_grpc as registry_grpc
from ..esi._proto.solarnetwork.esi.service import der_facility_service_pb2_grpc as facility_grpc

__all__ = ["exchange_grpc", "facility_grpc", "registry_grpc"]
