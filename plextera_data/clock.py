"""The API's clock as this client sees it: :class:`ApiClock`.

Elapsed times of runs are measured on the API's clock (a skewed client clock would otherwise make
runs look overdue, or not due for a long while). The batch learns the offset between the two
clocks from each new run's ``createdAt``, a timestamp the API set just before answering.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

__all__ = ["ApiClock"]


class ApiClock:
    """The API's current time, estimated from the timestamps it sends.

    ``rate``: API seconds per client second (1 for the real service; a sped-up simulator runs
    faster, see ``AsyncClient.clock_rate``).
    """

    def __init__(self, rate: float = 1.0) -> None:
        self.rate = rate
        #: Client clock minus the API's clock, in seconds (``None``: not measured yet).
        self.offset: float | None = None
        self._latest: tuple[float, datetime] | None = None  # (monotonic, API time)

    def note(self, server_time: datetime | None, received_at: datetime) -> None:
        """Learn from a timestamp the API set just before answering (a new run's
        ``createdAt``). The smallest ``received_at - server_time`` seen is the skew plus the
        fastest answer's latency, so the estimate only gets better."""
        if server_time is None:
            return
        sample = (received_at - server_time).total_seconds()
        if self.offset is None or sample < self.offset:
            self.offset = sample
        self._latest = (time.monotonic(), server_time)

    def now(self, rate: float | None = None) -> datetime:
        """The API's current time; the client's clock until a start has been answered.
        ``rate`` overrides :attr:`rate` (API seconds per client second)."""
        rate = self.rate if rate is None else rate
        if rate != 1.0 and self._latest is not None:
            seen_at, server_time = self._latest
            return server_time + timedelta(seconds=rate * (time.monotonic() - seen_at))
        now = datetime.now(UTC)
        return now - timedelta(seconds=self.offset) if self.offset else now

    def to_api(self, client_time: datetime, rate: float | None = None) -> datetime:
        """The API's time at the moment ``client_time`` (aware, client clock) was."""
        rate = self.rate if rate is None else rate
        ago = (datetime.now(UTC) - client_time).total_seconds()
        return self.now(rate) - timedelta(seconds=rate * ago)

    def seed(self, pairs: Iterable[tuple[datetime, datetime]]) -> bool:
        """With no answer heard yet (a resumed batch), estimate the offset from recorded
        ``(client time a start left, the API's createdAt of its run)`` pairs; returns whether
        there was anything to learn from. Their median is the skew minus a typical latency."""
        if self.offset is not None:
            return True
        samples = [(sent - created).total_seconds() for sent, created in pairs]
        if not samples:
            return False
        self.offset = statistics.median(samples)
        return True
