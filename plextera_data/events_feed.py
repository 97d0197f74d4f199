"""Events finish runs without polling: :class:`EventFeed`, beside the poller.

With ``batch.wait(events=store)`` the feed reads the store's new events every ``interval``
seconds (a receiver in another process, or this one, writes them; see
:mod:`plextera_data.events`). A terminal event for a run the batch is polling:

* that carries what the tables need (``workflow.run.completed`` carries the full run, step
  outputs included) finishes the run at once: the ledger records it, the poller forgets it, no
  GET is sent;
* that lacks step outputs (the vendor's ``workflow.run.failed`` example has none) makes the
  poller fetch the run once, now, instead of at its planned time.

Runs without an event are still polled, later than without events (the poller's ``slack``), so
a missed event costs delay, never a lost run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from plextera_data.ledger import Ledger
from plextera_data.models import Run, is_terminal
from plextera_data.poll import Scheduler

__all__ = ["EventFeed", "EventSource"]

FAILED_EVENT = "workflow.run.failed"


class _Event(Protocol):
    event_type: str
    run: Run


class EventSource(Protocol):
    """What the feed reads: :class:`plextera_data.events.EventStore` is one."""

    def read_since(self, cursor: int = 0) -> tuple[Sequence[Any], int]: ...


def carries_outputs(run: Run) -> bool:
    """True when every step of ``run`` carries its ``output`` (present, even if null)."""
    steps = run.raw.get("steps")
    return isinstance(steps, list) and all(
        isinstance(step, dict) and "output" in step for step in steps
    )


class EventFeed:
    """Applies the terminal events of ``source`` to the runs ``scheduler`` polls."""

    def __init__(
        self,
        source: EventSource,
        ledger: Ledger,
        scheduler: Scheduler,
        *,
        interval: float = 0.1,
    ) -> None:
        self.source = source
        self.ledger = ledger
        self.scheduler = scheduler
        self.interval = interval
        #: Runs finished from their event (no GET), and runs fetched once after their event.
        self.finished = 0
        self.fetched = 0
        self._cursor = 0

    def read(self) -> int:
        """Apply the events stored since the last read; returns how many were read."""
        events, self._cursor = self.source.read_since(self._cursor)
        for event in events:
            self._apply(event)
        return len(events)

    async def run(self) -> None:
        """Read every ``interval`` seconds until cancelled."""
        while True:
            self.read()
            await asyncio.sleep(self.interval)

    def _apply(self, event: _Event) -> None:
        run = event.run
        if not run.id or not is_terminal(run.status):
            return
        row = self.ledger.row_for_run(run.id)
        if row is None or is_terminal(row.status):
            return
        if event.event_type == FAILED_EVENT and not carries_outputs(run):
            self.fetched += 1
            self.scheduler.poll_now(row)
            return
        self.ledger.record_run(row, run)
        self.scheduler.forget(row, run)
        self.finished += 1
