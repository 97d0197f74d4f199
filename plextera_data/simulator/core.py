"""The :class:`Simulator`: the simulated workspace with its ways in (in-process transport, a
served port) and its event deliveries."""

from __future__ import annotations

import itertools
import time
from typing import Any, Self

import httpx

from plextera_data.simulator.app import API_PREFIX, ConnectionDroppedError, SimulatorApp
from plextera_data.simulator.delivery import (
    DeliveryOptions,
    EventDeliveries,
    delivery_headers,
    run_event,
)
from plextera_data.simulator.ids import ulid_like
from plextera_data.simulator.server import SimulatorServer
from plextera_data.simulator.state import DEFAULT_API_KEY, SimulatorState, Subscription

__all__ = ["DEFAULT_API_KEY", "IN_PROCESS_BASE_URL", "Simulator", "Subscription"]

IN_PROCESS_BASE_URL = "http://127.0.0.1" + API_PREFIX


class _InProcessTransport(httpx.ASGITransport):
    """ASGI transport whose dropped connections surface as ``httpx.RemoteProtocolError``."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except ConnectionDroppedError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None


class Simulator(SimulatorState):
    """A local, deterministic stand-in for the Plextera Workflow Runs API.

    ``seed`` fixes run ids, durations, outputs, random failures and random faults. A run's id
    and plan follow from the seed, its workflow and its input (see
    :mod:`plextera_data.simulator.runs`), not from the order in which runs arrive, so concurrent
    starts give the same runs every time. The arguments are :class:`SimulatorState`'s
    (``seed``, ``speed``, ``api_key``, ``workflows``, ``faults``, ``clock``,
    ``max_file_bytes``, ``with_sample_files``) and two of its own. ``deliveries``: how events are
    delivered to subscriptions, with which faults (:class:`DeliveryOptions`);
    ``delivery_transport``: an httpx transport to deliver through (for example
    ``httpx.ASGITransport(app=px.events.receiver(...))``: in-process, no socket).
    ``close()`` (or a ``with`` block) stops the deliveries' thread.

        sim = Simulator(seed=0, speed=None)
        client = px.Client(**sim.client_options())      # in-process, no socket
        with sim.serve() as server:
            client = px.Client(**server.client_options())   # over loopback
        sim.clock.advance(60)
    """

    def __init__(
        self,
        *args: Any,
        deliveries: DeliveryOptions | None = None,
        delivery_transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.app = SimulatorApp(self)
        #: Event deliveries to the subscriptions: ``.log``, ``.options``, ``.wait_idle()``.
        self.deliveries = EventDeliveries(self, deliveries, delivery_transport)
        self._event_deliveries = itertools.count(1)

    def close(self) -> None:
        """Stop delivering events (a served port is stopped by its own ``stop()``)."""
        self.deliveries.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ ways in

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport calling the app in-process; use with :attr:`in_process_base_url`."""
        return _InProcessTransport(app=self.app)

    @property
    def in_process_base_url(self) -> str:
        """Base URL to use with :meth:`transport`."""
        return IN_PROCESS_BASE_URL

    def client_options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``px.Client(**...)`` / ``px.AsyncClient(**...)`` talking to this
        simulator in-process: ``api_key``, ``base_url``, ``transport`` (a new
        :meth:`transport`) and ``clock_rate`` (the simulator's speed; 1 for a manual clock).
        ``overrides`` are added or replace those. A plain dict: the simulator knows no client.

            client = px.Client(**sim.client_options(timeout=5))
        """
        options: dict[str, Any] = {
            "api_key": self.api_key,
            "base_url": self.in_process_base_url,
            "transport": self.transport(),
            "clock_rate": self.clock_rate,
        }
        options.update(overrides)
        return options

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
        """Serve on ``host:port`` (0: a free port) in a background thread; a context manager.

        ``server.base_url`` is ``http://127.0.0.1:<port>/api/public/v1``. Call ``.start()`` to
        serve without a ``with`` block, ``.stop()`` to end.
        """
        return SimulatorServer(self.app, host, port)

    # ------------------------------------------------------------------ events

    def event_for(
        self,
        run_id: str,
        secret: str,
        *,
        timestamp: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The webhook delivery Plextera would POST for a finished run: ``(headers, body)``.

        ``workflow.run.completed`` carries the full run model; ``workflow.run.failed`` follows
        the vendor's example (``runId``, ``workflowId``, steps without ``output``). The event id
        is the same on every call for a run (as on retries); the delivery id changes.
        ``timestamp`` (unix seconds) is the signature's ``t``: the wall time by default, when a
        real delivery would be signed.
        """
        record = self.record(run_id)
        if not record.is_terminal_at(self.clock.now()):
            raise ValueError(f"run {run_id!r} is still PROCESSING; it has no event yet")
        event = run_event(record, self.seed)
        delivery_id = "dlv_" + ulid_like(self.seed, "delivery", next(self._event_deliveries))
        stamp = int(time.time()) if timestamp is None else int(timestamp)
        return delivery_headers(event, delivery_id, secret, stamp), event.body
