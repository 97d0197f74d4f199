"""Poll every run of a batch together, politely: the :class:`Scheduler` behind ``batch.wait()``.

One scheduler per batch runs on one event loop. It keeps a heap of ``(next poll time, row)`` and
sends each due GET through the batch's :class:`~plextera_data.pacing.Pacer` (a cap on requests
in flight and per second, and one shared pause after a 429).

When to poll a run next (all times in the run's own seconds; ``time_scale`` converts them to the
client's clock: 1, or ``1 / speed`` for a sped-up simulator, which says its speed in every
answer):

* **From the run itself.** After ``k`` of ``n`` steps the run's ``updatedAt`` tells when step
  ``k`` ended, so ``t_k / (fraction of a run spent in the first k steps)`` predicts when it ends.
  That fraction is learned from the runs of this batch that already finished (the batch is many
  runs of one workflow), and is ``k / n`` until three have.
* **From the batch.** Before any step ends, the durations of finished runs are the prior: the
  next poll goes at the ``quantile`` (35th percentile by default) of the finished durations
  still longer than this run's elapsed time. Those are a censored sample (while runs are
  running, the finished ones are the short ones), so when none is longer, a one-step run is
  overdue only if the Kaplan-Meier share of runs lasting longer (the running runs counted as
  lasting at least as long as they had run when last seen) is under 10 %; otherwise the rate at
  which runs ended so far gives the expected time left, and the next poll goes at the geometric
  mean of that and ``0.75 * min_interval``. A run of several steps is then followed up as
  overdue (its next step boundary says more).
* **Without either**, the interval starts at ``min_interval`` (2 s) and grows by ``backoff`` (x2)
  up to ``max_interval`` (30 s). While the batch has nothing to learn from, only one new row in
  ten is polled at ``min_interval``; the others decide then, from what those told, and are
  polled at once only if that is still nothing. A run past its predicted end is polled at a
  short interval that grows again (``overdue_interval``, 0.5 s, x2). Every interval gets a
  little jitter.
* A terminal run is never polled again. A 429 pauses every request of the batch for its
  ``Retry-After`` (the pacer), then the batch goes on slower and recovers gradually. 5xx, timeouts,
  dropped connections and malformed answers are retried as the client's
  :class:`~plextera_data.retry.RetryPolicy` says (its backoff, ``Retry-After`` when given); once
  its ``max_retries`` are spent in a row (or the error is not one to retry), a run is polled
  every ``slow_interval`` and reported as failing to poll, with its last error, never dropped.

The scheduler is an engine: it reads the rows to poll from the batch's
:class:`~plextera_data.ledger.Ledger` and tells it every answer; it knows nothing of the display.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
import random
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import numpy as np
from sortedcontainers import SortedList

from plextera_data import errors
from plextera_data.client import AsyncClient
from plextera_data.clock import ApiClock
from plextera_data.ledger import Ledger, RowState
from plextera_data.models import Run, is_terminal
from plextera_data.pacing import Pacer
from plextera_data.retry import RetryPolicy, is_retryable_for_get

__all__ = ["DurationModel", "PollSettings", "Scheduler"]

logger = logging.getLogger("plextera_data")

#: Before the batch has finished runs to learn from, one row in this many is polled at
#: ``min_interval``; the others wait for what those tell (see ``Scheduler.pick_up``).
_PROBE_EVERY = 10

#: Errors after which polling cannot succeed for any run: raised at once.
_FATAL = (errors.AuthenticationError, errors.PermissionDeniedError)

#: PollSettings fields kept for old code; the client's RetryPolicy decides these now.
_DEPRECATED = {
    "slow_after_failures": "the client's RetryPolicy(max_retries=...) (failures = retries + 1)",
    "max_retry_after": "the client's RetryPolicy(max_retry_after=...)",
}


@dataclass(frozen=True)
class PollSettings:
    """How the scheduler paces its polls. Pass any field to ``wait``/``watch`` as a keyword.

    Intervals are in seconds of the run's clock; ``time_scale`` (client seconds per run second)
    converts them, for a simulator that runs faster than real time (``1 / speed``). ``None``
    (the default): ``1 / client.clock_rate``. ``max_in_flight`` and ``max_per_second`` cap this
    call's GETs (on top of the batch's pacer; a later call is not affected).
    ``slow_after_failures`` and ``max_retry_after`` are deprecated: the client's
    :class:`~plextera_data.retry.RetryPolicy` decides them. ``event_grace``: with events
    (``wait(events=...)``), run seconds every poll waits past its planned time, so that a run's
    own event finishes it first (a missed event costs that delay, never the run).
    """

    min_interval: float = 2.0
    max_interval: float = 30.0
    backoff: float = 2.0
    jitter: float = 0.1
    overdue_interval: float = 0.5
    finish_margin: float = 0.1
    quantile: float = 0.35
    slow_after_failures: int | None = None
    slow_interval: float = 60.0
    max_retry_after: float | None = None
    time_scale: float | None = None
    max_in_flight: int | None = None
    max_per_second: float | None = None
    seed: int | None = None
    event_grace: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval (seconds)")
        if self.backoff < 1:
            raise ValueError(f"backoff must be >= 1, got {self.backoff}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.time_scale is not None and self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.max_per_second is not None and self.max_per_second <= 0:
            raise ValueError(f"max_per_second must be > 0, got {self.max_per_second}")

    @classmethod
    def from_limits(cls, limits: dict[str, Any]) -> PollSettings:
        """Settings from ``wait(**limits)``; an unknown name raises ``TypeError`` listing the
        known ones."""
        base = limits.pop("settings", None) or cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(limits) - known)
        if unknown:
            raise TypeError(
                f"unknown polling option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        for name in sorted(set(limits) & set(_DEPRECATED)):
            warnings.warn(
                f"the polling option {name} is deprecated: use {_DEPRECATED[name]}",
                DeprecationWarning,
                stacklevel=4,
            )
        return replace(base, **limits) if limits else base

    def retry_policy(self, policy: RetryPolicy) -> RetryPolicy:
        """The client's policy, with the deprecated settings applied when they are given."""
        changes: dict[str, Any] = {}
        if self.slow_after_failures is not None:
            changes["max_retries"] = max(0, self.slow_after_failures - 1)
        if self.max_retry_after is not None:
            changes["max_retry_after"] = self.max_retry_after
        return replace(policy, **changes) if changes else policy


