"""Webhook events of finished runs: what Plextera would POST, signed as the vendor documents,
and their deliveries to the simulator's subscriptions (on the simulator's clock).

The signature is computed here with :mod:`hmac`, independently of ``plextera_data.events``, so
that tests checking one against the other check something.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from plextera_data.simulator.clock import format_time
from plextera_data.simulator.ids import ulid_like
from plextera_data.simulator.runs import RunRecord
from plextera_data.simulator.state import SimulatorState, Subscription

__all__ = [
    "EVENT_STATUSES",
    "DeliveryAttempt",
    "DeliveryOptions",
    "EventDeliveries",
    "RunEvent",
    "delivery_headers",
    "run_event",
    "signature",
]

#: Run statuses that have an event, and the event's type (no event is documented for CLOSED).
EVENT_STATUSES = {"COMPLETED": "workflow.run.completed", "FAILED": "workflow.run.failed"}


@dataclass(frozen=True)
class RunEvent:
    """The event of one finished run: its id (the same on every retry), type and body."""

    event_id: str
    event_type: str
    occurred_at: str
    run_id: str
    workflow_id: str
    body: bytes


def run_event(record: RunRecord, seed: int | str) -> RunEvent:
    """The event Plextera sends when ``record`` reaches its terminal status.

    ``workflow.run.completed`` carries the full run model; ``workflow.run.failed`` follows the
    vendor's example (``runId``, ``workflowId``, steps without ``output``). ``ValueError`` for a
    run that ends ``CLOSED`` (no documented event).
    """
    event_type = EVENT_STATUSES.get(record.status)
    if event_type is None:
        raise ValueError(
            f"run {record.id!r} ended {record.status}; Plextera documents events only for "
            "COMPLETED and FAILED runs"
        )
    model = record.render(record.finished_at)
    data = model if record.status == "COMPLETED" else _failed_event_data(model)
    occurred_at = format_time(record.finished_at)
    event_id = "evt_" + ulid_like(seed, "event", record.id, event_type)
    envelope = {
        "eventId": event_id,
        "eventType": event_type,
        "occurredAt": occurred_at,
        "apiVersion": "v1",
        "data": data,
    }
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return RunEvent(event_id, event_type, occurred_at, record.id, record.workflow_id, body)


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`` keyed with ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def delivery_headers(
    event: RunEvent, delivery_id: str, secret: str, timestamp: int
) -> dict[str, str]:
    """The headers of one delivery attempt of ``event``, signed at ``timestamp`` (unix s)."""
    return {
        "Content-Type": "application/json",
        "X-Plextera-Delivery-Id": delivery_id,
        "X-Plextera-Event-Id": event.event_id,
        "X-Plextera-Event-Type": event.event_type,
        "X-Plextera-Event-Occurred-At": event.occurred_at,
        "X-Plextera-Api-Version": "v1",
        "X-Plextera-Signature": signature(event.body, secret, timestamp),
    }


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


# --------------------------------------------------------------------------- deliveries


@dataclass
class DeliveryOptions:
    """How the simulator delivers events, and the delivery faults it injects.

    Times are **simulated** seconds (a sped-up simulator delivers sped up), except ``timeout``,
    the wall seconds an endpoint has to answer.

    ``delay``: from a run's end to the first attempt. ``jitter``: an extra delay drawn between 0
    and ``jitter`` per event, so later events may overtake earlier ones (out of order).
    ``duplicate``: the probability that an event answered 2xx is delivered once more (same event
    id, new delivery id), up to ``max(1, jitter)`` seconds later. ``lost``: the probability that an
    event is never sent. ``max_attempts``, ``backoff``, ``max_backoff``: a delivery answered
    other than 2xx (or not answered: refused, dropped, timed out) is retried after ``backoff``
    seconds, doubling up to ``max_backoff``, until ``max_attempts`` attempts were made.
    ``concurrency``: attempts in flight at once. The random draws follow the seed and the event,
    not the order of events.
    """

    delay: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    lost: float = 0.0
    max_attempts: int = 10
    backoff: float = 1.0
    max_backoff: float = 600.0
    timeout: float = 10.0
    concurrency: int = 16

    def __post_init__(self) -> None:
        for name in ("duplicate", "lost"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1")
        if min(self.delay, self.jitter, self.backoff, self.max_backoff) < 0:
            raise ValueError("delivery delays must not be negative")
        if self.max_attempts < 1 or self.concurrency < 1 or self.timeout <= 0:
            raise ValueError("max_attempts and concurrency must be at least 1, timeout above 0")

    def retry_in(self, attempt: int) -> float:
        """Simulated seconds before attempt ``attempt + 1``."""
        return min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))


@dataclass
class DeliveryAttempt:
    """One HTTP POST of an event to a subscription, as the delivery log records it.

    ``attempt`` counts from 1 per event and subscription (an injected duplicate continues the
    count, with ``duplicate=True``); ``due`` is the simulated time it was due, ``sent`` and
    ``answered`` wall times (``time.time()``); ``status`` the HTTP status, ``None`` with an
    ``error`` when no answer came.
    """

    event_id: str
    delivery_id: str
    subscription_id: str
    run_id: str
    attempt: int
    duplicate: bool
    due: datetime
    sent: float
    answered: float
    status: int | None
    error: str | None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Job:
    """Something due at a simulated time: a run's event to fan out (``subscription is None``),
    or an attempt to deliver it to one subscription."""

    due: datetime
    record: RunRecord
    event: RunEvent | None = None
    subscription: Subscription | None = None
    attempt: int = 1
    duplicate: bool = False
    duplicate_in: float | None = None


class EventDeliveries:
    """Delivers the events of finished top-level runs to the simulator's subscriptions.

    A thread of its own, started with the first subscription, runs an asyncio loop that posts
    each event when the simulated clock reaches the run's end (plus the options' delays), and
    looks again whenever the manual clock is advanced. ``transport``: an httpx transport to post
    through (``httpx.ASGITransport(app=receiver)`` delivers in-process, with no socket); by
    default a real connection to the subscription's URL.

    ``log`` lists every attempt (:class:`DeliveryAttempt`); the simulator's ``stats`` count them.
    """

    def __init__(
        self,
        state: SimulatorState,
        options: DeliveryOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.state = state
        self.options = options or DeliveryOptions()
        self.transport = transport
        self.log: list[DeliveryAttempt] = []
        self._heap: list[tuple[datetime, int, _Job]] = []
        self._order = itertools.count()
        self._queued: set[str] = set()
        self._enabled = False
        self._in_flight = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        state.on_run(self._run_created)
        state.on_subscription(self._subscribed)
        state.clock.on_advance(self._poke)

    # ------------------------------------------------------------------ looking on

    def acknowledged(self, subscription_id: str | None = None) -> set[str]:
        """Ids of the events answered 2xx at least once (by ``subscription_id``, or any)."""
        with self._cond:
            return {
                a.event_id
                for a in self.log
                if a.acknowledged and subscription_id in (None, a.subscription_id)
            }

    @property
    def pending(self) -> int:
        """Events and attempts waiting for their time, and attempts in flight."""
        with self._cond:
            return len(self._heap) + self._in_flight

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every event and attempt due by now (simulated) has been made and
        answered; False if that did not happen within ``timeout`` wall seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop delivering (attempts in flight are abandoned)."""
        with self._cond:
            self._closed = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _idle(self) -> bool:
        if self._thread is None or self._closed:
            return True
        now = self.state.clock.now()
        return self._in_flight == 0 and not (self._heap and self._heap[0][0] <= now)

    # ------------------------------------------------------------------ fed by the state

    def _run_created(self, record: RunRecord) -> None:
        with self._cond:
            if not self._enabled:
                return
            self._queue(record)
        self._poke()

    def _subscribed(self, subscription: Subscription) -> None:
        with self._cond:
            if self._closed:
                return
            if not self._enabled:
                self._enabled = True
                for record in self.state.top_level_records():
                    if record.finished_at >= subscription.created_at:
                        self._queue(record)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=lambda: asyncio.run(self._serve()),
                    name="plextera-simulator-deliveries",
                    daemon=True,
                )
                self._thread.start()
        self._poke()

    def _queue(self, record: RunRecord) -> None:
        """Schedule the event of ``record`` (once), if its end has one. Under the lock."""
        if record.status in EVENT_STATUSES and record.id not in self._queued:
            self._queued.add(record.id)
            self._push(_Job(record.finished_at, record))

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._heap, (job.due, next(self._order), job))

    def _poke(self) -> None:
        """Have the delivery loop look again (from any thread), and wake ``wait_idle``."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            if threading.get_ident() == self._loop_thread:
                wake.set()
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(wake.set)
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ the delivery loop

    async def _serve(self) -> None:
        self._wake = asyncio.Event()
        self._loop_thread = threading.get_ident()
        self._loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.options.concurrency)
        async with httpx.AsyncClient(transport=self.transport) as http:
            while True:
                self._wake.clear()
                with self._cond:
                    if self._closed:
                        break
                    due = self._take_due(self.state.clock.now())
                    wait = self._wall_wait()
                for job in due:
                    task = asyncio.create_task(self._attempt(http, job, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                with self._cond:
                    self._cond.notify_all()
                if wait is None or wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None

    def _take_due(self, now: datetime) -> list[_Job]:
        """Pop the jobs due by ``now``: fan events out into attempts, return the attempts to
        make (counted in flight from here). Under the lock."""
        attempts: list[_Job] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, job = heapq.heappop(self._heap)
            if job.subscription is None:
                self._fan_out(job)
            else:
                attempts.append(job)
        self._in_flight += len(attempts)
        return attempts

    def _wall_wait(self) -> float | None:
        """Wall seconds until the next job is due (``None``: only a poke can bring one)."""
        if not self._heap:
            return None
        seconds = (self._heap[0][0] - self.state.clock.now()).total_seconds()
        wall = self.state.clock.wall_seconds(max(0.0, seconds))
        return None if wall == float("inf") else wall

    def _fan_out(self, job: _Job) -> None:
        """A run ended: one first attempt per subscription that wants its event. Under the
        lock."""
        record = job.record
        event = run_event(record, self.state.seed)
        options = self.options
        for subscription in list(self.state.subscriptions.values()):
            if not subscription.wants(event.event_type, record.workflow_id, record.finished_at):
                continue
            rng = random.Random(f"{self.state.seed}:delivery:{event.event_id}:{subscription.id}")
            lost = rng.random() < options.lost
            extra = rng.uniform(0.0, options.jitter)
            duplicate = rng.random() < options.duplicate
            duplicate_in = rng.uniform(0.0, max(1.0, options.jitter))
            if lost:
                with self.state.stats.lock:
                    self.state.stats.events_lost += 1
                continue
            due = record.finished_at + timedelta(seconds=options.delay + extra)
            dup_in = duplicate_in if duplicate else None
            self._push(_Job(due, record, event, subscription, duplicate_in=dup_in))

    async def _attempt(self, http: httpx.AsyncClient, job: _Job, slots: asyncio.Semaphore) -> None:
        """POST one attempt (signed now, at wall time, as a real delivery is) and settle it."""
        event, subscription = job.event, job.subscription
        assert event is not None
        assert subscription is not None
        delivery_id = "dlv_" + ulid_like(
            self.state.seed, "delivery", event.event_id, subscription.id, job.attempt
        )
        status: int | None = None
        error: str | None = None
        async with slots:
            sent = time.time()
            headers = delivery_headers(event, delivery_id, subscription.signing_secret, int(sent))
            try:
                answer = await http.post(
                    subscription.endpoint_url,
                    content=event.body,
                    headers=headers,
                    timeout=self.options.timeout,
                )
                status = answer.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        record = DeliveryAttempt(
            event.event_id, delivery_id, subscription.id, event.run_id, job.attempt,
            job.duplicate, job.due, sent, time.time(), status, error,
        )  # fmt: skip
        self._settle(job, record)

    def _settle(self, job: _Job, attempt: DeliveryAttempt) -> None:
        """Log an attempt, count it, and schedule what follows: a retry, or the duplicate."""
        stats = self.state.stats
        now = self.state.clock.now()
        follow: _Job | None = None
        with self._cond:
            self.log.append(attempt)
            self._in_flight -= 1
            with stats.lock:
                stats.deliveries += 1
                stats.delivery_answers[attempt.status or "error"] += 1
                if job.duplicate:
                    stats.events_duplicated += 1  # an extra delivery: never retried
                elif attempt.acknowledged:
                    stats.events_acknowledged += 1
                    if job.duplicate_in is not None:
                        due = now + timedelta(seconds=job.duplicate_in)
                        follow = replace(job, due=due, attempt=job.attempt + 1, duplicate=True)
                elif job.attempt < self.options.max_attempts:
                    due = now + timedelta(seconds=self.options.retry_in(job.attempt))
                    follow = replace(job, due=due, attempt=job.attempt + 1)
                else:
                    stats.events_abandoned += 1
            if follow is not None:
                self._push(follow)
            self._cond.notify_all()
        self._poke()
