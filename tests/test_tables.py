"""Tables on disk: parquet round trip, fixed schemas, and the same types in DuckDB and polars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pytest

from plextera_data.flatten import Tables, flatten

RUNS: list[dict[str, Any]] = [
    {
        "id": "r1",
        "status": "COMPLETED",
        "createdAt": "2024-01-15T09:30:00Z",
        "completedAt": "2024-01-15T09:31:00.5Z",
        "workflow": {"id": "daily-lab-loader", "name": "Daily Lab Loader"},
        "progress": {"stepsCompleted": 1, "stepsTotal": 1},
        "durationMs": 60500,
        "steps": [
            {
                "id": "step_01",
                "name": "Extract",
                "type": "document_insights",
                "status": "COMPLETED",
                "output": {"s": "x", "i": 1, "f": 0.5, "b": True, "n": None, "o": {}, "a": []},
                "nestedRuns": {
                    "count": 1,
                    "data": [
                        {
                            "id": "c1",
                            "status": "COMPLETED",
                            "steps": [{"id": "cs", "status": "COMPLETED", "output": 2**70}],
                        }
                    ],
                },
            }
        ],
        "tenant": {"id": 7},
    },
    {
        "id": "r2",
        "status": "FAILED",
        "error": {"code": "WORKFLOW_RUN_FAILED", "message": "Client endpoint rejected it."},
        "steps": [{"id": "step_01", "status": "FAILED", "message": "rejected"}],
    },
]

DUCKDB_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMP WITH TIME ZONE",
    "dictionary<values=string, indices=int32, ordered=0>": "VARCHAR",
}
POLARS_TYPES = {
    "string": pl.String,
    "int64": pl.Int64,
    "double": pl.Float64,
    "bool": pl.Boolean,
    "timestamp[us, tz=UTC]": pl.Datetime("us", "UTC"),
    "dictionary<values=string, indices=int32, ordered=0>": pl.Categorical,
}


@pytest.fixture(params=[{"r1": 3, "r2": 4}, {"r1": "a", "r2": "b"}, None], ids=str)
def tables(request: pytest.FixtureRequest) -> Tables:
    return flatten(RUNS, row_keys=request.param)


def assert_tables_equal(left: Tables, right: Tables) -> None:
    for name in Tables.TABLE_NAMES:
        pd.testing.assert_frame_equal(getattr(left, name), getattr(right, name))


def test_round_trip_gives_equal_frames(tables: Tables, tmp_path: Path) -> None:
    written = tables.to_parquet(tmp_path / "out")
    assert {name: path.name for name, path in written.items()} == {
        "runs": "runs.parquet",
        "steps": "steps.parquet",
        "outputs": "outputs.parquet",
    }
    assert_tables_equal(tables, Tables.read_parquet(tmp_path / "out"))


def test_files_have_the_fixed_schema(tables: Tables, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from plextera_data.tables import SCHEMAS

    written = tables.to_parquet(tmp_path)
    row_key_type = "int64" if tables.runs["row_key"].dtype == "Int64" else "string"
    for name, path in written.items():
        schema = pq.read_schema(path)
        assert set(schema.metadata) == {b"pandas"}, "pandas metadata only: it sets pandas' dtypes"
        described = [column["name"] for column in schema.pandas_metadata["columns"]]
        assert described == schema.names
        for field in SCHEMAS[name]:
            expected = row_key_type if field.name == "row_key" else str(field.type)
            assert str(schema.field(field.name).type) == expected, (name, field.name)


def test_duckdb_and_polars_read_the_same_types_and_rows(tables: Tables, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    written = tables.to_parquet(tmp_path)
    for name, path in written.items():
        schema = pq.read_schema(path)
        relation = duckdb.sql(f"SELECT * FROM read_parquet('{path.as_posix()}')")
        assert relation.columns == schema.names
        assert [str(t) for t in relation.types] == [DUCKDB_TYPES[str(f.type)] for f in schema]
        assert relation.aggregate("count(*)").fetchall() == [(len(getattr(tables, name)),)]
        frame = pl.read_parquet(path)
        assert frame.height == len(getattr(tables, name))
        assert list(frame.schema.values()) == [POLARS_TYPES[str(f.type)] for f in schema]


def test_values_survive_in_duckdb(tmp_path: Path) -> None:
    written = flatten(RUNS, row_keys={"r1": 3, "r2": 4}).to_parquet(tmp_path)
    rows = duckdb.sql(
        f"SELECT path, value_type, value_json FROM read_parquet('{written['outputs'].as_posix()}')"
        " WHERE value_json IS NOT NULL ORDER BY path"
    ).fetchall()
    assert rows == [("", "integer", str(2**70)), ("a", "array", "[]"), ("o", "object", "{}")]
    failed = duckdb.sql(
        f"SELECT run_id, error_code FROM read_parquet('{written['runs'].as_posix()}')"
        " WHERE status = 'FAILED'"
    ).fetchall()
    assert failed == [("r2", "WORKFLOW_RUN_FAILED")]


def test_edited_frames_still_write(tmp_path: Path) -> None:
    tables = flatten(RUNS)
    tables.runs["note"] = "checked"
    tables.steps = tables.steps.query("status == 'FAILED'").reset_index(drop=True)
    back = Tables.read_parquet(tables.to_parquet(tmp_path)["runs"].parent)
    assert back.runs["note"].tolist() == ["checked", "checked", "checked"]
    assert back.steps["step_id"].tolist() == ["step_01"]
    assert back.steps["status"].cat.categories.tolist() == ["FAILED"]


def test_empty_tables_round_trip(tmp_path: Path) -> None:
    tables = flatten([])
    assert (len(tables.runs), len(tables.steps), len(tables.outputs)) == (0, 0, 0)
    assert_tables_equal(tables, Tables.read_parquet(tables.to_parquet(tmp_path)["runs"].parent))


def test_reading_a_directory_without_the_files_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"runs\.parquet is missing"):
        Tables.read_parquet(tmp_path)