# --------------------------------------------------------------------------- prediction


def _quantile(values: Sequence[float], q: float, start: int = 0) -> float:
    """The ``q`` quantile (linear interpolation) of ``values[start:]``; ``values`` is sorted.

    Indexes into ``values`` instead of slicing it: O(log n) on a ``SortedList``."""
    last = len(values) - start - 1
    position = q * last
    low = int(position)
    high = min(low + 1, last)
    a, b = values[start + low], values[start + high]
    return a + (b - a) * (position - low)


#: From this many finished runs on, the Kaplan-Meier curve is computed with numpy; below, a
#: loop costs less. Measured between polls (caches cold from the client's work), not in a tight
#: loop: numpy's calls then cost about 200 us, the loop about 1 us per finished run.
_VECTOR_FROM = 1024


def _kaplan_meier(
    durations: Sequence[float], censored: Collection[float]
) -> tuple[list[float], list[float]]:
    """The Kaplan-Meier share of runs lasting longer than each finished duration (``durations``
    sorted; ``censored``, in any order: each running run's elapsed time when last seen).

    At the ``i``-th duration ``d`` the runs at risk are the ``n - i`` finished ones not shorter
    and the running ones seen at ``d`` or later; the curve is the running product of
    ``1 - 1 / at_risk``, multiplied in the same order either way."""
    n = len(durations)
    if n < _VECTOR_FROM:
        c = sorted(censored)
        s, surviving = 1.0, []
        for i, d in enumerate(durations):
            s *= 1.0 - 1.0 / (n - i + len(c) - bisect.bisect_left(c, d))
            surviving.append(s)
        return list(durations), surviving
    times = np.fromiter(durations, dtype=float, count=n)
    ordered = np.sort(np.fromiter(censored, dtype=float, count=len(censored)))
    at_risk = (n - np.arange(n)) + (len(ordered) - np.searchsorted(ordered, times, side="left"))
    return times.tolist(), np.cumprod(1.0 - 1.0 / at_risk).tolist()


