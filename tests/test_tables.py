"""Tables on disk: parquet round trip, fixed schemas, and the same types in DuckDB and polars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
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
    "large_string": "VARCHAR",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMP WITH TIME ZONE",
    "dictionary<values=string, indices=int32, ordered=0>": "VARCHAR",
}
POLARS_TYPES = {
    "string": pl.String,
    "large_string": pl.String,
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
    row_key_type = "int64" if tables.runs["row_key"].dtype == "Int64" else "large_string"
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


# -- built by name, read back exactly by any tool -----------------------------------------------

EXACT_RUNS: list[dict[str, Any]] = [
    {
        "id": "r1",
        "status": "COMPLETED",
        "createdAt": "2024-01-15T09:30:00Z",
        "completedAt": "2024-01-15T09:31:00Z",
        "workflow": {"id": "wf-a", "name": "Workflow A"},
        "steps": [
            {
                "id": "s1",
                "name": "Extract",
                "status": "COMPLETED",
                "output": {"big": 2**60 + 1, "ok": True, "ratio": 0.25, "text": "x"},
            },
            {"id": "s2", "name": "Check", "status": "COMPLETED", "output": {"ok": None}},
        ],
    },
    {
        "id": "r2",
        "status": "FAILED",
        "workflow": {"id": "wf-b", "name": "Workflow B"},
        "steps": [{"id": "s1", "name": "Extract", "status": "FAILED", "output": {"ok": False}}],
    },
]


@pytest.mark.parametrize(
    ("table", "left", "right"),
    [
        ("runs", "workflow_id", "workflow_name"),
        ("runs", "error_code", "error_message"),
        ("steps", "step_id", "name"),
        ("outputs", "value_str", "value_int"),
    ],
)
def test_columns_are_filled_by_name_whatever_the_schema_order(
    monkeypatch: pytest.MonkeyPatch, table: str, left: str, right: str
) -> None:
    from plextera_data import tables as tables_module

    expected = flatten(EXACT_RUNS)
    schema = tables_module.SCHEMAS[table]
    i, j = schema.get_field_index(left), schema.get_field_index(right)
    assert j == i + 1, "neighbouring columns"
    fields = list(schema)
    fields[i], fields[j] = fields[j], fields[i]
    monkeypatch.setitem(tables_module.SCHEMAS, table, pa.schema(fields))

    swapped = flatten(EXACT_RUNS)
    frame = getattr(swapped, table)
    names = list(getattr(expected, table).columns)
    names[i], names[j] = names[j], names[i]
    assert list(frame.columns) == names, "the columns in the schema's order"
    for name in (left, right):
        pd.testing.assert_series_equal(frame[name], getattr(expected, table)[name])


def test_a_missing_column_is_an_error_not_a_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    from plextera_data import tables as tables_module

    schema = tables_module.SCHEMAS["runs"]
    monkeypatch.setitem(
        tables_module.SCHEMAS, "runs", schema.append(pa.field("new_column", pa.string()))
    )
    with pytest.raises(AssertionError, match=r"missing \['new_column'\]"):
        flatten(EXACT_RUNS)


def _python(values: Any) -> list[Any]:
    return [None if pd.isna(value) else value for value in values]


PANDAS_DTYPES = {
    "string": pd.StringDtype("pyarrow"),
    "large_string": pd.StringDtype("pyarrow"),
    "int64": pd.Int64Dtype(),
    "double": pd.Float64Dtype(),
    "bool": pd.BooleanDtype(),
    "timestamp[us, tz=UTC]": pd.DatetimeTZDtype("us", "UTC"),
}


def test_every_tool_reads_exact_values_and_types(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    tables = flatten(EXACT_RUNS, row_keys={"r1": 10, "r2": 11})
    written = tables.to_parquet(tmp_path)

    plain = pd.read_parquet(written["outputs"])
    assert plain["value_int"].dtype == "Int64"
    assert plain["value_int"].tolist()[0] == 2**60 + 1, "exact, not 1.152922e+18"
    assert plain["value_bool"].dtype == "boolean"
    assert _python(plain["value_bool"]) == [None, True, None, None, None, False]

    for name, path in written.items():
        ours = getattr(tables, name)
        schema = pq.read_schema(path)
        from_pandas = pd.read_parquet(path)
        from_polars = pl.read_parquet(path)
        from_duckdb = duckdb.sql(f"SELECT * FROM read_parquet('{path.as_posix()}')")
        duck_rows = from_duckdb.fetchall()
        assert list(from_pandas.columns) == from_polars.columns == from_duckdb.columns
        assert list(from_pandas.columns) == list(ours.columns)
        duck_types = dict(zip(from_duckdb.columns, map(str, from_duckdb.types), strict=True))
        for position, field in enumerate(schema):
            column = field.name
            expected = _python(ours[column].astype(object))
            kind = str(field.type)
            if pa.types.is_dictionary(field.type):
                assert isinstance(from_pandas[column].dtype, pd.CategoricalDtype), column
            else:
                assert from_pandas[column].dtype == PANDAS_DTYPES[kind], (name, column)
            assert from_polars.schema[column] == POLARS_TYPES[kind], (name, column)
            assert duck_types[column] == DUCKDB_TYPES[kind], (name, column)
            assert _python(from_pandas[column].astype(object)) == expected, (name, column)
            assert from_polars[column].to_list() == expected, (name, column)
            assert [row[position] for row in duck_rows] == expected, (name, column)


def test_tables_as_arrow_and_polars() -> None:
    tables = flatten(EXACT_RUNS, row_keys={"r1": "a", "r2": "b"})
    arrow = tables.to_arrow()
    assert set(arrow) == set(Tables.TABLE_NAMES)
    assert arrow["outputs"].schema.field("value_int").type == pa.int64()
    assert arrow["outputs"].column("value_int").to_pylist()[0] == 2**60 + 1
    frames = tables.to_polars()
    assert frames["outputs"]["value_int"].to_list()[0] == 2**60 + 1
    assert frames["runs"]["row_key"].to_list() == ["a", "b"]
    assert frames["steps"].schema["run_id"] == pl.Categorical
    # An edited frame is what converts.
    tables.runs["note"] = "checked"
    assert tables.to_arrow()["runs"].column("note").to_pylist() == ["checked", "checked"]
    assert tables.to_polars()["runs"]["note"].to_list() == ["checked", "checked"]


def test_to_polars_without_polars_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(ImportError, match="pip install polars"):
        flatten(EXACT_RUNS).to_polars()


def test_tables_take_arrow_tables_and_convert_on_first_read() -> None:
    built = flatten(EXACT_RUNS).to_arrow()
    tables = Tables(**built)
    assert repr(tables) == "<Tables: 2 runs [COMPLETED 1, FAILED 1], 3 steps, 6 output values>"
    assert tables.to_arrow()["outputs"] is built["outputs"], "not converted until read"
    assert "<details>" in tables._repr_html_()
    frame = tables.outputs
    assert frame is tables.outputs
    assert frame["value_int"].dtype == "Int64"
    with pytest.raises(TypeError, match="DataFrame or a pyarrow Table"):
        Tables(runs=[], steps=frame, outputs=frame)  # type: ignore[arg-type]


def test_repeated_identifiers_are_categoricals_of_the_values_present() -> None:
    tables = flatten(EXACT_RUNS)
    steps, outputs = tables.steps, tables.outputs
    assert steps["run_id"].cat.categories.tolist() == ["r1", "r2"]
    assert outputs["path"].cat.categories.tolist() == ["big", "ok", "ratio", "text"]
    assert outputs["step_id"].tolist() == ["s1", "s1", "s1", "s1", "s2", "s1"]
    assert outputs["step_name"].cat.categories.tolist() == ["Extract", "Check"]
    assert tables.runs["run_id"].dtype == pd.StringDtype("pyarrow"), "unique: plain strings"
    merged = steps.merge(tables.runs[["run_id", "workflow_id"]], on="run_id")
    assert merged["workflow_id"].tolist() == ["wf-a", "wf-a", "wf-b"]


def test_tables_does_not_import_flatten() -> None:
    import ast

    import plextera_data.tables as tables_module

    tree = ast.parse(Path(tables_module.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "plextera_data.flatten" not in imported


def test_frames_can_be_edited_in_place() -> None:
    frame = flatten(EXACT_RUNS).outputs
    frame.loc[0, "value_int"] = 7
    frame["step_index"] += 1
    frame["value_float"] = frame["value_float"].fillna(0.0)
    assert frame["value_int"].tolist()[0] == 7
    assert frame["step_index"].tolist() == [1, 1, 1, 1, 2, 1]
    assert frame["value_float"].tolist() == [0.0, 0.0, 0.25, 0.0, 0.0, 0.0]


def test_editing_a_frame_leaves_the_arrow_handed_out_unchanged() -> None:
    tables = flatten(EXACT_RUNS)
    arrow = tables.to_arrow()["outputs"]
    frame = tables.outputs
    frame.loc[0, "value_int"] = 7
    frame["step_index"] += 1
    assert frame["value_int"].tolist()[0] == 7
    assert arrow.column("value_int").to_pylist()[0] == 2**60 + 1
    assert arrow.column("step_index").to_pylist() == [0, 0, 0, 0, 1, 0]
