"""One gate for all the requests of a batch: a cap on requests in flight, a cap on requests per
second, and a shared pause after a 429, so one rate-limit answer slows the whole batch.

The cap on requests in flight adapts: it halves on a 429 (down to ``min_in_flight``) and grows
back by one after every ``recover_after`` successes in a row (additive increase, multiplicative
decrease, as TCP does). After a 429, the requests-per-second cap also halves, and recovers with the
in-flight cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

__all__ = ["Pacer"]


class Pacer:
    """Admits requests under adaptive limits; share one instance between submit and poll.

    ``clock`` and ``sleep`` can be replaced in tests (a fake clock that advances on sleep).
    """

    def __init__(
        self,
        *,
        max_in_flight: int = 16,
        max_per_second: float | None = None,
        min_in_flight: int = 1,
        recover_after: int = 20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if max_per_second is not None and max_per_second <= 0:
            raise ValueError("max_per_second must be positive (or None for no cap)")
        self.max_in_flight = max_in_flight
        self.max_per_second = max_per_second
        self.min_in_flight = max(1, min(min_in_flight, max_in_flight))
        self.recover_after = recover_after
        self._clock = clock
        self._sleep = sleep
        self.limit = max_in_flight
        self.rate = max_per_second
        self.in_flight = 0
        self.paused_until = 0.0
        self.rate_limited = 0
        self._successes = 0
        self._next_send = 0.0
        self._events: dict[int, asyncio.Event] = {}

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
        self._notify()

    def on_success(self) -> None:
        """A request got a healthy answer: after enough in a row, allow one more in flight."""
        self._successes += 1
        if self._successes >= self.recover_after:
            self._successes = 0
            if self.limit < self.max_in_flight:
                self.limit += 1
                self._notify()
            if self.rate is not None and self.max_per_second is not None:
                self.rate = min(self.max_per_second, self.rate * 1.25)

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every request of the batch for ``retry_after`` s, then go on slower."""
        self.rate_limited += 1
        self._successes = 0
        wait = retry_after if retry_after is not None and retry_after > 0 else 1.0
        now = self._clock()
        already_paused = now < self.paused_until
        self.paused_until = max(self.paused_until, now + wait)
        if already_paused:
            # The other answers of the same burst: one slow-down per pause, not one per answer.
            return
        self.limit = max(self.min_in_flight, self.limit // 2)
        if self.rate is not None:
            self.rate = max(0.5, self.rate / 2)