# Hashed by identity: the model keys the runs it saw running by plan. Slots, and no boundaries
# dict until a step ends: the scheduler holds one plan per running row.
@dataclass(eq=False, slots=True)
class _RowPlan:
    """What the scheduler knows about one row's run between polls."""

    interval: float
    boundaries: dict[int, float] | None = None  # k -> seconds from start
    last_k: int = 0
    overdue_polls: int = 0
    failures: int = 0
    observed: float | None = None  # elapsed time at which it was last seen running
    picked_at: float = 0.0  # scheduler clock
    age: float = 0.0  # run seconds since submission when picked up
    deferred: bool = False  # its next heap entry is a decision, not a GET


class _Plans:
    """The plans of the scheduled rows by position, as a dict would hold them: a list as long
    as the batch (8 bytes a row) instead of a dict of the running rows (about 50 bytes each
    at 200,000 of them)."""

    __slots__ = ("_count", "_slots")

    def __init__(self, size: int) -> None:
        self._slots: list[_RowPlan | None] = [None] * size
        self._count = 0

    def get(self, position: int) -> _RowPlan | None:
        return self._slots[position]

    def __contains__(self, position: int) -> bool:
        return self._slots[position] is not None

    def __getitem__(self, position: int) -> _RowPlan:
        plan = self._slots[position]
        if plan is None:
            raise KeyError(position)
        return plan

    def __setitem__(self, position: int, plan: _RowPlan) -> None:
        if self._slots[position] is None:
            self._count += 1
        self._slots[position] = plan

    def pop(self, position: int, default: None = None) -> _RowPlan | None:
        plan = self._slots[position]
        if plan is not None:
            self._slots[position] = None
            self._count -= 1
        return plan

    def __len__(self) -> int:
        return self._count

    def values(self) -> list[_RowPlan]:
        return [plan for plan in self._slots if plan is not None]


