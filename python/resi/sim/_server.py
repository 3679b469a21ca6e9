"""The gRPC side shared by the three roles: one ``grpc.aio`` server that
hosts one or more roles, and the :func:`rpc` wrapper every RPC goes
through (call counting, and :class:`~resi.sim.InvalidArgument` turned into
``INVALID_ARGUMENT``, anything else into ``INTERNAL``, as the reference
servers answer).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

try:
    import grpc
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("resi.sim serves with grpcio (a dependency of resi: reinstall resi)") from e

from .errors import InvalidArgument

log = logging.getLogger("resi.sim")

F = TypeVar("F", bound=Callable[..., Any])

#: Default message size limits of a simulator server (same as a gateway's).
MAX_MESSAGE = 64 << 20


async def _fail(context: Any, method: str, e: BaseException) -> None:
    if isinstance(e, InvalidArgument):
        log.info("%s: INVALID_ARGUMENT: %s", method, e)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    log.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")


def rpc(fn: F) -> F:
    """Wraps a servicer method: counts the call in ``self.calls`` and maps
    exceptions to statuses (works for plain and async-generator methods)."""
    name = fn.__name__
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: Any) -> Any:
            self.calls[name] += 1
            try:
                async for item in fn(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as e:
                await _fail(context, name, e)

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        self.calls[name] += 1
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _fail(context, name, e)

    return unary  # type: ignore[return-value]


class Role:
    """One ESI role (a servicer). Alone, ``async with role:`` serves it on
    ``listen``; :func:`serve` puts several roles on one server."""

    #: The gRPC service this role serves (``package.Service``).
    service: str = ""

    def __init__(self, listen: str = "127.0.0.1:0") -> None:
        self.listen = listen
        #: Calls received, per RPC method name (e.g. ``"ListPowerProfile"``).
        self.calls: collections.Counter[str] = collections.Counter()
        self.server: Optional[Server] = None
        self._own: Optional[Server] = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Runs ``coro`` beside the RPCs until it ends or the role stops."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _register(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """``host:port`` of the server that hosts this role (once started)."""
        if self.server is None or self.server.address is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self.server.address

    async def start(self) -> Any:
        """Serves this role alone on ``listen``; returns ``self``."""
        server = Server([self], listen=self.listen)
        await server.start()
        self._own = server
        return self

    async def stop(self, grace: Optional[float] = None) -> None:
        """Stops the server started by :meth:`start` (calls in flight get
        ``grace`` seconds) and the role's background work."""
        await self._cancel_tasks()
        if self._own is not None:
            await self._own.stop(grace)
            self._own = None

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = self.server.address if self.server is not None else "not started"
        uid = getattr(self, "uid", None)
        return f"<{type(self).__name__}{' ' + repr(uid) if uid else ''} {where}>"


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"listen: expected host:port, got {listen!r}")
    return host, int(port)


class Server:
    """A ``grpc.aio`` server on ``listen`` hosting ``roles``; each role's
    :attr:`Role.address` is then this server's address."""

    def __init__(self, roles: Sequence[Role], listen: str = "127.0.0.1:0") -> None:
        if not roles:
            raise ValueError("serve: give at least one role")
        services = [r.service for r in roles]
        dup = {s for s in services if services.count(s) > 1}
        if dup:
            raise ValueError(f"serve: one server can host each service once, got {sorted(dup)} twice")
        _host_port(listen)
        self.roles = list(roles)
        self.listen = listen
        self.address: Optional[str] = None
        self._grpc: Optional[grpc.aio.Server] = None

    async def start(self) -> Server:
        for role in self.roles:
            if role.server is not None:
                raise RuntimeError(f"{type(role).__name__} is already served at {role.server.address}")
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.so_reuseport", 0)]
        )
        for role in self.roles:
            role._register(server)
        try:
            port = server.add_insecure_port(self.listen)
        except RuntimeError as e:
            raise OSError(f"cannot listen on {self.listen}: {e}") from None
        if port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        host, _ = _host_port(self.listen)
        await server.start()
        self._grpc = server
        self.address = f"{host}:{port}"
        for role in self.roles:
            role.server = self
        return self

    async def stop(self, grace: Optional[float] = None) -> None:
        for role in self.roles:
            await role._cancel_tasks()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        for role in self.roles:
            if role.server is self:
                role.server = None

    async def wait(self) -> None:
        """Returns when the server has stopped."""
        if self._grpc is not None:
            await self._grpc.wait_for_termination()

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def serve(roles: Sequence[Role], listen: str = "127.0.0.1:0") -> Server:
    """One server for several roles (e.g. an exchange and its registry behind
    one gateway): ``async with resi.sim.serve([ex, reg]) as server: ...``."""
    return Server(roles, listen=listen)
