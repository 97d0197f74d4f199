"""Uncertain starts, reconciled by listing recent runs: rows proven unsent are sent once more,
runs the batch does not know are candidates (adopted by hand, never guessed), and the
simulator's accounting shows no row with a second run."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import plextera_data as px
from plextera_data.ledger import SUBMISSION_UNCERTAIN
from plextera_data.simulator import Fault, Simulator, StepSpec, Workflow

# ``sim`` (manual clock, with the ``echo`` workflow) and ``client`` come from conftest.py.


def frame(n: int) -> pd.DataFrame:
    ids = [f"row-{i}" for i in range(n)]
    return pd.DataFrame({"rowId": ids}, index=ids)


def runs_per_row(sim: Simulator) -> Counter[str]:
    return Counter(body["rowId"] for _, body in sim.created_runs("echo"))


def test_starts_answered_5xx_are_proven_unsent_and_sent_once(
    sim: Simulator, client: px.Client
) -> None:
    # A 500 before processing: no run exists, but the client cannot know that.
    sim.set_faults([Fault("server_error", method="POST", requests={3, 8})])
    df = frame(12)
    batch = px.submit(df, "echo", client=client, progress=False)
    uncertain = [r.key for r in batch.rows if r.status == SUBMISSION_UNCERTAIN]
    assert len(uncertain) == 2
    found = batch.reconcile()
    assert sorted(found.resent) == sorted(uncertain)
    assert found.candidates == {}
    assert found.pages == 1
    assert runs_per_row(sim) == Counter({key: 1 for key in df.index})
    assert batch.status["run_id"].notna().all()
    assert batch.reconcile().resent == []  # nothing left to settle
    assert "proven unsent" in repr(found)


def test_a_run_created_for_a_lost_answer_is_a_candidate_never_a_resend(
    sim: Simulator, client: px.Client
) -> None:
    # POST 5 is carried out but its answer is lost; POST 9 fails before processing. Both
    # starts were in flight in the same second: the run that exists could be either row's.
    sim.set_faults(
        [
            Fault("drop", method="POST", requests={5}, after_processing=True),
            Fault("server_error", method="POST", requests={9}),
        ]
    )
    batch = px.submit(frame(12), "echo", client=client, progress=False, concurrency=1)
    lost, failed = (r.key for r in batch.rows if r.status == SUBMISSION_UNCERTAIN)
    found = batch.reconcile()
    assert found.resent == []  # neither is proven: the unknown run could be either's
    created = {run_id for run_id, _ in sim.created_runs("echo")}
    orphan = (created - {r.run_id for r in batch.rows}).pop()
    assert {k: [c.run_id for c in v] for k, v in found.candidates.items()} == {
        lost: [orphan],
        failed: [orphan],
    }
    assert "batch.adopt" in found._repr_html_()
    row = batch.adopt(lost, orphan)
    assert row.run_id == orphan
    assert row.status == "PROCESSING"
    with pytest.raises(ValueError, match="already"):
        batch.adopt(failed, orphan)
    again = batch.reconcile()  # the orphan is known now: the other row is proven unsent
    assert again.resent == [failed]
    assert runs_per_row(sim) == Counter({f"row-{i}": 1 for i in range(12)})


def test_submit_reconcile_true_settles_at_the_end_of_submission(
    sim: Simulator, client: px.Client
) -> None:
    sim.set_faults([Fault("server_error", method="POST", requests={2, 4, 6})])
    batch = px.submit(frame(20), "echo", client=client, progress=False, reconcile=True)
    assert batch.reconciliation is not None
    assert len(batch.reconciliation.resent) == 3
    assert runs_per_row(sim) == Counter({f"row-{i}": 1 for i in range(20)})
    assert batch.counts == {"PROCESSING": 20}


def test_reconcile_true_reconciles_again_a_row_that_came_back_uncertain_and_waits_for_it() -> None:
    # POSTs 2, 4, 6 answer 500 (no run created): three rows uncertain, proven unsent and sent
    # again as POSTs 21-23, of which 21 answers 500 too: a second listing proves that one.
    echo = Workflow(
        "echo", "Echo", steps=(StepSpec("Echo", "web_function", duration=1.0),), start_delay=0.0
    )
    with Simulator(seed=0, speed=100.0, workflows=[echo]) as sim:
        sim.set_faults([Fault("server_error", method="POST", requests={2, 4, 6, 21})])
        client = px.Client(**sim.client_options())
        batch = px.submit(
            frame(20), "echo", client=client, progress=False, reconcile=True, wait=True
        )
        assert runs_per_row(sim) == Counter({f"row-{i}": 1 for i in range(20)})
        assert batch.counts == {"COMPLETED": 20}  # the rows sent again were waited for too
        found = batch.reconciliation
        assert found is not None
        assert len(found.resent) == 4  # three, then one of them again
        assert len(set(found.resent)) == 3
        assert found.pages >= 2
        assert sim.stats.started_twice == {}


def test_a_start_in_flight_at_a_crash_is_reconciled_after_resume(
    tmp_path: Path, sim: Simulator, client: px.Client
) -> None:
    journal = tmp_path / "j.db"
    df = frame(4)
    batch = px.submit(df, "echo", client=client, journal=journal, progress=False)
    batch.journal.close()  # type: ignore[union-attr]
    # As a kill would leave it: row-1 marked SUBMITTING (with when it left), its run created on
    # the server but its id never recorded.
    with sqlite3.connect(journal) as db:
        lost = db.execute("SELECT run_id FROM rows WHERE row_key = ?", ('"row-1"',)).fetchone()
        db.execute(
            "UPDATE rows SET status='SUBMITTING', run_id=NULL, request_id='pxd_x', "
            "submitted_at=NULL WHERE row_key = ?",
            ('"row-1"',),
        )
    resumed = px.resume(journal, client=client)
    assert resumed.row("row-1").status == SUBMISSION_UNCERTAIN
    with pytest.raises(ValueError, match="frame"):
        resumed.reconcile()
    found = resumed.reconcile(frame=df)
    # The run the server holds for row-1 is unknown to the batch: a candidate, not a resend.
    assert [c.run_id for c in found.candidates["row-1"]] == [lost[0]]
    resumed.adopt("row-1", lost[0])
    assert resumed.row("row-1").run_id == lost[0]
    assert runs_per_row(sim) == Counter({key: 1 for key in df.index})


def test_a_listing_cut_short_proves_nothing(sim: Simulator, client: px.Client) -> None:
    sim.set_faults([Fault("server_error", method="POST", requests={2})])
    batch = px.submit(frame(3), "echo", client=client, progress=False)
    sim.clock.advance(1000)  # later, other clients start 150 runs of the workflow
    for i in range(150):
        sim.start_run("echo", {"rowId": f"other-{i}"})
    found = batch.reconcile(max_pages=1)
    assert found.resent == []
    assert found.candidates == {}
    assert found.inconclusive == ["row-1"]
    complete = batch.reconcile()  # paging on reaches the window, which holds no unknown run
    assert complete.pages == 2
    assert complete.resent == ["row-1"]
    assert runs_per_row(sim)["row-1"] == 1
