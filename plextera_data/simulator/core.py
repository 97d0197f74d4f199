"""The :class:`Simulator`: state, accounting and the Python-side view of the simulated API."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from plextera_data.simulator.app import API_PREFIX, ConnectionDroppedError, SimulatorApp
from plextera_data.simulator.clock import SimClock, format_time
from plextera_data.simulator.faults import Fault, FaultPlan
from plextera_data.simulator.files import MAX_FILE_BYTES, StoredFile
from plextera_data.simulator.ids import hex_id, request_id, ulid_like
from plextera_data.simulator.runs import Planner, RunRecord, input_digest, plan_key
from plextera_data.simulator.server import SimulatorServer
from plextera_data.simulator.stats import SimStats
from plextera_data.simulator.workflows import Workflow, builtin_workflows

__all__ = ["DEFAULT_API_KEY", "IN_PROCESS_BASE_URL", "Simulator", "Subscription"]

DEFAULT_API_KEY = "sk_sim_local"
IN_PROCESS_BASE_URL = "http://127.0.0.1" + API_PREFIX


@dataclass
class Subscription:
    """An event subscription (``POST /event-subscriptions``); the secret is never shown."""

    id: str
    endpoint_url: str
    event_types: list[str]
    signing_secret: str = field(repr=False)
    filters: dict[str, Any] | None
    created_at: datetime
    status: str = "active"

    def public(self) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "endpointUrl": self.endpoint_url,
            "eventTypes": list(self.event_types),
        }
        if self.filters:
            model["filters"] = dict(self.filters)
        model["createdAt"] = model["updatedAt"] = format_time(self.created_at)
        return model


class _InProcessTransport(httpx.ASGITransport):
    """ASGI transport whose dropped connections surface as ``httpx.RemoteProtocolError``."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except ConnectionDroppedError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None


