"""Serving an ASGI app with uvicorn in a background thread, on a socket bound before it starts.

Shared by the simulator (``Simulator.serve``) and the event receiver (``events.serve``); needs
uvicorn (the ``simulator`` and ``events`` extras). Binding the socket first gives the port at once
(``port=0``: any free port) and lets a restarted server take the same port again.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Self

import uvicorn

__all__ = ["ASGIApp", "BackgroundServer", "Receive", "Scope", "Send", "url_host"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


class _NoDelay:
    """Turns off Nagle's algorithm on each connection.

    uvicorn writes a response's head and body separately; with Nagle's algorithm and delayed ACKs
    every answer on a kept-alive connection would wait some 40 ms.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class BackgroundServer:
    """``app`` served by uvicorn (h11) on ``host:port`` in a daemon thread; a context manager.

    ``name`` names the thread. ``.start()`` returns once connections are accepted; ``.stop()``
    ends serving (answers still pending are abandoned) and closes the socket.
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, name: str) -> None:
        self.host = host
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            _NoDelay(app),
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """``http://<host>:<port>``."""
        return f"http://{url_host(self.host)}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"{self._name}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        if not self._server.ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self._name} did not start on {self.host}:{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
