"""``batch.tables(to=...)``: the three tables written as parquet datasets, streamed from the
journal, equal to ``batch.tables()``; a consistent partial view while runs still run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import plextera_data as px
from plextera_data.simulator import Simulator

TABLES = ("runs", "steps", "outputs")


def read_back(paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """Each dataset read with plain pandas, as a user would."""
    return {name: pd.read_parquet(paths[name]) for name in TABLES}


def assert_equal_to(back: dict[str, pd.DataFrame], tables: px.Tables) -> None:
    """Same columns, rows and values (plain pandas reads the categories' strings as ``str``,
    not ``string``); and through :meth:`Tables.read_parquet`, the very same tables."""
    for name in TABLES:
        pd.testing.assert_frame_equal(
            back[name], getattr(tables, name), check_dtype=False, check_categorical=False
        )


def assert_same_tables(directory: Path, tables: px.Tables) -> None:
    again = px.Tables.read_parquet(directory)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(again, name), getattr(tables, name))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A manual clock and the built-in workflows: ``variable-duration`` runs as long as the
    row's ``durationSeconds`` says and outputs its ``echo``."""
    with Simulator(seed=0, speed=None) as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> Iterator[px.Client]:
    with px.Client(**sim.client_options()) as in_process:
        yield in_process


def frame(durations: list[float]) -> pd.DataFrame:
    ids = [f"row-{i}" for i in range(len(durations))]
    return pd.DataFrame({"echo": ids, "durationSeconds": durations}, index=ids)


def test_tables_to_a_directory_read_back_equal_and_come_from_the_journal(
    tmp_path: Path, sim: Simulator, client: px.Client
) -> None:
    df = frame([1.0] * 30)
    batch = px.submit(
        df, "variable-duration", client=client, journal=tmp_path / "j.db", progress=False
    )
    sim.clock.advance(60)
    batch.wait(progress=False, time_scale=0.001)  # the runs ended: poll at once
    assert batch.counts == {"COMPLETED": 30}
    assert batch.journal is not None
    # The finished runs live in the journal: no row holds its Run.
    assert all(row.run is None for row in batch.rows)
    read: list[str] = []
    final_runs = batch.journal.final_runs

    def counted(*args: Any, **kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        for run_id, raw in final_runs(*args, **kwargs):
            read.append(run_id)
            yield run_id, raw

    batch.journal.final_runs = counted  # type: ignore[method-assign]
    paths = batch.tables(to=tmp_path / "out")
    assert sorted(read) == sorted(batch.status["run_id"])  # every run, from the journal
    assert paths == {name: tmp_path / "out" / name for name in TABLES}
    back = read_back(paths)
    tables = batch.tables()
    # batch.tables() streams the runs' JSON too: the tables of the runs as models, all at once.
    models = px.flatten(batch.runs, row_keys=batch.row_keys)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(tables, name), getattr(models, name))
    assert_equal_to(back, tables)
    assert_same_tables(tmp_path / "out", tables)
    assert len(back["runs"]) == 30
    assert set(back["runs"]["row_key"]) == set(df.index)
    echoed = back["outputs"].query("path == 'echo'")
    assert dict(zip(echoed["row_key"], echoed["value_str"], strict=True)) == dict(
        zip(df.index, df["echo"], strict=True)
    )


def test_while_runs_still_run_the_tables_are_a_consistent_partial_view(
    tmp_path: Path, sim: Simulator, client: px.Client
) -> None:
    df = frame([1.0, 5000.0] * 5)  # every other run takes far longer
    batch = px.submit(
        df, "variable-duration", client=client, journal=tmp_path / "j.db", progress=False
    )
    sim.clock.advance(60)
    for row in batch.rows:  # one poll of every run, as the poller would do it
        assert row.run_id is not None
        batch.ledger.record_run(row, client.get_run(row.run_id))
    batch.ledger.commit()
    assert batch.counts == {"COMPLETED": 5, "PROCESSING": 5}
    finished = [row for row in batch.rows if row.status == "COMPLETED"]
    assert all(row.run is None for row in finished)  # in the journal only

    back = read_back(batch.tables(to=tmp_path / "partial"))
    assert_equal_to(back, batch.tables())
    assert_same_tables(tmp_path / "partial", batch.tables())
    runs = back["runs"].set_index("row_key")
    assert runs["status"].to_dict() == batch.status["status"].to_dict()

    sim.clock.advance(6000)
    batch.wait(progress=False, time_scale=0.001)  # the runs ended: poll at once
    assert batch.counts == {"COMPLETED": 10}
    again = read_back(batch.tables(to=tmp_path / "partial"))  # a part written again
    assert_equal_to(again, batch.tables())
    assert (again["runs"]["status"] == "COMPLETED").all()


def test_integer_row_keys_stay_integers(tmp_path: Path, sim: Simulator, client: px.Client) -> None:
    df = frame([1.0] * 3).reset_index(drop=True)  # keyed 0, 1, 2
    batch = px.submit(df, "variable-duration", client=client, progress=False)  # no journal
    sim.clock.advance(60)
    batch.wait(progress=False, time_scale=0.001)
    back = read_back(batch.tables(to=tmp_path / "out"))
    assert (
        str(back["runs"]["row_key"].dtype) == str(batch.tables().runs["row_key"].dtype) == "Int64"
    )
    assert sorted(back["runs"]["row_key"]) == [0, 1, 2]
    assert_equal_to(back, batch.tables())
