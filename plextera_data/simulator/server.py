"""Serving a simulator on loopback with uvicorn, in a background thread."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from plextera_data.simulator.app import API_PREFIX

if TYPE_CHECKING:
    from plextera_data.simulator.core import Simulator

__all__ = ["SimulatorServer"]


class _ConnectionAbortHook:
    """Gives the app a way to drop the TCP connection with no answer; turns off Nagle.

    uvicorn answers 500 when an app fails before responding, which is not what a dropped
    connection looks like. Its h11 protocol hands the app the bound ``send`` of the request
    cycle, whose ``transport`` can be aborted; this wrapper puts that abort in the scope under
    ``extensions["plextera.abort_connection"]``. It also sets ``TCP_NODELAY`` on the connection:
    uvicorn writes a response's head and body separately, and Nagle's algorithm with delayed ACKs
    would add some 40 ms to every answer on a kept-alive connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            abort = getattr(transport, "abort", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if abort is not None:
                extensions = dict(scope.get("extensions") or {})
                extensions["plextera.abort_connection"] = abort
                scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class SimulatorServer:
    """A simulator served by uvicorn on ``host:port`` in a daemon thread (a context manager).

    with sim.serve() as server:
        client = httpx.Client(base_url=server.base_url, headers=...)
    """

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self.host = host
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            _ConnectionAbortHook(simulator.app),
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/api/public/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"

    @property
    def api_key(self) -> str:
        """The key the simulator accepts."""
        return self.simulator.api_key

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"plextera-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        if not self._server.ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the simulator did not start on {self.host}:{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end; answers still pending are abandoned."""
        self._server.should_exit = True
        self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimulatorServer(base_url={self.base_url!r})"

    def __getattr__(self, name: str) -> Any:
        # Convenience: server.stats, server.clock, server.runs ... reach the simulator.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.simulator, name)
