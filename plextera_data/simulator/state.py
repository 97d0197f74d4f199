"""The simulated workspace: workflows, runs, files, subscriptions, faults and the accounting.

The bottom layer of the simulator: the ASGI app (:mod:`~plextera_data.simulator.app`) reads and
changes this state through the methods below, the event deliveries
(:mod:`~plextera_data.simulator.delivery`) follow it through :meth:`SimulatorState.on_run`, and
:class:`~plextera_data.simulator.Simulator` is this state with the ways in (in-process transport,
a served port, event deliveries) on top. Nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from plextera_data.simulator.clock import SimClock, format_time
from plextera_data.simulator.faults import Fault, FaultHit, FaultPlan
from plextera_data.simulator.files import MAX_FILE_BYTES, StoredFile, sample_files
from plextera_data.simulator.ids import hex_id, request_id, ulid_like
from plextera_data.simulator.runs import Planner, RunRecord, input_digest, plan_key
from plextera_data.simulator.stats import SimStats
from plextera_data.simulator.workflows import Workflow, builtin_workflows

__all__ = ["DEFAULT_API_KEY", "RunPage", "SimulatorState", "Subscription"]

DEFAULT_API_KEY = "sk_sim_local"


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
        """The subscription as the API shows it (no secret; ``filters`` only when set)."""
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

    def wants(self, event_type: str, workflow_id: str, occurred_at: datetime) -> bool:
        """True when this subscription receives that event (deliveries start with the next
        matching event after the subscription was created)."""
        if self.status != "active" or event_type not in self.event_types:
            return False
        wanted = (self.filters or {}).get("workflowId")
        return (wanted is None or wanted == workflow_id) and occurred_at >= self.created_at


@dataclass(frozen=True)
class RunPage:
    """One page of ``GET /workflow-runs``: the runs on it and how many match in all."""

    records: list[RunRecord]
    total: int


class SimulatorState:
    """Everything a simulated workspace holds, and the accounting of what reached it.

    ``seed`` fixes run ids, durations, outputs, random failures and random faults. ``speed`` is
    simulated seconds per wall second (``None``: a manual clock moved by ``clock.advance``);
    ``clock`` a :class:`~plextera_data.simulator.SimClock` to use instead. ``api_key``: the one
    key accepted. ``workflows``: the workflows to offer (default: the built-in ones).
    ``faults``: faults to inject (see :class:`~plextera_data.simulator.Fault`).
    ``max_file_bytes``: the upload limit (the vendor's 50 MB, as 50,000,000 bytes).
    ``with_sample_files``: start with the documents the shipped sample data refers to in the
    File Service (see ``plextera_data/data/README.md``).
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
        with_sample_files: bool = True,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.seed = seed
        self.api_key = api_key
        self.max_file_bytes = max_file_bytes
        self.workflows: dict[str, Workflow] = {}
        for workflow in builtin_workflows() if workflows is None else workflows:
            self.add_workflow(workflow)
        self.stats = SimStats()
        self.runs: dict[str, RunRecord] = {}
        #: Files uploaded to this simulator (``POST /files`` and multipart starts).
        self.files: dict[str, StoredFile] = {}
        #: Files already in the workspace when the simulator started: the documents the shipped
        #: sample data refers to (``with_sample_files=False``: none).
        self.sample_files: Mapping[str, StoredFile] = sample_files() if with_sample_files else {}
        self.subscriptions: dict[str, Subscription] = {}
        self._faults = FaultPlan(seed, faults)
        self._planner = Planner(seed, self.workflows, self.find_file)
        self._top_level: list[str] = []
        self._position: dict[str, int] = {}
        self._occurrences: dict[tuple[str, str], int] = {}
        self._file_digests: dict[str, str] = {
            file_id: hashlib.sha256(stored.data).hexdigest()
            for file_id, stored in self.sample_files.items()
        }
        self._terminal_answered: set[str] = set()
        self._run_listeners: list[Callable[[RunRecord], None]] = []
        self._subscription_listeners: list[Callable[[Subscription], None]] = []
        self._lock = threading.RLock()
        self._counters = {"request": 0, "file": 0, "subscription": 0}
        # Last, so that simulated time starts when the simulator is ready.
        self.clock = clock if clock is not None else SimClock(speed)

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

    @property
    def clock_rate(self) -> float:
        """Simulated seconds per wall second, as a client's ``clock_rate``: the clock's speed, or 1
        for a manual clock (whose time moves only when told)."""
        speed = self.clock.speed
        return 1.0 if speed is None else float(speed)

    def on_run(self, listener: Callable[[RunRecord], None]) -> None:
        """Call ``listener(record)`` after each top-level run is created (any thread)."""
        self._run_listeners.append(listener)

    def on_subscription(self, listener: Callable[[Subscription], None]) -> None:
        """Call ``listener(subscription)`` after each subscription is created (any thread)."""
        self._subscription_listeners.append(listener)

    # ------------------------------------------------------------------ looking at runs

    def start_run(self, workflow_id: str, run_input: Mapping[str, Any] | None = None) -> str:
        """Create a run directly, bypassing HTTP and accounting; returns its id."""
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            raise KeyError(f"unknown workflow {workflow_id!r}; known: {sorted(self.workflows)}")
        return self._plan_and_store(workflow, dict(run_input or {}))[0].id

    def created_runs(self, workflow_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(run_id, input)`` of each top-level run created, in order of creation."""
        return [
            (record.id, record.input)
            for record in self.top_level_records()
            if workflow_id is None or record.workflow_id == workflow_id
        ]

    def run_model(self, run_id: str) -> dict[str, Any]:
        """The run's JSON as ``GET /workflow-runs/{id}`` would give it now."""
        return self.record(run_id).render(self.clock.now())

    def finished_at(self, run_id: str) -> datetime | None:
        """Simulated time at which the run reached its terminal status; ``None`` until then."""
        record = self.record(run_id)
        return record.finished_at if record.is_terminal_at(self.clock.now()) else None

    def record(self, run_id: str) -> RunRecord:
        """The planned run ``run_id`` (top-level or nested); ``KeyError`` if there is none."""
        record = self.runs.get(run_id)
        if record is None:
            raise KeyError(f"no run {run_id!r} in this simulator")
        return record

    def find_file(self, file_id: str) -> StoredFile | None:
        """The uploaded or sample file ``file_id``, or ``None``."""
        return self.files.get(file_id) or self.sample_files.get(file_id)

    def list_runs(
        self,
        page: int,
        size: int,
        *,
        statuses: frozenset[str] = frozenset(),
        workflow_id: str | None = None,
        as_of: str | None = None,
    ) -> RunPage:
        """Top-level runs, newest first (creation order reversed), one page of them.

        ``as_of``: a listed run's id; only runs created up to it count, so that pages stay put
        while runs are created (``KeyError`` if it is no listed run).
        """
        now = self.clock.now()
        with self._lock:
            end = len(self._top_level) if as_of is None else self._position[as_of] + 1
            if not statuses and workflow_id is None:  # no filter: slice, no scan
                stop = max(0, end - (page - 1) * size)
                chosen = self._top_level[max(0, stop - size) : stop][::-1]
                return RunPage([self.runs[run_id] for run_id in chosen], end)
            candidates = [self.runs[run_id] for run_id in self._top_level[:end]]
        matching = [
            record
            for record in reversed(candidates)
            if (not statuses or record.status_at(now) in statuses)
            and (workflow_id is None or record.workflow_id == workflow_id)
        ]
        return RunPage(matching[(page - 1) * size : page * size], len(matching))

    def top_level_records(self) -> list[RunRecord]:
        """Every top-level run, in order of creation."""
        with self._lock:
            return [self.runs[run_id] for run_id in self._top_level]

    # ------------------------------------------------------------------ changed by the app

    def next_request_id(self) -> str:
        """A new ``req_...`` id for an answer whose request carried none."""
        with self._lock:
            self._counters["request"] += 1
            return request_id(self.seed, "request", self._counters["request"])

    def pick_fault(self, method: str, path: str) -> FaultHit | None:
        """The fault (if any) that hits this request."""
        return self._faults.pick(method, path)

    def account_request(
        self, kind: str, method: str, params: Mapping[str, str], client_request_id: str | None
    ) -> None:
        """Count a request that arrived (before any fault or check)."""
        stats = self.stats
        with stats.lock:
            stats.requests += 1
            stats.by_kind[kind] += 1
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

    def account_in_flight(self, change: int) -> None:
        """A request began (+1) or ended (-1) being handled; keeps the most at once."""
        stats = self.stats
        with stats.lock:
            stats.in_flight += change
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)

    def account_fault(self, kind: str) -> None:
        """Count an injected fault."""
        with self.stats.lock:
            self.stats.faults[kind] += 1

    def account_answer(self, kind: str, status: int) -> None:
        """Count an answer sent (dropped connections send none)."""
        with self.stats.lock:
            self.stats.by_status[status] += 1
            self.stats.answers[kind, status] += 1

    def mark_terminal_answer(self, run_id: str) -> None:
        """Remember that a GET answered ``run_id`` terminal (later GETs are wasted polls)."""
        with self.stats.lock:
            self._terminal_answered.add(run_id)

    def create_run(self, workflow: Workflow, run_input: dict[str, Any]) -> RunRecord:
        """Create a top-level run for a start that reached the API, and count it."""
        record, digest = self._plan_and_store(workflow, run_input)
        with self.stats.lock:
            self.stats.posts[workflow.id] += 1
            self.stats.runs_per_input[workflow.id, digest] += 1
        return record

    def store_file(self, name: str, mime_type: str, data: bytes) -> StoredFile:
        """Keep an uploaded file in the File Service."""
        with self._lock:
            self._counters["file"] += 1
            file_id = "file_" + ulid_like(self.seed, "file", self._counters["file"])
            stored = StoredFile(file_id, name, mime_type, data, self.clock.now())
            self.files[file_id] = stored
            self._file_digests[file_id] = hashlib.sha256(data).hexdigest()
        return stored

    def create_subscription(
        self,
        endpoint_url: str,
        event_types: list[str],
        secret: str,
        filters: dict[str, Any] | None,
    ) -> Subscription:
        """Add an event subscription; deliveries start with the next matching event."""
        with self._lock:
            self._counters["subscription"] += 1
            sub_id = "sub_" + ulid_like(self.seed, "subscription", self._counters["subscription"])
            sub = Subscription(sub_id, endpoint_url, event_types, secret, filters, self.clock.now())
            self.subscriptions[sub_id] = sub
        for listener in list(self._subscription_listeners):
            listener(sub)
        return sub

    def delete_subscription(self, subscription_id: str) -> bool:
        """Remove a subscription; False if there was none."""
        with self._lock:
            return self.subscriptions.pop(subscription_id, None) is not None

    def _plan_and_store(
        self, workflow: Workflow, run_input: dict[str, Any]
    ) -> tuple[RunRecord, str]:
        """Plan and keep a top-level run, keyed by workflow, input digest and occurrence.

        The id derives from the same key, so it does not depend on arrival order either; the
        loop only guards the (96-bit) id against a collision with any run already held.
        Returns the record and its input digest.
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
            self._position[run_id] = len(self._top_level)
            self._top_level.append(run_id)
        for listener in list(self._run_listeners):
            listener(record)
        return record, digest

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(seed={self.seed!r}, clock={self.clock!r}, "
            f"runs={len(self._top_level)}, workflows={sorted(self.workflows)})"
        )
