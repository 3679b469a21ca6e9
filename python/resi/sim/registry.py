"""A simulated exchange registry: serves ``DerFacilityExchangeRegistry``,
a fixed list of exchanges streamed whatever the request asks (as the
reference registry does)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Union

import grpc

from .. import esi
from . import _wire
from ._grpc import registry_grpc
from ._server import Role, rpc
from .errors import InvalidArgument
from .exchange import Exchange

#: An entry of a registry: a simulated exchange (listed with its address at
#: the time of the call), a ``DerFacilityExchangeInfo``, or ``(name, uid,
#: endpoint_uri)`` as in the reference registry's CSV file.
ExchangeEntry = Union[Exchange, Any, tuple[str, str, str]]


def parse_entry(text: str) -> tuple[str, str, str]:
    """``"name,uid,uri"`` as a registry entry (the reference CSV row)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"exchange entry: expected NAME,UID,URI, got {text!r}")
    return parts[0], parts[1], parts[2]


class Registry(Role, registry_grpc.DerFacilityExchangeRegistryServicer):
    """A simulated registry listing ``exchanges`` (see :data:`ExchangeEntry`)."""

    service = "solarnetwork.esi.service.DerFacilityExchangeRegistry"

    def __init__(self, *, listen: str = "127.0.0.1:0", exchanges: Iterable[ExchangeEntry] = ()) -> None:
        super().__init__(listen)
        #: The listed exchanges, in order (add more at any time).
        self.exchanges: list[ExchangeEntry] = list(exchanges)
        #: Every ``DerFacilityExchangeRequest`` received, in order.
        self.requests: list[esi.DerFacilityExchangeRequest] = []

    def _register(self, server: grpc.aio.Server) -> None:
        registry_grpc.add_DerFacilityExchangeRegistryServicer_to_server(self, server)

    def listing(self) -> list[esi.DerFacilityExchangeInfo]:
        """The list as ``ListDerFacilityExchanges`` streams it now."""
        out = []
        for entry in self.exchanges:
            if isinstance(entry, Exchange):
                out.append(entry.info())
            elif isinstance(entry, tuple):
                name, uid, uri = entry
                out.append(esi.DerFacilityExchangeInfo(name=name, uid=uid, endpoint_uri=uri))
            else:
                out.append(entry)
        return out

    @rpc
    async def ListDerFacilityExchanges(self, request: Any, context: Any) -> Any:
        for i, t in enumerate(request.program_types):
            _wire.check_enum(esi.DerProgramType, t, f"program_types[{i}]")
        loc = request.location
        if loc.HasField("latlng") and not (-90 <= loc.latlng.latitude <= 90 and -180 <= loc.latlng.longitude <= 180):
            raise InvalidArgument(f"location.latlng: ({loc.latlng.latitude:g}, {loc.latlng.longitude:g}) is not a WGS84 coordinate")
        self.requests.append(request)
        for info in self.listing():
            yield info


__all__ = ["ExchangeEntry", "Registry", "parse_entry"]
