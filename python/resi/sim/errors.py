"""The simulator's one exception: bad input from a peer.

Every check in :mod:`resi.sim` raises :class:`InvalidArgument` with a
message naming the field and the problem; the gRPC layer turns it into an
``INVALID_ARGUMENT`` status with that message, as the reference servers do.
"""

from __future__ import annotations


class InvalidArgument(ValueError):
    """A request was refused: the message says which field and why."""
