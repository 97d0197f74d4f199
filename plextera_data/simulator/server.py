"""Serving a simulator's app on loopback with uvicorn, in a background thread."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from plextera_data._serving import BackgroundServer, url_host
from plextera_data.simulator.app import API_PREFIX, SimulatorApp
from plextera_data.simulator.state import SimulatorState

__all__ = ["SimulatorServer"]


class _ConnectionAbortHook:
    """Gives the app a way to drop the TCP connection with no answer.

    uvicorn answers 500 when an app fails before responding, which is not what a dropped
    connection looks like. Its h11 protocol hands the app the bound ``send`` of the request
    cycle, whose ``transport`` can be aborted; this wrapper puts that abort in the scope under
    ``extensions["plextera.abort_connection"]``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            abort = getattr(transport, "abort", None)
            if abort is not None:
                extensions = dict(scope.get("extensions") or {})
                extensions["plextera.abort_connection"] = abort
                scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class SimulatorServer(BackgroundServer):
    """A simulator's app served by uvicorn on ``host:port`` in a daemon thread (a context
    manager); made by ``Simulator.serve()``.

        with sim.serve() as server:
            client = px.Client(**server.client_options())
    """

    def __init__(self, app: SimulatorApp, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_ConnectionAbortHook(app), host, port, name="plextera-simulator")
        #: The simulator served (its state: stats, clock, runs, ...).
        self.simulator: SimulatorState = app.state

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/api/public/v1``."""
        return f"http://{url_host(self.host)}:{self.port}{API_PREFIX}"

    @property
    def api_key(self) -> str:
        """The key the simulator accepts."""
        return self.simulator.api_key

    def client_options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``px.Client(**...)`` / ``px.AsyncClient(**...)`` reaching this
        server: ``api_key``, ``base_url`` and ``clock_rate`` (the simulator's speed; 1 for a
        manual clock). ``overrides`` are added or replace those."""
        options: dict[str, Any] = {
            "api_key": self.api_key,
            "base_url": self.base_url,
            "clock_rate": self.simulator.clock_rate,
        }
        options.update(overrides)
        return options

    def __repr__(self) -> str:
        return f"SimulatorServer(base_url={self.base_url!r})"

    def __getattr__(self, name: str) -> Any:
        # Convenience: server.stats, server.clock, server.runs ... reach the simulator.
        if name.startswith("_") or name == "simulator":
            raise AttributeError(name)
        return getattr(self.simulator, name)
