"""EC key pairs for the simulator (P-256, as the reference servers use).

The public key goes on the wire as ``CryptoKey{algorithm: "EC", encoding:
"X.509", key: SubjectPublicKeyInfo DER}``. The keys come from the
``cryptography`` package (a dependency of resi), imported only when
a key is made or checked, so ``import resi.sim`` works without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument

ALGORITHM = "EC"
ENCODING = "X.509"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError('resi.sim needs the "cryptography" package for its EC keys (a dependency of resi: reinstall resi)') from e
    return ec, serialization


@dataclass(frozen=True)
class KeyPair:
    """A P-256 key pair; :attr:`public_der` is the X.509 SubjectPublicKeyInfo."""

    private_key: Any
    public_der: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        ec, serialization = _crypto()
        key = ec.generate_private_key(ec.SECP256R1())
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(private_key=key, public_der=der)


def check_public_key(key: Any, field: str) -> None:
    """Checks a ``CryptoKey`` as the reference exchange does (value present,
    algorithm ``EC``, encoding ``X.509``) and that the bytes are an EC
    public key in SubjectPublicKeyInfo DER."""
    if not key.key:
        raise InvalidArgument(f"{field}.key: missing")
    if key.algorithm != ALGORITHM:
        raise InvalidArgument(f"{field}.algorithm: not supported (must be 'EC'), got {key.algorithm!r}")
    if key.encoding != ENCODING:
        raise InvalidArgument(f"{field}.encoding: not supported (must be 'X.509'), got {key.encoding!r}")
    ec, serialization = _crypto()
    try:
        public = serialization.load_der_public_key(bytes(key.key))
    except ValueError:
        raise InvalidArgument(f"{field}.key: not an X.509 SubjectPublicKeyInfo (DER)") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise InvalidArgument(f"{field}.key: not an EC public key")
