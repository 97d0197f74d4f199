"""Flattening runs into tables: the vendor's examples, types, order, paths, row keys, wide view."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from vendor_examples import VENDOR_COMPLETED, VENDOR_FAILED_EVENT

import plextera_data as px
from plextera_data.flatten import Tables, flatten, parse_path, results


def _run(run_id: str, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"id": run_id, "status": "COMPLETED", "steps": steps, **fields}


def _step(step_id: str, output: Any = None, nested: list[dict[str, Any]] | None = None, **kw: Any):
    nested = nested or []
    return {
        "id": step_id,
        "name": kw.pop("name", f"Step {step_id}"),
        "type": kw.pop("type", "web_function"),
        "status": kw.pop("status", "COMPLETED"),
        "output": output,
        "nestedRuns": {"count": kw.pop("count", len(nested)), "data": nested},
        **kw,
    }


def _leaves(tables: Tables) -> list[tuple[str, str, Any]]:
    out = tables.outputs
    values = []
    for row in out.itertuples():
        column = {
            "string": "value_str",
            "integer": "value_int",
            "float": "value_float",
            "boolean": "value_bool",
        }.get(row.value_type)
        values.append((row.path, row.value_type, getattr(row, column) if column else None))
    return values


# -- the vendor's examples ----------------------------------------------------------------------


def test_vendor_completed_example_gives_one_run_one_step_two_outputs() -> None:
    tables = flatten([VENDOR_COMPLETED])

    assert len(tables.runs) == 1
    run = tables.runs.iloc[0]
    assert run["run_id"] == "69d224901610662a576cd7e6"
    assert run["workflow_id"] == "daily-lab-loader"
    assert run["workflow_name"] == "Daily Lab Loader"
    assert run["status"] == "COMPLETED"
    assert run["depth"] == 0
    assert run["root_run_id"] == run["run_id"]
    assert pd.isna(run["parent_run_id"])
    assert run["step_count"] == 1

    assert len(tables.steps) == 1
    step = tables.steps.iloc[0]
    assert (step["step_id"], step["name"], step["type"], step["status"]) == (
        "step_01",
        "Extract Lab Result",
        "document_insights",
        "COMPLETED",
    )
    assert (step["nested_run_count"], step["nested_runs_seen"]) == (0, 0)
    assert step["has_output"]

    assert _leaves(tables) == [
        ("extractionId", "string", "69654f0bc073ef404baec649"),
        ("fieldCount", "integer", 3),
    ]
    assert set(tables.outputs["step_id"]) == {"step_01"}


def test_vendor_failed_event_flattens_with_run_id_and_workflow_id() -> None:
    tables = flatten([VENDOR_FAILED_EVENT])

    run = tables.runs.iloc[0]
    assert run["run_id"] == "69d224901610662a576cd7e6"
    assert run["workflow_id"] == "daily-correspondence-loader"
    assert run["status"] == "FAILED"
    assert run["error_code"] == "WORKFLOW_RUN_FAILED"
    assert run["error_message"] == "Client endpoint rejected the request."
    assert (run["steps_completed"], run["steps_total"]) == (1, 3)
    assert run["submitted_at"] == pd.Timestamp("2026-04-07T10:10:00Z")
    assert run["finished_at"] == pd.Timestamp("2026-04-07T10:12:30Z")
    assert pd.isna(run["started_at"])
    assert pd.isna(run["extra_json"]), "runId/workflowId are known fields, not extras"

    failed = tables.steps.query("status == 'FAILED'")
    assert failed[["step_id", "name", "message"]].to_dict("records") == [
        {
            "step_id": "step_02",
            "name": "Route Result",
            "message": "Client endpoint rejected the request.",
        }
    ]
    assert tables.outputs.empty
    assert not tables.steps["has_output"].any()


def test_run_objects_bare_payloads_and_envelopes_give_the_same_tables() -> None:
    as_run = flatten([px.Run.from_dict(VENDOR_COMPLETED)])
    as_dict = flatten([VENDOR_COMPLETED])
    as_event = flatten(
        [{"eventId": "evt_1", "eventType": "workflow.run.completed", "data": VENDOR_COMPLETED}]
    )
    single = flatten(VENDOR_COMPLETED)
    for other in (as_dict, as_event, single):
        for name in Tables.TABLE_NAMES:
            pd.testing.assert_frame_equal(getattr(as_run, name), getattr(other, name))


def test_public_names_come_from_the_package() -> None:
    # Once plextera_data.flatten is imported, Python binds the package attribute to the module;
    # the module is callable so px.flatten(...) works either way.
    assert px.Tables is Tables
    from_package = px.flatten([VENDOR_COMPLETED])
    direct = flatten([VENDOR_COMPLETED])
    pd.testing.assert_frame_equal(from_package.outputs, direct.outputs)


def test_something_else_than_a_run_is_refused_with_advice() -> None:
    with pytest.raises(TypeError, match="run dicts"):
        flatten(["69d224901610662a576cd7e6"])


# -- types --------------------------------------------------------------------------------------


def test_column_types() -> None:
    run = _run(
        "r1",
        [_step("s1", {"a": 1})],
        createdAt="2024-01-15T09:30:00Z",
        startedAt="2024-01-15T11:30:00.250+02:00",
        durationMs=1500,
    )
    tables = flatten([run], row_keys={"r1": 10})
    runs = tables.runs
    assert str(runs["submitted_at"].dtype) == "datetime64[us, UTC]"
    assert runs["started_at"].iloc[0] == pd.Timestamp("2024-01-15T09:30:00.250Z")
    assert runs["duration_ms"].dtype == "Int64"
    assert runs["run_id"].dtype == pd.StringDtype("pyarrow")
    assert isinstance(runs["status"].dtype, pd.CategoricalDtype)
    assert tables.steps["has_output"].dtype == "boolean"
    out = tables.outputs
    assert list(out["value_type"].cat.categories) == [
        "string",
        "integer",
        "float",
        "boolean",
        "null",
        "object",
        "array",
    ]
    assert (out["value_int"].dtype, out["value_float"].dtype) == ("Int64", "Float64")
    assert out["value_bool"].dtype == "boolean"


def test_timestamps_that_do_not_parse_become_missing() -> None:
    run = _run("r1", [], createdAt="yesterday", completedAt="2024-01-15T09:30:00Z")
    runs = flatten([run]).runs
    assert pd.isna(runs["submitted_at"].iloc[0])
    assert runs["finished_at"].iloc[0] == pd.Timestamp("2024-01-15T09:30:00Z")


def test_unknown_fields_are_kept_as_json() -> None:
    run = _run(
        "r1",
        [_step("s1", None, retries=2, nestedRuns=None)],
        priority="high",
        workflow={"id": "w", "name": "W", "version": 3},
    )
    run["steps"][0]["nestedRuns"] = {"count": 0, "data": [], "cursor": "abc"}
    tables = flatten([run])
    assert json.loads(tables.runs["extra_json"].iloc[0]) == {
        "priority": "high",
        "workflow": {"version": 3},
    }
    assert tables.runs["workflow_id"].iloc[0] == "w"
    assert json.loads(tables.steps["extra_json"].iloc[0]) == {
        "retries": 2,
        "nestedRuns": {"cursor": "abc"},
    }


def test_odd_values_do_not_crash() -> None:
    run = {
        "id": 12345,
        "status": "BRAND_NEW_STATUS",
        "workflow": "not-an-object",
        "durationMs": "fast",
        "progress": {"stepsCompleted": True, "stepsTotal": 2.0},
        "steps": [None, {"id": "s", "type": 7, "nestedRuns": {"count": "many", "data": [None]}}],
    }
    tables = flatten([run])
    row = tables.runs.iloc[0]
    assert row["run_id"] == "12345"
    assert row["status"] == "BRAND_NEW_STATUS"
    assert pd.isna(row["workflow_id"])
    assert json.loads(row["extra_json"]) == {"workflow": "not-an-object"}
    assert pd.isna(row["duration_ms"])
    assert pd.isna(row["steps_completed"])
    assert row["steps_total"] == 2
    steps = tables.steps
    assert steps["step_index"].tolist() == [0, 1]
    assert pd.isna(steps["step_id"].iloc[0])
    assert steps["type"].iloc[1] == "7"
    assert pd.isna(steps["nested_run_count"].iloc[1])
    assert steps["nested_runs_seen"].iloc[1] == 0


# -- outputs ------------------------------------------------------------------------------------


def test_output_leaves_of_every_type_in_api_order() -> None:
    output = {
        "text": "x",
        "count": 2,
        "ratio": 0.5,
        "ok": False,
        "missing": None,
        "empty": {},
        "none": [],
        "fields": [{"name": "glucose", "value": 5.4}, [1, "two"]],
    }
    tables = flatten([_run("r1", [_step("s1", output)])])
    assert _leaves(tables) == [
        ("text", "string", "x"),
        ("count", "integer", 2),
        ("ratio", "float", 0.5),
        ("ok", "boolean", False),
        ("missing", "null", None),
        ("empty", "object", None),
        ("none", "array", None),
        ("fields[0].name", "string", "glucose"),
        ("fields[0].value", "float", 5.4),
        ("fields[1][0]", "integer", 1),
        ("fields[1][1]", "string", "two"),
    ]
    out = tables.outputs.set_index("path")
    assert out.loc["empty", "value_json"] == "{}"
    assert out.loc["none", "value_json"] == "[]"
    assert pd.isna(out.loc["text", "value_json"])


def test_keys_that_are_not_identifiers_are_quoted() -> None:
    output = {"a.b": {"c[0]": 1}, 'say "hi"': 2, "x y": [3], "": 4, "0": 5, "größe": 6}
    paths = flatten([_run("r1", [_step("s1", output)])]).outputs["path"].tolist()
    assert paths == ['["a.b"]["c[0]"]', '["say \\"hi\\""]', '["x y"][0]', '[""]', '["0"]', "größe"]
    assert [parse_path(path) for path in paths] == [
        ["a.b", "c[0]"],
        ['say "hi"'],
        ["x y", 0],
        [""],
        ["0"],
        ["größe"],
    ]


def test_parse_path_reads_dotted_indexed_paths() -> None:
    assert parse_path("fields[0].value") == ["fields", 0, "value"]
    assert parse_path("") == []
    with pytest.raises(ValueError, match="empty key"):
        parse_path("a..b")


def test_scalar_and_empty_outputs_have_the_empty_path_and_null_output_has_no_rows() -> None:
    steps = [
        _step("s1", "just text"),
        _step("s2", 7),
        _step("s3", None),
        _step("s4", {}),
        _step("s5", []),
    ]
    tables = flatten([_run("r1", steps)])
    assert _leaves(tables) == [
        ("", "string", "just text"),
        ("", "integer", 7),
        ("", "object", None),
        ("", "array", None),
    ]
    assert tables.outputs["step_id"].tolist() == ["s1", "s2", "s4", "s5"]
    assert tables.steps["has_output"].tolist() == [True, True, False, True, True]


def test_integers_beyond_int64_keep_their_digits_in_value_json() -> None:
    tables = flatten([_run("r1", [_step("s1", {"big": 2**70, "small": -(2**63)})])])
    out = tables.outputs.set_index("path")
    assert out.loc["big", "value_type"] == "integer"
    assert pd.isna(out.loc["big", "value_int"])
    assert out.loc["big", "value_json"] == str(2**70)
    assert out.loc["small", "value_int"] == -(2**63)


# -- nested runs and order ----------------------------------------------------------------------


def _tree() -> list[dict[str, Any]]:
    grandchild = _run("g1", [_step("gs1", {"deep": True})])
    child_a = _run("c1", [_step("cs1", {"v": 1}, nested=[grandchild])])
    child_b = _run("c2", [_step("cs1", {"v": 2})])
    root = _run(
        "r1",
        [_step("s1", {"a": 1}, nested=[child_a], count=3), _step("s2", {"b": 2}, nested=[child_b])],
    )
    return [root, _run("r2", [_step("s1", {"a": 3})])]


def test_nested_runs_are_rows_in_depth_first_order_with_links() -> None:
    tables = flatten(_tree(), row_keys={"r1": "row-a", "r2": "row-b"})
    runs = tables.runs
    assert runs["run_id"].tolist() == ["r1", "c1", "g1", "c2", "r2"]
    assert runs["depth"].tolist() == [0, 1, 2, 1, 0]
    assert runs["parent_run_id"].tolist() == [pd.NA, "r1", "c1", "r1", pd.NA]
    assert runs["parent_step_id"].tolist() == [pd.NA, "s1", "cs1", "s2", pd.NA]
    assert runs["root_run_id"].tolist() == ["r1", "r1", "r1", "r1", "r2"]
    assert runs["row_key"].tolist() == ["row-a"] * 4 + ["row-b"]

    steps = tables.steps
    assert list(zip(steps["run_id"], steps["step_id"], strict=True)) == [
        ("r1", "s1"),
        ("r1", "s2"),
        ("c1", "cs1"),
        ("g1", "gs1"),
        ("c2", "cs1"),
        ("r2", "s1"),
    ]
    first = steps.iloc[0]
    assert (first["nested_run_count"], first["nested_runs_seen"]) == (3, 1)
    assert tables.outputs["run_id"].tolist() == ["r1", "r1", "c1", "g1", "c2", "r2"]
    assert tables.outputs["depth"].tolist() == [0, 0, 1, 2, 1, 0]
    assert tables.outputs["row_key"].tolist() == ["row-a"] * 5 + ["row-b"]


class _FakeClient:
    """Answers get_run from a dict of full run models, counting the calls."""

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs = runs
        self.calls: list[str] = []

    def get_run(self, run_id: str) -> px.Run:
        self.calls.append(run_id)
        return px.Run.from_dict(self.runs[run_id])


def test_expand_nested_fetches_summaries_by_id() -> None:
    full_child = _run("c1", [_step("cs1", {"v": 1}, nested=[{"id": "g1", "status": "COMPLETED"}])])
    full_grandchild = _run("g1", [_step("gs1", {"deep": True})])
    summary = {"id": "c1", "status": "COMPLETED", "steps": [None]}
    root = _run("r1", [_step("s1", None, nested=[summary, _run("c2", [_step("x", 1)])], count=5)])
    client = _FakeClient({"c1": full_child, "g1": full_grandchild})

    plain = flatten([root])
    assert plain.runs["run_id"].tolist() == ["r1", "c1", "c2"]
    assert plain.runs["step_count"].tolist() == [1, 1, 1]

    tables = flatten([root], expand_nested=True, client=client)
    assert client.calls == ["c1", "g1"], "only summaries are fetched, each once"
    assert tables.runs["run_id"].tolist() == ["r1", "c1", "g1", "c2"]
    assert tables.runs["parent_run_id"].tolist() == [pd.NA, "r1", "c1", "r1"]
    assert tables.steps.loc[tables.steps["run_id"] == "g1", "step_id"].tolist() == ["gs1"]
    assert (tables.steps["nested_run_count"].iloc[0], tables.steps["nested_runs_seen"].iloc[0]) == (
        5,
        2,
    )


def test_expand_nested_needs_a_client() -> None:
    with pytest.raises(ValueError, match="client"):
        flatten([VENDOR_COMPLETED], expand_nested=True)


class _AsyncFakeClient:
    async def get_run(self, run_id: str) -> px.Run:
        return px.Run.from_dict({"id": run_id})


def test_expand_nested_says_so_when_given_an_async_client() -> None:
    root = _run("r1", [_step("s1", None, nested=[{"id": "c1", "status": "COMPLETED"}])])
    with pytest.raises(TypeError, match=r"px\.Client\(\)"):
        flatten([root], expand_nested=True, client=_AsyncFakeClient())


# -- row keys and batches -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "dtype", "stored"),
    [
        ([3, 1], "Int64", [3, 1]),
        ([np.int64(3), 1], "Int64", [3, 1]),
        (["a", "b"], pd.StringDtype("pyarrow"), ["a", "b"]),
        ([("x", 1), ("y", 2)], pd.StringDtype("pyarrow"), ["('x', 1)", "('y', 2)"]),
        ([pd.Timestamp("2024-01-01"), 5], pd.StringDtype("pyarrow"), ["2024-01-01 00:00:00", "5"]),
        ([True, 1], pd.StringDtype("pyarrow"), ["True", "1"]),
    ],
)
def test_row_key_type_follows_the_keys(keys: list[Any], dtype: Any, stored: list[Any]) -> None:
    runs = [_run(f"r{i}", [_step("s", {"a": i})]) for i in range(2)]
    tables = flatten(runs, row_keys={f"r{i}": key for i, key in enumerate(keys)})
    for frame in (tables.runs, tables.steps, tables.outputs):
        assert frame["row_key"].dtype == dtype
    assert tables.runs["row_key"].tolist() == stored


def test_missing_row_keys_are_missing() -> None:
    tables = flatten([VENDOR_COMPLETED])
    assert tables.runs["row_key"].isna().all()
    assert tables.outputs["row_key"].isna().all()


class _BatchLike:
    def __init__(self, runs: list[px.Run], keys: dict[str, Any]) -> None:
        self._runs = runs
        self._keys = keys

    def _flatten_source(self) -> tuple[list[px.Run], dict[str, Any]]:
        return self._runs, self._keys


def test_a_batch_gives_its_runs_and_row_keys() -> None:
    batch = _BatchLike([px.Run.from_dict(run) for run in _tree()], {"r1": 7, "r2": 8})
    tables = flatten(batch)
    assert tables.runs["row_key"].tolist() == [7, 7, 7, 7, 8]


# -- wide outputs and results -------------------------------------------------------------------


def test_outputs_wide_is_one_row_per_run_with_typed_columns() -> None:
    runs = [
        _run("r1", [_step("s1", {"n": 1, "x": 1.5, "t": "a", "m": 1}, name="Extract")]),
        _run("r2", [_step("s1", {"n": 2, "x": 2, "t": None, "m": "one"}, name="Extract")]),
        _run("r3", [_step("s1", None, name="Extract")]),
    ]
    wide = flatten(runs).outputs_wide()
    assert wide.index.tolist() == ["r1", "r2", "r3"]
    assert wide.index.name == "run_id"
    assert list(wide.columns) == ["Extract / n", "Extract / x", "Extract / t", "Extract / m"]
    assert wide["Extract / n"].dtype == "Int64"
    assert wide["Extract / x"].dtype == "Float64"
    assert wide["Extract / x"].tolist() == [1.5, 2.0, pd.NA]
    assert wide["Extract / t"].dtype == pd.StringDtype("pyarrow")
    assert wide["Extract / m"].dtype == object
    assert wide["Extract / m"].tolist()[:2] == [1, "one"]


def test_outputs_wide_numbers_repeated_labels_and_filters_depth() -> None:
    tables = flatten(_tree(), row_keys={"r1": "row-a", "r2": "row-b"})
    top = tables.outputs_wide(by="row_key")
    assert top.index.tolist() == ["row-a", "row-b"]
    assert list(top.columns) == ["Step s1 / a", "Step s2 / b"]
    nested = tables.outputs_wide(by="row_key", depth=1, sep=".")
    assert list(nested.columns) == ["Step cs1.v", "Step cs1.v (2)"]
    assert nested.loc["row-a"].tolist() == [1, 2]
    everything = tables.outputs_wide(depth=None)
    assert everything.index.tolist() == ["r1", "c1", "g1", "c2", "r2"]


def test_results_joins_the_input_frame_in_its_order() -> None:
    frame = pd.DataFrame({"patient": ["p1", "p2", "p3"], "status": ["new", "new", "old"]})
    frame.index = [30, 10, 20]
    runs = [
        _run("r1", [_step("s1", {"score": 5}, name="Score")]),
        {**_run("r2", [_step("s1", None, name="Score", status="FAILED")]), "status": "FAILED"},
    ]
    tables = flatten(runs, row_keys={"r1": 10, "r2": 30})
    before = frame.copy()
    joined = results(frame, tables)
    pd.testing.assert_frame_equal(frame, before)
    assert joined.index.tolist() == [30, 10, 20]
    assert list(joined.columns) == [
        "patient",
        "status",
        "run_id",
        "status_plextera",
        "error_code",
        "error_message",
        "Score / score",
    ]
    assert joined["run_id"].tolist() == ["r2", "r1", pd.NA]
    assert joined["status_plextera"].tolist()[:2] == ["FAILED", "COMPLETED"]
    assert joined["Score / score"].tolist() == [pd.NA, 5, pd.NA]


def test_results_with_string_keys_and_a_multiindex() -> None:
    frame = pd.DataFrame(
        {"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
    )
    tables = flatten([_run("r1", [_step("s", {"x": "hi"}, name="S")])], row_keys={"r1": ("b", 2)})
    joined = results(frame, tables)
    assert joined.index.equals(frame.index)
    assert joined["S / x"].tolist() == [pd.NA, "hi"]


# -- display ------------------------------------------------------------------------------------


def test_repr_shows_sizes_and_statuses() -> None:
    tables = flatten([*_tree(), VENDOR_FAILED_EVENT])
    text = repr(tables)
    assert "6 runs (3 submitted, 3 nested)" in text
    assert "COMPLETED 5" in text
    assert "FAILED 1" in text
    assert "steps" in text
    assert "output values" in text
    page = tables._repr_html_()
    assert "<details>" in page
    assert ".outputs" in page


def test_flatten_does_not_change_its_input() -> None:
    runs = _tree()
    before = copy.deepcopy(runs)
    flatten(runs, row_keys={"r1": 1})
    assert runs == before


# -- layering -------------------------------------------------------------------------------------


def test_flatten_reads_run_json_through_models_only() -> None:
    """No run-JSON field name is spelled in flatten.py: models is the one reader of them. (Names
    that are also flatten's own, such as the columns ``status`` or ``name``, do not count.)"""
    import ast
    import importlib
    from pathlib import Path

    from plextera_data import models
    from plextera_data.tables import SCHEMAS

    json_names = set(models.RUN_FIELDS) | set(models.STEP_FIELDS)
    for members in models.SUBOBJECT_FIELDS.values():
        json_names |= members
    own_names = (
        set(models.RUN_SCALAR_FIELDS)
        | set(models.STEP_SCALAR_FIELDS)
        | {field.name for schema in SCHEMAS.values() for field in schema}
        | set(SCHEMAS)
    )
    flatten_module = importlib.import_module("plextera_data.flatten")
    tree = ast.parse(Path(flatten_module.__file__).read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    literals = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    }
    assert sorted(literals & (json_names - own_names)) == []
    assert {"runId", "workflowId", "nestedRuns", "createdAt"} <= json_names - own_names


def test_the_helpers_are_importable_from_flatten_and_tables() -> None:
    import importlib

    import plextera_data.tables as tables_module

    flatten_module = importlib.import_module("plextera_data.flatten")
    assert flatten_module.Tables is tables_module.Tables
    assert flatten_module.results is tables_module.results
    assert flatten_module.outputs_wide is tables_module.outputs_wide
