"""Submitting against the simulator: exactly once, faults, journal re-runs, resume, interrupts."""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import plextera_data as px
from plextera_data.batch import SUBMISSION_FAILED, SUBMISSION_UNCERTAIN
from plextera_data.errors import JournalError, NotFoundError, SubmissionRefusedError
from plextera_data.retry import RetryPolicy
from plextera_data.simulator import Fault, Simulator, StepSpec, Workflow
from plextera_data.submit import SubmissionInterrupted, submit_async

ECHO = Workflow(
    "echo", "Echo", steps=(StepSpec("Echo", "web_function", duration=1.0),), start_delay=0.0
)


def make_sim(**kwargs: object) -> tuple[Simulator, px.Client]:
    sim = Simulator(seed=0, speed=None, workflows=[ECHO], **kwargs)
    return sim, px.Client(**sim.client_options())


def frame(n: int, start: int = 0) -> pd.DataFrame:
    ids = [f"row-{i}" for i in range(start, start + n)]
    return pd.DataFrame({"rowId": ids, "value": range(start, start + n)}, index=ids)


def runs_per_row(sim: Simulator) -> Counter[str]:
    return Counter(body["rowId"] for _, body in sim.created_runs("echo"))


def test_each_row_starts_one_run_and_status_is_indexed_like_the_input() -> None:
    sim, client = make_sim()
    df = frame(50).iloc[::-1]
    batch = px.submit(df, "echo", client=client, progress=False)
    assert runs_per_row(sim) == Counter({key: 1 for key in df.index})
    status = batch.status
    assert status.index.equals(df.index)
    assert list(status.columns) == [
        "run_id",
        "status",
        "error",
        "request_id",
        "attempts",
        "submitted_at",
        "finished_at",
        "polls",
    ]
    assert (status["status"] == "PROCESSING").all()
    assert str(status["submitted_at"].dtype) == "datetime64[us, UTC]"
    created = dict(sim.created_runs("echo"))
    for key, run_id in status["run_id"].items():
        assert created[run_id]["rowId"] == key
    assert set(sim.stats.request_ids) == {r.request_id for r in batch.rows}


@pytest.mark.slow
def test_10000_rows_with_injected_429s_and_5xx(tmp_path: Path) -> None:
    faults = [
        Fault(kind="rate_limit", method="POST", rate=0.05, retry_after=0.001),
        Fault(kind="server_error", method="POST", rate=0.01, status=503),
    ]
    sim, client = make_sim(faults=faults)
    df = frame(10_000)
    batch = px.submit(df, "echo", client=client, journal=tmp_path / "j.db", progress=False)
    status = batch.status
    assert len(status) == 10_000
    assert status.index.equals(df.index)
    started = runs_per_row(sim)
    assert max(started.values()) == 1  # no row started twice
    uncertain = status.index[status["status"] == SUBMISSION_UNCERTAIN]
    accepted = status.index[status["run_id"].notna()]
    assert len(accepted) + len(uncertain) == 10_000
    # A 5xx from the simulator creates no run, but the client cannot know: flagged, not re-sent.
    assert len(uncertain) == sim.stats.faults["server_error"]
    assert set(started) == set(accepted)
    assert sim.stats.faults["rate_limit"] > 0
    assert status["attempts"].sum() == sim.stats.post_attempts["echo"]
    assert status.loc[uncertain, "error"].str.contains("ServerError").all()
    assert batch.pacer.rate_limited > 0


def test_rerun_with_the_journal_sends_only_the_rest(tmp_path: Path) -> None:
    sim, client = make_sim()
    journal = tmp_path / "labs.plextera.db"
    px.submit(frame(30), "echo", client=client, journal=journal, progress=False)
    assert sim.stats.post_attempts["echo"] == 30
    batch = px.submit(frame(50), "echo", client=client, journal=journal, progress=False)
    assert sim.stats.post_attempts["echo"] == 50
    assert runs_per_row(sim) == Counter({f"row-{i}": 1 for i in range(50)})
    assert batch.status["run_id"].notna().all()
    again = px.submit(frame(50), "echo", client=client, journal=journal, progress=False)
    assert sim.stats.post_attempts["echo"] == 50
    assert again.status["run_id"].equals(batch.status["run_id"])


def test_a_changed_row_is_reported_not_resubmitted(tmp_path: Path) -> None:
    sim, client = make_sim()
    journal = tmp_path / "j.db"
    px.submit(frame(5), "echo", client=client, journal=journal, progress=False)
    changed = frame(5)
    changed.loc["row-3", "value"] = 999
    with pytest.warns(UserWarning, match="1 rows differ"):
        batch = px.submit(changed, "echo", client=client, journal=journal, progress=False)
    assert batch.changed_rows == ["row-3"]
    assert "differs from the request" in batch.status.loc["row-3", "error"]
    assert sim.stats.post_attempts["echo"] == 5
    batch.resubmit(["row-3"])
    assert sim.stats.post_attempts["echo"] == 6
    assert sim.created_runs("echo")[-1][1]["value"] == 999
    assert batch.changed_rows == []


def test_journal_of_another_workflow_is_refused(tmp_path: Path) -> None:
    sim, client = make_sim()
    sim.add_workflow(Workflow("other", "Other", steps=ECHO.steps))
    journal = tmp_path / "j.db"
    px.submit(frame(2), "echo", client=client, journal=journal, progress=False)
    with pytest.raises(JournalError, match="records a batch of workflow 'echo'"):
        px.submit(frame(2), "other", client=client, journal=journal, progress=False)
    assert sim.stats.post_attempts["other"] == 0


def test_resume_does_not_fetch_finished_runs_again(tmp_path: Path) -> None:
    sim, client = make_sim()
    journal = tmp_path / "j.db"
    batch = px.submit(frame(6), "echo", client=client, journal=journal, progress=False)
    sim.clock.advance(30)
    for row in batch.rows[:4]:
        assert row.run_id is not None
        batch.ledger.record_run(row, client.get_run(row.run_id))
    batch.journal.close()  # type: ignore[union-attr]
    gets_before = sim.stats.total_gets
    resumed = px.resume(journal, client=client)
    assert resumed.status.index.equals(batch.status.index)
    assert list(resumed.status["status"]) == ["COMPLETED"] * 4 + ["PROCESSING"] * 2
    assert [r.key for r in resumed.ledger.pending_poll()] == ["row-4", "row-5"]
    assert len(resumed.runs) == 4  # the finished ones, from the journal's final JSON
    assert resumed.runs[0].steps[0].name == "Echo"
    assert sim.stats.total_gets == gets_before


def test_rows_in_flight_at_a_crash_become_uncertain_on_resume(tmp_path: Path) -> None:
    sim, client = make_sim()
    journal = tmp_path / "j.db"
    px.submit(frame(3), "echo", client=client, journal=journal, progress=False)
    with sqlite3.connect(journal) as conn:  # what a kill mid-POST leaves behind
        conn.execute(
            "UPDATE rows SET status='SUBMITTING', run_id=NULL, request_id='pxd_x' "
            "WHERE row_key='\"row-1\"'"
        )
    resumed = px.resume(journal, client=client)
    row = resumed.row("row-1")
    assert row.status == SUBMISSION_UNCERTAIN
    assert "pxd_x" in (row.error or "")
    again = px.submit(frame(3), "echo", client=client, journal=journal, progress=False)
    assert again.row("row-1").status == SUBMISSION_UNCERTAIN
    assert sim.stats.post_attempts["echo"] == 3  # never re-sent by itself


def test_refused_rows_fail_and_are_sent_again_on_rerun(tmp_path: Path) -> None:
    sim, client = make_sim()
    journal = tmp_path / "j.db"
    with pytest.raises(SubmissionRefusedError) as caught:
        px.submit(frame(3), "nope", client=client, journal=journal, progress=False)
    batch = caught.value.batch
    refused = batch.status[batch.status["status"] == SUBMISSION_FAILED]
    assert len(refused) == 1  # the first refusal stopped the batch; the rest were not sent
    assert refused["error"].str.contains("NotFoundError").all()
    assert sim.stats.post_attempts["nope"] == 1
    with pytest.raises(SubmissionRefusedError):
        px.submit(frame(3), "nope", client=client, journal=journal, progress=False)
    assert sim.stats.post_attempts["nope"] == 2  # the refused row was sent again


def test_rate_limit_attempts_are_capped() -> None:
    sim, _ = make_sim(faults=[Fault(kind="rate_limit", method="POST", retry_after=0.001)])
    client = px.Client(
        api_key=sim.api_key,
        base_url=sim.in_process_base_url,
        transport=sim.transport(),
        retry=RetryPolicy(max_retries=9),
    )
    batch = px.submit(frame(2), "echo", client=client, progress=False, concurrency=2)
    assert set(batch.status["status"]) == {SUBMISSION_FAILED}
    assert list(batch.status["attempts"]) == [10, 10]
    assert sim.stats.total_posts == 0


def test_429s_while_the_batch_gets_through_do_not_fail_a_row() -> None:
    """Half the starts answered 429: rows meet two, three, four in a row while the others are
    accepted. Those 429s are the batch's pace, not the rows' fault: every row gets its run,
    even with one retry allowed; with max_retries=0 each row has exactly one attempt."""

    def client_for(sim: Simulator, retries: int) -> px.Client:
        return px.Client(**sim.client_options(retry=RetryPolicy(max_retries=retries)))

    fault = Fault(kind="rate_limit", method="POST", rate=0.5, retry_after=0)
    sim, _ = make_sim(faults=[fault])
    batch = px.submit(frame(40), "echo", client=client_for(sim, 1), progress=False)
    assert runs_per_row(sim) == Counter({f"row-{i}": 1 for i in range(40)})
    assert set(batch.status["status"]) == {"PROCESSING"}
    assert batch.status["attempts"].max() >= 3  # more 429s than one retry would allow
    assert fault.hits == batch.status["attempts"].sum() - 40

    sim, _ = make_sim(faults=[Fault(kind="rate_limit", method="POST", rate=0.5, retry_after=0)])
    batch = px.submit(frame(40), "echo", client=client_for(sim, 0), progress=False)
    assert list(batch.status["attempts"]) == [1] * 40
    failed = batch.status["status"] == SUBMISSION_FAILED
    assert 5 < failed.sum() < 35
    assert len(runs_per_row(sim)) == 40 - failed.sum()


def test_cancelling_async_submission_leaves_a_consistent_journal(tmp_path: Path) -> None:
    sim, client = make_sim(faults=[Fault(kind="slow", method="POST", delay=0.05)])
    journal = tmp_path / "j.db"
    df = frame(200)

    async def main() -> None:
        task = asyncio.create_task(
            submit_async(df, "echo", client=client.aclient, journal=journal, progress=False)
        )
        deadline = asyncio.get_running_loop().time() + 30
        # The simulator's counters have no event to wait on: poll them, with a deadline.
        while sim.stats.total_posts < 20:
            assert asyncio.get_running_loop().time() < deadline, "no starts reached the simulator"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    resumed = px.resume(journal, client=client)
    started = runs_per_row(sim)
    with_run = {r.key for r in resumed.rows if r.run_id}
    assert set(started) == with_run  # in-flight starts were let finish and journaled
    assert 20 <= len(with_run) < 200
    resumed.journal.close()  # type: ignore[union-attr]
    batch = px.submit(df, "echo", client=client, journal=journal, progress=False)
    assert runs_per_row(sim) == Counter({key: 1 for key in df.index})
    assert batch.status["run_id"].notna().all()


def test_interrupt_message_says_how_to_go_on(tmp_path: Path) -> None:
    from plextera_data.submit import _interrupt_message, _prepare

    _sim, client = make_sim()
    batch, _ = _prepare(
        frame(4),
        "echo",
        client=client,
        body=None,
        columns=None,
        files=None,
        upload=None,
        journal=tmp_path / "labs.plextera.db",
        concurrency=4,
        sep=".",
    )
    batch.rows[0].run_id = "r"
    text = _interrupt_message(batch)
    assert text.startswith("Interrupted: 1 of 4 rows submitted")
    assert "px.submit(df, 'echo', journal=" in text
    assert "px.resume(" in text
    # Interrupted while polling, every row submitted: say how to go on waiting.
    for row in batch.rows:
        row.run_id, row.status = f"run-{row.position}", "PROCESSING"
    batch.rows[0].status = "COMPLETED"
    text = _interrupt_message(batch)
    assert text.startswith("Interrupted while waiting: all 4 rows were submitted, 3 runs")
    assert "batch.wait()" in text
    assert "px.resume('" in text
    assert "labs.plextera.db" in text
    assert issubclass(SubmissionInterrupted, KeyboardInterrupt)


def test_sync_submit_inside_a_running_loop() -> None:
    sim, client = make_sim()

    async def notebook_cell() -> px.Batch:
        return px.submit(frame(5), "echo", client=client, progress=False)

    batch = asyncio.run(notebook_cell())
    assert batch.status["run_id"].notna().all()
    assert sim.stats.total_posts == 5


def test_api_key_never_reaches_the_journal(tmp_path: Path) -> None:
    key = "sk_sim_VERY_SECRET_KEY_123"
    sim = Simulator(seed=0, speed=None, workflows=[ECHO], api_key=key)
    client = px.Client(api_key=key, base_url=sim.in_process_base_url, transport=sim.transport())
    journal = tmp_path / "j.db"
    with pytest.raises(SubmissionRefusedError) as caught:
        px.submit(frame(5), "nope", client=client, journal=journal, progress=False)
    batch = caught.value.batch
    with pytest.raises(SubmissionRefusedError) as again:
        px.submit(frame(5, 5), "nope", client=client, journal=journal, progress=False)
    assert key not in str(caught.value) + str(again.value)
    batch.journal.close()
    for path in tmp_path.iterdir():
        assert key.encode() not in path.read_bytes()
    assert key not in repr(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert key not in batch._repr_html_()


# --------------------------------------------------------------------------- batch-wide refusals


def test_a_wrong_workflow_id_is_sent_once_and_a_rerun_after_the_fix_sends_the_rest(
    tmp_path: Path,
) -> None:
    sim, client = make_sim()
    journal = tmp_path / "j.db"
    df = frame(200)
    with pytest.raises(SubmissionRefusedError, match="Workflow 'echoo' was not found") as caught:
        px.submit(df, "echoo", client=client, journal=journal, progress=False)
    assert sim.stats.total_posts == 0
    assert sum(sim.stats.post_attempts.values()) == 1  # one refused POST, not 200
    error = caught.value
    assert isinstance(error.cause, NotFoundError)
    assert "1 rows refused, 199 not sent" in str(error)
    assert "Check the workflow id" in str(error)
    batch = error.batch
    assert batch.counts == {"NOT_SUBMITTED": 199, SUBMISSION_FAILED: 1}
    fixed = px.submit(df, "echo", client=client, journal=journal, progress=False)
    assert runs_per_row(sim) == Counter({key: 1 for key in df.index})
    assert fixed.status["run_id"].notna().all()


def test_a_revoked_key_is_sent_once(tmp_path: Path) -> None:
    sim = Simulator(seed=0, speed=None, workflows=[ECHO], api_key="sk_sim_current")
    client = px.Client(
        api_key="sk_sim_revoked", base_url=sim.in_process_base_url, transport=sim.transport()
    )
    with pytest.raises(SubmissionRefusedError, match="refused the API key") as caught:
        px.submit(frame(50), "echo", client=client, progress=False, wait=True)
    assert sim.stats.by_status[401] == 1
    assert "sk_sim_revoked" not in str(caught.value)
    good = px.Client(
        api_key="sk_sim_current", base_url=sim.in_process_base_url, transport=sim.transport()
    )
    assert caught.value.batch.counts["NOT_SUBMITTED"] == 49
    batch = px.submit(frame(50), "echo", client=good, progress=False)
    assert runs_per_row(sim) == Counter({f"row-{i}": 1 for i in range(50)})
    assert batch.counts == {"PROCESSING": 50}


def test_a_forbidden_start_stops_submission() -> None:
    import httpx

    posts: list[str] = []

    def forbidden(request: httpx.Request) -> httpx.Response:
        posts.append(request.url.path)
        return httpx.Response(
            403,
            json={"error": {"code": "FORBIDDEN", "message": "Not allowed.", "retryable": False}},
        )

    client = px.Client(
        api_key="k", base_url="http://127.0.0.1:9", transport=httpx.MockTransport(forbidden)
    )
    with pytest.raises(SubmissionRefusedError, match="may not start runs of workflow 'echo'"):
        px.submit(frame(30), "echo", client=client, progress=False, concurrency=8)
    assert len(posts) == 1


def test_a_404_for_something_else_is_not_batch_wide() -> None:
    from plextera_data.errors import NotFoundError as NotFound
    from plextera_data.sending import batch_wide

    def not_found(code: str | None) -> NotFound:
        return NotFound(status_code=404, method="POST", path="/workflows/x/runs", code=code)

    assert batch_wide(not_found("NOT_FOUND"))
    assert batch_wide(not_found(None))
    assert not batch_wide(not_found("FILE_NOT_FOUND"))


def test_starts_still_in_flight_after_the_grace_period_become_uncertain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plextera_data import sending

    monkeypatch.setattr(sending, "INTERRUPT_GRACE", 0.05)
    slow = Fault(kind="slow", method="POST", delay=30.0, requests=set(range(2, 10)))
    sim, client = make_sim(faults=[slow])
    journal = tmp_path / "j.db"

    async def main() -> None:
        task = asyncio.create_task(
            submit_async(frame(9), "echo", client=client.aclient, journal=journal, progress=False)
        )
        deadline = asyncio.get_running_loop().time() + 30
        while sum(sim.stats.post_attempts.values()) < 9:  # the probe, then 8 slow ones
            assert asyncio.get_running_loop().time() < deadline, "the starts did not leave"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    resumed = px.resume(journal, client=client)
    assert resumed.counts == {SUBMISSION_UNCERTAIN: 8, "PROCESSING": 1}
    for row in resumed.rows[1:]:
        assert row.error is not None
        assert row.error.startswith("Interrupted while this row's start was in flight")
        assert row.request_id is not None
        assert row.request_id in row.error
