"""The ledger: the one writer of row state. Counts, failure groups, the accepted-rows feed,
restoring from the journal, and the journal writes each change makes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from plextera_data import errors
from plextera_data.journal import Journal
from plextera_data.ledger import (
    NOT_SUBMITTED,
    SUBMISSION_FAILED,
    SUBMISSION_UNCERTAIN,
    Ledger,
    RowState,
    open_ledger,
)
from plextera_data.models import Run


def ledger(n: int = 6) -> Ledger:
    rows = [RowState(key=f"k{i}", position=i, fingerprint=f"f{i}") for i in range(n)]
    return Ledger(rows, pd.Index([r.key for r in rows]), workflow_id="wf")


def forbidden(message: str = "No access.") -> errors.PermissionDeniedError:
    return errors.PermissionDeniedError(
        status_code=403,
        method="POST",
        path="/workflows/wf/runs",
        code="FORBIDDEN",
        vendor_message=message,
    )


def test_failures_are_grouped_per_kind_and_code_with_their_rows() -> None:
    book = ledger()
    for row in book.rows[:3]:
        book.mark_sending(row, "pxd_1", row.fingerprint)
        book.refuse(row, forbidden())
    book.mark_uncertain(book.rows[3], errors.ServerError(status_code=502, method="POST", path="/"))
    failed = Run.from_dict(
        {"id": "r4", "status": "FAILED", "error": {"code": "UNSUPPORTED_DOCUMENT", "message": "x"}}
    )
    book.accept(book.rows[4], Run(id="r4", status="PROCESSING"), datetime.now(UTC))
    book.record_run(book.rows[4], failed)
    groups = {(g.kind, g.code): g for g in book.snapshot().failures}
    assert set(groups) == {
        ("submission failed", "FORBIDDEN"),
        ("submission uncertain", "ServerError"),
        ("failed", "UNSUPPORTED_DOCUMENT"),
    }
    refused = groups[("submission failed", "FORBIDDEN")]
    assert (refused.count, refused.row_keys) == (3, ("k0", "k1", "k2"))
    assert "No access." in refused.message
    assert groups[("failed", "UNSUPPORTED_DOCUMENT")].run_id == "r4"
    # A row re-sent leaves its group.
    book.reset_for_resend(book.rows[1])
    refused = next(g for g in book.snapshot().failures if g.code == "FORBIDDEN")
    assert (refused.count, refused.row_keys) == (2, ("k0", "k2"))
    assert book.counts == {
        SUBMISSION_FAILED: 2,
        NOT_SUBMITTED: 2,
        SUBMISSION_UNCERTAIN: 1,
        "FAILED": 1,
    }


def test_a_row_counts_as_failing_to_poll_only_when_the_poller_says_so() -> None:
    book = ledger(2)
    row = book.rows[0]
    book.accept(row, Run(id="r0", status="PROCESSING"), datetime.now(UTC))
    book.record_poll_error(
        row, errors.ServerError(status_code=500, method="GET", path="/"), failing=False
    )
    assert book.snapshot().poll_errors == 0
    book.record_poll_error(
        row, errors.ServerError(status_code=500, method="GET", path="/"), failing=True
    )
    snap = book.snapshot()
    assert snap.poll_errors == 1
    assert [(g.kind, g.count) for g in snap.failures] == [("failing to poll", 1)]
    book.record_run(row, Run(id="r0", status="PROCESSING"))
    assert book.snapshot().poll_errors == 0
    assert book.snapshot().failures == ()


def test_accepted_rows_are_fed_in_order_without_a_scan() -> None:
    book = ledger(5)
    assert book.accepted_since(0) == ([], 0)
    for i in (3, 1):
        book.accept(book.rows[i], Run(id=f"r{i}", status="PROCESSING"), datetime.now(UTC))
    rows, mark = book.accepted_since(0)
    assert [r.key for r in rows] == ["k3", "k1"]
    book.accept(book.rows[0], Run(id="r0", status="COMPLETED"), datetime.now(UTC))
    book.accept(book.rows[4], Run(id="r4", status="PROCESSING"), datetime.now(UTC))
    rows, mark = book.accepted_since(mark)
    assert [r.key for r in rows] == ["k4"]  # a run already terminal needs no poll
    assert mark == 4


def test_an_answer_without_a_run_id_is_uncertain() -> None:
    book = ledger(1)
    book.accept(book.rows[0], Run(id=None, status="PROCESSING"), datetime.now(UTC))
    assert book.rows[0].status == SUBMISSION_UNCERTAIN
    assert "no run id" in (book.rows[0].error or "")


def test_every_change_is_written_to_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    keys = ["a", "b"]
    opened = open_ledger(
        keys, ["fa", "fb"], pd.Index(keys), workflow_id="wf", journal=journal, options={}
    )
    book = opened.ledger
    assert list(opened.to_send) == [0, 1]
    book.mark_sending(book.rows[0], "pxd_a", "fa")
    book.commit()
    on_disk = {r.key: r for r in journal.load().rows}  # type: ignore[union-attr]
    assert (on_disk["a"].status, on_disk["a"].request_id) == ("SUBMITTING", "pxd_a")
    assert on_disk["a"].sent_at is not None
    book.accept(book.rows[0], Run(id="run-a", status="PROCESSING"), datetime.now(UTC))
    book.refuse(book.rows[1], forbidden())
    book.commit()
    on_disk = {r.key: r for r in journal.load().rows}  # type: ignore[union-attr]
    assert (on_disk["a"].status, on_disk["a"].run_id) == ("PROCESSING", "run-a")
    assert (on_disk["b"].status, on_disk["b"].error_code) == (SUBMISSION_FAILED, "FORBIDDEN")
    journal.close()
