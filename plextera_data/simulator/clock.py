"""Simulated time: a clock that runs ``speed`` times faster than wall time, or only when told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["DEFAULT_EPOCH", "SimClock"]

#: Where simulated time starts unless told otherwise (the vendor's failed-event example's
#: ``createdAt``). A fixed start keeps timestamps identical between runs with a manual clock.
DEFAULT_EPOCH = datetime(2026, 4, 7, 10, 10, 0, tzinfo=UTC)


class SimClock:
    """The simulator's clock, in UTC.

    ``speed`` is simulated seconds per wall second (``50.0``: a 20 s run takes 0.4 s of wall
    time). ``speed=None`` makes a manual clock that moves only through :meth:`advance`, so tests
    are exact and never sleep. :meth:`advance` also works on a running clock (it jumps ahead).

        clock = SimClock(speed=None)
        clock.advance(30)      # 30 simulated seconds later
    """

    def __init__(self, speed: float | None = 1.0, *, start: datetime = DEFAULT_EPOCH) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be a positive number or None (manual), not {speed!r}")
        if start.tzinfo is None:
            raise ValueError("start must be a timezone-aware datetime (UTC)")
        self._speed = speed
        self._start = start.astimezone(UTC)
        self._offset = 0.0
        self._wall_origin = time.perf_counter()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def speed(self) -> float | None:
        """Simulated seconds per wall second; ``None`` for a manual clock."""
        return self._speed

    @property
    def manual(self) -> bool:
        """True when time moves only through :meth:`advance`."""
        return self._speed is None

    @property
    def start(self) -> datetime:
        """The simulated time at which the clock started."""
        return self._start

    def elapsed(self) -> float:
        """Simulated seconds since :attr:`start`."""
        with self._lock:
            if self._speed is None:
                return self._offset
            return self._offset + (time.perf_counter() - self._wall_origin) * self._speed

    def now(self) -> datetime:
        """The current simulated time (aware, UTC)."""
        return self._start + timedelta(seconds=self.elapsed())

    def advance(self, seconds: float) -> datetime:
        """Move simulated time forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError(f"time only moves forward; cannot advance by {seconds!r} seconds")
        with self._lock:
            self._offset += float(seconds)
        for listener in list(self._listeners):
            listener()
        return self.now()

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each :meth:`advance` (so schedulers waiting on simulated
        time can look again)."""
        self._listeners.append(listener)

    def wall_seconds(self, simulated_seconds: float) -> float:
        """Wall seconds that ``simulated_seconds`` take on this clock (``inf`` when manual)."""
        if self._speed is None:
            return float("inf")
        return simulated_seconds / self._speed

    def __repr__(self) -> str:
        speed = "manual" if self._speed is None else f"speed={self._speed:g}"
        return f"SimClock({speed}, now={format_time(self.now())})"


def format_time(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and ``Z``: ``2026-04-07T10:10:00.000Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
