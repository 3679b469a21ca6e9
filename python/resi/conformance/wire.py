"""RESI on the wire, written from docs/protocol.md alone: the TCP path
preface, path frames (§5.2) with their CRC-32C, and the protobuf messages of
the handshake (§3, §5.3) and CONTROL (§5.6).

This is deliberately a second implementation, independent of the Rust core,
so that the conformance suite checks the specification rather than resi's
own reading of it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

import google_crc32c

from ._proto import esi_pb2, resi_pb2

#: TCP path preface: "RESI\r\n" then frame format version 2 (§5.1).
PREFACE = b"RESI\r\n\x00\x02"
HEADER_LEN = 12
MAX_DATA_PAYLOAD = 64 * 1024

DATA, ACK, PING, PONG, HELLO, HELLO_REPLY, CONTROL = 1, 2, 3, 4, 5, 6, 7
FLAG_FIN = 0x01
FLAG_IGNORABLE = 0x80
#: Bodies of a fixed size, by type (§5.2).
FIXED_LEN = {ACK: 16, PING: 8, PONG: 8}

REDUNDANCY = 1
HOP_INFO = 2
STRICT, PERMISSIVE, UNSPECIFIED = resi_pb2.STRICT, resi_pb2.PERMISSIVE, resi_pb2.MODE_UNSPECIFIED
MODE_NAMES = {UNSPECIFIED: "MODE_UNSPECIFIED", STRICT: "STRICT", PERMISSIVE: "PERMISSIVE"}

# gRPC status codes used by the protocol.
OK, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED = 0, 3, 5, 7
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, UNIMPLEMENTED = 8, 9, 10, 12
DATA_LOSS, UNAUTHENTICATED = 15, 16


class WireError(Exception):
    """Bytes from the peer that are not what the specification allows."""


@dataclass
class Frame:
    kind: int
    flags: int
    body: bytes

    @property
    def offset(self) -> int:
        return struct.unpack_from(">Q", self.body)[0]

    @property
    def payload(self) -> bytes:
        return self.body[8:]

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)

    def u64s(self) -> tuple[int, ...]:
        return struct.unpack(">" + "Q" * (len(self.body) // 8), self.body)


def encode(kind: int, body: bytes, flags: int = 0, *, reserved: int = 0, length: Optional[int] = None, bad_crc: bool = False) -> bytes:
    """One frame; the keyword arguments make deliberately broken ones."""
    head = struct.pack(">BBHI", kind, flags, reserved, len(body) if length is None else length)
    crc = google_crc32c.value(head + body)
    if bad_crc:
        crc ^= 0x1
    return head + struct.pack(">I", crc) + body


def data(offset: int, payload: bytes, fin: bool = False) -> bytes:
    return encode(DATA, struct.pack(">Q", offset) + payload, FLAG_FIN if fin else 0)


def ack(path_received: int, delivered: int) -> bytes:
    return encode(ACK, struct.pack(">QQ", path_received, delivered))


def ping(token: int) -> bytes:
    return encode(PING, struct.pack(">Q", token))


def pong(token: int) -> bytes:
    return encode(PONG, struct.pack(">Q", token))


class Decoder:
    """Splits a byte stream into frames, checking each CRC-32C."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, chunk: bytes) -> list[Frame]:
        self.buf += chunk
        out = []
        while len(self.buf) >= HEADER_LEN:
            kind, flags, _reserved, length, crc = struct.unpack_from(">BBHII", self.buf)
            if length > 64 * 1024 * 1024 + 64 * 1024:
                raise WireError(f"frame type {kind} announces {length} bytes")
            if len(self.buf) < HEADER_LEN + length:
                break
            body = bytes(self.buf[HEADER_LEN : HEADER_LEN + length])
            if google_crc32c.value(bytes(self.buf[:8]) + body) != crc:
                raise WireError(f"frame type {kind} of {length} bytes fails its CRC-32C")
            del self.buf[: HEADER_LEN + length]
            if kind in FIXED_LEN and length != FIXED_LEN[kind]:
                raise WireError(f"frame type {kind} has a body of {length} bytes, expected {FIXED_LEN[kind]}")
            out.append(Frame(kind, flags, body))
        return out


