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
