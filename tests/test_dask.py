"""plextera_data.dask: a Dask DataFrame's partitions as batches on a LocalCluster of worker
processes, against the simulator served on loopback.

What is proven, with the simulator's accounting: one run per row; never more requests in flight
at the API than the cluster-wide cap; a 429 pauses every partition; a worker killed mid-job
starts nothing twice, Dask's retry and a rerun finish the job; the tables read back with
dask.dataframe and DuckDB and join to the input; bad input stops the job before any request.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")

from plextera_data import dask as pxd  # noqa: E402
from plextera_data.errors import InvalidInputError, PlexteraError  # noqa: E402
from plextera_data.progress import Snapshot  # noqa: E402
from plextera_data.simulator import (  # noqa: E402
    Fault,
    Simulator,
    SimulatorApp,
    SimulatorServer,
    StepSpec,
    Workflow,
)


def duration(rng: Any, run_input: Any) -> float:
    """One run in ten lasts a simulated second (it is polled); the others end at once."""
    return 1.0 if int(run_input.get("n", 0)) % 10 == 0 else 0.0


QUICK = Workflow(
    "quick",
    "Quick",
    steps=(StepSpec("Echo", "web_function", duration=duration, output={"ok": True}),),
    start_delay=0.0,
)
#: Every run lasts 60 simulated seconds (0.3 s), so none is finished in its start's answer
#: (not even on a loaded machine, where 0.1 s between a run's creation and its answer was seen)
#: and the journal holds every final run: a run that ends in its start's answer is not
#: journaled (the ledger keeps its JSON in memory only), so a rerun's tables would lack it.
STEADY = Workflow(
    "steady",
    "Steady",
    steps=(StepSpec("Echo", "web_function", duration=60.0, output={"ok": True}),),
    start_delay=0.0,
)
SPEED = 200.0


def frame(rows: int, *, text_keys: bool = False) -> pd.DataFrame:
    keys = [f"row-{i:05d}" for i in range(rows)] if text_keys else list(range(rows))
    return pd.DataFrame({"n": range(rows), "label": [f"item {i}" for i in range(rows)]}, index=keys)


def simulator(**kwargs: Any) -> Simulator:
    return Simulator(seed=0, speed=SPEED, workflows=[QUICK, STEADY], **kwargs)


def one_run_per_row(sim: Simulator, rows: int, workflow_id: str = "quick") -> None:
    started = Counter(run_input["n"] for _, run_input in sim.created_runs(workflow_id))
    assert started == Counter(range(rows))  # every row once, no row twice
    assert sim.stats.started_twice == {}


class Recorder:
    """A progress reporter that keeps every snapshot it is shown."""

    def __init__(self) -> None:
        self.updates: list[Snapshot] = []
        self.closed: Snapshot | None = None

    def update(self, snapshot: Snapshot) -> None:
        self.updates.append(snapshot)

    def close(self, snapshot: Snapshot) -> None:
        self.closed = snapshot


def job_arguments(
    tmp_path: Path, server: SimulatorServer, cluster: distributed.Client, **extra: Any
) -> dict[str, Any]:
    """``pxd.submit``'s keyword arguments for a job in ``tmp_path`` against ``server``."""
    return {
        "journal_dir": tmp_path / "journals",
        "out": tmp_path / "out",
        "client_options": server.client_options(),
        "progress": False,
        "dask_client": cluster,
        **extra,
    }


def local_cluster() -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.Client]:
    with local_cluster() as running, distributed.Client(running) as client:
        yield client


# --------------------------------------------------------------------------- the whole job


@pytest.mark.slow
def test_20000_rows_in_8_partitions_one_run_each_within_the_cluster_cap(
    cluster: distributed.Client, tmp_path: Path
) -> None:
    cap = 8
    # Answers held 5 ms: without the cap, 2 partitions x 16 starts would be in flight at once.
    sim = simulator(faults=[Fault("slow", delay=0.005)])
    rows = 20_000
    ddf = dd.from_pandas(frame(rows), npartitions=8)
    shown = Recorder()
    with sim.serve() as server:
        job = pxd.submit(
            ddf,
            "quick",
            **job_arguments(tmp_path, server, cluster, max_in_flight=cap, progress=shown),
        )

    one_run_per_row(sim, rows)
    assert sim.stats.total_gets > 0  # the slower runs were polled, through the cap too
    assert cap // 2 <= sim.stats.max_in_flight <= cap
    assert job.counts == {"COMPLETED": rows}
    parts = job.partitions
    assert parts["state"].tolist() == ["done"] * 8
    assert parts["COMPLETED"].tolist() == [2_500] * 8
    # Leases are reused while busy: far fewer scheduler round trips than requests.
    leases = sum(r.leases_taken for r in job.results.values())
    assert 0 < leases < sim.stats.requests / 5

    # One display for the whole job: counts over all partitions, growing to the end.
    finished = [s.finished for s in shown.updates]
    assert finished == sorted(finished)
    assert len(set(finished)) >= 3
    assert shown.closed is not None
    assert (shown.closed.total, shown.closed.completed, shown.closed.phase) == (rows, rows, "done")

    for name in ("runs", "steps", "outputs"):
        files = sorted(p.name for p in (tmp_path / "out" / name).iterdir())
        assert files == [f"part-{n:05d}.parquet" for n in range(8)]
    runs = job.read("runs").compute()
    assert len(runs) == rows
    assert set(runs["row_key"]) == set(range(rows))


@pytest.mark.slow
def test_a_worker_killed_mid_job_starts_nothing_twice_and_the_rerun_finishes(
    tmp_path: Path,
) -> None:
    cap, rows = 8, 4_000
    sim = simulator()
    ddf = dd.from_pandas(frame(rows), npartitions=8)
    options = {
        # A dead worker's leases come back after 5 s, not the default 30 s.
        "distributed.scheduler.locks.lease-timeout": "5s",
        "distributed.scheduler.locks.lease-validation-interval": "1s",
    }
    with (
        dask.config.set(options),
        sim.serve() as server,
        local_cluster() as running,
        distributed.Client(running) as client,
    ):
        arguments = job_arguments(tmp_path, server, client, max_in_flight=cap)
        job = pxd.submit(ddf, "steady", wait=False, **arguments)
        deadline = time.monotonic() + 120
        while sim.stats.total_posts < rows // 3:  # mid-job: a third of the rows started
            assert not job.done, "the job ended before the kill"
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.01)
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        job.wait(progress=False)  # Dask runs the dead worker's partitions again elsewhere
        assert victim not in client.run(os.getpid).values()

        posts_before_rerun = sum(sim.stats.post_attempts.values())
        again = pxd.submit(ddf, "steady", **arguments)
        assert sum(sim.stats.post_attempts.values()) == posts_before_rerun  # nothing re-sent

    started = Counter(run_input["n"] for _, run_input in sim.created_runs("steady"))
    assert max(started.values()) == 1
    assert sim.stats.started_twice == {}
    counts = again.counts
    uncertain = counts.pop("SUBMISSION_UNCERTAIN", 0)
    # Only starts in flight on the dead worker are in doubt (at most the cap of leases it
    # held); they are never re-sent by themselves. Every other row ran once, to the end.
    assert uncertain <= cap
    assert counts == {"COMPLETED": rows - uncertain}
    assert len(started) >= rows - uncertain
    runs = again.read("runs").compute()
    assert len(runs) == rows - uncertain
    assert runs["row_key"].is_unique


# --------------------------------------------------------------------------- 429s


class RecordingApp(SimulatorApp):
    """The simulator's app, noting when each request arrived (wall clock) and its method."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        self.arrivals: list[tuple[float, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.arrivals.append((time.time(), scope["method"]))
        await super().__call__(scope, receive, send)


def test_a_429_pauses_every_partition_for_its_retry_after(
    cluster: distributed.Client, tmp_path: Path
) -> None:
    pause = 3.0
    sim = simulator(faults=[Fault("rate_limit", method="POST", requests=[600], retry_after=pause)])
    app = RecordingApp(sim)
    rows = 2_000
    ddf = dd.from_pandas(frame(rows), npartitions=4)  # 2 at once, one per worker process
    with SimulatorServer(app) as server:
        job = pxd.submit(ddf, "quick", **job_arguments(tmp_path, server, cluster))
    assert job.counts == {"COMPLETED": rows}
    assert sim.stats.answers["start", 429] == 1
    one_run_per_row(sim, rows)
    posts = [at for at, method in app.arrivals if method == "POST"]
    limited = posts[599]  # the 600th POST got the 429
    assert any(limited - 0.5 <= at < limited for at in posts)  # the partitions were busy
    # One second for the other partitions to hear of it (they read the pause every 0.25 s),
    # then silence from every partition until the Retry-After is over.
    quiet = [at for at, _ in app.arrivals if limited + 1.0 <= at < limited + pause]
    assert quiet == []
    assert any(at >= limited + pause for at, _ in app.arrivals)


# --------------------------------------------------------------------------- tables


def test_the_datasets_read_back_with_dask_and_duckdb_and_join_to_the_input(
    cluster: distributed.Client, tmp_path: Path
) -> None:
    duckdb = pytest.importorskip("duckdb")
    sim = Simulator(seed=0, speed=SPEED)
    df = frame(600, text_keys=True).rename(columns={"label": "customerId"})
    ddf = dd.from_pandas(df, npartitions=3)
    with sim.serve() as server:
        job = pxd.submit(ddf, "daily-lab-loader", **job_arguments(tmp_path, server, cluster))
    assert job.counts == {"COMPLETED": 600}

    runs = job.read("runs")
    outputs = dd.read_parquet(str(job.paths["outputs"]))
    joined = runs.merge(ddf, left_on="row_key", right_index=True).compute()
    assert len(joined) == 600
    assert (joined["customerId"] == joined["row_key"].map(df["customerId"])).all()
    assert set(outputs["path"].compute()) == {"extractionId", "fieldCount"}

    con = duckdb.connect()
    con.register("input", df.reset_index(names="key"))
    out = str(tmp_path / "out")
    found = con.execute(
        f"""
        SELECT count(*), count(DISTINCT i.key), min(o.value_int), max(o.value_int)
        FROM read_parquet('{out}/runs/*.parquet') r
        JOIN input i ON i.key = r.row_key
        JOIN read_parquet('{out}/outputs/*.parquet') o ON o.run_id = r.run_id
        WHERE o.path = 'fieldCount'
        """
    ).fetchone()
    assert found is not None
    assert found[:2] == (600, 600)
    assert 1 <= found[2] <= found[3] <= 8
    schemas = {
        str(duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall())
        for path in (tmp_path / "out" / "steps").iterdir()
    }
    assert len(schemas) == 1  # every file of a dataset has the same schema


# --------------------------------------------------------------------------- reruns


def test_a_rerun_sends_nothing_and_other_partitions_are_refused(
    cluster: distributed.Client, tmp_path: Path
) -> None:
    sim = simulator()
    ddf = dd.from_pandas(frame(400), npartitions=4)
    with sim.serve() as server:
        arguments = job_arguments(tmp_path, server, cluster)
        first = pxd.submit(ddf, "quick", **arguments)
        requests = sim.stats.requests
        again = pxd.submit(ddf, "quick", **arguments)
        assert sim.stats.requests == requests  # finished runs come from the journals
        assert again.counts == first.counts == {"COMPLETED": 400}
        assert sorted(p.name for p in (tmp_path / "journals").glob("*.db")) == [
            f"part-{n:05d}.plextera.db" for n in range(4)
        ]

        with pytest.raises(InvalidInputError, match="other partitions"):
            pxd.submit(dd.from_pandas(frame(400), npartitions=3), "quick", **arguments)
        with pytest.raises(InvalidInputError, match="workflow 'quick'"):
            pxd.submit(ddf, "daily-lab-loader", **arguments)
        assert sim.stats.requests == requests


# --------------------------------------------------------------------------- bad input


def test_bad_input_stops_the_job_before_any_request(
    cluster: distributed.Client, tmp_path: Path
) -> None:
    sim = simulator()
    with sim.serve() as server:
        arguments = job_arguments(tmp_path, server, cluster)
        # Two partitions numbered from 0 each, as read_csv gives: the keys repeat across them.
        repeated = pd.concat([frame(50), frame(50)])
        ddf = dd.from_pandas(repeated, npartitions=2, sort=False)
        with pytest.raises(InvalidInputError, match="repeats 50 keys across partitions") as info:
            pxd.submit(ddf, "quick", **arguments)
        assert info.value.problems[0] == (0, None, "in partitions [0, 1]")

        bad = frame(300).assign(score=0.5)
        bad.loc[250, "score"] = float("inf")  # JSON cannot hold it
        with pytest.raises(InvalidInputError, match="Partition 2") as info:
            pxd.submit(dd.from_pandas(bad, npartitions=3), "quick", **arguments)
        assert [(key, column) for key, column, _ in info.value.problems] == [(250, "score")]

        with pytest.raises(TypeError, match=r"px\.submit"):
            pxd.submit(frame(3), "quick", **arguments)
        with pytest.raises(PlexteraError, match="transport"):
            pxd.submit(
                dd.from_pandas(frame(3), npartitions=1),
                "quick",
                **{**arguments, "client_options": sim.client_options()},
            )
    assert sim.stats.requests == 0
    assert not (tmp_path / "journals").exists()


def test_a_refused_key_names_the_partition_and_its_journal(
    cluster: distributed.Client, tmp_path: Path
) -> None:
    sim = simulator()
    ddf = dd.from_pandas(frame(40), npartitions=2)
    with sim.serve() as server:
        arguments = job_arguments(tmp_path, server, cluster)
        arguments["client_options"]["api_key"] = "sk_wrong"
        journal = r"Its journal '.*part-0000\d\.plextera\.db' keeps what it did"
        with pytest.raises(PlexteraError, match=rf"(?s)Partition \d stopped: .*{journal}"):
            pxd.submit(ddf, "quick", **arguments)
    assert sim.stats.total_posts == 0
    assert sim.stats.answers["start", 401] >= 1
