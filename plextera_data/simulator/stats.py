"""Request accounting, so tests and benchmarks can prove "each row created exactly one run"."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["SimStats"]


@dataclass
class SimStats:
    """Counts of what the simulator received, answered and delivered. Updated under a lock.

    ``posts``: starts (``POST /workflows/{id}/runs``) that created a run, per workflow id.
    ``post_attempts``: every such POST, faulted or rejected ones included, per workflow id.
    ``runs_per_input``: runs created through the API per ``(workflow id, input digest)``: a
    value above 1 means the same input was started more than once (see :attr:`started_twice`).
    ``gets``: ``GET /workflow-runs/{id}`` per run id (faulted ones included).
    ``gets_after_terminal``: GETs of a run made after an earlier GET had answered it terminal.
    ``requests``: every request; ``by_kind``: requests per endpoint (``start``, ``get_run``,
    ``list_runs``, ``upload_file``, ``get_file``, ``download_file``, ``create_subscription``, ...,
    ``not_found``, ``method_not_allowed``); ``by_status``: answers per HTTP status (drops have
    none); ``answers``: answers per ``(kind, status)``; ``faults``: injected faults per kind;
    ``request_ids``: the ``X-Request-Id`` values clients sent, in order. ``in_flight``: requests
    being handled right now (arrived, not yet answered or dropped); ``max_in_flight``: the most
    at once since the start (or the last :meth:`reset`).

    Event deliveries: ``deliveries`` (attempts), ``delivery_answers`` (per HTTP status, or
    ``"error"`` when no answer came: refused, dropped, timed out), ``events_acknowledged``
    (events answered 2xx at least once), ``events_lost`` (never sent, by an injected fault),
    ``events_duplicated`` (sent once more after a 2xx), ``events_abandoned`` (no 2xx after the
    last attempt).
    """

    posts: Counter[str] = field(default_factory=Counter)
    post_attempts: Counter[str] = field(default_factory=Counter)
    runs_per_input: Counter[tuple[str, str]] = field(default_factory=Counter)
    gets: Counter[str] = field(default_factory=Counter)
    gets_after_terminal: Counter[str] = field(default_factory=Counter)
    lists: int = 0
    requests: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    deliveries: int = 0
    delivery_answers: Counter[int | str] = field(default_factory=Counter)
    events_acknowledged: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    events_abandoned: int = 0
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

    @property
    def started_twice(self) -> dict[tuple[str, str], int]:
        """``(workflow id, input digest)`` -> runs, for each input the API created more than one
        run for. Empty when no input was started twice (identical rows are one input)."""
        with self.lock:
            return {key: count for key, count in self.runs_per_input.items() if count > 1}

    def reset(self) -> None:
        """Forget every count (the runs stay)."""
        with self.lock:
            for counter in (
                self.posts,
                self.post_attempts,
                self.runs_per_input,
                self.gets,
                self.gets_after_terminal,
                self.by_kind,
                self.by_status,
                self.answers,
                self.faults,
                self.delivery_answers,
            ):
                counter.clear()
            self.request_ids.clear()
            self.max_in_flight = self.in_flight  # those still in flight stay counted
            self.lists = self.requests = self.deliveries = 0
            self.events_acknowledged = self.events_lost = 0
            self.events_duplicated = self.events_abandoned = 0