class DurationModel:
    """Learns from the finished runs of the batch how long runs take and how their time splits
    over steps, and predicts when a running run will end (run seconds since it started).

    The finished durations are a censored sample: while runs are still running, the finished
    ones are the short ones. So the running runs count too, each as lasting at least as long as
    it had run when last seen (a Kaplan-Meier estimate of the share of runs lasting longer).

    The finished runs' samples are kept in sorted containers, updated as runs end, so that one
    prediction costs O(log n) however many runs the batch has (``bench/bench_poll.py``). The
    running runs' elapsed times change at every poll: they are kept by run, in no order, and
    sorted only when the survival curve is recomputed (once 2 % of the observations changed).
    """

    #: A run is overdue once the estimated share of runs lasting longer than it has run so far
    #: falls below this.
    overdue_share = 0.1
    #: With events: a run without its event is polled once it has run this many times as
    #: long as the longest finished run.
    overdue_factor = 2.0
    #: Past every finished run, the next poll goes at the geometric mean of the time left and
    #: this share of ``min_interval`` (chosen from ``bench/bench_poll.py``).
    tail_scale = 0.75

    def __init__(self, quantile: float = 0.5, *, min_interval: float = 2.0) -> None:
        self.quantile = quantile
        self.min_interval = min_interval
        self.durations: SortedList = SortedList()  # of the finished runs
        self._running: dict[_RowPlan, float] = {}  # elapsed time of each running run last seen
        self.first_boundaries: SortedList = SortedList()  # end of step 1, seconds from start
        self.ratios: dict[int, SortedList] = {}  # k -> shares of finished runs' time in steps 1-k
        self.steps_total: int | None = None  # of the batch's workflow, once a run said
        self._shares: dict[int, float] = {}  # k -> quantile of ratios[k], until they change
        self._curve: tuple[list[float], list[float]] = ([], [])
        self._changes = 0  # since the curve was computed

    @property
    def censored(self) -> list[float]:
        """The elapsed time of each running run when last seen, sorted."""
        return sorted(self._running.values())

    def observe(self, plan: _RowPlan, elapsed: float | None) -> None:
        """A run was seen running ``elapsed`` seconds in (``None``: it ended)."""
        plan.observed = elapsed
        if elapsed is None:
            self._running.pop(plan, None)
        else:
            self._running[plan] = elapsed
        self._changes += 1

    def learn(self, plan: _RowPlan, run: Run) -> None:
        """A run finished: remember its duration and the share of it each step boundary took."""
        start = run.started_at or run.created_at
        total: float | None = None
        if run.computed_duration_ms is not None:
            total = run.computed_duration_ms / 1000.0
        elif start is not None and run.completed_at is not None:
            total = (run.completed_at - start).total_seconds()
        if total is None or total <= 0:
            return
        self.durations.add(total)
        self._changes += 1
        for k, t_k in (plan.boundaries or {}).items():
            if 0 < t_k <= total:
                self.ratios.setdefault(k, SortedList()).add(t_k / total)
                self._shares.pop(k, None)

    def learn_boundary(self, k: int, t_k: float) -> None:
        if k == 1:
            self.first_boundaries.add(t_k)

    def predict_end(self, plan: _RowPlan, run: Run, elapsed: float) -> float | None:
        """Run seconds from start at which the run is expected to end (``None``: no idea)."""
        k, n = plan.last_k, run.steps_total
        if k and n and k < n and plan.boundaries and k in plan.boundaries:
            ratio = self._share(k, n)
            return plan.boundaries[k] / ratio if ratio > 0 else None
        if k == 0 and n and n > 1 and len(self.first_boundaries) >= 3:
            later = self.first_boundaries.bisect_right(elapsed)  # the first one ending later
            if later < len(self.first_boundaries):
                return _quantile(self.first_boundaries, self.quantile, later)
        if len(self.durations) >= 3:
            return self._end_from_durations(elapsed, multi_step=bool(n and n > 1))
        return None

    def _share(self, k: int, n: int) -> float:
        """The share of a run's time spent in its first ``k`` of ``n`` steps: a quantile of the
        finished runs' shares (``k / n`` until three have)."""
        share = self._shares.get(k)
        if share is None:
            samples = self.ratios.get(k)
            if samples is None or len(samples) < 3:
                return k / n
            share = self._shares[k] = _quantile(samples, 1.0 - self.quantile)
        return share

    def survival(self, elapsed: float) -> float:
        """Estimated share of the batch's runs lasting longer than ``elapsed`` (Kaplan-Meier).

        Recomputed once 2 % of the observations changed (cheap per poll for thousands of runs)."""
        seen = len(self.durations) + len(self._running)
        if self._changes > seen // 50:
            self._curve = _kaplan_meier(self.durations, self._running.values())
            self._changes = 0
        times, surviving = self._curve
        i = bisect.bisect_right(times, elapsed)
        return surviving[i - 1] if i else 1.0

    def _end_from_durations(self, elapsed: float, *, multi_step: bool) -> float | None:
        """The end predicted from the finished durations and the censored running runs.

        A run of several steps past every finished duration is polled as overdue: its next step
        boundary, soon, says more than the batch's tail (the estimate below, tried there, made
        the four-step benchmark notice ends later)."""
        done = self.durations.bisect_right(elapsed)
        later = len(self.durations) - done
        if later >= 3 or (later and multi_step):
            return _quantile(self.durations, self.quantile, done)
        if multi_step:
            return elapsed
        longer = self.survival(elapsed)
        if longer < self.overdue_share:
            return elapsed  # longer than almost every run of the batch: overdue
        if longer >= 1.0:
            return None
        # The tail is unknown: the runs still running outlived every finished one. Extrapolate
        # the rate at which runs ended so far (a share 1 - S of the runs in ``elapsed`` seconds)
        # to the expected time left, and poll at the geometric mean of that and a fixed scale:
        # the spacing that balances delay against GETs when the rate of ends is known.
        remaining = elapsed * longer / (1.0 - longer)
        scale = self.tail_scale * self.min_interval
        return elapsed + max(self.min_interval, (scale * remaining) ** 0.5)


