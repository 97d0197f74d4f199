"""One gate for all the requests of a batch: a cap on requests in flight, a cap on requests per
second, and a shared pause after a 429, so one rate-limit answer slows the whole batch.

Every 429 pauses every request of the batch for its ``Retry-After`` (0 means no pause; 1 s when
the answer gave none and the caller knows no better). The cap on
requests in flight adapts once per *window*: a run of answers as long as the cap (about one round
trip's worth, as TCP counts its window):

* a window with 429s multiplies the cap by ``1 - share * (1 - decrease)``, ``share`` being the
  window's share of 429s: a window of nothing but 429s (a storm, or far more requests than the
  server takes) divides it by four (``decrease=0.25``), an isolated 429 among 16 answers trims it
  by under 5 %. So random, isolated 429s cost their pauses but do not collapse the batch to one
  request at a time, while a storm brings it down to ``min_in_flight`` in a few round trips;
* after a decrease, the answers to the requests already in flight are not counted: they were
  sent at the old pace and say nothing about the new one (one decrease per burst, not one per
  429 of it);
* a window with no 429 raises the cap by one, at most once per ``recover_every`` seconds
  (default: the last ``Retry-After``, at most 10 s, and 1 s before any 429). A pause lets the
  server's own window refill, so the first round trips after it always look healthy; growing by
  one per round trip would climb straight back to the rate that was refused;
* the cap stays between ``min_in_flight`` (the floor) and ``max_in_flight``.

A requests-per-second cap, when set, follows the same decreases and grows back with the cap.
The choice of policy and its figures: ``bench/bench_pacing.py``, docs/benchmarks.md (Pacing).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

__all__ = ["MAX_RECOVER_EVERY", "RATE_WINDOW", "Pacer"]

#: The longest wait between two increases of the cap when it follows ``Retry-After``.
MAX_RECOVER_EVERY = 10.0
#: Seconds over which :meth:`Pacer.answers_per_second` counts.
RATE_WINDOW = 5.0


class Pacer:
    """Admits requests under adaptive limits; share one instance between submit and poll.

    Call :meth:`acquire` before a request and :meth:`release` after it (or use :meth:`slot`), and
    tell the pacer how each answered: :meth:`on_success` or :meth:`on_rate_limited`.
    ``decrease`` is the factor applied to the cap after a window of nothing but 429s;
    ``recover_every`` the least time in seconds between two increases (``None``: follow the last
    ``Retry-After``, see the module's docstring).
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
        self.rate = max_per_second
        self.in_flight = 0
        self.paused_until = 0.0
        #: 429s received, and decreases of the cap they caused (for tests and benchmarks).
        self.rate_limited = 0
        self.decreases = 0
        self._window = max_in_flight  # answers in the current window
        self._answers = 0
        self._limited = 0
        self._stale = 0  # requests in flight at the last decrease, whose answers are not counted
        self._last_retry_after = 1.0
        self._last_change = float("-inf")  # when the cap last moved
        self._next_send = 0.0
        self._events: dict[int, asyncio.Event] = {}
        self._answer_times: deque[float] = deque(maxlen=4096)

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
        while True:
            now = self._clock()
            if now < self.paused_until:
                await self._sleep(self.paused_until - now)
                continue
            if self.in_flight >= self.limit:
                self._changed.clear()
                await self._changed.wait()
                continue
            if self.rate is not None:
                now = self._clock()
                if now < self._next_send:
                    await self._sleep(self._next_send - now)
                    continue
                self._next_send = max(now, self._next_send) + 1.0 / self.rate
            self.in_flight += 1
            return

    def release(self) -> None:
        self.in_flight -= 1
        if self._stale > 0:
            self._stale -= 1
        self._notify()

    def on_success(self) -> None:
        """A request got a healthy answer."""
        self._answered()
        self._count(limited=False)

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every request of the batch for ``retry_after`` s (0: no pause; ``None``,
        unknown: 1 s)."""
        self.rate_limited += 1
        self._answered()
        wait = max(0.0, retry_after) if retry_after is not None else 1.0
        self._last_retry_after = wait
        self.paused_until = max(self.paused_until, self._clock() + wait)
        self._count(limited=True)

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

    def _answered(self) -> None:
        self._answer_times.append(self._clock())

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
            if self.rate is not None:
                self.rate = max(0.5, self.rate * factor)
            self.decreases += 1
            self._stale = self.in_flight
            self._last_change = now
        elif self._cap < self.max_in_flight and now - self._last_change >= self._recover_every():
            self._last_change = now
            self._cap = min(float(self.max_in_flight), self._cap + 1.0)
            if self.rate is not None and self.max_per_second is not None:
                step = self.max_per_second / self.max_in_flight
                self.rate = min(self.max_per_second, self.rate + step)
            self._notify()
        self._window = max(1, self.limit)

    def _recover_every(self) -> float:
        if self.recover_every is not None:
            return self.recover_every
        return min(self._last_retry_after, MAX_RECOVER_EVERY)

    def __repr__(self) -> str:
        return (
            f"Pacer(limit={self.limit}/{self.max_in_flight}, in_flight={self.in_flight}, "
            f"rate_limited={self.rate_limited}, decreases={self.decreases})"
        )
