"""The exceptions of resi, and :class:`StatusCode`.

Defined here, in Python, so that they are ordinary classes with real
constructors and attributes; the Rust core (``resi._resi``) imports this
module and raises these classes. Everything is re-exported from ``resi``::

    ResiError
    ├── ConfigError         a configuration was rejected (.origin, .key)
    ├── CallError           a call failed (.code, .details, .trailers)
    ├── SessionError        a redundant session could not be set up
    │   └── NotEndGatewayError   the peer is not a resi end gateway
    └── BindError           a listen address could not be bound (also an OSError)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Optional, Union

__all__ = [
    "BindError",
    "CallError",
    "ConfigError",
    "NotEndGatewayError",
    "ResiError",
    "SessionError",
    "StatusCode",
]


class StatusCode(enum.IntEnum):
    """gRPC status codes (the numbers are fixed by the gRPC specification)."""

    __module__ = "resi"
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ResiError(Exception):
    """Base class of every error resi raises."""

    __module__ = "resi"


class ConfigError(ResiError):
    """A configuration was rejected.

    The message names where it came from (file name, ``<dict>``,
    ``<keyword arguments>``), the key as ``[Section] Key`` and the problem,
    exactly as for a file. ``origin`` is that origin, ``key`` the key
    (None when the error is about the configuration as a whole, e.g. a
    file that cannot be read or is not valid TOML).
    """

    __module__ = "resi"

    def __init__(self, message: str, origin: str = "", key: Optional[str] = None) -> None:
        super().__init__(message)
        self.origin = origin
        self.key = key


class SessionError(ResiError):
    """A redundant session could not be set up (no path could join), or
    the gateway or client it belongs to is not running."""

    __module__ = "resi"


class NotEndGatewayError(SessionError):
    """``Client.connect_redundant`` reached a peer that is not a resi end
    gateway (it does not answer RESI's ``Modify``: a plain gRPC or ESI
    server), so there would be no redundancy. ``address`` is the peer.
    Pass ``allow_plain=True`` to use such a peer over plain gRPC."""

    __module__ = "resi"

    def __init__(self, message: str, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class BindError(ResiError, OSError):
    """A listen address could not be bound. An :class:`OSError` too:
    ``errno`` is the system's error number (e.g. ``errno.EADDRINUSE``),
    ``address`` the address as configured."""

    __module__ = "resi"

    def __init__(self, errno: Optional[int], message: str, address: str = "") -> None:
        OSError.__init__(self, errno, message)
        self.address = address

    def __str__(self) -> str:
        return str(self.strerror)


Trailer = tuple[str, Union[str, bytes]]


class CallError(ResiError):
    """A call failed with a gRPC status.

    ``code`` is a :class:`StatusCode`, ``details`` the status message and
    ``trailers`` the trailing metadata as ``(key, value)`` pairs (``bytes``
    values for ``-bin`` keys, ``str`` otherwise). Raise it in an extension
    handler to answer the caller with that status.
    """

    __module__ = "resi"

    def __init__(self, code: int, details: str = "", trailers: Iterable[Trailer] = ()) -> None:
        code = StatusCode(code)
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.trailers = list(trailers)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    def __repr__(self) -> str:
        return f"CallError({self.code!r}, {self.details!r})"
