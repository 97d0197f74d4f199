"""Properties over generated run trees: every leaf once, the tree rebuilt, parquet, DuckDB."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plextera_data.flatten import Tables, flatten, parse_path

TRICKY_KEYS = [
    "a.b",
    "x[0]",
    '"q"',
    "",
    " ",
    "0",
    "[",
    "]",
    ".",
    "a b",
    "ключ",
    "名前",
    "e\u0301",
    "\\",
]
keys = st.one_of(st.sampled_from(TRICKY_KEYS), st.text(max_size=6))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)
outputs = st.one_of(st.none(), json_values)


@st.composite
def run_trees(draw: st.DrawFn, depth: int = 0, counter: list[int] | None = None) -> dict[str, Any]:
    """A run model whose steps may hold nested runs (to depth 3), each run with a unique id."""
    counter = counter if counter is not None else [0]
    counter[0] += 1
    run_id = f"run-{counter[0]}"
    steps = []
    for index in range(draw(st.integers(min_value=0, max_value=3))):
        children = []
        if depth < 3:
            for _ in range(draw(st.integers(min_value=0, max_value=2 if depth < 2 else 1))):
                children.append(draw(run_trees(depth + 1, counter)))
        steps.append(
            {
                "id": f"{run_id}-step-{index}",
                "name": draw(st.sampled_from(["Extract", "Route", "Ünïcode step", None])),
                "type": draw(st.sampled_from(["document_insights", "web_function", "new_type"])),
                "status": draw(st.sampled_from(["COMPLETED", "FAILED", "QUEUED"])),
                "output": draw(outputs),
                "nestedRuns": {
                    "count": len(children) + draw(st.integers(min_value=0, max_value=2)),
                    "data": children,
                },
            }
        )
    return {
        "id": run_id,
        "status": draw(st.sampled_from(["COMPLETED", "FAILED", "PROCESSING", "CLOSED"])),
        "workflow": {"id": "wf", "name": "Workflow"},
        "createdAt": "2024-01-15T09:30:00Z",
        "steps": steps,
    }


@st.composite
def run_forests(draw: st.DrawFn) -> list[dict[str, Any]]:
    counter = [0]
    return [draw(run_trees(0, counter)) for _ in range(draw(st.integers(1, 3)))]


def expected_leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[Any, ...]]:
    """(keys, type, value) of every leaf, empty containers included, in JSON order."""
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in expected_leaves(item, (*path, key))]
    if isinstance(value, list) and value:
        return [leaf for i, item in enumerate(value) for leaf in expected_leaves(item, (*path, i))]
    return [(path, *typed(value))]


def typed(value: Any) -> tuple[str, Any]:
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int):
        return ("integer", value)
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, str):
        return ("string", value)
    return ("object" if isinstance(value, dict) else "array", "{}" if value == {} else "[]")


def leaf_of_row(row: Any) -> tuple[Any, ...]:
    kind = row.value_type
    if kind == "string":
        value: Any = row.value_str
    elif kind == "integer":
        value = int(row.value_json) if pd.isna(row.value_int) else int(row.value_int)
    elif kind == "float":
        value = float(row.value_float)
    elif kind == "boolean":
        value = bool(row.value_bool)
    elif kind in ("object", "array"):
        value = row.value_json
    else:
        value = None
    return (tuple(parse_path(row.path)), kind, value)


def preorder(
    runs: list[dict[str, Any]], parent: Any = None, parent_step: Any = None, depth: int = 0
):
    for run in runs:
        yield run, parent, parent_step, depth
        for step in run["steps"]:
            yield from preorder(step["nestedRuns"]["data"], run["id"], step["id"], depth + 1)


def same_leaf(left: tuple[Any, ...], right: tuple[Any, ...]) -> bool:
    if left[:2] != right[:2]:
        return False
    if left[1] == "float":
        return math.copysign(1, left[2]) == math.copysign(1, right[2]) and left[2] == right[2]
    return left[2] == right[2]


SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(run_forests())
def test_every_leaf_appears_once_at_its_path(runs: list[dict[str, Any]]) -> None:
    tables = flatten(runs)
    outputs = tables.outputs
    position = 0
    for run, *_ in preorder(runs):
        for index, step in enumerate(run["steps"]):
            if step["output"] is None:
                continue
            expected = expected_leaves(step["output"])
            rows = outputs.iloc[position : position + len(expected)]
            assert (rows["run_id"] == run["id"]).all()
            assert (rows["step_index"] == index).all()
            actual = [leaf_of_row(row) for row in rows.itertuples()]
            assert len(actual) == len(expected)
            assert all(same_leaf(a, e) for a, e in zip(actual, expected, strict=True)), (
                actual,
                expected,
            )
            position += len(expected)
    assert position == len(outputs), "no extra rows"
    # Paths are unique within each step's output.
    assert not outputs.duplicated(["run_id", "step_index", "path"]).any()


@SETTINGS
@given(run_forests())
def test_links_rebuild_the_tree(runs: list[dict[str, Any]]) -> None:
    keys = {run["id"]: i * 10 for i, run in enumerate(runs)}
    tables = flatten(runs, row_keys=keys)
    expected = list(preorder(runs))
    frame = tables.runs
    assert frame["run_id"].tolist() == [run["id"] for run, *_ in expected]
    by_id = frame.set_index("run_id")
    for run, parent, parent_step, depth in expected:
        row = by_id.loc[run["id"]]
        assert (None if pd.isna(row["parent_run_id"]) else row["parent_run_id"]) == parent
        assert (None if pd.isna(row["parent_step_id"]) else row["parent_step_id"]) == parent_step
        assert row["depth"] == depth
        assert row["step_count"] == len(run["steps"])
        root = run["id"] if depth == 0 else row["root_run_id"]
        assert by_id.loc[root, "depth"] == 0
        assert row["row_key"] == keys[root]
    # The children of each step, as listed, are exactly the runs pointing back at it.
    steps = tables.steps
    seen = (
        frame.dropna(subset=["parent_step_id"]).groupby(["parent_run_id", "parent_step_id"]).size()
    )
    for step in steps.itertuples():
        assert seen.get((step.run_id, step.step_id), 0) == step.nested_runs_seen
        assert step.nested_run_count >= step.nested_runs_seen


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run_forests(), st.sampled_from(["int", "str", "none"]))
def test_parquet_round_trip_and_duckdb(runs: list[dict[str, Any]], key_kind: str) -> None:
    keys: dict[str, Any] | None = None
    if key_kind != "none":
        keys = {run["id"]: (i if key_kind == "int" else f"row {i}") for i, run in enumerate(runs)}
    tables = flatten(runs, row_keys=keys)
    with tempfile.TemporaryDirectory() as directory:
        written = tables.to_parquet(directory)
        back = Tables.read_parquet(Path(directory))
        for name in Tables.TABLE_NAMES:
            pd.testing.assert_frame_equal(getattr(tables, name), getattr(back, name))
            path = written[name].as_posix()
            relation = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
            assert relation.aggregate("count(*)").fetchall() == [(len(getattr(tables, name)),)]
            types = dict(zip(relation.columns, map(str, relation.types), strict=True))
            assert types["run_id"] == "VARCHAR"
            assert types["depth"] == "BIGINT"
            assert types["row_key"] == ("BIGINT" if key_kind == "int" else "VARCHAR")
            if name == "runs":
                assert types["submitted_at"] == "TIMESTAMP WITH TIME ZONE"
            if name == "outputs":
                assert types["value_float"] == "DOUBLE"
                assert types["value_bool"] == "BOOLEAN"