# --- handshake messages -------------------------------------------------


def modify(redundancy: resi_pb2.Redundancy, ext_id: int = REDUNDANCY) -> bytes:
    """An encoded ``esi.ModifyRequest`` carrying a redundancy message."""
    req = esi_pb2.ModifyRequest(ext=esi_pb2.Extension(id=ext_id, data=redundancy.SerializeToString()))
    return req.SerializeToString()


def open_request(mode: int, cookies: int, version: int = 1, dialler: str = "", instance: bytes = b"") -> bytes:
    req = resi_pb2.OpenRequest(version=version, mode=mode, cookies=cookies, dialler=dialler, instance=instance)
    return modify(resi_pb2.Redundancy(open=req))


def merge_request(cookie: bytes, path_id: int) -> bytes:
    return modify(resi_pb2.Redundancy(merge=resi_pb2.MergeRequest(cookie=cookie, path_id=path_id)))


@dataclass
class Reply:
    """A HELLO_REPLY or a Modify answer: a redundancy message or a status."""

    redundancy: Optional[resi_pb2.Redundancy] = None
    code: int = OK
    message: str = ""
    #: A refusal after which the acceptor kept the connection open.
    stayed_open: bool = False

    def __str__(self) -> str:
        if self.redundancy is not None:
            return f"OK {self.redundancy.WhichOneof('msg')}"
        return f"{self.code} {self.message!r}" + (" (and the connection stayed open)" if self.stayed_open else "")


def modify_answer(body: bytes) -> Reply:
    rsp = esi_pb2.ModifyResponse.FromString(body)
    if rsp.ext.id != REDUNDANCY:
        raise WireError(f"answer carries extension {rsp.ext.id}, expected {REDUNDANCY}")
    return Reply(redundancy=resi_pb2.Redundancy.FromString(rsp.ext.data))


def hello_reply(body: bytes) -> Reply:
    reply = resi_pb2.HelloReply.FromString(body)
    which = reply.WhichOneof("result")
    if which == "response":
        return modify_answer(reply.response)
    if which == "error":
        return Reply(code=reply.error.code, message=reply.error.message)
    raise WireError("HELLO_REPLY carries neither response nor error")


def hello_reply_body(redundancy: Optional[resi_pb2.Redundancy] = None, code: int = OK, message: str = "") -> bytes:
    """The body of a HELLO_REPLY we send (acceptor role)."""
    if redundancy is not None:
        rsp = esi_pb2.ModifyResponse(ext=esi_pb2.Extension(id=REDUNDANCY, data=redundancy.SerializeToString()))
        return resi_pb2.HelloReply(response=rsp.SerializeToString()).SerializeToString()
    return resi_pb2.HelloReply(error=resi_pb2.Status(code=code, message=message)).SerializeToString()


def close_frame(code: int, message: str = "") -> bytes:
    ctl = resi_pb2.Control(close=resi_pb2.Close(reason=resi_pb2.Status(code=code, message=message)))
    return encode(CONTROL, ctl.SerializeToString())


def control(body: bytes) -> Optional[resi_pb2.Control]:
    try:
        return resi_pb2.Control.FromString(body)
    except Exception:  # an undecodable CONTROL body is ignored (§5.6)
        return None


#: The HTTP/2 client connection preface and an empty SETTINGS frame: the
#: first bytes a dialler's HTTP/2 client puts on a session (§1), harmless
#: to any HTTP/2 server.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def h2_ping(n: int) -> bytes:
    """An HTTP/2 PING frame (the server answers it with a PING ACK)."""
    return b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + struct.pack(">Q", n)
