"""Uncertain starts, reconciled as the vendor advises: list recent runs before sending again.

A start whose outcome is unknown (``SUBMISSION_UNCERTAIN``: a 5xx, a timeout, a dropped
connection after the request left, a process killed while it was in flight) may or may not have
created a run. Creation is not idempotent, so the vendor advises listing recent resources before
retrying. :func:`find` does that for a set of uncertain rows:

* each row's *window* is the time, on the API's clock, in which its start could have created a
  run: from when its last POST left (``sent_at``) to ``window`` seconds after, widened by a
  margin for the clock's uncertainty;
* it pages through ``GET /workflow-runs`` (newest first, as the simulator documents; the vendor
  documents no query parameters, so none but ``page`` and ``size`` are sent and the batch's
  workflow is filtered on the client) until a page's oldest ``createdAt`` is older than every
  window, or the last page;
* a listed run of the batch's workflow that the batch does not know is *unknown*: inside a row's
  window, it is a candidate for that row. A row whose window holds no unknown run is proven
  unsent; a row with candidates is left to the user (``batch.adopt(row_key, run_id)``), never
  guessed. Without any clock reading the windows are unbounded (every unknown run of the
  workflow is a candidate), and a listing cut short by ``max_pages`` proves nothing.

The choice of parameters is in docs/decisions.md.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from plextera_data.client import AsyncClient
from plextera_data.clock import ApiClock
from plextera_data.ledger import Ledger, RowState

__all__ = ["Candidate", "Reconciliation", "find"]

#: Runs asked for per page.
PAGE_SIZE = 100


@dataclass(frozen=True)
class Candidate:
    """A run the batch does not know, created in an uncertain row's window."""

    run_id: str
    created_at: datetime | None
    status: str | None


@dataclass
class Reconciliation:
    """What :meth:`Batch.reconcile` found and did.

    ``resent``: keys of rows proven unsent and sent once more. ``candidates``: row key -> runs
    that may be that row's (adopt one with ``batch.adopt(key, run_id)``, or
    ``batch.resubmit([key])`` if none is). ``inconclusive``: keys of rows the listing could
    not settle (cut short by ``max_pages``). ``pages``: pages of the listing read.
    """

    resent: list[Any] = field(default_factory=list)
    candidates: dict[Any, list[Candidate]] = field(default_factory=dict)
    inconclusive: list[Any] = field(default_factory=list)
    pages: int = 0

    def __repr__(self) -> str:
        return (
            f"<Reconciliation: {len(self.resent)} rows proven unsent and re-sent, "
            f"{len(self.candidates)} with candidate runs to check, "
            f"{len(self.inconclusive)} inconclusive; {self.pages} pages listed>"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        parts = [f"<div><b>Reconciliation</b>: {esc(repr(self)[17:-1])}"]
        if self.candidates:
            items = "".join(
                f"<li><code>{esc(repr(key))}</code>: "
                + ", ".join(
                    f"<code>{esc(c.run_id)}</code> ({esc(str(c.created_at))}, {esc(str(c.status))})"
                    for c in found
                )
                + "</li>"
                for key, found in self.candidates.items()
            )
            parts.append(
                "<br>Candidates (adopt with <code>batch.adopt(key, run_id)</code>, or "
                f"<code>batch.resubmit([key])</code> if none is the row's):<ul>{items}</ul>"
            )
        parts.append("</div>")
        return "".join(parts)


@dataclass
class Findings:
    """What the listing showed: rows proven unsent, candidates per row, rows left open."""

    proven: list[RowState]
    candidates: dict[Any, list[Candidate]]
    inconclusive: list[RowState]
    pages: int


def _windows(
    rows: Sequence[RowState], clock: ApiClock, window: float, margin: float
) -> dict[int, tuple[datetime, datetime]] | None:
    """Each row's window on the API's clock, or ``None`` when the clock is unknown."""
    if clock.offset is None:
        return None
    spans: dict[int, tuple[datetime, datetime]] = {}
    for row in rows:
        if row.sent_at is None:
            return None
        start = clock.to_api(row.sent_at)
        spans[row.position] = (
            start - timedelta(seconds=margin * clock.rate),
            start + timedelta(seconds=(window + margin) * clock.rate),
        )
    return spans


async def find(
    ledger: Ledger,
    aclient: AsyncClient,
    clock: ApiClock,
    rows: Sequence[RowState],
    *,
    window: float = 120.0,
    margin: float = 5.0,
    max_pages: int = 1000,
) -> Findings:
    """List recent runs and sort ``rows`` (uncertain) into proven unsent, with candidates, or
    inconclusive (see the module docstring). ``window``: seconds after a start left in which
    its run could have been created; ``margin``: seconds added on both sides for the clocks."""
    spans = _windows(rows, clock, window, margin)
    oldest = min(start for start, _ in spans.values()) if spans else None
    known = set(ledger.row_keys)
    unknown: list[Candidate] = []
    pages = 0
    complete = False
    while pages < max_pages:
        pages += 1
        page = await aclient.list_runs(page=pages, size=PAGE_SIZE)
        for run in page.runs:
            if run.id is None or run.id in known:
                continue
            if run.workflow_id not in (None, ledger.workflow_id):
                continue
            unknown.append(Candidate(run.id, run.created_at, run.status))
        created = [r.created_at for r in page.runs if r.created_at is not None]
        last_page = not page.runs or (page.total_pages is not None and pages >= page.total_pages)
        if last_page or (oldest is not None and created and min(created) < oldest):
            complete = True
            break
    candidates: dict[Any, list[Candidate]] = {}
    proven: list[RowState] = []
    open_rows: list[RowState] = []
    for row in rows:
        span = spans.get(row.position) if spans is not None else None
        mine = [
            c
            for c in unknown
            if span is None or c.created_at is None or span[0] <= c.created_at <= span[1]
        ]
        seen = {c.run_id: c for c in mine}  # a run listed twice (pages shifted) counts once
        if seen:
            candidates[row.key] = list(seen.values())
        elif complete:
            proven.append(row)
        else:
            open_rows.append(row)
    return Findings(proven, candidates, open_rows, pages)