# --------------------------------------------------------------------------- the scheduler


class Scheduler:
    """Polls the runs of one batch until all are terminal (see the module docstring).

    ``ledger``: the batch's rows; ``aclient`` sends the GETs; ``pacer`` is the batch's shared
    gate; ``api_clock`` the batch's estimate of the API's time. ``clock`` (seconds, the running
    loop's by default) can be replaced in tests.
    """

    def __init__(
        self,
        ledger: Ledger,
        aclient: AsyncClient,
        pacer: Pacer,
        api_clock: ApiClock,
        settings: PollSettings,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.ledger = ledger
        self.aclient = aclient
        self.pacer = pacer
        self.api_clock = api_clock
        self.settings = settings
        self.policy = settings.retry_policy(aclient.retry)
        self.model = DurationModel(settings.quantile, min_interval=settings.min_interval)
        self._clock = clock if clock is not None else asyncio.get_running_loop().time
        self._rng = random.Random(settings.seed)
        self._heap: list[tuple[float, int, int]] = []  # (due, sequence, row position)
        self._seq = 0
        # The rows scheduled, by position (ledger.rows[position] is the row): their plans.
        self._plans = _Plans(len(ledger.rows))
        self._picked = 0
        self._accepted_mark = 0  # how far the ledger's accepted rows were read
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._fatal: BaseException | None = None
        self._stopped = False
        self._main: asyncio.Task[Any] | None = None
        self._next_send = 0.0  # for this call's max_per_second
        #: Run seconds added to every planned poll: with events, a run's own event should
        #: finish it before the poll is due (``PollSettings.event_grace``).
        self.slack = 0.0
        self._backing_off = 0  # plans with failures > 0
        self.gets = 0

    @property
    def backing_off(self) -> int:
        """Rows whose last GET failed: their next poll waits out a backoff."""
        return self._backing_off

    # ------------------------------------------------------------------ times

    @property
    def time_scale(self) -> float:
        """Client seconds per run second: the setting, else what the API said of its clock."""
        if self.settings.time_scale is not None:
            return self.settings.time_scale
        return 1.0 / self.aclient.clock_rate

    def _api_now(self) -> datetime:
        return self.api_clock.now(rate=1.0 / self.time_scale)

    def _client_seconds(self, run_seconds: float) -> float:
        return run_seconds * self.time_scale

    def _jittered(self, seconds: float) -> float:
        j = self.settings.jitter
        return seconds * (1.0 + j * (2.0 * self._rng.random() - 1.0)) if j else seconds

    def _push(self, row: RowState, delay_run_seconds: float) -> None:
        delay = max(0.0, delay_run_seconds) + self.slack
        due = self._clock() + self._client_seconds(delay)
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, row.position))
        self._wakeup.set()

    # ------------------------------------------------------------------ events

    def poll_now(self, row: RowState) -> None:
        """Poll ``row``'s run at once (an event said it ended, without what the tables need)."""
        plan = self._plans.get(row.position)
        if plan is None:
            return
        plan.deferred = False
        self._seq += 1
        heapq.heappush(self._heap, (self._clock(), self._seq, row.position))
        self._wakeup.set()

    def forget(self, row: RowState, run: Run | None = None) -> None:
        """Stop polling ``row``: its run ended, as ``run`` (from an event) shows; the batch
        learns its duration as if a poll had seen it."""
        plan = self._plans.pop(row.position, None)
        if plan is not None:
            if plan.failures:
                self._backing_off -= 1
            self.model.observe(plan, None)
        if run is not None and is_terminal(run.status):
            # Also a run that ended before it was picked up: its duration is evidence too.
            self.model.learn(plan or _RowPlan(interval=self.settings.min_interval), run)
        self._wakeup.set()

    # ------------------------------------------------------------------ rows

    def pick_up(self) -> int:
        """Schedule the rows with a running run not yet known; returns how many. The first call
        reads every row; later ones only the rows the ledger accepted since."""
        if self._accepted_mark == 0 and not self._plans:
            candidates = self.ledger.pending_poll()
            _, self._accepted_mark = self.ledger.accepted_since(0)
        else:
            candidates, self._accepted_mark = self.ledger.accepted_since(self._accepted_mark)
        added = 0
        # Read once for all the rows picked up now (one float object shared by their plans, not
        # one each: the scheduler holds a plan per running row).
        now, api_now = self._clock(), self._api_now()
        backed_off = min(
            self.settings.max_interval, self.settings.min_interval * self.settings.backoff
        )
        for row in candidates:
            if row.position in self._plans:
                continue
            plan = _RowPlan(interval=self.settings.min_interval)
            self._plans[row.position] = plan
            age = 0.0
            if row.submitted_at is not None:
                age = max(0.0, (api_now - row.submitted_at).total_seconds())
            plan.picked_at, plan.age = now, age
            if self.slack:  # with events: a poll only in case the run's event is lost
                plan.deferred = True  # a decision, after the grace
                self._push(row, 0.0)
                added += 1
                continue
            first = self.model.predict_end(plan, row.run or Run(id=row.run_id, status=None), age)
            delay = (first - age + self.settings.finish_margin) if first else plan.interval - age
            if first is None:
                plan.interval = backed_off  # min_interval backed off once
                # Nothing known yet: one row in _PROBE_EVERY is polled then; the others only
                # decide then, from what the probes will have told.
                if self._picked % _PROBE_EVERY:
                    plan.deferred = True
            self._picked += 1
            self._push(row, min(self._jittered(max(0.0, delay)), self.settings.max_interval))
            added += 1
        return added

    # ------------------------------------------------------------------ next poll

    def _event_recheck(self, row: RowState, plan: _RowPlan) -> float | None:
        """With events, a decision for a run whose event has not come: run seconds until the
        next decision (``slack`` comes on top), or ``None``: poll it now, in case its event was
        lost. It is polled once it has run longer than all but a few runs of the batch do (the
        Kaplan-Meier share of runs lasting longer under ``overdue_share``, the runs without an
        event counted as lasting at least as long as they have run), or longer than
        ``overdue_factor`` times the longest finished run, or when no run has finished yet:
        the runs whose events were lost look like long runs to the estimate, and would
        otherwise hold its tail up for ever."""
        elapsed = plan.age + (self._clock() - plan.picked_at) / self.time_scale
        self.model.observe(plan, elapsed)
        durations = self.model.durations
        if (
            not durations
            or elapsed > self.model.overdue_factor * durations[-1]
            or self.model.survival(elapsed) < self.model.overdue_share
        ):
            return None
        plan.deferred = True
        return self._backed_off(plan)

    def _backed_off(self, plan: _RowPlan) -> float:
        """``plan``'s interval (jittered), which grows by ``backoff`` up to ``max_interval``."""
        delay = plan.interval
        plan.interval = min(self.settings.max_interval, plan.interval * self.settings.backoff)
        return self._jittered(delay)

    def _elapsed(self, row: RowState, run: Run) -> float:
        """Run seconds since the run started: its own ``durationMs`` if it reports one, else
        the API's clock as estimated by the batch (a skewed client clock would otherwise make
        runs look overdue, or not due for a long while)."""
        if run.duration_ms is not None and run.started_at is not None:
            return run.duration_ms / 1000.0
        start = run.started_at or run.created_at or row.submitted_at
        if start is None:
            return 0.0
        return max(0.0, (self._api_now() - start).total_seconds())

    def deferred_delay(self, row: RowState, plan: _RowPlan) -> float | None:
        """Run seconds until a row not polled yet should be polled (``None``: now). Its age is
        counted from when it was picked up (a run it carries from a journal may be stale)."""
        steps = row.run.steps_total if row.run is not None else None
        run = Run(id=row.run_id, status=None, steps_total=steps or self.model.steps_total)
        elapsed = plan.age + (self._clock() - plan.picked_at) / self.time_scale
        end = self.model.predict_end(plan, run, elapsed)
        if end is None or end <= elapsed:
            return None
        s = self.settings
        return self._jittered(min(end - elapsed + s.finish_margin, s.max_interval))

    def next_delay(self, row: RowState, plan: _RowPlan, run: Run) -> float:
        """Run seconds until ``run`` (not terminal) should be polled again."""
        s = self.settings
        k = run.steps_completed or 0
        if run.steps_total:
            self.model.steps_total = run.steps_total
        start = run.started_at or run.created_at
        if k > plan.last_k and run.updated_at is not None and start is not None:
            t_k = (run.updated_at - start).total_seconds()
            if t_k > 0:
                if plan.boundaries is None:
                    plan.boundaries = {}
                plan.boundaries[k] = t_k
                plan.last_k = k
                plan.overdue_polls = 0
                self.model.learn_boundary(k, t_k)
        elapsed = self._elapsed(row, run)
        self.model.observe(plan, None)  # the run is no evidence about itself
        end = self.model.predict_end(plan, run, elapsed)
        self.model.observe(plan, elapsed)
        if end is not None and end > elapsed:
            delay = min(end - elapsed + s.finish_margin, s.max_interval)
        elif end is not None:
            delay = min(s.overdue_interval * s.backoff**plan.overdue_polls, s.max_interval)
            plan.overdue_polls += 1
        else:
            delay = plan.interval
            plan.interval = min(s.max_interval, plan.interval * s.backoff)
        return self._jittered(delay)

    # ------------------------------------------------------------------ one poll

    async def _poll(self, row: RowState) -> None:
        assert row.run_id is not None
        try:
            run = await self.aclient.get_run(row.run_id, retry=False)
        except errors.PlexteraError as exc:
            # Counted once answered or failed: a GET cancelled in flight may never have been sent.
            self.ledger.record_poll(row)
            self.gets += 1
            self._failed(row, exc)
        else:
            self.ledger.record_poll(row)
            self.gets += 1
            self._answered(row, run)

    def _answered(self, row: RowState, run: Run) -> None:
        self.pacer.on_success()
        plan = self._plans.get(row.position)
        if plan is None:  # forgotten while the GET was in flight: its event finished it
            return
        if plan.failures:
            plan.failures = 0
            self._backing_off -= 1
        self.ledger.record_run(row, run)
        if is_terminal(run.status):
            self.model.learn(plan, run)  # never scheduled again
            self.model.observe(plan, None)
            self._plans.pop(row.position, None)
            return
        if self.slack:
            plan.deferred = True  # polled once: decide again, later
            self._push(row, self._backed_off(plan))
        else:
            self._push(row, self.next_delay(row, plan, run))

    def _failed(self, row: RowState, exc: errors.PlexteraError) -> None:
        """A GET failed: back off as the retry policy says; once its retries are spent in a
        row (or the error is not one to retry), poll it every ``slow_interval``."""
        if isinstance(exc, _FATAL):
            self._fatal = exc
            self._wakeup.set()
            return
        policy = self.policy
        plan = self._plans.get(row.position)
        if plan is None:  # forgotten while the GET was in flight: its event finished it
            return
        if isinstance(exc, errors.RateLimitError):
            pause = policy.delay(exc, 0)  # client seconds; Retry-After: 0 is no pause
            self.pacer.on_rate_limited(pause)  # pauses every request of the batch
            self._push(
                row, pause / self.time_scale + self.settings.min_interval * self._rng.random()
            )
            return
        if not plan.failures:
            self._backing_off += 1
        plan.failures += 1
        failing = plan.failures > policy.max_retries or not is_retryable_for_get(exc)
        self.ledger.record_poll_error(row, exc, failing=failing)
        if not failing:
            self._push_client(row, policy.delay(exc, plan.failures - 1))
            return
        if plan.failures == policy.max_retries + 1 or not is_retryable_for_get(exc):
            logger.warning(
                "Run %s (row %r) failed to poll %d times in a row; polling it every %g s "
                "from now on. Last error: %s",
                row.run_id,
                row.key,
                plan.failures,
                self.settings.slow_interval,
                exc,
            )
        self._push(row, self._jittered(self.settings.slow_interval))

    def _push_client(self, row: RowState, client_seconds: float) -> None:
        """Poll ``row`` again in ``client_seconds`` of the client's clock (a backoff)."""
        self._push(row, client_seconds / self.time_scale)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.pacer.release()
        self._wakeup.set()
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            self._fatal = task.exception()

    def _at_call_cap(self) -> float | None:
        """Client seconds to wait before this call may send another GET (``None``: now)."""
        s = self.settings
        if s.max_in_flight is not None and len(self._tasks) >= s.max_in_flight:
            return 0.25  # woken earlier by the answer that frees a slot
        if s.max_per_second is not None:
            now = self._clock()
            if now < self._next_send:
                return self._next_send - now
            self._next_send = max(now, self._next_send) + 1.0 / s.max_per_second
        return None

    # ------------------------------------------------------------------ main loop

    async def run(
        self, *, deadline: float | None = None, submission: asyncio.Future[Any] | None = None
    ) -> bool:
        """Poll until every picked-up row is terminal (and ``submission`` is done).

        Returns False if ``deadline`` (on the scheduler's clock) passed first.
        """
        self._main = asyncio.current_task()
        pacer = self.pacer
        self.pick_up()
        next_scan = self._clock() + 0.1
        try:
            while True:
                if self._stopped:
                    raise asyncio.CancelledError
                if self._fatal is not None:
                    raise self._fatal
                now = self._clock()
                submitting = submission is not None and not submission.done()
                if submitting and now >= next_scan:
                    self.pick_up()
                    next_scan = now + 0.1
                if not self._plans and not self._tasks:
                    if submitting:
                        assert submission is not None
                        await asyncio.wait({submission}, timeout=0.1)
                        continue
                    if self.pick_up():  # rows that appeared at the very end of submission
                        continue
                    return True
                if deadline is not None and now >= deadline:
                    return False
                if self._heap and self._heap[0][0] <= now:
                    _, _, position = heapq.heappop(self._heap)
                    plan = self._plans.get(position)
                    if plan is None:
                        continue
                    row = self.ledger.rows[position]
                    if is_terminal(row.status):
                        continue
                    if plan.deferred:
                        plan.deferred = False
                        if self.slack:
                            delay = self._event_recheck(row, plan)
                        else:
                            delay = self.deferred_delay(row, plan)
                        if delay is not None:
                            self._push(row, delay)
                            continue
                    wait = self._at_call_cap()
                    if wait is not None:
                        heapq.heappush(self._heap, (now, 0, position))  # first in line again
                        await self._idle(wait)
                        continue
                    await pacer.acquire()
                    task = asyncio.ensure_future(self._poll(row))
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
                    continue
                target = self._heap[0][0] if self._heap else now + 0.25
                if deadline is not None:
                    target = min(target, deadline)
                if submitting:
                    target = min(target, next_scan)
                await self._idle(max(0.0, target - now))
        except BaseException:
            await self.shutdown(cancel=True)
            raise
        finally:
            await self.shutdown(cancel=False)

    async def _idle(self, seconds: float) -> None:
        """Sleep ``seconds`` or until woken. Not ``asyncio.wait_for``: on Python 3.11 it can
        swallow a cancellation that arrives as the wait ends, and ``stop()`` would be lost."""
        self._wakeup.clear()
        handle = asyncio.get_running_loop().call_later(seconds, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            handle.cancel()

    async def shutdown(self, *, cancel: bool = True) -> None:
        """Cancel (or, with ``cancel=False``, let finish) the polls in flight; either way every
        answer received is recorded and nothing is left running."""
        tasks = list(self._tasks)
        if cancel:
            for task in tasks:
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def cancel(self) -> None:
        """Stop from outside the loop's coroutine (``stop()``, an interrupt): cancel everything.
        The flag makes the main loop end even if a cancellation were swallowed on the way."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        if self._main is not None and not self._main.done():
            self._main.cancel()

    async def settle(self) -> None:
        """After :meth:`cancel` from outside the loop: let the cancelled tasks finish."""
        await self.shutdown()
        main = self._main
        if main is not None and not main.done():
            with contextlib.suppress(BaseException):
                await main
