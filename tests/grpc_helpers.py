"""grpcio on raw bytes: a test ESI server, a tiny protobuf encoder for
``Modify``, and checks that exercise all four RPC shapes through a target.

No generated code: the server registers generic handlers without
(de)serializers and the client calls ``channel.unary_unary(path)`` etc., so
requests and responses are plain ``bytes``.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Iterable

import grpc

CALL_TIMEOUT = 15.0
SERVICE = "test.Echo"
BIG = 1 << 20  # a 1 MiB message crosses several HTTP/2 frames and flow-control windows

# The extension id the test server implements (and no gateway does).
SERVER_EXT = 4242

TRAILERS = [("x-trailer", "t-value"), ("x-trailer-bin", b"\x00\x01\xfe\xff")]


# ---------------------------------------------------------------------------
# protobuf, by hand (esi.Extension / ModifyRequest / ModifyResponse)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def encode_extension(ext_id: int, passthrough: bool, data: bytes = b"") -> bytes:
    out = b""
    if ext_id:
        out += b"\x08" + _varint(ext_id)
    if passthrough:
        out += b"\x10\x01"
    if data:
        out += b"\x1a" + _varint(len(data)) + data
    return out


def encode_modify(ext_id: int, passthrough: bool, data: bytes = b"") -> bytes:
    """An ``esi.ModifyRequest`` (same layout as ``ModifyResponse``)."""
    ext = encode_extension(ext_id, passthrough, data)
    return b"\x0a" + _varint(len(ext)) + ext


def decode_modify(buf: bytes) -> tuple[int, bool, bytes]:
    """``(id, pass, data)`` of a ``ModifyRequest``/``ModifyResponse``."""
    ext = b""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 2:
            ln, i = _read_varint(buf, i)
            if field == 1:
                ext = buf[i : i + ln]
            i += ln
        elif wt == 0:
            _, i = _read_varint(buf, i)
        else:
            raise ValueError(f"unexpected wire type {wt}")
    ext_id, passthrough, data = 0, False, b""
    i = 0
    while i < len(ext):
        key, i = _read_varint(ext, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(ext, i)
            if field == 1:
                ext_id = v
            elif field == 2:
                passthrough = bool(v)
        elif wt == 2:
            ln, i = _read_varint(ext, i)
            if field == 3:
                data = ext[i : i + ln]
            i += ln
        else:
            raise ValueError(f"unexpected wire type {wt}")
    return ext_id, passthrough, data


# ---------------------------------------------------------------------------
# The server


def _echo_metadata(context) -> list[tuple[str, object]]:
    return [("echo-" + k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]


def _maybe_fail(context, what: bytes) -> None:
    md = dict(context.invocation_metadata())
    code = md.get("x-fail")
    if code:
        context.set_trailing_metadata(TRAILERS)
        context.abort(grpc.StatusCode[code], f"failed as asked: {what[:20]!r} ü")


class EsiServer:
    """A grpcio server on 127.0.0.1 with echo methods in every shape,
    ``Slow`` (sleeps as many ms as the request says) and ``/esi.Esi/Modify``
    (implements extension ``SERVER_EXT``: answers with the extension it got,
    data prefixed ``server:``)."""

    def __init__(self, max_workers: int = 64):
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
        )
        self.calls = 0
        self.modify_seen: list[tuple[int, bool, bytes]] = []
        self.slow_started = threading.Event()
        self._lock = threading.Lock()
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
        }
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(SERVICE, handlers),
                grpc.method_handlers_generic_handler(
                    "esi.Esi", {"Modify": grpc.unary_unary_rpc_method_handler(self.modify)}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait(timeout=10)

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def unary(self, request: bytes, context) -> bytes:
        self._count()
        context.send_initial_metadata(_echo_metadata(context))
        _maybe_fail(context, request)
        context.set_trailing_metadata(TRAILERS)
        return b"echo:" + request

    def server_stream(self, request: bytes, context):
        self._count()
        context.send_initial_metadata(_echo_metadata(context))
        for i in range(3):
            yield request + b"/%d" % i
        _maybe_fail(context, request)
        context.set_trailing_metadata(TRAILERS)

    def client_stream(self, requests: Iterable[bytes], context) -> bytes:
        self._count()
        context.send_initial_metadata(_echo_metadata(context))
        got = list(requests)
        _maybe_fail(context, b"|".join(got))
        context.set_trailing_metadata(TRAILERS)
        return b"|".join(got)

    def bidi(self, requests: Iterable[bytes], context):
        self._count()
        context.send_initial_metadata(_echo_metadata(context))
        for r in requests:
            yield b"re:" + r
        _maybe_fail(context, b"bidi")
        context.set_trailing_metadata(TRAILERS)

    def slow(self, request: bytes, context) -> bytes:
        self._count()
        self.slow_started.set()
        time.sleep(int(request or b"1000") / 1000.0)
        return b"slow done"

    def modify(self, request: bytes, context) -> bytes:
        """Knows one extension, ``SERVER_EXT``; like any last hop it answers
        every other id with UNIMPLEMENTED naming it (it has no upstream to
        pass the call to)."""
        self._count()
        ext = decode_modify(request)
        with self._lock:
            self.modify_seen.append(ext)
        ext_id, passthrough, data = ext
        if ext_id != SERVER_EXT:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"extension {ext_id} is not supported by this server")
        return encode_modify(ext_id, passthrough, b"server:" + data)


# ---------------------------------------------------------------------------
# Client-side checks


def channel(target: str) -> grpc.Channel:
    # A channel of its own connections: grpcio otherwise shares subchannels
    # between channels to one address, so a channel made after a fault (a
    # killed relay) could inherit the old one's reconnect backoff and fail
    # at once although the target is back.
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


def md_dict(md) -> dict:
    return {k: v for k, v in (md or ())}


REQ_MD = [("x-req", "req-value"), ("x-req-bin", b"\x00\xffbin")]


def _check_md(initial, trailing) -> None:
    i = md_dict(initial)
    assert i.get("echo-x-req") == "req-value", initial
    assert i.get("echo-x-req-bin") == b"\x00\xffbin", initial
    t = md_dict(trailing)
    assert t.get("x-trailer") == "t-value", trailing
    assert t.get("x-trailer-bin") == b"\x00\x01\xfe\xff", trailing


def check_unary(ch: grpc.Channel, payload: bytes = b"hello") -> None:
    resp, call = ch.unary_unary(f"/{SERVICE}/Unary").with_call(payload, metadata=REQ_MD, timeout=CALL_TIMEOUT)
    assert resp == b"echo:" + payload
    assert call.code() == grpc.StatusCode.OK
    _check_md(call.initial_metadata(), call.trailing_metadata())


def check_server_stream(ch: grpc.Channel) -> None:
    call = ch.unary_stream(f"/{SERVICE}/ServerStream")(b"ss", metadata=REQ_MD, timeout=CALL_TIMEOUT)
    assert list(call) == [b"ss/0", b"ss/1", b"ss/2"]
    assert call.code() == grpc.StatusCode.OK
    _check_md(call.initial_metadata(), call.trailing_metadata())


def check_client_stream(ch: grpc.Channel) -> None:
    resp, call = ch.stream_unary(f"/{SERVICE}/ClientStream").with_call(
        iter([b"a", b"bb", b"ccc"]), metadata=REQ_MD, timeout=CALL_TIMEOUT
    )
    assert resp == b"a|bb|ccc"
    _check_md(call.initial_metadata(), call.trailing_metadata())


def check_bidi(ch: grpc.Channel) -> None:
    call = ch.stream_stream(f"/{SERVICE}/Bidi")(iter([b"1", b"2", b"3"]), metadata=REQ_MD, timeout=CALL_TIMEOUT)
    assert list(call) == [b"re:1", b"re:2", b"re:3"]
    assert call.code() == grpc.StatusCode.OK
    _check_md(call.initial_metadata(), call.trailing_metadata())


def check_errors(ch: grpc.Channel) -> None:
    """Status codes, details (non-ASCII too) and trailing metadata of failed
    calls in every shape."""
    md = REQ_MD + [("x-fail", "NOT_FOUND")]
    calls = [
        lambda: ch.unary_unary(f"/{SERVICE}/Unary")(b"u", metadata=md, timeout=CALL_TIMEOUT),
        lambda: list(ch.unary_stream(f"/{SERVICE}/ServerStream")(b"s", metadata=md, timeout=CALL_TIMEOUT)),
        lambda: ch.stream_unary(f"/{SERVICE}/ClientStream")(iter([b"c"]), metadata=md, timeout=CALL_TIMEOUT),
        lambda: list(ch.stream_stream(f"/{SERVICE}/Bidi")(iter([b"b"]), metadata=md, timeout=CALL_TIMEOUT)),
    ]
    for call in calls:
        try:
            call()
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, (e.code(), e.details())
            assert e.details().startswith("failed as asked: ") and e.details().endswith(" ü"), e.details()
            t = md_dict(e.trailing_metadata())
            assert t.get("x-trailer") == "t-value", e.trailing_metadata()
            assert t.get("x-trailer-bin") == b"\x00\x01\xfe\xff", e.trailing_metadata()
        else:
            raise AssertionError("expected NOT_FOUND")
    # A method the server does not have: the server's own UNIMPLEMENTED.
    try:
        ch.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"", timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
    else:
        raise AssertionError("expected UNIMPLEMENTED")


def check_all_shapes(target: str) -> None:
    """All four RPC shapes through ``target``, with metadata, status codes,
    details and trailing metadata; plus a 1 MiB message each way."""
    with channel(target) as ch:
        check_unary(ch)
        check_server_stream(ch)
        check_client_stream(ch)
        check_bidi(ch)
        check_errors(ch)
        big = bytes(range(256)) * (BIG // 256)
        check_unary(ch, big)


def modify(target: str, ext_id: int, passthrough: bool, data: bytes = b"") -> tuple[int, bool, bytes]:
    with channel(target) as ch:
        resp = ch.unary_unary("/esi.Esi/Modify")(encode_modify(ext_id, passthrough, data), timeout=CALL_TIMEOUT)
        return decode_modify(resp)


def load(target: str, n: int, tag: bytes, on_progress=None, pause: float = 0.0) -> list[bytes]:
    """``n`` unary calls ``tag-i`` from 8 threads; returns the responses in
    call order. ``on_progress(done)`` is called after each call."""
    done = 0
    lock = threading.Lock()
    with channel(target) as ch, futures.ThreadPoolExecutor(8) as pool:
        unary = ch.unary_unary(f"/{SERVICE}/Unary")

        def one(i: int) -> bytes:
            nonlocal done
            r = unary(tag + b"-%d" % i, timeout=CALL_TIMEOUT)
            if pause:
                time.sleep(pause)
            with lock:
                done += 1
                d = done
            if on_progress:
                on_progress(d)
            return r

        return list(pool.map(one, range(n)))
