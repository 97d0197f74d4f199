"""One gate for all the requests of a batch: a cap on requests in flight, a cap on requests per
second, and a shared pause after a 429, so one rate-limit answer slows the whole batch.

Every 429 pauses every request of the batch for its ``Retry-After`` (0 means no pause; 1 s when
the answer gave none and the caller knows no better). What else it does depends on what it says
about the server:

* **An isolated 429**, ``Retry-After: 0`` ("send it again now"), says nothing about the batch's
  pace (a server shedding a share of its load, a busy replica): it moves no cap. Only when 429s
  become a large share of the recent answers (:data:`STORM_SHARE` of a running average over
  about 32 answers) do they count as a rate limit, whatever their ``Retry-After``.
* **A rate limit**, a 429 that asks for a wait (or one in a storm): the allowance the server
  grants is used up. It trims the cap on requests in flight and teaches the pacer a rate (below).

The cap on requests in flight adapts once per *window*: a run of answers as long as the cap
(about one round trip's worth, as TCP counts its window):

* a window with rate-limit 429s multiplies the cap by ``1 - share * (1 - decrease)``, ``share``
  being the window's share of them: a window of nothing but 429s (a storm, or far more requests
  than the server takes) divides it by four (``decrease=0.25``), an isolated rate limit among 16
  answers trims it by under 5 %. A storm brings it down to ``min_in_flight`` in a few round trips;
* after a decrease, the answers to the requests already in flight are not counted: they were
  sent at the old pace and say nothing about the new one (one decrease per burst, not one per
  429 of it);
* a window with no rate limit raises the cap by one, at most once per ``recover_every`` seconds
  (default: the last rate limit's ``Retry-After``, at most 10 s, and 1 s before any). A pause lets
  the server's own window refill, so the first round trips after it always look healthy; growing
  by one per round trip would climb straight back to the rate that was refused;
* the cap stays between ``min_in_flight`` (the floor) and ``max_in_flight``.

A cap on requests in flight cannot hold a batch to a server's rate when answers come back fast
(one request at a time on loopback is hundreds per second), so the pacer also *learns a rate*:

* a token bucket that answers 429 is empty at that moment, so between two rate-limit 429s at
  least :data:`CALIBRATE_SPAN` apart, the successful answers are what the bucket let through in
  that time (give or take one): its rate. The pacer then spaces requests :data:`RATE_MARGIN` under
  that rate (:attr:`Pacer.learned_rate`, below ``max_per_second`` if that is set);
* while that cap holds requests back and no rate limit comes, it grows, slowly at first and faster
  the longer it stays quiet (:data:`PROBE`), so a server that grants more is found again; a rate
  limit puts it back under the measured rate at once. Twice the measured rate without a rate
  limit, and the learned cap is dropped;
* the pacer keeps the bucket it measured (refilled at that rate, one second deep, emptied by
  each success). A rate limit that bucket cannot explain, one that comes while it still holds
  plenty (after a pause, say) or a second after the previous one with few answers in between
  although the batch sends under the cap, is a *strike*; so is a measurement that falls well
  under the best one (a bucket keeps its rate; a server refusing a share of requests at random
  measures less each time the batch slows, the pauses counted in). Two strikes in a row, or such
  a fall, and the learned cap is dropped: learning waits :data:`SUSPEND` s (doubling, up to
  :data:`MAX_SUSPEND`) before it tries again, and meanwhile the cap in flight and the pauses
  pace the batch as above.

A requests-per-second cap given as ``max_per_second`` follows the window's decreases and grows
back with the cap. The choice of policy and its figures: ``bench/bench_pacing.py``,
``bench/bench_faults.py``, docs/benchmarks.md (Pacing, Faults) and docs/decisions.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = [
    "CALIBRATE_SPAN",
    "MAX_RECOVER_EVERY",
    "MAX_SUSPEND",
    "PROBE",
    "RATE_MARGIN",
    "RATE_WINDOW",
    "STORM_SHARE",
    "SUSPEND",
    "Pacer",
    "RateLearner",
]

#: The longest wait between two increases of the cap when it follows ``Retry-After``.
MAX_RECOVER_EVERY = 10.0
#: Seconds over which :meth:`Pacer.answers_per_second` counts.
RATE_WINDOW = 5.0
#: The share of recent answers that are 429s above which 429s with ``Retry-After: 0`` count as
#: a rate limit too (a running average, each answer weighing :data:`SHARE_WEIGHT`).
STORM_SHARE = 0.25
SHARE_WEIGHT = 1.0 / 32
#: Least and most seconds between the two rate-limit 429s a rate is measured between: the
#: estimate is off by up to one request per span; far apart, the bucket may have overflowed
#: in between (an underestimate).
CALIBRATE_SPAN = 1.0
CALIBRATE_MAX_SPAN = 30.0
#: The first measurement needs less: until then the batch sends far more than the server takes.
FIRST_SPAN = 0.5
#: Successful answers a span needs to measure a rate from, and the share of the learned cap
#: its answers must come to (fewer: the batch had less to send, or waited out pauses, and the
#: span says little of what the server takes).
CALIBRATE_MIN_SUCCESSES = 4
MIN_USE = 0.7
#: The learned cap sits this share under the measured rate.
RATE_MARGIN = 0.05
#: While the learned cap holds requests back and no rate limit comes, it grows by this share of
#: itself per second, times the seconds since the last rate limit.
PROBE = 0.005
#: The pacer follows the bucket it measured: refilled at the measured rate, emptied by each
#: success, as deep as this many seconds of that rate. A rate limit while it still holds a
#: quarter of that is a *strike*: the server is not such a bucket. After this many strikes in a
#: row the learned cap is taken for wrong (the 429s are not about the rate).
MODEL_BURST = 1.0
STRIKES = 2
#: A rate limit within fewer answers than this (or one second's worth of the measured rate)
#: after the previous one, both under the learned cap, is a strike too: under its rate a bucket
#: refuses nothing, a server refusing at random goes on refusing.
MIN_GAP = 16
#: A measurement this much under the best one since learning began says the same, unless a
#: share of the span's answers this large were rate limits (the server then grants less).
MAX_FALL = 0.3
OVERLOAD_SHARE = 1.0 / 3
#: Seconds learning waits after rate limits turned out not to be about the rate; doubles.
SUSPEND = 30.0
MAX_SUSPEND = 300.0
#: A learned cap is dropped when probing takes it to this multiple of the measured rate.
MAX_PROBE_RATIO = 2.0
#: The least learned cap, requests per second.
MIN_RATE = 0.5


@dataclass
class _Mark:
    """The learner's counters at one moment (a span's start, or the totals), and its cap then."""

    at: float = 0.0
    answers: int = 0
    successes: int = 0
    limits: int = 0
    cap: float | None = None


class RateLearner:
    """Learns the rate a server grants from its rate-limit 429s (see the module docstring).

    The :class:`Pacer` feeds it every answer (:meth:`success`, :meth:`limited`) and spaces its
    requests by :attr:`cap`. Times are the pacer's clock.
    """

    def __init__(self, *, max_per_second: float | None = None) -> None:
        self.max_per_second = max_per_second
        #: The server's rate as last measured between two rate limits (requests per second),
        #: and the cap on requests per second learned from it (``None``: none learned).
        self.measured: float | None = None
        self.cap: float | None = None
        #: Until when learning is suspended (rate limits that were not about the rate).
        self.suspended_until = 0.0
        self._suspend = SUSPEND
        self._total = _Mark()  # every answer, success and rate limit so far
        self._span: _Mark | None = None  # where the current measurement started
        self._best = 0.0  # the highest rate measured since learning began
        self._strikes = 0  # rate limits in a row that the measured bucket cannot explain
        self._tokens = 0.0  # what the measured bucket holds, as of _tokens_at
        self._tokens_at = 0.0
        self._limit_at = float("-inf")  # the last rate limit, and the answers counted then
        self._limit_answers = 0
        self._capped_from = 0  # answers counted once the learned cap held every request
        self._probed_at = 0.0

    def success(self, now: float, *, held_back: bool) -> None:
        """A successful answer; ``held_back``: the cap made some request wait in the last
        second (so the batch has more to send than the cap lets through)."""
        self._total.answers += 1
        self._total.successes += 1
        if self.measured is None:
            return
        self._tokens = max(0.0, self._model_tokens(now) - 1.0)
        self._probe(now, held_back=held_back)

    def isolated(self) -> None:
        """A 429 that was no rate limit (it still counts as an answer)."""
        self._total.answers += 1

    def limited(self, now: float, in_flight: int) -> None:
        """A rate limit at ``now``: the server's bucket is empty. Test the bucket measured so
        far against it, measure again if the span allows, and cap the batch under the rate."""
        self._total.answers += 1
        self._total.limits += 1
        self._probed_at = now
        if now < self.suspended_until:
            self._limited_at(now)
            return
        known = self.measured
        strike = known is not None and self._contradicts(now)
        self._limited_at(now)
        found = self._measure(now)
        if found is not None:
            rate, share = found
            if share >= OVERLOAD_SHARE:
                self._best = rate  # refused that often, the batch sends far over the rate
            elif rate < (1.0 - MAX_FALL) * self._best:
                # A bucket keeps its rate; a server refusing at random measures less each
                # time the batch slows down (its pauses counted in).
                self._give_up(now)
                return
            self.measured = rate
            self._best = max(self._best, rate)
        if strike:
            self._strikes += 1
            if self._strikes >= STRIKES:
                self._give_up(now)
                return
        elif known is not None:
            self._strikes = 0
        if self.measured is not None:
            self._lower_to(self.measured * (1.0 - RATE_MARGIN))
        if found is not None:
            self._capped_from = self._total.answers + in_flight  # once the stragglers are in

    def forget(self) -> None:
        """Drop what was learned (the cap included)."""
        self.cap = self.measured = self._span = None
        self._strikes = 0
        self._best = 0.0

    def _give_up(self, now: float) -> None:
        """The rate limits are not about the rate: forget, and learn nothing for a while."""
        self.forget()
        self.suspended_until = now + self._suspend
        self._suspend = min(MAX_SUSPEND, self._suspend * 2.0)

    def _measure(self, now: float) -> tuple[float, float] | None:
        """The rate the successes since the span's start show and the share of rate limits
        among its answers, if the span tells them (the span then starts again here)."""
        span = self._span
        total = self._total
        mark = _Mark(now, total.answers, total.successes, total.limits, self.cap)
        if span is None or now - span.at > CALIBRATE_MAX_SPAN:
            self._span = mark
            return None
        successes = total.successes - span.successes
        if successes == 0:
            self._span = mark  # a storm tells nothing of the rate: measure from its end
            return None
        least = CALIBRATE_SPAN if self.measured is not None else FIRST_SPAN
        if now - span.at < least or successes < CALIBRATE_MIN_SUCCESSES:
            return None
        self._span = mark
        answers = total.answers - span.answers
        share = (total.limits - span.limits) / answers
        sent = answers / (now - span.at)
        if share < OVERLOAD_SHARE and span.cap is not None and sent < MIN_USE * span.cap:
            return None  # the batch sent far less than its cap: that says nothing
        return successes / (now - span.at), share

    def _contradicts(self, now: float) -> bool:
        """Whether this rate limit contradicts the bucket measured: it came while that bucket
        still held a good part of its depth (more than the measurement's error explains), or a
        second or more after the previous one with few answers in between, the batch sending
        under the learned cap since before that one."""
        assert self.measured is not None
        rate = self.measured
        since = now - self._limit_at
        depth = max(2.0, rate * MODEL_BURST)
        if self._model_tokens(now) >= max(1.0, 0.25 * depth + 0.1 * rate * since):
            return True
        if self._limit_answers < self._capped_from or since < CALIBRATE_SPAN:
            return False
        return self._total.answers - 1 - self._limit_answers < max(MIN_GAP, depth)

    def _limited_at(self, now: float) -> None:
        self._limit_at = now
        self._limit_answers = self._total.answers
        self._tokens = 0.0  # the server's bucket is empty now
        self._tokens_at = now

    def _lower_to(self, rate: float) -> None:
        if self.cap is None or rate < self.cap:
            self.cap = max(MIN_RATE, rate)

    def _model_tokens(self, now: float) -> float:
        """What the measured bucket holds at ``now``."""
        rate = self.measured or 0.0
        depth = max(2.0, rate * MODEL_BURST)
        self._tokens = min(depth, self._tokens + rate * (now - self._tokens_at))
        self._tokens_at = now
        return self._tokens

    def _probe(self, now: float, *, held_back: bool) -> None:
        """Grow the learned cap while it holds requests back and no rate limit comes."""
        elapsed, self._probed_at = now - self._probed_at, now
        if self.cap is None or not held_back:
            return
        self.cap *= 1.0 + PROBE * (now - self._limit_at) * elapsed
        ceiling = (self.measured or 0.0) * MAX_PROBE_RATIO
        if self.max_per_second is not None:
            ceiling = min(ceiling, self.max_per_second)
        if self.cap >= ceiling:
            self.forget()  # the server grants more than it did, or the user's cap is lower


class Pacer:
    """Admits requests under adaptive limits; share one instance between submit and poll.

    Call :meth:`acquire` before a request and :meth:`release` after it (or use :meth:`slot`), and
    tell the pacer how each answered: :meth:`on_success` or :meth:`on_rate_limited`.
    ``decrease`` is the factor applied to the cap after a window of nothing but 429s;
    ``recover_every`` the least time in seconds between two increases (``None``: follow the last
    ``Retry-After``, see the module's docstring); ``learn_rate=False`` never learns a rate.
    ``clock`` and ``sleep`` can be replaced in tests (a fake clock that advances on sleep).

        pacer = Pacer(max_in_flight=16)
        async with pacer.slot():
            ...  # send, then pacer.on_success() or pacer.on_rate_limited(retry_after)
    """

    def __init__(
        self,
        *,
        max_in_flight: int = 16,
        max_per_second: float | None = None,
        min_in_flight: int = 1,
        decrease: float = 0.25,
        recover_every: float | None = None,
        learn_rate: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if max_per_second is not None and max_per_second <= 0:
            raise ValueError("max_per_second must be positive (or None for no cap)")
        if not 0.0 < decrease < 1.0:
            raise ValueError("decrease must be between 0 and 1 (exclusive)")
        self.max_in_flight = max_in_flight
        self.max_per_second = max_per_second
        self.min_in_flight = max(1, min(min_in_flight, max_in_flight))
        if recover_every is not None and recover_every < 0:
            raise ValueError("recover_every must not be negative (or None)")
        self.decrease = decrease
        self.recover_every = recover_every
        self._clock = clock
        self._sleep = sleep
        self._cap = float(max_in_flight)  # the adaptive cap; ``limit`` is its whole part
        self._rate = max_per_second  # max_per_second as the window's decreases left it
        self.in_flight = 0
        self.paused_until = 0.0
        #: 429s received, and decreases of the cap they caused (for tests and benchmarks).
        self.rate_limited = 0
        self.decreases = 0
        #: 429s that said the server's allowance was used up (the others were isolated).
        self.rate_limits = 0
        self._window = max_in_flight  # answers in the current window
        self._answers = 0
        self._limited = 0
        self._stale = 0  # requests in flight at the last decrease, whose answers are not counted
        self._last_retry_after = 1.0
        self._last_change = float("-inf")  # when the cap last moved
        self._next_send = 0.0
        self._events: dict[int, asyncio.Event] = {}
        self._answer_times: deque[float] = deque(maxlen=4096)
        self._share = 0.0  # a running average of the answers' share of 429s
        self._held_back_at = float("-inf")  # when the rate cap last made a request wait
        self.learner: RateLearner | None = (
            RateLearner(max_per_second=max_per_second) if learn_rate else None
        )

    @property
    def limit(self) -> int:
        """The current cap on requests in flight."""
        return max(self.min_in_flight, min(self.max_in_flight, int(self._cap)))

    @limit.setter
    def limit(self, value: int) -> None:
        self._cap = float(value)
        self._window = max(1, self.limit)
        self._notify()

    @property
    def rate(self) -> float | None:
        """The cap on requests per second in force: ``max_per_second`` as the window's decreases
        left it, or the learned rate if lower (``None``: no cap)."""
        learned = self.learned_rate
        if learned is None:
            return self._rate
        return learned if self._rate is None else min(self._rate, learned)

    @property
    def learned_rate(self) -> float | None:
        """The cap on requests per second learned from rate limits (``None``: none)."""
        return self.learner.cap if self.learner is not None else None

    @property
    def measured_rate(self) -> float | None:
        """The server's rate as last measured between two rate limits (``None``: unknown)."""
        return self.learner.measured if self.learner is not None else None

    @property
    def _changed(self) -> asyncio.Event:
        """The "a slot may be free" event of the running loop (a batch may be polled from more
        than one loop: a script's private loop, then a notebook's)."""
        try:
            key = id(asyncio.get_running_loop())
        except RuntimeError:
            key = 0
        event = self._events.get(key)
        if event is None:
            if len(self._events) > 8:
                self._events.clear()
            event = self._events[key] = asyncio.Event()
        return event

    def _notify(self) -> None:
        for event in self._events.values():
            event.set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a pause to end, a free slot and a rate token; release the slot on exit."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        """Wait for a pause to end, a free slot and a rate token, then take the slot."""
        while True:
            now = self._clock()
            if now < self.paused_until:
                await self._sleep(self.paused_until - now)
                continue
            if self.in_flight >= self.limit:
                self._changed.clear()
                await self._changed.wait()
                continue
            rate = self.rate
            if rate is not None:
                now = self._clock()
                if now < self._next_send:
                    self._held_back_at = now
                    await self._sleep(self._next_send - now)
                    continue
                self._next_send = max(now, self._next_send) + 1.0 / rate
            self.in_flight += 1
            return

    def release(self) -> None:
        """Give back the slot taken by :meth:`acquire`."""
        self.in_flight -= 1
        if self._stale > 0:
            self._stale -= 1
        self._notify()

    def on_success(self) -> None:
        """A request got a healthy answer."""
        now = self._answered()
        self._share -= self._share * SHARE_WEIGHT
        if self.learner is not None:
            self.learner.success(now, held_back=now - self._held_back_at <= 1.0)
        self._count(limited=False)

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every request of the batch for ``retry_after`` s (0: no pause; ``None``,
        unknown: 1 s). A 429 asking for no wait is isolated unless 429s are a storm."""
        self.rate_limited += 1
        now = self._answered()
        wait = max(0.0, retry_after) if retry_after is not None else 1.0
        self.paused_until = max(self.paused_until, now + wait)
        self._share += (1.0 - self._share) * SHARE_WEIGHT
        limit = wait > 0 or self._share >= STORM_SHARE
        if limit:
            self.rate_limits += 1
            self._last_retry_after = wait
        if self.learner is not None:
            if limit:
                self.learner.limited(now, self.in_flight)
            else:
                self.learner.isolated()
        self._count(limited=limit)

    def paused_for(self) -> float:
        """Seconds left of the pause after the last 429 (0: not paused)."""
        return max(0.0, self.paused_until - self._clock())

    def answers_per_second(self) -> float | None:
        """Answers per second over the last :data:`RATE_WINDOW` seconds (``None``: too early)."""
        times = self._answer_times
        now = self._clock()
        while times and now - times[0] > RATE_WINDOW:
            times.popleft()
        if len(times) < 2:
            return None
        span = max(now - times[0], 1e-9)
        return len(times) / span if span >= 1.0 else None

    def _answered(self) -> float:
        now = self._clock()
        self._answer_times.append(now)
        return now

    # ------------------------------------------------------------------ the cap in flight

    def _count(self, *, limited: bool) -> None:
        """Count one answer; at the end of a window, adapt the cap."""
        if self._stale > 0:
            return  # sent before the last decrease
        self._answers += 1
        self._limited += limited
        if self._answers < self._window:
            return
        share = self._limited / self._answers
        self._answers = self._limited = 0
        now = self._clock()
        if share > 0.0:
            factor = 1.0 - share * (1.0 - self.decrease)
            self._cap = max(float(self.min_in_flight), self._cap * factor)
            if self._rate is not None:
                self._rate = max(0.5, self._rate * factor)
            self.decreases += 1
            self._stale = self.in_flight
            self._last_change = now
        elif self._cap < self.max_in_flight and now - self._last_change >= self._recover_every():
            self._last_change = now
            self._cap = min(float(self.max_in_flight), self._cap + 1.0)
            if self._rate is not None and self.max_per_second is not None:
                step = self.max_per_second / self.max_in_flight
                self._rate = min(self.max_per_second, self._rate + step)
            self._notify()
        self._window = max(1, self.limit)

    def _recover_every(self) -> float:
        if self.recover_every is not None:
            return self.recover_every
        return min(self._last_retry_after, MAX_RECOVER_EVERY)

    def __repr__(self) -> str:
        rate = "" if self.rate is None else f", rate={self.rate:.1f}/s"
        return (
            f"Pacer(limit={self.limit}/{self.max_in_flight}, in_flight={self.in_flight}{rate}, "
            f"rate_limited={self.rate_limited}, decreases={self.decreases})"
        )
