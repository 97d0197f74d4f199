"""Request accounting, so tests and benchmarks can prove "each row created exactly one run"."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["SimStats"]


@dataclass
class SimStats:
    """Counts of what the simulator received and answered. Updated under a lock.

    ``posts``: starts (``POST /workflows/{id}/runs``) that created a run, per workflow id.
    ``post_attempts``: every such POST, faulted or rejected ones included, per workflow id.
    ``gets``: ``GET /workflow-runs/{id}`` per run id (faulted ones included).
    ``gets_after_terminal``: GETs of a run made after an earlier GET had answered it terminal.
    ``requests``: every request; ``by_status``: answers per HTTP status (drops have none);
    ``faults``: injected faults per kind; ``request_ids``: the ``X-Request-Id`` values clients
    sent, in order.
    """

    posts: Counter[str] = field(default_factory=Counter)
    post_attempts: Counter[str] = field(default_factory=Counter)
    gets: Counter[str] = field(default_factory=Counter)
    gets_after_terminal: Counter[str] = field(default_factory=Counter)
    lists: int = 0
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def total_posts(self) -> int:
        """Runs created through the API."""
        with self.lock:
            return sum(self.posts.values())

    @property
    def total_gets(self) -> int:
        """``GET /workflow-runs/{id}`` requests, all runs together."""
        with self.lock:
            return sum(self.gets.values())

    def reset(self) -> None:
        """Forget every count (the runs stay)."""
        with self.lock:
            for counter in (
                self.posts,
                self.post_attempts,
                self.gets,
                self.gets_after_terminal,
                self.by_status,
                self.faults,
            ):
                counter.clear()
            self.request_ids.clear()
            self.lists = 0
            self.requests = 0
