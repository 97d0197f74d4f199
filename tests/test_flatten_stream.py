"""Flattening as the runs come: TableWriter and px.flatten(..., to=...) write parquet datasets."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from vendor_examples import VENDOR_COMPLETED, VENDOR_FAILED_EVENT

import plextera_data as px
from plextera_data.flatten import Tables, TableWriter, flatten


def _run(serial: int, nested: bool = False) -> dict[str, Any]:
    """A submitted run of 2 steps with mixed outputs; with ``nested``, one nested run."""
    child = {
        "id": f"child-{serial}",
        "status": "COMPLETED",
        "steps": [{"id": "c1", "name": "Inner", "status": "COMPLETED", "output": serial}],
    }
    return {
        "id": f"run-{serial}",
        "status": "FAILED" if serial % 7 == 3 else "COMPLETED",
        "createdAt": "2024-01-15T09:30:00Z",
        "workflow": {"id": "wf", "name": "Workflow"},
        "steps": [
            {
                "id": "s1",
                "name": "Extract",
                "status": "COMPLETED",
                "output": {
                    "serial": serial,
                    "big": 2**60 + serial,
                    "ok": None if serial % 3 == 0 else serial % 2 == 0,
                    "text": f"t{serial}",
                    "fields": [{"v": serial / 4}, {}],
                },
                "nestedRuns": {"count": int(nested), "data": [child] if nested else []},
            },
            {"id": "s2", "name": "Route", "status": "COMPLETED", "output": None},
        ],
    }


RUNS = [_run(serial, nested=serial % 5 == 0) for serial in range(40)]
KEYS = {run["id"]: 100 + serial for serial, run in enumerate(RUNS)}


def _assert_same_tables(left: Tables, right: Tables) -> None:
    for name in Tables.TABLE_NAMES:
        pd.testing.assert_frame_equal(getattr(left, name), getattr(right, name))


def test_flatten_to_a_directory_writes_datasets_that_read_back_equal(tmp_path: Path) -> None:
    written = flatten(iter(RUNS), row_keys=KEYS, to=tmp_path / "out")
    assert written == {name: tmp_path / "out" / name for name in Tables.TABLE_NAMES}
    for directory in written.values():
        assert [path.name for path in directory.iterdir()] == ["part-00000.parquet"]
    _assert_same_tables(Tables.read_parquet(tmp_path / "out"), flatten(RUNS, row_keys=KEYS))


def test_row_groups_are_written_as_the_runs_come(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path, rows_per_group=25)
    largest_run = 10  # rows of the biggest run tree: 3 steps and 7 leaves
    seen: list[int] = []

    def runs() -> Iterator[dict[str, Any]]:
        for run in RUNS:
            seen.append(writer.pending_rows)
            yield run

    with writer:
        writer.add(runs(), row_keys=KEYS)
        assert writer.rows_written["outputs"] > 0, "written before the end"
    assert max(seen) < 25 + largest_run
    groups = pq.ParquetFile(tmp_path / "outputs" / "part-00000.parquet").num_row_groups
    assert groups >= 5
    assert writer.rows_written == {
        "runs": len(RUNS) + 8,
        "steps": 2 * len(RUNS) + 8,
        "outputs": 6 * len(RUNS) + 8,
    }
    _assert_same_tables(Tables.read_parquet(tmp_path), flatten(RUNS, row_keys=KEYS))


def test_chunks_added_one_by_one_give_the_tables_of_all_runs(tmp_path: Path) -> None:
    with TableWriter(tmp_path, rows_per_group=30) as writer:
        for start in range(0, len(RUNS), 6):
            chunk = RUNS[start : start + 6]
            writer.add(chunk, row_keys={run["id"]: KEYS[run["id"]] for run in chunk})
    assert writer.runs_added == len(RUNS)
    back = Tables.read_parquet(tmp_path)
    _assert_same_tables(back, flatten(RUNS, row_keys=KEYS))
    assert back.runs["row_key"].dtype == "Int64"


def test_runs_events_and_dicts_are_all_accepted(tmp_path: Path) -> None:
    items = [
        px.Run.from_dict(VENDOR_COMPLETED),
        {"eventId": "evt_1", "eventType": "workflow.run.failed", "data": VENDOR_FAILED_EVENT},
        RUNS[0],
    ]
    flatten(items, to=tmp_path)
    _assert_same_tables(Tables.read_parquet(tmp_path), flatten(items))


def test_every_tool_reads_the_datasets(tmp_path: Path) -> None:
    with TableWriter(tmp_path, rows_per_group=40) as writer:
        writer.add(RUNS, row_keys=KEYS)
    expected = flatten(RUNS, row_keys=KEYS)
    outputs = tmp_path / "outputs"

    plain = pd.read_parquet(outputs)
    assert plain["value_int"].dtype == "Int64"
    assert plain["value_bool"].dtype == "boolean"
    assert plain["value_int"].dropna().tolist() == expected.outputs["value_int"].dropna().tolist()
    assert 2**60 + 39 in plain["value_int"].dropna().tolist()

    frame = pl.read_parquet(outputs / "*.parquet")
    assert frame.height == len(expected.outputs)
    assert frame.schema["value_int"] == pl.Int64
    assert frame["value_bool"].to_list() == [
        None if pd.isna(value) else value for value in expected.outputs["value_bool"]
    ]

    failed = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{(tmp_path / 'runs').as_posix()}/*.parquet') "
        "WHERE status = 'FAILED'"
    ).fetchall()
    assert failed == [(int((expected.runs["status"] == "FAILED").sum()),)]


def test_dask_reads_the_datasets(tmp_path: Path) -> None:
    dd = pytest.importorskip("dask.dataframe")
    flatten(RUNS, row_keys=KEYS, to=tmp_path)
    runs = dd.read_parquet(tmp_path / "runs").compute()
    assert runs["run_id"].tolist() == flatten(RUNS, row_keys=KEYS).runs["run_id"].tolist()


def test_parts_of_several_writers_share_a_dataset(tmp_path: Path) -> None:
    for part, chunk in (("part-b", RUNS[20:]), ("part-a", RUNS[:20])):
        with TableWriter(tmp_path, part=part, row_key_type="int64") as writer:
            writer.add(chunk, row_keys=KEYS)
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [
        "part-a.parquet",
        "part-b.parquet",
    ]
    _assert_same_tables(Tables.read_parquet(tmp_path), flatten(RUNS, row_keys=KEYS))

    # Written again, a part replaces its files whole.
    with TableWriter(tmp_path, part="part-b", row_key_type="int64") as writer:
        writer.add(RUNS[20:22], row_keys=KEYS)
    runs = Tables.read_parquet(tmp_path).runs
    assert runs.loc[runs["depth"] == 0, "run_id"].tolist()[-3:] == ["run-19", "run-20", "run-21"]


def test_an_error_inside_the_block_leaves_no_file_behind(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path, rows_per_group=10)

    def write() -> None:
        with writer:
            writer.add(RUNS[:10])
            writer.add(["not a run"])

    with pytest.raises(TypeError, match="run dicts"):
        write()
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == []


def test_an_empty_stream_writes_empty_tables(tmp_path: Path) -> None:
    flatten(iter([]), to=tmp_path)
    back = Tables.read_parquet(tmp_path)
    assert (len(back.runs), len(back.steps), len(back.outputs)) == (0, 0, 0)
    assert back.runs["row_key"].dtype == pd.StringDtype("pyarrow")


def test_the_row_key_type_is_fixed_by_the_first_add(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path / "ints", rows_per_group=5)
    writer.add(RUNS[:3], row_keys={run["id"]: 1 for run in RUNS[:3]})
    # The run's rows fill a row group, written at once: the error comes from this add().
    with pytest.raises(ValueError, match=r"row key 'x' of run 'run-3' is not an integer"):
        writer.add(RUNS[3:4], row_keys={"run-3": "x"})
    writer.abort()
    assert not list((tmp_path / "ints").rglob("*.parquet*"))

    with TableWriter(tmp_path / "text", row_key_type="string") as writer:
        writer.add(RUNS[1:3], row_keys={"run-1": 1, "run-2": "b"})
    assert Tables.read_parquet(tmp_path / "text").runs["row_key"].tolist() == ["1", "b"]

    with TableWriter(tmp_path / "none") as writer:
        writer.add(RUNS[:1])
        writer.add(RUNS[1:2], row_keys={"run-1": 5})
    assert Tables.read_parquet(tmp_path / "none").runs["row_key"].dtype == pd.StringDtype("pyarrow")


def test_row_key_type_in_memory_too() -> None:
    tables = flatten(RUNS[:2], row_keys={"run-0": 1, "run-1": 2}, row_key_type="string")
    assert tables.runs["row_key"].tolist()[:1] == ["1"]
    with pytest.raises(ValueError, match="row_key_type must be"):
        flatten(RUNS[:1], row_key_type="float")  # type: ignore[call-overload]


def test_writer_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        TableWriter(tmp_path, part="../elsewhere")
    with pytest.raises(ValueError, match="plain file name"):
        TableWriter(tmp_path, part=".hidden")
    with pytest.raises(ValueError, match="at least 1"):
        TableWriter(tmp_path, rows_per_group=0)
    writer = TableWriter(tmp_path)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add(RUNS[:1])


def test_reading_says_which_layout_is_there(tmp_path: Path) -> None:
    flatten(RUNS[:2], to=tmp_path)
    flatten(RUNS[:2]).to_parquet(tmp_path)
    with pytest.raises(ValueError, match=r"both runs/ and runs\.parquet"):
        Tables.read_parquet(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(FileNotFoundError, match="nor is there a dataset"):
        Tables.read_parquet(tmp_path / "other")


def test_the_input_is_read_once_and_left_as_it_was(tmp_path: Path) -> None:
    before = copy.deepcopy(RUNS)
    pulled: list[str] = []

    def runs() -> Iterator[dict[str, Any]]:
        for run in RUNS:
            pulled.append(run["id"])
            yield run

    flatten(runs(), row_keys=KEYS, to=tmp_path)
    assert pulled == [run["id"] for run in RUNS]
    assert before == RUNS