class Simulator:
    """A local, deterministic stand-in for the Plextera Workflow Runs API.

    ``seed`` fixes run ids, durations, outputs, random failures and random faults. A run's id
    and plan follow from the seed, its workflow and its input (see
    :mod:`plextera_data.simulator.runs`), not from the order in which runs arrive, so concurrent
    starts give the same runs every time. ``speed`` is simulated seconds per wall second
    (``None``: a manual clock moved by ``sim.clock.advance``).
    ``workflows``: the workflows to offer (default: the built-in ones). ``faults``: faults to
    inject (see :class:`Fault`). ``max_file_bytes``: the upload limit (the vendor's is 50 MB).

        sim = Simulator(seed=0, speed=None)
        with sim.serve() as server:
            ...  # server.base_url, server.api_key
        sim.clock.advance(60)
    """

    def __init__(
        self,
        seed: int | str = 0,
        speed: float | None = 1.0,
        api_key: str = DEFAULT_API_KEY,
        workflows: Iterable[Workflow] | None = None,
        faults: Sequence[Fault] = (),
        *,
        clock: SimClock | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.seed = seed
        self.api_key = api_key
        self.clock = clock if clock is not None else SimClock(speed)
        self.max_file_bytes = max_file_bytes
        self.workflows: dict[str, Workflow] = {}
        for workflow in builtin_workflows() if workflows is None else workflows:
            self.add_workflow(workflow)
        self.stats = SimStats()
        self.runs: dict[str, RunRecord] = {}
        self.files: dict[str, StoredFile] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._faults = FaultPlan(seed, faults)
        self._planner = Planner(seed, self.workflows)
        self._top_level: list[str] = []
        self._occurrences: dict[tuple[str, str], int] = {}
        self._file_digests: dict[str, str] = {}
        self._terminal_answered: set[str] = set()
        self._lock = threading.RLock()
        self._counters = {"request": 0, "file": 0, "subscription": 0, "delivery": 0}
        self.app = SimulatorApp(self)

    # ------------------------------------------------------------------ configuration

    def add_workflow(self, workflow: Workflow) -> None:
        """Offer ``workflow`` (replacing one with the same id)."""
        if not workflow.id:
            raise ValueError("a workflow needs a non-empty id")
        self.workflows[workflow.id] = workflow

    @property
    def faults(self) -> list[Fault]:
        """The faults in force; a plain list that may be changed at any time."""
        return self._faults.faults

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the faults in force."""
        self._faults.faults[:] = list(faults)

    # ------------------------------------------------------------------ ways in

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport calling the app in-process; use with :attr:`in_process_base_url`."""
        return _InProcessTransport(app=self.app)

    @property
    def in_process_base_url(self) -> str:
        """Base URL to use with :meth:`transport`."""
        return IN_PROCESS_BASE_URL

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
        """Serve on ``host:port`` (0: a free port) in a background thread; a context manager.

        ``server.base_url`` is ``http://127.0.0.1:<port>/api/public/v1``. Call ``.start()`` to
        serve without a ``with`` block, ``.stop()`` to end.
        """
        return SimulatorServer(self, host, port)

    # ------------------------------------------------------------------ looking at runs

    def start_run(self, workflow_id: str, run_input: Mapping[str, Any] | None = None) -> str:
        """Create a run directly, bypassing HTTP and accounting; returns its id."""
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            raise KeyError(f"unknown workflow {workflow_id!r}; known: {sorted(self.workflows)}")
        return self._plan_and_store(workflow, dict(run_input or {})).id

    def created_runs(self, workflow_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(run_id, input)`` of each top-level run created, in order of creation."""
        with self._lock:
            records = [self.runs[run_id] for run_id in self._top_level]
        return [
            (record.id, record.input)
            for record in records
            if workflow_id is None or record.workflow_id == workflow_id
        ]

    def run_model(self, run_id: str) -> dict[str, Any]:
        """The run's JSON as ``GET /workflow-runs/{id}`` would give it now."""
        return self._record(run_id).render(self.clock.now())

    def finished_at(self, run_id: str) -> datetime | None:
        """Simulated time at which the run reached its terminal status; ``None`` until then."""
        record = self._record(run_id)
        return record.finished_at if record.is_terminal_at(self.clock.now()) else None

    def _record(self, run_id: str) -> RunRecord:
        record = self.runs.get(run_id)
        if record is None:
            raise KeyError(f"no run {run_id!r} in this simulator")
        return record

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
        from plextera_data.events import sign

        record = self._record(run_id)
        now = self.clock.now()
        if not record.is_terminal_at(now):
            raise ValueError(f"run {run_id!r} is still PROCESSING; it has no event yet")
        model = record.render(now)
        if record.status == "COMPLETED":
            event_type = "workflow.run.completed"
            data = model
        elif record.status == "FAILED":
            event_type = "workflow.run.failed"
            data = _failed_event_data(model)
        else:
            raise ValueError(
                f"run {run_id!r} ended {record.status}; Plextera documents events only for "
                "COMPLETED and FAILED runs"
            )
        occurred_at = format_time(record.finished_at)
        event_id = "evt_" + ulid_like(self.seed, "event", run_id, event_type)
        with self._lock:
            self._counters["delivery"] += 1
            delivery = self._counters["delivery"]
        envelope = {
            "eventId": event_id,
            "eventType": event_type,
            "occurredAt": occurred_at,
            "apiVersion": "v1",
            "data": data,
        }
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        stamp = int(time.time()) if timestamp is None else int(timestamp)
        headers = {
            "Content-Type": "application/json",
            "X-Plextera-Delivery-Id": "dlv_" + ulid_like(self.seed, "delivery", delivery),
            "X-Plextera-Event-Id": event_id,
            "X-Plextera-Event-Type": event_type,
            "X-Plextera-Event-Occurred-At": occurred_at,
            "X-Plextera-Api-Version": "v1",
            "X-Plextera-Signature": sign(body, secret, stamp),
        }
        return headers, body

    # ------------------------------------------------------------------ used by the app

    def _next_request_id(self) -> str:
        with self._lock:
            self._counters["request"] += 1
            return request_id(self.seed, "request", self._counters["request"])

    def _account_request(
        self, kind: str, method: str, params: Mapping[str, str], client_request_id: str | None
    ) -> None:
        stats = self.stats
        with stats.lock:
            stats.requests += 1
            if client_request_id:
                stats.request_ids.append(client_request_id)
            if kind == "start":
                stats.post_attempts[params["workflow_id"]] += 1
            elif kind == "get_run":
                run_id = params["run_id"]
                stats.gets[run_id] += 1
                if run_id in self._terminal_answered:
                    stats.gets_after_terminal[run_id] += 1
            elif kind == "list_runs":
                stats.lists += 1

    def _account_fault(self, kind: str) -> None:
        with self.stats.lock:
            self.stats.faults[kind] += 1

    def _account_status(self, status: int) -> None:
        with self.stats.lock:
            self.stats.by_status[status] += 1

    def _mark_terminal_answer(self, run_id: str) -> None:
        with self.stats.lock:
            self._terminal_answered.add(run_id)

    def _create_run(self, workflow: Workflow, run_input: dict[str, Any]) -> RunRecord:
        record = self._plan_and_store(workflow, run_input)
        with self.stats.lock:
            self.stats.posts[workflow.id] += 1
        return record

    def _plan_and_store(self, workflow: Workflow, run_input: dict[str, Any]) -> RunRecord:
        """Plan and keep a top-level run, keyed by workflow, input digest and occurrence.

        The id derives from the same key, so it does not depend on arrival order either; the
        loop only guards the (96-bit) id against a collision with any run already held.
        """
        with self._lock:
            digest = input_digest(run_input, self._file_digests)
            occurrence = self._occurrences.get((workflow.id, digest), 0)
            self._occurrences[(workflow.id, digest)] = occurrence + 1
            key = plan_key(workflow.id, digest, occurrence)
            run_id = hex_id(self.seed, "run", key)
            salt = 0
            while run_id in self.runs:
                salt += 1
                run_id = hex_id(self.seed, "run", key, salt)
            record = self._planner.plan(workflow, run_input, run_id, self.clock.now(), key=key)
            for each in self._planner.walk(record):
                self.runs[each.id] = each
            self._top_level.append(run_id)
        return record

    def _top_level_records(self) -> list[RunRecord]:
        with self._lock:
            return [self.runs[run_id] for run_id in self._top_level]

    def _store_file(self, name: str, mime_type: str, data: bytes) -> StoredFile:
        with self._lock:
            self._counters["file"] += 1
            file_id = "file_" + ulid_like(self.seed, "file", self._counters["file"])
            stored = StoredFile(file_id, name, mime_type, data, self.clock.now())
            self.files[file_id] = stored
            self._file_digests[file_id] = hashlib.sha256(data).hexdigest()
        return stored

    def _create_subscription(
        self,
        endpoint_url: str,
        event_types: list[str],
        secret: str,
        filters: dict[str, Any] | None,
    ) -> Subscription:
        with self._lock:
            self._counters["subscription"] += 1
            sub_id = "sub_" + ulid_like(self.seed, "subscription", self._counters["subscription"])
            sub = Subscription(sub_id, endpoint_url, event_types, secret, filters, self.clock.now())
            self.subscriptions[sub_id] = sub
        return sub

    def __repr__(self) -> str:
        return (
            f"Simulator(seed={self.seed!r}, clock={self.clock!r}, runs={len(self._top_level)}, "
            f"workflows={sorted(self.workflows)})"
        )


def _failed_event_data(model: Mapping[str, Any]) -> dict[str, Any]:
    """A FAILED run in the shape of the vendor's ``workflow.run.failed`` example."""
    data: dict[str, Any] = {
        "runId": model["id"],
        "workflowId": model["workflow"]["id"],
        "status": model["status"],
        "createdAt": model["createdAt"],
        "updatedAt": model["updatedAt"],
        "completedAt": model.get("completedAt"),
        "workflow": dict(model["workflow"]),
        "progress": dict(model["progress"]),
        "steps": [
            {key: value for key, value in step.items() if key != "output"}
            for step in model["steps"]
        ],
    }
    if "error" in model:
        data["error"] = dict(model["error"])
    return data
