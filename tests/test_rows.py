"""Rows to requests: the documented mapping, nesting, and every pre-flight case (nothing sent)."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plextera_data as px
import plextera_data.rows
from plextera_data.errors import InvalidInputError
from plextera_data.rows import plan_requests, to_json_value
from plextera_data.simulator import Simulator, StepSpec, Workflow

ECHO = Workflow("echo", "Echo", steps=(StepSpec("Echo", "web_function", duration=1.0),))


def make_sim() -> tuple[Simulator, px.Client]:
    sim = Simulator(seed=0, speed=None, workflows=[ECHO])
    client = px.Client(
        api_key=sim.api_key, base_url=sim.in_process_base_url, transport=sim.transport()
    )
    return sim, client


def reference_body(frame: pd.DataFrame, position: int, sep: str = ".") -> dict[str, Any]:
    """The documented mapping, element by element (the slow path)."""
    body: dict[str, Any] = {}
    for column in frame.columns:
        value = to_json_value(frame[column].iloc[position])
        target = body
        parts = str(column).split(sep)
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return body


# --------------------------------------------------------------------------- the mapping


def test_value_mapping_table() -> None:
    assert to_json_value(np.int64(3)) == 3
    assert type(to_json_value(np.float32(1.5))) is float
    assert to_json_value(np.bool_(True)) is True
    for missing in (
        None,
        float("nan"),
        pd.NA,
        pd.NaT,
        np.datetime64("NaT"),
        decimal.Decimal("NaN"),
    ):
        assert to_json_value(missing) is None
    assert to_json_value(decimal.Decimal("42.000")) == 42
    assert to_json_value(decimal.Decimal("2.50")) == 2.5
    assert to_json_value(decimal.Decimal("0.1000000000000000000001")) == "0.1000000000000000000001"
    assert to_json_value(pd.Timestamp("2024-01-15 09:30", tz="Europe/Paris")) == (
        "2024-01-15T09:30:00+01:00"
    )
    assert to_json_value(pd.Timestamp("2024-01-15 09:30")) == "2024-01-15T09:30:00"
    assert to_json_value(dt.date(2024, 1, 15)) == "2024-01-15"
    assert to_json_value(pd.Timedelta(seconds=90)) == "P0DT0H1M30S"
    assert to_json_value(np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert to_json_value({"a": (1, np.nan), "b": {"c": pd.NA}}) == {
        "a": [1, None],
        "b": {"c": None},
    }
    for bad in (float("inf"), -math.inf, b"x", object(), {1.5: 2}, decimal.Decimal("Infinity")):
        with pytest.raises(ValueError):  # noqa: PT011 - the reason is checked in the frame tests
            to_json_value(bad)


def test_column_path_matches_element_path_for_every_dtype() -> None:
    frame = pd.DataFrame(
        {
            "f": [1.5, np.nan, -0.0],
            "i": [1, 2, 3],
            "I": pd.array([1, None, 3], dtype="Int64"),
            "F": pd.array([0.5, None, 2.0], dtype="Float64"),
            "b": [True, False, True],
            "B": pd.array([True, None, False], dtype="boolean"),
            "s": ["x", None, "ü"],
            "cat": pd.Categorical(["a", None, "b"]),
            "t": pd.to_datetime(
                ["2024-01-01 00:00:00", None, "2024-01-03 04:05:06.000007"], format="ISO8601"
            ),
            "tz": pd.to_datetime(["2024-01-01", None, "2024-06-01"]).tz_localize("US/Eastern"),
            "td": pd.to_timedelta([1, None, 2.25], unit="s"),
            "o": [decimal.Decimal("1.25"), [1, np.int8(2)], {"k": None}],
        }
    )
    requests = plan_requests(frame, "wf")
    for position, request in enumerate(requests):
        assert request.json == reference_body(frame, position)


def test_planned_requests_of_many_chunks_are_held_compactly_and_let_go_once_taken() -> None:
    from plextera_data.rows import PLAN_CHUNK

    n = PLAN_CHUNK * 2 + 7  # two full chunks and a short one
    frame = pd.DataFrame({"n": range(n), "s": [f"v{i}" for i in range(n)]})
    planned = plan_requests(frame, "wf")
    assert len(planned) == n == len(planned.fingerprints)
    assert planned[0].json == {"n": 0, "s": "v0"}
    assert planned[-1].json == {"n": n - 1, "s": f"v{n - 1}"}
    assert [r.json for r in planned[PLAN_CHUNK - 1 : PLAN_CHUNK + 1]] == [
        {"n": PLAN_CHUNK - 1, "s": f"v{PLAN_CHUNK - 1}"},
        {"n": PLAN_CHUNK, "s": f"v{PLAN_CHUNK}"},
    ]
    assert [r.fingerprint for r in planned] == planned.fingerprints
    # What was planned is what is sent: the same bytes as a request planned on its own.
    alone = plan_requests(frame.iloc[[PLAN_CHUNK + 3]], "wf")[0]
    assert planned[PLAN_CHUNK + 3].body.content == alone.body.content
    assert planned[PLAN_CHUNK + 3].fingerprint == alone.fingerprint
    wanted = [1, PLAN_CHUNK + 5, 2 * PLAN_CHUNK + 6]
    taken = planned.take(wanted)
    assert next(taken)[1].json == {"n": 1, "s": "v1"}
    position, request = next(taken)
    assert (position, request.json) == (
        PLAN_CHUNK + 5,
        {"n": PLAN_CHUNK + 5, "s": f"v{PLAN_CHUNK + 5}"},
    )
    with pytest.raises(LookupError, match="taken"):
        planned[0]  # the first chunk was let go once the sender passed it
    assert [p for p, _ in taken] == [2 * PLAN_CHUNK + 6]
    with pytest.raises(LookupError):
        planned[PLAN_CHUNK]


def test_dotted_names_nest_and_sep_can_change() -> None:
    frame = pd.DataFrame({"document.fileId": ["f1"], "document.meta.pages": [3], "top": [1]})
    (request,) = plan_requests(frame, "wf")
    assert request.json == {"document": {"fileId": "f1", "meta": {"pages": 3}}, "top": 1}
    frame = pd.DataFrame({"a__b": [1], "a.c": [2]})
    (request,) = plan_requests(frame, "wf", sep="__")
    assert request.json == {"a": {"b": 1}, "a.c": 2}


def test_columns_selects_and_body_overrides() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=["r1", "r2"])
    assert [r.json for r in plan_requests(frame, "wf", columns=["b"])] == [{"b": "x"}, {"b": "y"}]
    bodies = plan_requests(frame, "wf", body=lambda row: {"key": row.name, "twice": row["a"] * 2})
    assert [r.json for r in bodies] == [{"key": "r1", "twice": 2}, {"key": "r2", "twice": 4}]


def test_fingerprint_is_stable_and_tracks_the_request() -> None:
    frame = pd.DataFrame({"a": [1, 1], "b": ["x", "x"]})
    first, second = plan_requests(frame, "wf")
    assert first.fingerprint == second.fingerprint  # same request, same hash
    assert plan_requests(frame[["b", "a"]], "wf")[0].fingerprint == first.fingerprint
    assert plan_requests(frame, "other")[0].fingerprint != first.fingerprint
    changed = frame.assign(a=[1, 2])
    assert plan_requests(changed, "wf")[1].fingerprint != first.fingerprint


# --------------------------------------------------------------------------- property test

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_infinity=False),
    st.text(max_size=8),
)
_names = st.text(alphabet="abcé文_", min_size=1, max_size=4)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=1, max_value=6))
    leaves = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    prefix = draw(st.sampled_from(["", "doc.", "doc.meta."]))
    data: dict[str, Any] = {}
    for i, leaf in enumerate(leaves):
        name = (prefix if i % 2 else "") + leaf
        kind = draw(st.sampled_from(["float", "int", "Int64", "str", "bool", "object", "time"]))
        if kind == "float":
            values: Any = draw(st.lists(st.floats(allow_infinity=False), min_size=n, max_size=n))
        elif kind == "int":
            values = draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
        elif kind == "Int64":
            ints = draw(
                st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), min_size=n, max_size=n)
            )
            values = pd.array(ints, dtype="Int64")
        elif kind == "str":
            values = draw(
                st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=n, max_size=n)
            )
        elif kind == "bool":
            values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        elif kind == "time":
            stamps = draw(
                st.lists(
                    st.one_of(st.none(), st.datetimes(min_value=dt.datetime(1970, 1, 1))),
                    min_size=n,
                    max_size=n,
                )
            )
            values = pd.to_datetime(stamps)
        else:
            values = draw(
                st.lists(
                    st.one_of(
                        _scalars,
                        st.lists(_scalars, max_size=3),
                        st.dictionaries(_names, _scalars, max_size=2),
                    ),
                    min_size=n,
                    max_size=n,
                )
            )
            values = pd.Series(values, dtype=object)
        data[name] = values
    return pd.DataFrame(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_simulator_receives_the_documented_mapping(frame: pd.DataFrame) -> None:
    sim, client = make_sim()
    batch = px.submit(frame, "echo", client=client, progress=False)
    received = {run_id: body for run_id, body in sim.created_runs("echo")}
    assert len(received) == len(frame)
    for position, row in enumerate(batch.rows):
        assert row.run_id is not None
        assert received[row.run_id] == reference_body(frame, position)


# --------------------------------------------------------------------------- pre-flight


def assert_rejected(frame: Any, *needles: str, workflow: str = "echo", **kwargs: Any) -> None:
    sim, client = make_sim()
    with pytest.raises(InvalidInputError) as info:
        px.submit(frame, workflow, client=client, progress=False, **kwargs)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert "nothing was sent" in message or "nothing to submit" in message
    assert sim.stats.requests == 0


def test_empty_frame_and_empty_workflow_id() -> None:
    assert_rejected(pd.DataFrame({"a": []}), "no rows")
    assert_rejected(pd.DataFrame({"a": [1]}), "workflow id is empty", workflow="")
    assert_rejected(pd.DataFrame({"a": [1]}), "workflow id is empty", workflow="   ")


def test_duplicate_and_unhashable_index() -> None:
    assert_rejected(pd.DataFrame({"a": [1, 2, 3]}, index=["k", "j", "k"]), "row 'k'", "duplicated")
    frame = pd.DataFrame(
        {"a": [1, 2]}, index=pd.Index([[1], [2]], dtype=object, tupleize_cols=False)
    )
    assert_rejected(frame, "unhashable")


def test_values_json_cannot_hold_name_row_and_column() -> None:
    frame = pd.DataFrame({"ok": [1, 2, 3], "v": [object(), 1, b"raw"]}, index=["r0", "r1", "r2"])
    assert_rejected(frame, "row 'r0', column 'v'", "type object", "row 'r2', column 'v'", "bytes")
    assert_rejected(
        pd.DataFrame({"x": [1.0, math.inf]}, index=[10, 11]), "row 11, column 'x'", "inf"
    )
    assert_rejected(pd.DataFrame({"x": [{"deep": [-math.inf]}]}), "row 0, column 'x'", "infinity")


def test_many_offenders_are_counted() -> None:
    frame = pd.DataFrame({"x": [math.inf] * 12})
    sim, client = make_sim()
    with pytest.raises(InvalidInputError) as info:
        px.submit(frame, "echo", client=client, progress=False)
    assert len(info.value.problems) == 12
    assert "... and 7 more" in str(info.value)
    assert sim.stats.requests == 0


def test_column_name_conflict_names_both() -> None:
    assert_rejected(pd.DataFrame({"a": [1], "a.b": [2]}), "'a'", "'a.b'", "conflict")


def test_body_callable_results_are_checked() -> None:
    frame = pd.DataFrame({"a": [1, 2]}, index=["p", "q"])
    assert_rejected(
        frame, "row 'q'", "infinity", body=lambda r: {"v": math.inf if r.name == "q" else 1}
    )
    assert_rejected(frame, "row 'p'", "must return a dict", body=lambda r: [1])
    assert_rejected(frame, "row 'p'", "KeyError", body=lambda r: {"v": r["missing"]})


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    good = tmp_path / "a.pdf"
    good.write_bytes(b"%PDF-1.4 x")

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            raise OSError("device gone")

    frame = pd.DataFrame(
        {"doc": [str(good), str(tmp_path / "missing.pdf"), tmp_path, Broken(), io.StringIO("t")]},
        index=["a", "b", "c", "d", "e"],
    )
    assert_rejected(
        frame,
        "row 'b', column 'doc': no such file",
        "row 'c', column 'doc'",
        "not a file",
        "row 'd', column 'doc': cannot read",
        "row 'e', column 'doc'",
        "text mode",
        files=["doc"],
    )


def test_unknown_columns() -> None:
    assert_rejected(pd.DataFrame({"a": [1]}), "column 'zz'", columns=["a", "zz"])
    assert_rejected(pd.DataFrame({"a": [1]}), "column 'f'", files=["f"])


# --------------------------------------------------------------------------- multipart


def test_files_make_multipart_starts(tmp_path: Path) -> None:
    path = tmp_path / "claim.pdf"
    path.write_bytes(b"%PDF-1.4 claim")
    frame = pd.DataFrame(
        {
            "claimId": ["c1", "c2", "c3"],
            "meta.pages": [1, 2, 3],
            "document": [str(path), b"%PDF-1.4 bytes", io.BytesIO(b"%PDF-1.4 io")],
        }
    )
    requests = plan_requests(frame, "incoming-claim", files=["document"])
    assert requests[0].fields == {"claimId": "c1", "meta": {"pages": 1}}
    assert requests[0].files is not None
    assert requests[0].files["document"].filename == "claim.pdf"
    assert requests[1].files is not None
    assert requests[1].files["document"].size == 14
    assert len({r.fingerprint for r in requests}) == 3
    sim, client = make_sim()
    batch = px.submit(frame, "echo", client=client, files=["document"], progress=False)
    assert [r.status for r in batch.rows] == ["PROCESSING"] * 3
    assert len(sim.files) == 3


# --------------------------------------------------------------------------- polars and arrow

EXPECTED_BODIES = [
    {
        "n": 2**60 + 1,
        "code": "007",
        "word": "NA",
        "day": "2024-01-15",
        "at": "2024-01-15T09:30:00+00:00",
        "ok": True,
        "tags": [1, 2],
        "doc": {"pages": 3},
        "x": 0.5,
    },
    {
        "n": None,
        "code": None,
        "word": "",
        "day": None,
        "at": None,
        "ok": None,
        "tags": None,
        "doc": None,
        "x": None,
    },
]
COLUMNS: dict[str, list[Any]] = {
    "n": [2**60 + 1, None],
    "code": ["007", None],
    "word": ["NA", ""],
    "day": [dt.date(2024, 1, 15), None],
    "at": [dt.datetime(2024, 1, 15, 9, 30, tzinfo=dt.UTC), None],
    "ok": [True, None],
    "tags": [[1, 2], None],
    "doc": [{"pages": 3}, None],
    "x": [0.5, None],
}


def frames_of_other_libraries() -> dict[str, Any]:
    pl = pytest.importorskip("polars")  # a test extra; the library never needs it
    return {
        "polars": pl.DataFrame(COLUMNS),
        "arrow": pa.table(COLUMNS),
        "record-batch": pa.RecordBatch.from_pydict(COLUMNS),
    }


@pytest.mark.parametrize("name", ["polars", "arrow", "record-batch"])
def test_polars_and_arrow_frames_keep_their_types(name: str) -> None:
    frame = px.rows.as_frame(frames_of_other_libraries()[name])
    assert isinstance(frame.index, pd.RangeIndex)
    assert list(frame.index) == [0, 1]
    assert str(frame["n"].dtype) == "Int64"  # integers with nulls stay integers
    assert str(frame["ok"].dtype) == "boolean"
    assert frame["day"].iloc[0] == dt.date(2024, 1, 15)
    assert frame["code"].iloc[0] == "007"
    requests = plan_requests(frame, "wf")
    assert [r.json for r in requests] == EXPECTED_BODIES
    assert type(requests[0].json["n"]) is int  # type: ignore[index]


@pytest.mark.parametrize("name", ["polars", "arrow", "record-batch"])
def test_plan_requests_takes_polars_and_arrow_directly_and_sends_them(name: str) -> None:
    sim, client = make_sim()
    requests = plan_requests(frames_of_other_libraries()[name], "echo")
    for request in requests:
        client.start_run("echo", **request.start_kwargs())
    assert [body for _, body in sim.created_runs("echo")] == EXPECTED_BODIES


def test_an_arrow_table_from_pandas_does_not_send_its_index() -> None:
    table = pa.Table.from_pandas(pd.DataFrame({"a": [1, 2]}, index=["k1", "k2"]))
    assert "__index_level_0__" in table.column_names
    frame = px.rows.as_frame(table)
    assert list(frame.columns) == ["a"]
    assert isinstance(frame.index, pd.RangeIndex)


def test_a_pandas_frame_is_used_as_is_and_other_objects_are_refused() -> None:
    frame = pd.DataFrame({"a": [1]}, index=["key"])
    assert px.rows.as_frame(frame) is frame
    pl = pytest.importorskip("polars")
    for bad, needle in (
        (pl.DataFrame({"a": [1]}).lazy(), ".collect()"),
        ([{"a": 1}], "got list"),
        (pa.table({"a": [1], "b": [2]}).rename_columns(["a", "a"]), "duplicated column"),
    ):
        with pytest.raises(InvalidInputError, match=re.escape(needle)):
            plan_requests(bad, "wf")


def test_polars_is_never_imported_by_planning() -> None:
    script = (
        "import sys, pandas as pd\n"
        "from plextera_data.rows import plan_requests, as_frame\n"
        "plan_requests(pd.DataFrame({'a': [1]}), 'wf')\n"
        "as_frame(pd.DataFrame({'a': [1]}))\n"
        "assert 'polars' not in sys.modules, 'polars was imported'\n"
        "print('OK')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
