"""A process killed (SIGKILL) mid-submission loses nothing and starts nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import plextera_data as px
from plextera_data.batch import SUBMISSION_UNCERTAIN
from plextera_data.simulator import Simulator, StepSpec, Workflow

ECHO = Workflow("echo", "Echo", steps=(StepSpec("Echo", "web_function"),), start_delay=0.0)
ROWS = 2_000
CONCURRENCY = 16

SCRIPT = textwrap.dedent(
    """
    import os, pandas as pd, plextera_data as px
    ids = [f"row-{i}" for i in range(int(os.environ["ROWS"]))]
    df = pd.DataFrame({"rowId": ids}, index=ids)
    client = px.Client(api_key=os.environ["SIM_KEY"], base_url=os.environ["SIM_URL"])
    px.submit(df, "echo", client=client, journal=os.environ["JOURNAL"], progress=False,
              concurrency=int(os.environ["CONCURRENCY"]))
    print("finished before the kill")
    """
)


def the_frame() -> pd.DataFrame:
    ids = [f"row-{i}" for i in range(ROWS)]
    return pd.DataFrame({"rowId": ids}, index=ids)


@pytest.mark.slow
def test_sigkill_mid_submission_then_rerun(tmp_path: Path) -> None:
    sim = Simulator(seed=0, speed=None, workflows=[ECHO])
    journal = tmp_path / "labs.plextera.db"
    with sim.serve() as server:
        env = {
            **os.environ,
            "SIM_URL": server.base_url,
            "SIM_KEY": sim.api_key,
            "JOURNAL": str(journal),
            "ROWS": str(ROWS),
            "CONCURRENCY": str(CONCURRENCY),
        }
        child = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        try:
            # Wait for the condition "500 runs created" (checked against a deadline), then kill.
            while sim.stats.total_posts < 500:
                assert child.poll() is None, "the submitting process ended before the kill"
                assert time.monotonic() < deadline, "the submission made no progress"
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        killed_at = sim.stats.total_posts
        assert killed_at < ROWS

        client = px.Client(api_key=sim.api_key, base_url=server.base_url)
        batch = px.submit(the_frame(), "echo", client=client, journal=journal, progress=False)

    started = Counter(body["rowId"] for _, body in sim.created_runs("echo"))
    status = batch.status
    uncertain = set(status.index[status["status"] == SUBMISSION_UNCERTAIN])
    assert len(uncertain) <= CONCURRENCY  # only starts in flight at the kill
    assert max(started.values()) == 1  # no row was ever started twice
    for key in the_frame().index:
        if key in uncertain:
            assert started[key] <= 1
        else:
            assert started[key] == 1, key
    created = dict(sim.created_runs("echo"))
    for key, run_id in status["run_id"].dropna().items():
        assert created[run_id]["rowId"] == key
    # No faults here, so every POST the simulator saw was a distinct row's one and only start.
    assert sim.stats.post_attempts["echo"] <= ROWS


WAIT_SCRIPT = textwrap.dedent(
    """
    import os, pandas as pd, plextera_data as px
    ids = [f"row-{i}" for i in range(int(os.environ["ROWS"]))]
    df = pd.DataFrame({"rowId": ids}, index=ids)
    client = px.Client(api_key=os.environ["SIM_KEY"], base_url=os.environ["SIM_URL"],
                       clock_rate=float(os.environ["SPEED"]))
    px.submit(df, "echo", client=client, journal=os.environ["JOURNAL"], progress=False,
              concurrency=int(os.environ["CONCURRENCY"]), wait=True)
    print("finished before the kill")
    """
)


@pytest.mark.slow
def test_a_dozen_kills_while_submitting_and_polling_start_nothing_twice(tmp_path: Path) -> None:
    """Killed at random moments a dozen times (while sending and while polling), resumed from
    its journal each time: every row ends with exactly one run or is flagged, and every row
    without a run on the server is one the batch reports as uncertain or failed."""
    import random

    rows, speed = 1_200, 50.0
    rng = random.Random(12)
    slow = Workflow("echo", "Echo", steps=(StepSpec("Echo", "web_function", duration=4.0),))
    sim = Simulator(seed=1, speed=speed, workflows=[slow])
    journal = tmp_path / "kills.plextera.db"
    ids = [f"row-{i}" for i in range(rows)]
    frame = pd.DataFrame({"rowId": ids}, index=ids)
    with sim.serve() as server:
        env = {
            **os.environ,
            "SIM_URL": server.base_url,
            "SIM_KEY": sim.api_key,
            "SPEED": str(speed),
            "JOURNAL": str(journal),
            "ROWS": str(rows),
            "CONCURRENCY": str(CONCURRENCY),
        }
        kills = 0
        for _ in range(12):
            child = subprocess.Popen(
                [sys.executable, "-c", WAIT_SCRIPT], env=env, stdout=subprocess.PIPE, text=True
            )
            # Kill once the server has seen a random number of further requests.
            target = sim.stats.requests + rng.randint(30, 400)
            deadline = time.monotonic() + 120
            try:
                while sim.stats.requests < target and child.poll() is None:
                    assert time.monotonic() < deadline, "the job made no progress"
                    time.sleep(0.002)
                if child.poll() is None:
                    os.kill(child.pid, signal.SIGKILL)
                    kills += 1
            finally:
                child.wait(timeout=30)
        assert kills >= 8  # most runs were killed before the job could finish
        client = px.Client(**server.client_options())
        batch = px.submit(
            frame,
            "echo",
            client=client,
            journal=journal,
            progress=False,
            wait=True,
            reconcile=True,
        )

    started = Counter(body["rowId"] for _, body in sim.created_runs("echo"))
    assert max(started.values()) == 1  # no row was ever started twice
    created = dict(sim.created_runs("echo"))
    flagged = {"SUBMISSION_UNCERTAIN", "SUBMISSION_FAILED"}
    for row in batch.rows:
        if row.run_id is not None:
            assert created[row.run_id]["rowId"] == row.key  # its one run
            assert row.status == "COMPLETED"
        else:
            assert row.status in flagged, row.key  # no run known: flagged, never silent
    for key in ids:
        if started[key] == 0:
            assert batch.row(key).status in flagged, key
    # Rows whose run exists but whose id was lost at a kill are reported with that run.
    reconciled = batch.reconciliation
    assert reconciled is not None
    for row in batch.rows:
        if row.run_id is None and started[row.key] == 1:
            assert row.key in reconciled.candidates, row.key
