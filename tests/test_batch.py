"""Batch bookkeeping: counts, record_run, the status frame, display."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from plextera_data.batch import SUBMISSION_UNCERTAIN, Batch
from plextera_data.client import Client
from plextera_data.ledger import Ledger, RowState
from plextera_data.models import Run


def make_batch(n: int = 4) -> Batch:
    keys = [f"k{i}" for i in range(n)]
    rows = [RowState(key=k, position=i, fingerprint="f") for i, k in enumerate(keys)]
    client = Client(api_key="k", base_url="http://127.0.0.1:9")
    return Batch(client, Ledger(rows, pd.Index(keys, name="key"), workflow_id="wf"))


def test_record_run_moves_counts_and_finishes_rows() -> None:
    batch = make_batch()
    ledger = batch.ledger
    row = batch.rows[0]
    ledger.accept(row, Run(id="r0", status="PROCESSING"), datetime.now(UTC))
    assert batch.snapshot().running == 1
    assert ledger.pending_poll() == [row]
    run = Run.from_dict(
        {
            "id": "r0",
            "status": "FAILED",
            "completedAt": "2024-01-15T09:30:00Z",
            "error": {"code": "WORKFLOW_RUN_FAILED", "message": "boom"},
        }
    )
    assert ledger.record_run(row, run) is True
    assert ledger.record_run(row, run) is False
    snap = batch.snapshot()
    assert (snap.failed, snap.running, snap.not_submitted) == (1, 0, 3)
    assert row.finished_at == pd.Timestamp("2024-01-15T09:30:00Z")
    assert row.error == "WORKFLOW_RUN_FAILED: boom"
    assert ledger.pending_poll() == []
    assert batch.runs == [run]
    assert batch.row_keys == {"r0": "k0"}
    assert snap.recent_failures[-1].row_key == "k0"


def test_poll_errors_are_counted_once_per_row() -> None:
    batch = make_batch()
    ledger = batch.ledger
    row = batch.rows[1]
    ledger.accept(row, Run(id="r1", status="PROCESSING"), datetime.now(UTC))
    ledger.record_poll_error(row, RuntimeError("x"), failing=True)
    ledger.record_poll_error(row, RuntimeError("y"), failing=True)
    assert batch.snapshot().poll_errors == 1
    ledger.record_run(row, Run.from_dict({"id": "r1", "status": "PROCESSING"}))
    assert batch.snapshot().poll_errors == 0
    assert row.error is None


def test_status_frame_follows_the_input_index() -> None:
    batch = make_batch(10_000)
    batch.ledger.mark_uncertain(batch.rows[5], None, message="maybe")
    status = batch.status
    assert status.index.equals(batch.index)
    assert status.loc["k5", "status"] == SUBMISSION_UNCERTAIN
    assert status.loc["k5", "error"] == "maybe"
    assert str(status["finished_at"].dtype) == "datetime64[us, UTC]"
    assert "SUBMISSION_UNCERTAIN: 1" in repr(batch)
    assert "<table>" in batch._repr_html_()
