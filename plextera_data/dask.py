"""A Dask DataFrame's rows as runs, partition by partition, on a Dask cluster (extra ``dask``).

    from plextera_data import dask as pxd

    job = pxd.submit(ddf, "daily-lab-loader", journal_dir="journals/", out="results/")
    job.partitions                     # per partition: rows, counts per status, journal, files
    runs = job.read("runs")            # dask.dataframe.read_parquet("results/runs/")

How a job runs (see docs/guide/scaling.md):

* **Checked first.** Every partition is planned on the cluster
  (:func:`~plextera_data.rows.plan_requests`, the checks ``px.submit`` makes) and the index is
  checked unique across partitions before the first request; a bad row raises
  :class:`~plextera_data.errors.InvalidInputError` naming the partition, the row and the
  column, and nothing is sent.
* **One batch per partition.** Partition ``n`` runs as ``px.submit(part, ..., wait=True)`` with its
  own journal ``journal_dir/part-0000n.plextera.db``, so a rerun of the same job (or Dask's own
  retry of a partition whose worker died) sends only what no journal recorded, partition by
  partition. ``journal_dir`` remembers how the input was partitioned (``plextera-job.json``): a
  rerun with other partitions is refused, since a row moved to another partition would meet a
  journal that never saw it. A lock file keeps one process per journal.
* **One budget for the cluster.** Every HTTP request of every partition holds a lease of one
  :class:`distributed.Semaphore` of ``max_in_flight`` leases while it is in flight, so adding
  workers does not add load on the API. Leases are cached by a partition while it keeps them
  busy (no scheduler round trip per request) and go back after ``LEASE_IDLE`` seconds unused or
  ``LEASE_HOLD`` seconds held, so the partitions share them. A 429 with ``Retry-After`` pauses
  every partition: its end goes into the scheduler's metadata (``Client.set_metadata``), which
  each partition reads every ``PAUSE_CHECK`` seconds.
* **Tables as datasets.** Each partition writes ``out/runs/part-0000n.parquet`` (and ``steps``,
  ``outputs``) with the library's table schemas (:data:`plextera_data.tables.SCHEMAS`), the same
  arrow schema in every file, ``row_key`` being ``int64`` for an integer index and text
  otherwise; ``dask.dataframe.read_parquet``, DuckDB, pandas and polars read the directories.
* **One progress display.** Each partition's batch sends its snapshot to the client through the
  scheduler (``Worker.log_event``) at most every ``PROGRESS_EVERY`` seconds; the client adds them
  up into one display (:func:`plextera_data.progress.open_progress`).

dask and distributed are imported here only, never by ``import plextera_data``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import html
import json
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from plextera_data import errors
from plextera_data._loop import run_sync
from plextera_data._version import __version__
from plextera_data.batch import PlanOptions
from plextera_data.client import AsyncClient
from plextera_data.flatten import flatten
from plextera_data.ledger import SUBMISSION_UNCERTAIN
from plextera_data.progress import FailureGroup, PacingState, Snapshot, open_progress
from plextera_data.retry import DEFAULT_RETRY_POLICY, RetryPolicy, parse_retry_after
from plextera_data.rows import as_frame
from plextera_data.submit import submit as submit_frame
from plextera_data.tables import Tables, schema_for

__all__ = ["MANIFEST", "Job", "PartitionResult", "journal_path", "submit"]

#: The file in ``journal_dir`` that records the job's workflow and partitions.
MANIFEST = "plextera-job.json"
#: Seconds a partition keeps an unused lease before giving it back to the cluster.
LEASE_IDLE = 0.25
#: Seconds a lease is held at most before it goes back to the cluster (so partitions share).
LEASE_HOLD = 1.0
#: Seconds between two readings of the cluster-wide pause after a 429.
PAUSE_CHECK = 0.25
#: Seconds between two progress snapshots a partition sends to the client.
PROGRESS_EVERY = 0.5
#: Seconds a partition waits for another process to let go of its journal.
LOCK_TIMEOUT = 60.0

TABLE_NAMES = Tables.TABLE_NAMES
_INT_KEYS = "int64"
_TEXT_KEYS = "string"


def _distributed() -> Any:
    """The ``distributed`` package, or an error saying how to install it."""
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the extra is installed where tests run
        raise ImportError(
            "plextera_data.dask needs dask and distributed: pip install 'plextera-data[dask]'"
        ) from exc
    return distributed


def journal_path(journal_dir: str | os.PathLike[str], number: int) -> Path:
    """The journal of partition ``number``: ``journal_dir/part-0000n.plextera.db``."""
    return Path(journal_dir) / f"part-{number:05d}.plextera.db"


def _part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


# --------------------------------------------------------------------------- what travels


@dataclass(frozen=True)
class _Plan:
    """How rows become requests (``px.submit``'s arguments), sent to every partition."""

    workflow_id: str
    options: PlanOptions

    def check(self, frame: pd.DataFrame) -> None:
        """Plan ``frame``'s requests, raising what ``px.submit`` would raise before sending."""
        self.options.requests(frame, self.workflow_id)


class _ClientOptions:
    """Keyword arguments for :class:`~plextera_data.AsyncClient` on each worker; the repr never
    shows them (they may hold the API key)."""

    def __init__(self, options: Mapping[str, Any] | None) -> None:
        self.values: dict[str, Any] = dict(options or {})

    def __repr__(self) -> str:
        return f"<client options: {', '.join(sorted(self.values)) or 'from the environment'}>"


@dataclass(frozen=True)
class _Limit:
    """The names of the cluster-wide budget: its Semaphore and the metadata key of its pause."""

    semaphore: str
    pause: str
    max_in_flight: int


@dataclass(frozen=True)
class _Spec:
    """Everything a partition needs, besides its rows."""

    plan: _Plan
    journal_dir: str
    out: str
    client_options: _ClientOptions
    concurrency: int
    limit: _Limit
    topic: str
    key_type: str


@dataclass(frozen=True)
class _Checked:
    """What the pre-flight of one partition found."""

    number: int
    rows: int
    digest: str
    hashes: np.ndarray | None = None
    problem: tuple[str, list[tuple[Any, str | None, str]]] | None = None


@dataclass
class PartitionResult:
    """How one partition ended: its rows per status (``counts``), its journal and its files.

    ``error``: why the partition stopped (``None`` when its batch ran to the end).
    ``leases_taken``: leases of the cluster's budget taken from the scheduler (each a round
    trip; requests reuse a lease while it is busy).
    """

    number: int
    rows: int
    counts: dict[str, int] = field(default_factory=dict)
    journal: str = ""
    files: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    leases_taken: int = 0
    snapshot: dict[str, Any] | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- pre-flight


def _key_hashes(index: pd.Index) -> np.ndarray:
    hashed = pd.util.hash_pandas_object(index, index=False)
    return np.asarray(hashed, dtype=np.uint64)


def _check_partition(frame: Any, number: int, plan: _Plan, keep_hashes: bool) -> _Checked:
    """Pre-flight of one partition (on a worker): plan every row, hash the keys."""
    frame = as_frame(frame)
    if len(frame):
        try:
            plan.check(frame)
        except errors.InvalidInputError as exc:
            return _Checked(number, len(frame), "", problem=(str(exc).split("\n")[0], exc.problems))
    hashes = _key_hashes(frame.index)
    digest = hashlib.sha256(np.sort(hashes).tobytes()).hexdigest()
    return _Checked(number, len(frame), digest, hashes if keep_hashes else None)


def _keys_with_hashes(frame: Any, number: int, wanted: np.ndarray) -> list[tuple[Any, int]]:
    """``(key, partition)`` of each row whose key hash is in ``wanted`` (on a worker)."""
    frame = as_frame(frame)
    hit = np.isin(_key_hashes(frame.index), wanted)
    return [(key, number) for key in frame.index[hit].tolist()]


def _preflight(
    cluster: Any, parts: list[Any], plan: _Plan, known_divisions: bool
) -> list[_Checked]:
    """Check every partition and the index across them; raise before any request."""
    import dask

    tasks = [
        dask.delayed(_check_partition, pure=False)(part, number, plan, not known_divisions)
        for number, part in enumerate(parts)
    ]
    checked: list[_Checked] = cluster.gather(cluster.compute(tasks))
    for found in checked:
        if found.problem is not None:
            message, problems = found.problem
            raise errors.InvalidInputError(
                f"Partition {found.number}: {message} (nothing was sent)", problems
            )
    if known_divisions:
        # Sorted, known divisions put each key in one partition: unique within is unique across.
        return checked
    hashes = np.concatenate([c.hashes for c in checked if c.hashes is not None] or [np.array([])])
    values, counts = np.unique(hashes.astype(np.uint64), return_counts=True)
    repeated = values[counts > 1]
    if len(repeated):
        _raise_duplicates(cluster, parts, checked, repeated)
    return [replace(c, hashes=None) for c in checked]


def _raise_duplicates(
    cluster: Any, parts: list[Any], checked: list[_Checked], repeated: np.ndarray
) -> None:
    """Find the keys behind repeated hashes and raise, naming them and their partitions."""
    import dask

    suspects = [
        c.number for c in checked if c.hashes is not None and np.isin(c.hashes, repeated).any()
    ]
    tasks = [dask.delayed(_keys_with_hashes, pure=False)(parts[n], n, repeated) for n in suspects]
    where: dict[str, list[tuple[Any, int]]] = {}
    for found in cluster.gather(cluster.compute(tasks)):
        for key, number in found:
            where.setdefault(repr(key), []).append((key, number))
    problems = [
        (places[0][0], None, f"in partitions {sorted({n for _, n in places})}")
        for places in where.values()
        if len(places) > 1
    ]
    if not problems:  # 64-bit hashes of different keys met: no key is repeated after all
        return
    raise errors.InvalidInputError(
        f"The index of the Dask DataFrame repeats {len(problems)} keys across partitions; each "
        "row needs a key of its own, the same on every run (the journals and the tables know "
        "rows by it). read_csv and friends number each partition's rows from 0: set a column "
        "of unique ids as the index (ddf.set_index('id')) (nothing was sent)",
        problems,
    )


# --------------------------------------------------------------------------- the manifest


def _manifest(plan: _Plan, checked: Sequence[_Checked]) -> dict[str, Any]:
    return {
        "workflow_id": plan.workflow_id,
        "npartitions": len(checked),
        "partitions": [{"rows": c.rows, "keys_sha256": c.digest} for c in checked],
        "library_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _claim_journal_dir(journal_dir: Path, plan: _Plan, checked: Sequence[_Checked]) -> None:
    """Record the job's partitions in ``journal_dir``, or check a rerun has the same ones."""
    journal_dir.mkdir(parents=True, exist_ok=True)
    path = journal_dir / MANIFEST
    wanted = _manifest(plan, checked)
    if path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded.get("workflow_id") != plan.workflow_id:
            raise errors.InvalidInputError(
                f"{str(journal_dir)!r} holds the journals of workflow "
                f"{recorded.get('workflow_id')!r}, not {plan.workflow_id!r}: use another "
                "journal_dir for another workflow (nothing was sent)"
            )
        before = recorded.get("partitions", [])
        moved = [
            n
            for n, (old, new) in enumerate(zip(before, wanted["partitions"], strict=False))
            if old.get("keys_sha256") != new["keys_sha256"]
        ]
        if len(before) != len(checked) or moved:
            what = (
                f"{len(before)} partitions then, {len(checked)} now"
                if len(before) != len(checked)
                else f"partitions {moved[:10]} hold other rows than then"
            )
            raise errors.InvalidInputError(
                f"{str(journal_dir)!r} records this job with other partitions ({what}). A row "
                "in another partition would meet a journal that never saw its start, and be "
                "sent again: rerun with the same partitioning (same npartitions and divisions), "
                "or submit new rows with a new journal_dir (nothing was sent)"
            )
        return
    temporary = path.with_name(f".{MANIFEST}.{uuid.uuid4().hex}")
    temporary.write_text(json.dumps(wanted, indent=1), encoding="utf-8")
    os.replace(temporary, path)


# --------------------------------------------------------------------------- the cluster budget


class _ClusterLimit:
    """The cluster-wide budget as one partition sees it, on the partition's event loop.

    :meth:`acquire` before a request, :meth:`release` after its answer was read. Leases of the
    distributed Semaphore are taken one at a time (in a thread: the Semaphore's sync calls block)
    while requests wait, kept while in use, handed on to the next waiting request, and given back
    when idle for ``idle`` s or held for ``hold`` s. :meth:`on_rate_limited` publishes a pause
    that every partition waits out before its next request.
    """

    def __init__(
        self,
        semaphore: Any,
        pause: Any,
        *,
        idle: float = LEASE_IDLE,
        hold: float = LEASE_HOLD,
        check_every: float = PAUSE_CHECK,
    ) -> None:
        self._semaphore = semaphore
        self._pause = pause
        self._idle_after = idle
        self._hold = hold
        self._check_every = check_every
        self._idle: deque[tuple[float, float]] = deque()  # (acquired at, idle since)
        self._waiters: deque[asyncio.Future[float]] = deque()
        self._busy = 0
        self._held = 0
        self._fetcher: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._pause_until = 0.0  # wall clock (time.time()), comparable across processes
        self._closing = False
        #: Leases taken from the cluster (each a scheduler round trip, and one more to give
        #: it back).
        self.leases_taken = 0

    # ------------------------------------------------------------------ requests

    async def acquire(self) -> float:
        """Wait out a cluster-wide pause, then for a lease; returns the lease's token."""
        await self._wait_out_pause()
        self._start_housekeeping()
        if self._idle:
            acquired_at, _ = self._idle.pop()
            self._busy += 1
            return acquired_at
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._fetcher is None or self._fetcher.done():
            self._fetcher = asyncio.get_running_loop().create_task(self._fetch())
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed a lease as it was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, token: float) -> None:
        """A request is over: hand its lease to a waiting request, keep it, or give it back."""
        self._busy -= 1
        now = time.monotonic()
        if now - token > self._hold:
            self._give_back(1)
        elif not self._hand(token):
            self._idle.append((token, now))

    def on_rate_limited(self, seconds: float) -> None:
        """A 429 asked for ``seconds``: pause every partition of the job that long."""
        until = time.time() + seconds
        if until <= self._pause_until:
            return
        self._pause_until = until
        self._in_background(asyncio.to_thread(self._publish_pause, until))

    # ------------------------------------------------------------------ leases

    def _hand(self, token: float) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._busy += 1
                waiter.set_result(token)
                return True
        return False

    async def _fetch(self) -> None:
        """Take leases from the cluster, one at a time, while requests wait for one."""
        while any(not w.done() for w in self._waiters):
            try:
                got = await asyncio.to_thread(self._semaphore.acquire, timeout=0.5)
            except Exception as exc:  # the scheduler is gone: fail the requests, do not hang
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                self._waiters.clear()
                return
            if not got:
                continue
            self._held += 1
            self.leases_taken += 1
            now = time.monotonic()
            if self._closing or not self._hand(now):
                self._idle.append((now, now))

    def _give_back(self, count: int) -> None:
        for _ in range(count):
            self._held -= 1
            self._in_background(asyncio.to_thread(self._semaphore.release))

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ the pause

    def _publish_pause(self, until: float) -> None:
        current = self._read_pause()
        if until > current:
            self._pause.set(until)

    def _read_pause(self) -> float:
        try:
            return float(self._pause.get())
        except Exception:  # the scheduler is away: no news of a pause is no pause
            return 0.0

    async def _wait_out_pause(self) -> None:
        # A loop, not an Event: another partition's 429 may move the end while this one waits.
        while (left := self._pause_until - time.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)

    # ------------------------------------------------------------------ housekeeping

    def _start_housekeeping(self) -> None:
        if self._housekeeper is None and not self._closing:
            self._housekeeper = asyncio.get_running_loop().create_task(self._housekeeping())

    async def _housekeeping(self) -> None:
        """Give idle and old leases back; read the cluster's pause."""
        while True:
            now = time.monotonic()
            keep: deque[tuple[float, float]] = deque()
            for acquired_at, idle_since in self._idle:
                if now - idle_since > self._idle_after or now - acquired_at > self._hold:
                    self._give_back(1)
                else:
                    keep.append((acquired_at, idle_since))
            self._idle = keep
            until = await asyncio.to_thread(self._read_pause)
            self._pause_until = max(self._pause_until, until)
            await asyncio.sleep(self._check_every)

    async def aclose(self) -> None:
        """Stop the housekeeping and give every lease back (call when no request is left)."""
        self._closing = True
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        if self._fetcher is not None:
            await self._fetcher  # at most one acquire in flight; its lease is given back below
        self._idle.clear()
        self._give_back(self._held)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


class _SentLog:
    """The ``X-Request-Id`` of every POST of a partition that left for the API, written (and
    handed to the OS) just before it leaves, in ``part-0000n.plextera.sent`` beside the journal.

    A start waits for a lease of the cluster's budget *after* the journal marked it
    ``SUBMITTING``; if the worker dies then, the journal cannot tell it from a start that was
    in flight. This log can: a ``SUBMISSION_UNCERTAIN`` row whose request id it lacks never
    left, and is sent on the rerun (see :func:`_send_the_unsent`).
    """

    def __init__(self, journal: Path) -> None:
        self.path = journal.with_suffix(".sent")
        self._file = open(self.path, "a", encoding="ascii")  # noqa: SIM115 - closed by close()

    def note(self, request_id: str) -> None:
        """``request_id`` is about to leave."""
        self._file.write(request_id + "\n")
        self._file.flush()

    def ids(self) -> set[str]:
        """Every request id noted so far, by this process or an earlier one."""
        self._file.flush()
        return set(self.path.read_text(encoding="ascii").split())

    def close(self) -> None:
        self._file.close()


class _LimitedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that holds a lease of the cluster's budget around every request
    (until its answer is read), notes each POST in the partition's :class:`_SentLog` as it
    leaves, and reports 429s to the budget."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        limit: _ClusterLimit,
        sent: _SentLog,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._sent = sent
        #: Caps a 429's ``Retry-After`` (the client's policy).
        self.policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        token = await self._limit.acquire()
        try:
            if request.method == "POST":
                self._sent.note(request.headers.get("x-request-id", ""))
            response = await self._inner.handle_async_request(request)
            try:
                body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            finally:
                await response.aclose()
        finally:
            self._limit.release(token)
        if response.status_code == 429:
            seconds = self.policy.capped_retry_after(
                parse_retry_after(response.headers.get("retry-after"))
            )
            if seconds:
                self._limit.on_rate_limited(seconds)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


# --------------------------------------------------------------------------- progress


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else repr(value)


def _snapshot_payload(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as plain data (msgpack can carry it)."""
    payload: dict[str, Any] = {
        f.name: getattr(snapshot, f.name)
        for f in fields(Snapshot)
        if f.name not in ("recent_failures", "failures", "pacing")
    }
    payload["failures"] = [
        {
            "kind": g.kind,
            "code": g.code,
            "count": g.count,
            "row_keys": [_plain(k) for k in g.row_keys],
            "message": g.message,
            "run_id": g.run_id,
        }
        for g in snapshot.failures
    ]
    pacing = snapshot.pacing
    payload["pacing"] = (
        None if pacing is None else {f.name: getattr(pacing, f.name) for f in fields(PacingState)}
    )
    return payload


def _snapshot_from(payload: Mapping[str, Any]) -> Snapshot:
    values = dict(payload)
    values["failures"] = tuple(
        FailureGroup(**{**g, "row_keys": tuple(g["row_keys"])}) for g in values.get("failures", ())
    )
    pacing = values.get("pacing")
    values["pacing"] = None if pacing is None else PacingState(**pacing)
    return Snapshot(**values)


class _Forwarder:
    """A progress reporter on a worker: sends the partition's snapshots to the client."""

    def __init__(self, worker: Any, topic: str, number: int, every: float = PROGRESS_EVERY) -> None:
        self._worker = worker
        self._topic = topic
        self._number = number
        self._every = every
        self._sent = -float("inf")
        self.last: Snapshot | None = None

    def update(self, snapshot: Snapshot) -> None:
        self.last = snapshot
        now = time.monotonic()
        if now - self._sent >= self._every:
            self._sent = now
            self._send(snapshot)

    def close(self, snapshot: Snapshot) -> None:
        self.last = snapshot
        self._send(snapshot)

    def _send(self, snapshot: Snapshot) -> None:
        payload = {"partition": self._number, "snapshot": _snapshot_payload(snapshot)}
        with contextlib.suppress(Exception):  # a display must never stop a batch
            self._worker.log_event(self._topic, payload)


_COUNTED = (
    "not_submitted",
    "submitting",
    "uncertain",
    "submit_failed",
    "running",
    "completed",
    "failed",
    "closed",
    "poll_errors",
)


def _merge_failures(snapshots: Sequence[Snapshot]) -> tuple[FailureGroup, ...]:
    groups: dict[tuple[str, str | None], FailureGroup] = {}
    for snapshot in snapshots:
        for group in snapshot.failures:
            seen = groups.get((group.kind, group.code))
            if seen is None:
                groups[group.kind, group.code] = group
            else:
                groups[group.kind, group.code] = replace(
                    seen,
                    count=seen.count + group.count,
                    row_keys=(seen.row_keys + group.row_keys)[:5],
                    message=group.message or seen.message,
                    run_id=group.run_id or seen.run_id,
                )
    return tuple(sorted(groups.values(), key=lambda g: -g.count))


def _merge_pacing(snapshots: Sequence[Snapshot], max_in_flight: int) -> PacingState:
    states = [s.pacing for s in snapshots if s.pacing is not None]
    rates = [p.requests_per_second for p in states if p.requests_per_second is not None]
    return PacingState(
        in_flight=sum(p.in_flight for p in states),
        limit=min(max_in_flight, sum(p.limit for p in states)) if states else max_in_flight,
        max_in_flight=max_in_flight,
        paused_for=max((p.paused_for for p in states), default=0.0),
        rate_limited=sum(p.rate_limited for p in states),
        requests_per_second=sum(rates) if rates else None,
        backing_off=sum(p.backing_off for p in states),
    )


class _JobProgress:
    """The latest snapshot of every partition (fed from the scheduler's events), added up."""

    def __init__(self, rows: Sequence[int], workflow_id: str, journal_dir: str, cap: int) -> None:
        self._rows = list(rows)
        self._workflow_id = workflow_id
        self._journal_dir = journal_dir
        self._cap = cap
        self._latest: dict[int, Snapshot] = {}
        self._final: set[int] = set()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def on_event(self, event: tuple[float, Mapping[str, Any]]) -> None:
        """A partition's snapshot arrived (called on the distributed client's thread)."""
        _, message = event
        with contextlib.suppress(Exception):
            number = int(message["partition"])
            snapshot = _snapshot_from(message["snapshot"])
            with self._lock:
                if number not in self._final:
                    self._latest[number] = snapshot

    def finished(self, number: int, snapshot: Snapshot | None) -> None:
        """A partition's task ended: its last snapshot stands."""
        with self._lock:
            self._final.add(number)
            if snapshot is not None:
                self._latest[number] = snapshot

    def snapshot(self, phase: str | None = None) -> Snapshot:
        """The whole job as one snapshot."""
        with self._lock:
            latest = dict(self._latest)
        counts: dict[str, Any] = dict.fromkeys(_COUNTED, 0)
        for number, rows in enumerate(self._rows):
            seen = latest.get(number)
            if seen is None:
                counts["not_submitted"] += rows
                continue
            for name in _COUNTED:
                counts[name] += getattr(seen, name)
        snapshots = list(latest.values())
        if phase is None:
            busy = counts["not_submitted"] + counts["submitting"]
            phase = "submitting" if busy else "polling"
        return Snapshot(
            total=sum(self._rows),
            elapsed=time.monotonic() - self._started,
            phase=phase,
            failures=_merge_failures(snapshots),
            workflow_id=self._workflow_id,
            journal=self._journal_dir,
            pacing=_merge_pacing(snapshots, self._cap),
            **counts,
        )


# --------------------------------------------------------------------------- one partition


@contextlib.contextmanager
def _exclusive(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``path.lock`` exclusively (POSIX ``flock``; released by the kernel if the process
    dies), so that two processes never run one partition's journal at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as px.submit has none
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise errors.JournalError(
                        f"The journal {str(path)!r} has been in use by {holder} for "
                        f"{timeout:g} s; is another job running this partition?"
                    ) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_tables(tables: Tables, spec: _Spec, number: int) -> dict[str, str]:
    """Write the partition's three tables into the datasets, each file in place at once."""
    key_type = pa.int64() if spec.key_type == _INT_KEYS else pa.string()
    written: dict[str, str] = {}
    for name in TABLE_NAMES:
        directory = Path(spec.out) / name
        directory.mkdir(parents=True, exist_ok=True)
        schema = schema_for(name, key_type)
        table = pa.Table.from_pandas(getattr(tables, name), schema=schema, preserve_index=False)
        path = directory / _part_name(number)
        temporary = directory / f".{path.name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table.replace_schema_metadata(None), temporary)
        os.replace(temporary, path)
        written[name] = str(path)
    return written


def _run_partition(frame: Any, number: int, spec: _Spec) -> PartitionResult:
    """Run one partition as its own batch (on a worker) and write its tables."""
    distributed = _distributed()
    frame = as_frame(frame)
    path = journal_path(spec.journal_dir, number)
    result = PartitionResult(number=number, rows=len(frame), journal=str(path))
    if not (Path(spec.journal_dir) / MANIFEST).exists():
        result.error_type = "ConfigurationError"
        result.error = (
            f"This worker ({socket.gethostname()}) does not see {spec.journal_dir!r}/{MANIFEST}, "
            "which the client wrote: journal_dir (and out) must be a directory that the client "
            "and every worker share"
        )
        return result
    if not len(frame):
        result.files = _write_tables(flatten([]), spec, number)
        return result
    worker = distributed.get_worker()
    with _exclusive(path):
        semaphore = distributed.Semaphore(
            max_leases=spec.limit.max_in_flight, name=spec.limit.semaphore
        )
        pause = _SharedPause(distributed.get_client(), spec.limit.pause)
        limit = _ClusterLimit(semaphore, pause)
        reporter = _Forwarder(worker, spec.topic, number)
        try:
            batch = _submit_partition(frame, number, spec, limit, reporter)
        except errors.PlexteraError as exc:
            result.error, result.error_type = str(exc), type(exc).__name__
            batch = getattr(exc, "batch", None)
        if batch is not None:
            result.counts = dict(batch.counts)
            if result.error is None:
                result.files = _write_tables(batch.tables(), spec, number)
            if batch.journal is not None:
                batch.journal.close()
        result.leases_taken = limit.leases_taken
        if reporter.last is not None:
            result.snapshot = _snapshot_payload(reporter.last)
    return result


def _submit_partition(
    frame: pd.DataFrame, number: int, spec: _Spec, limit: _ClusterLimit, reporter: _Forwarder
) -> Any:
    """``px.submit(frame, ..., wait=True)`` with a client whose every request is in the budget,
    then the rows a dead worker left uncertain but never sent, sent and waited for."""
    journal = journal_path(spec.journal_dir, number)
    sent = _SentLog(journal)
    inner = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=spec.limit.max_in_flight,
            max_keepalive_connections=spec.limit.max_in_flight,
        )
    )
    transport = _LimitedTransport(inner, limit, sent)
    aclient = AsyncClient(**spec.client_options.values, transport=transport)
    transport.policy = aclient.retry  # a 429's Retry-After is capped as the client caps it
    plan, options = spec.plan, spec.plan.options
    try:
        batch = submit_frame(
            frame,
            plan.workflow_id,
            client=aclient,
            body=options.body,
            columns=options.columns,
            files=options.files,
            upload=options.upload,
            journal=journal,
            concurrency=spec.concurrency,
            progress=reporter,
            wait=True,
            sep=options.sep,
        )
        _send_the_unsent(batch, sent, reporter)
        return batch
    finally:
        run_sync(_close(aclient, limit))
        sent.close()


def _send_the_unsent(batch: Any, sent: _SentLog, reporter: _Forwarder) -> None:
    """Re-send the ``SUBMISSION_UNCERTAIN`` rows whose request never left (no trace in the sent
    log: the process died while they waited for a lease), then wait for their runs."""
    status = batch.status
    uncertain = status[status["status"] == SUBMISSION_UNCERTAIN]
    if uncertain.empty:
        return
    left = sent.ids()
    unsent = [
        key
        for key, request_id in uncertain["request_id"].items()
        if isinstance(request_id, str) and request_id not in left
    ]
    if unsent:
        batch.resubmit(unsent)
        batch.wait(progress=reporter)


async def _close(aclient: AsyncClient, limit: _ClusterLimit) -> None:
    await aclient.aclose()
    await limit.aclose()


# --------------------------------------------------------------------------- the job


class Job:
    """A Dask DataFrame submitted partition by partition (made by :func:`submit`).

    ``job.wait()`` blocks until every partition is done (with one progress display);
    ``job.partitions`` and ``job.counts`` say where it stands; ``job.paths`` and
    :meth:`read` lead to the tables.
    """

    def __init__(
        self,
        *,
        cluster: Any,
        futures: list[Any],
        spec: _Spec,
        rows: list[int],
        progress: _JobProgress,
        owns_limit: bool,
    ) -> None:
        self._cluster = cluster
        self._futures = futures
        self._spec = spec
        self._rows = rows
        self._progress = progress
        self._owns_limit = owns_limit
        self._results: dict[int, PartitionResult] = {}
        self._closed = False

    # ------------------------------------------------------------------ what it holds

    @property
    def workflow_id(self) -> str:
        """The workflow every row runs."""
        return self._spec.plan.workflow_id

    @property
    def journal_dir(self) -> Path:
        """The directory of the partitions' journals."""
        return Path(self._spec.journal_dir)

    @property
    def out(self) -> Path:
        """The directory of the three datasets."""
        return Path(self._spec.out)

    @property
    def paths(self) -> dict[str, Path]:
        """``{"runs": out/runs, "steps": out/steps, "outputs": out/outputs}``."""
        return {name: self.out / name for name in TABLE_NAMES}

    @property
    def npartitions(self) -> int:
        """Partitions of the input."""
        return len(self._rows)

    @property
    def results(self) -> dict[int, PartitionResult]:
        """The :class:`PartitionResult` of every partition that ended, by number."""
        self._collect()
        return dict(self._results)

    @property
    def done(self) -> bool:
        """True when every partition's task ended."""
        return all(f.done() for f in self._futures)

    @property
    def partitions(self) -> pd.DataFrame:
        """One row per partition: ``rows``, ``state`` (``pending``, ``done``, ``error``),
        ``journal``, one column per row status, ``error``."""
        self._collect()
        records = []
        for number, rows in enumerate(self._rows):
            found = self._results.get(number)
            record: dict[str, Any] = {"partition": number, "rows": rows}
            if found is None:
                record["state"] = "pending"
            else:
                record["state"] = "error" if found.error else "done"
                record.update(found.counts)
                record["error"] = found.error
            record["journal"] = str(journal_path(self._spec.journal_dir, number))
            records.append(record)
        table = pd.DataFrame.from_records(records).set_index("partition")
        statuses = [c for c in table.columns if c not in ("rows", "state", "journal", "error")]
        table[statuses] = table[statuses].fillna(0).astype("int64")
        if "error" not in table.columns:
            table["error"] = None
        return table[["rows", "state", *statuses, "error", "journal"]]

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status over the partitions that ended (the others count as
        ``NOT_SUBMITTED``), most common first."""
        self._collect()
        total: dict[str, int] = {}
        for number, rows in enumerate(self._rows):
            found = self._results.get(number)
            for status, count in (found.counts if found else {"NOT_SUBMITTED": rows}).items():
                total[status] = total.get(status, 0) + count
        return dict(sorted(total.items(), key=lambda item: -item[1]))

    def snapshot(self, phase: str | None = None) -> Snapshot:
        """The whole job as one :class:`~plextera_data.progress.Snapshot`."""
        return self._progress.snapshot(phase)

    def read(self, table: str) -> Any:
        """One of the three datasets as a Dask DataFrame (``dask.dataframe.read_parquet``)."""
        import dask.dataframe as dd

        if table not in TABLE_NAMES:
            raise ValueError(f"table must be one of {TABLE_NAMES}, got {table!r}")
        return dd.read_parquet(str(self.paths[table]))

    # ------------------------------------------------------------------ waiting

    def wait(self, progress: Any = True, timeout: float | None = None) -> Job:
        """Block until every partition is done, with one progress display for the job.

        Raises the error of the first partition that failed (the others go on; their journals
        keep what they did), :class:`~plextera_data.errors.BatchTimeoutError` after ``timeout``
        seconds (call ``wait`` again to go on).
        """
        distributed = _distributed()
        reporter = open_progress(progress, total=sum(self._rows))
        deadline = None if timeout is None else time.monotonic() + timeout
        phase = "stopped"
        try:
            while True:
                self._collect()
                reporter.update(self.snapshot())
                failed = [r for r in self._results.values() if r.error]
                if failed:
                    raise _partition_error(failed[0], len(failed))
                pending = [f for f in self._futures if not f.done()]
                if not pending:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    left = sum(
                        self._rows[n] for n in range(len(self._rows)) if n not in self._results
                    )
                    raise errors.BatchTimeoutError(
                        f"{len(pending)} of {len(self._futures)} partitions still running after "
                        f"{timeout:g} s; call job.wait() again to go on",
                        still_running=left,
                    )
                with contextlib.suppress(TimeoutError):
                    distributed.wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
            phase = "done"
        finally:
            reporter.close(self.snapshot(phase))
            if self.done:
                self._release_limit()
        return self

    def _collect(self) -> None:
        for number, future in enumerate(self._futures):
            if number in self._results or not future.done():
                continue
            if future.status == "error":
                exc = future.exception()
                result = PartitionResult(
                    number=number,
                    rows=self._rows[number],
                    journal=str(journal_path(self._spec.journal_dir, number)),
                    error=f"{type(exc).__name__}: {exc}",
                    error_type=type(exc).__name__,
                )
            elif future.status == "cancelled":
                result = PartitionResult(number=number, rows=self._rows[number], error="cancelled")
            else:
                result = future.result()
            self._results[number] = result
            snapshot = _snapshot_from(result.snapshot) if result.snapshot else None
            self._progress.finished(number, snapshot)

    def cancel(self) -> None:
        """Cancel the partitions not yet started (running ones end their batch; a rerun goes on
        from their journals)."""
        self._cluster.cancel([f for f in self._futures if not f.done()])

    def _release_limit(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._cluster.unsubscribe_topic(self._spec.topic)
        if self._owns_limit:
            distributed = _distributed()
            limit = self._spec.limit
            with contextlib.suppress(Exception):
                distributed.Semaphore(
                    max_leases=limit.max_in_flight,
                    name=limit.semaphore,
                    scheduler_rpc=self._cluster.scheduler,
                    loop=self._cluster.loop,
                ).close()

    # ------------------------------------------------------------------ display

    def __repr__(self) -> str:
        parts = ", ".join(f"{status}: {n}" for status, n in self.counts.items())
        return (
            f"<Job {sum(self._rows)} rows of workflow {self.workflow_id!r} in "
            f"{self.npartitions} partitions, tables in {str(self.out)!r}; {parts}>"
        )

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(status)}</td><td style='text-align:right'>{n}</td></tr>"
            for status, n in self.counts.items()
        )
        return (
            f"<div><b>Job</b>: {sum(self._rows)} rows of workflow "
            f"{html.escape(self.workflow_id)!r} in {self.npartitions} partitions; journals in "
            f"<code>{html.escape(str(self.journal_dir))}</code>, tables in "
            f"<code>{html.escape(str(self.out))}</code>"
            f"<table><thead><tr><th>status</th><th>rows</th></tr></thead>"
            f"<tbody>{cells}</tbody></table></div>"
        )


def _partition_error(result: PartitionResult, failed: int) -> errors.PlexteraError:
    more = f" ({failed - 1} more partitions failed too)" if failed > 1 else ""
    message = (
        f"Partition {result.number} stopped: {result.error}{more}. Its journal "
        f"{result.journal!r} keeps what it did: fix the cause and call pxd.submit(...) again "
        "with the same journal_dir to go on."
    )
    if result.error_type == "ConfigurationError":
        return errors.ConfigurationError(message)
    return errors.PlexteraError(message)


# --------------------------------------------------------------------------- the call


def _check_arguments(
    ddf: Any, workflow_id: str, max_in_flight: int, concurrency: int, options: _ClientOptions
) -> None:
    if not hasattr(ddf, "to_delayed") or not hasattr(ddf, "npartitions"):
        raise TypeError(
            f"pxd.submit takes a Dask DataFrame, got {type(ddf).__name__}; for a pandas "
            "DataFrame use px.submit, or dask.dataframe.from_pandas(df, npartitions=...)"
        )
    if not isinstance(workflow_id, str) or not workflow_id:
        raise errors.InvalidInputError(
            f"The workflow id must be a non-empty string, got {workflow_id!r}"
        )
    for name, value in (("max_in_flight", max_in_flight), ("concurrency", concurrency)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if "transport" in options.values:
        raise errors.ConfigurationError(
            "client_options cannot hold a transport: it does not travel to the workers, and "
            "each worker's requests go through the cluster's budget. Pass api_key, base_url and "
            "the like (for the simulator: server.client_options() of a served one)"
        )
    AsyncClient(**options.values)  # a bad base URL or option fails here, before any request


class _SharedPause:
    """The end of the cluster-wide pause (wall clock), kept in the scheduler's metadata."""

    def __init__(self, cluster: Any, key: str) -> None:
        self._cluster = cluster
        self._key = key

    def get(self) -> float:
        return float(self._cluster.get_metadata(["plextera-data", self._key], default=0.0))

    def set(self, until: float) -> None:
        self._cluster.set_metadata(["plextera-data", self._key], until)


def _open_limit(cluster: Any, max_in_flight: int, limit_name: str | None) -> tuple[_Limit, bool]:
    """Register the job's Semaphore; ``True`` when it is this job's own (no ``limit_name``)."""
    distributed = _distributed()
    owns = limit_name is None
    name = limit_name or f"plextera-data-{uuid.uuid4().hex}"
    limit = _Limit(
        semaphore=f"{name}-in-flight", pause=f"{name}-pause", max_in_flight=max_in_flight
    )
    semaphore = distributed.Semaphore(
        max_leases=max_in_flight,
        name=limit.semaphore,
        scheduler_rpc=cluster.scheduler,
        loop=cluster.loop,
    )
    try:
        semaphore.register()
    except ValueError:
        raise ValueError(
            f"limit_name={limit_name!r} is already in use on this cluster with another "
            "max_in_flight: pass the same max_in_flight to share its budget, or another "
            "limit_name"
        ) from None
    return limit, owns


def submit(
    ddf: Any,
    workflow_id: str,
    *,
    journal_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    max_in_flight: int = 16,
    client_options: Mapping[str, Any] | None = None,
    concurrency: int = 16,
    progress: Any = True,
    wait: bool = True,
    body: Callable[[pd.Series], Mapping[str, Any]] | None = None,
    columns: Sequence[Any] | None = None,
    files: Sequence[Any] | None = None,
    upload: Sequence[Any] | None = None,
    sep: str = ".",
    dask_client: Any = None,
    limit_name: str | None = None,
) -> Job:
    """Start one run of ``workflow_id`` per row of the Dask DataFrame ``ddf``, partition by
    partition on the cluster of ``dask_client`` (default: the current ``distributed.Client``).

    The index of ``ddf`` is each row's key: unique across partitions and the same on every run
    (a column of ids set as index, not the per-partition numbering ``read_csv`` gives); checked
    before any request, with every row (see :func:`plextera_data.submit`; ``body``, ``columns``,
    ``files``, ``upload`` and ``sep`` mean what they mean there).

    Partition ``n`` runs as one batch with its journal in ``journal_dir`` (see
    :func:`journal_path`) and writes its tables to ``out/runs/``, ``out/steps/`` and
    ``out/outputs/`` (``part-0000n.parquet``). Calling ``submit`` again with the same
    ``journal_dir`` and partitions sends only the rows no journal recorded.

    ``max_in_flight``: HTTP requests in flight at once over the whole cluster.
    ``concurrency``: starts in flight at most per partition (``px.submit``'s ``concurrency``).
    ``client_options``: keyword arguments for :class:`~plextera_data.AsyncClient` on each worker
    (``api_key``, ``base_url``, ``timeout``, ``retry``, ``clock_rate``...); by default each
    worker reads ``PLEXTERA_API_KEY`` and ``PLEXTERA_BASE_URL`` from its environment.
    ``limit_name``: share one budget (and 429 pauses) between the jobs that pass the same name;
    by default the budget is this job's own. ``wait=False`` returns at once: call
    :meth:`Job.wait`. ``progress`` as in ``px.submit``.
    """
    distributed = _distributed()
    options = _ClientOptions(client_options)
    _check_arguments(ddf, workflow_id, max_in_flight, concurrency, options)
    cluster = dask_client if dask_client is not None else distributed.get_client()
    plan = _Plan(workflow_id, PlanOptions(body, columns, files, upload, sep))
    parts = ddf.to_delayed()
    checked = _preflight(cluster, parts, plan, bool(ddf.known_divisions))
    journals = Path(journal_dir).resolve()  # the workers' working directory may differ
    _claim_journal_dir(journals, plan, checked)
    limit, owns = _open_limit(cluster, max_in_flight, limit_name)
    spec = _Spec(
        plan=plan,
        journal_dir=str(journals),
        out=str(Path(out).resolve()),
        client_options=options,
        concurrency=concurrency,
        limit=limit,
        topic=f"plextera-data-progress-{uuid.uuid4().hex}",
        key_type=_INT_KEYS if pd.api.types.is_integer_dtype(ddf.index.dtype) else _TEXT_KEYS,
    )
    rows = [c.rows for c in checked]
    state = _JobProgress(rows, workflow_id, str(journals), max_in_flight)
    cluster.subscribe_topic(spec.topic, state.on_event)
    import dask

    tasks = [
        dask.delayed(_run_partition, pure=False)(part, number, spec)
        for number, part in enumerate(parts)
    ]
    futures = cluster.compute(tasks)
    job = Job(
        cluster=cluster, futures=futures, spec=spec, rows=rows, progress=state, owns_limit=owns
    )
    if wait:
        job.wait(progress=progress)
    return job
