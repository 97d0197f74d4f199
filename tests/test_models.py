"""The run model: parsing as far as asked, the same Run and Step for users, the raw accessors."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from vendor_examples import VENDOR_COMPLETED, VENDOR_FAILED_EVENT

from plextera_data import models
from plextera_data.models import (
    RUN_FIELDS,
    RUN_PARTS,
    STEP_FIELDS,
    Run,
    RunError,
    Step,
    has_steps,
    parse_timestamp,
    run_extras,
    run_id_of,
    run_parts,
    step_extras,
    step_parts,
    workflow_id_of,
)


def _run_with_steps(count: int = 4) -> dict[str, Any]:
    return {
        "id": "r1",
        "status": "FAILED",
        "workflow": {"id": "wf", "name": "Workflow"},
        "createdAt": "2024-01-15T09:30:00Z",
        "steps": [
            {
                "id": f"s{index}",
                "name": f"Step {index}",
                "type": "web_function",
                "status": "FAILED" if index == 2 else "COMPLETED",
                "output": {"n": index, "fields": [{"v": index}]},
                "nestedRuns": {
                    "count": 1,
                    "data": [{"id": f"c{index}", "status": "COMPLETED", "steps": []}],
                },
            }
            for index in range(count)
        ],
    }


@pytest.fixture
def step_parses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call of Step.from_dict, recorded."""
    calls: list[Any] = []
    original = Step.from_dict.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Step], data: Any) -> Step:
        calls.append(data)
        return original(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(Step, "from_dict", classmethod(counting))
    return calls


def test_from_dict_leaves_the_steps_until_they_are_read(step_parses: list[Any]) -> None:
    run = Run.from_dict(_run_with_steps())
    assert (run.id, run.status, run.workflow_id) == ("r1", "FAILED", "wf")
    assert step_parses == [], "no step is parsed before run.steps is read"
    assert [step.id for step in run.steps] == ["s0", "s1", "s2", "s3"]
    assert len(step_parses) == 4
    assert run.steps is run.steps, "parsed once, then kept"
    assert len(step_parses) == 4
    assert run.failed_step is not None
    assert run.failed_step.id == "s2"
    assert run.steps[1].nested_runs[0].id == "c1"


def test_failed_step_parses_the_steps_when_asked(step_parses: list[Any]) -> None:
    run = Run.from_dict(_run_with_steps())
    assert run.failed_step is not None
    assert run.failed_step.name == "Step 2"
    assert len(step_parses) == 4


def test_a_parsed_run_equals_one_built_with_its_steps() -> None:
    raw = _run_with_steps()
    lazy = Run.from_dict(raw)
    steps = [Step.from_dict(step) for step in raw["steps"]]
    eager = Run(
        id="r1",
        status="FAILED",
        workflow_id="wf",
        workflow_name="Workflow",
        created_at=datetime(2024, 1, 15, 9, 30, tzinfo=UTC),
        steps=steps,
        raw=raw,
    )
    assert lazy == eager
    assert repr(lazy) == repr(eager)
    assert "steps=[Step(id='s0'" in repr(lazy)
    assert lazy._repr_html_() == eager._repr_html_()
    assert "<td>s3</td>" in lazy._repr_html_()
    assert Run.from_dict(raw) != Run.from_dict({**raw, "steps": raw["steps"][:2]})


def test_copies_replace_and_assignment_keep_working() -> None:
    run = Run.from_dict(_run_with_steps(2))
    duplicate = copy.copy(run)
    assert [step.id for step in duplicate.steps] == ["s0", "s1"]
    replaced = dataclasses.replace(run, status="COMPLETED")
    assert (replaced.status, [step.id for step in replaced.steps]) == ("COMPLETED", ["s0", "s1"])
    run.steps = []
    assert run.steps == []
    assert run.failed_step is None
    assert [step.id for step in copy.deepcopy(duplicate).steps] == ["s0", "s1"]


def test_runs_built_by_hand_get_their_own_empty_steps() -> None:
    first, second = Run(id="a", status=None), Run(id="b", status=None)
    first.steps.append(Step(id="s", name=None, type=None, status=None))
    assert second.steps == []
    assert [step.id for step in first.steps] == ["s"]
    assert Run(id="a", status=None, steps=[]) == Run(id="a", status=None)


def test_the_vendor_examples_parse_as_before() -> None:
    run = Run.from_dict(VENDOR_COMPLETED)
    assert run.steps[0].output == {"extractionId": "69654f0bc073ef404baec649", "fieldCount": 3}
    assert run.steps[0].nested_run_count == 0
    failed = Run.from_dict(VENDOR_FAILED_EVENT)
    assert (failed.id, failed.workflow_id) == (
        "69d224901610662a576cd7e6",
        "daily-correspondence-loader",
    )
    assert failed.error == RunError("WORKFLOW_RUN_FAILED", "Client endpoint rejected the request.")
    assert (failed.steps_completed, failed.steps_total) == (1, 3)
    assert failed.failed_step is not None
    assert failed.failed_step.id == "step_02"
    assert failed.completed_at == datetime(2026, 4, 7, 10, 12, 30, tzinfo=UTC)


def test_steps_that_are_not_objects_become_empty_steps() -> None:
    run = Run.from_dict({"id": "r", "status": "COMPLETED", "steps": [None, "odd"]})
    assert [(step.id, step.raw) for step in run.steps] == [(None, {}), (None, {})]
    assert Run.from_dict({"id": "r", "steps": "not a list"}).steps == []


# -- the raw accessors --------------------------------------------------------------------------


def test_run_and_workflow_ids_in_both_spellings() -> None:
    assert run_id_of({"id": "a", "runId": "b"}) == "a"
    assert run_id_of({"runId": "b"}) == "b"
    assert run_id_of({}) is None
    assert workflow_id_of({"workflow": {"id": "w"}, "workflowId": "x"}) == "w"
    assert workflow_id_of({"workflowId": "x"}) == "x"
    assert workflow_id_of({"workflow": "not an object"}) is None


def test_run_parts_reads_the_sub_objects_as_given() -> None:
    parts = run_parts(VENDOR_FAILED_EVENT["data"])
    run_id, workflow_id, name, done, total, code, message, steps, extras = parts[:9]
    assert (run_id, workflow_id, name) == (
        "69d224901610662a576cd7e6",
        "daily-correspondence-loader",
        "Daily Correspondence Loader",
    )
    assert (done, total, code) == (1, 3, "WORKFLOW_RUN_FAILED")
    assert message == "Client endpoint rejected the request."
    assert [step["id"] for step in steps] == ["step_01", "step_02"]
    assert extras is None


def test_extras_hold_what_is_not_read() -> None:
    raw = {
        "id": "r",
        "priority": "high",
        "workflow": {"id": "w", "version": 3},
        "progress": "half",
        "error": {"code": "E"},
        "steps": {"not": "a list"},
    }
    assert run_extras(raw) == {
        "priority": "high",
        "workflow": {"version": 3},
        "progress": "half",
        "steps": {"not": "a list"},
    }
    assert run_parts(raw)[RUN_PARTS.index("extras")] == run_extras(raw)
    assert run_parts(raw)[RUN_PARTS.index("steps")] == []
    assert run_extras({"id": "r", "workflow": {"id": "w"}, "steps": []}) is None
    step = {"id": "s", "retries": 2, "nestedRuns": {"count": 0, "data": [], "cursor": "c"}}
    assert step_extras(step) == {"retries": 2, "nestedRuns": {"cursor": "c"}}
    assert step_parts(step) == (
        ("s", None, None, None),
        None,
        None,
        0,
        (),
        {"retries": 2, "nestedRuns": {"cursor": "c"}},
    )


def test_step_parts_lists_the_nested_run_objects() -> None:
    step = {"output": [1], "nestedRuns": {"count": 3, "data": [{"id": "c"}, None, "x"]}}
    _kind, _message, output, count, children, extras = step_parts(step)
    assert (output, count, list(children), extras) == ([1], 3, [{"id": "c"}], None)
    assert has_steps({"steps": [None, {"id": "s"}]})
    assert not has_steps({"steps": [None]})
    assert not has_steps({"id": "summary"})


def test_the_field_sets_name_every_field_read() -> None:
    assert {"id", "runId", "workflowId", "createdAt", "completedAt", "steps"} <= RUN_FIELDS
    assert {"id", "name", "type", "status", "message", "output", "nestedRuns"} == STEP_FIELDS
    assert set(models.RUN_SCALAR_FIELDS) <= {field.name for field in dataclasses.fields(Run)}
    assert set(models.STEP_SCALAR_FIELDS) <= {field.name for field in dataclasses.fields(Step)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T09:30:00Z", datetime(2024, 1, 15, 9, 30, tzinfo=UTC)),
        (" 2024-01-15T09:30:00z ", datetime(2024, 1, 15, 9, 30, tzinfo=UTC)),
        ("2024-01-15T11:30:00.250+02:00", datetime(2024, 1, 15, 9, 30, 0, 250000, tzinfo=UTC)),
        ("2024-01-15T09:30:00", datetime(2024, 1, 15, 9, 30, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1705311000, None),
    ],
)
def test_parse_timestamp(text: Any, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected
