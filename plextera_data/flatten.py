"""Flatten runs (with their steps, nested runs and step outputs) into tidy :class:`Tables`.

    tables = px.flatten(runs)              # Run objects, raw dicts, event payloads, or a Batch
    tables.steps.query("status == 'FAILED'")
    tables.outputs_wide()                  # one row per run, one column per step output leaf

The work is one pass in plain Python over the raw JSON that fills column lists, then one arrow
array per column (typed, vectorised), then one DataFrame per table. No per-row frames.

Order: runs in depth-first pre-order (a submitted run, then the nested runs of its first step,
each followed by its own nested runs, then those of its next step...), each run's steps contiguous
and in API order, outputs in the order of their steps and, inside an output, in the JSON's order.

Output paths (``path`` in ``outputs``): keys that are Python identifiers are joined with ``.``,
array items are ``[i]``, any other key is written ``["key"]`` with JSON string quoting:
``fields[0].value``, ``["a.b"][2]["x y"]``. A scalar output (the output is itself a string or a
number) has the path ``""``. :func:`parse_path` turns a path back into its keys and indexes.
"""

from __future__ import annotations

import inspect
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from plextera_data.models import run_payload
from plextera_data.tables import VALUE_TYPES, Tables, frame_from_arrow, schema_for

__all__ = ["Tables", "flatten", "outputs_wide", "parse_path", "results"]

_RUN_KNOWN = frozenset(
    {
        "id",
        "runId",
        "workflowId",
        "status",
        "workflow",
        "createdAt",
        "updatedAt",
        "startedAt",
        "completedAt",
        "progress",
        "durationMs",
        "computedDurationMs",
        "error",
        "steps",
    }
)
_STEP_KNOWN = frozenset({"id", "name", "type", "status", "message", "output", "nestedRuns"})
_SUBFIELDS = {
    "workflow": frozenset({"id", "name"}),
    "progress": frozenset({"stepsCompleted", "stepsTotal"}),
    "error": frozenset({"code", "message"}),
    "nestedRuns": frozenset({"count", "data"}),
}
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Type codes of output leaves, in the order of VALUE_TYPES.
_STRING, _INTEGER, _FLOAT, _BOOLEAN, _NULL, _OBJECT, _ARRAY = range(7)


class _Empty:
    """An empty object or array met as a leaf of an output."""

    __slots__ = ("json",)

    def __init__(self, text: str) -> None:
        self.json = text


_EMPTY_OBJECT = _Empty("{}")
_EMPTY_ARRAY = _Empty("[]")


_LEAF_CODES: dict[type, int] = {
    str: _STRING,
    int: _INTEGER,
    float: _FLOAT,
    bool: _BOOLEAN,
    type(None): _NULL,
}


def _key_segment(key: Any) -> str:
    """The path segment of one object key, with its leading ``.`` when it is an identifier."""
    text = key if isinstance(key, str) else str(key)
    if text.isidentifier():
        return "." + text
    return "[" + json.dumps(text, ensure_ascii=False) + "]"


def _child_path(prefix: str, key: Any, of_object: bool) -> str:
    """The path of the member ``key`` of an object (or index ``key`` of an array) at ``prefix``;
    a top-level identifier has no leading ``.``."""
    if not of_object:
        return f"{prefix}[{key}]"
    segment = _key_segment(key)
    if not prefix and segment[0] == ".":
        return segment[1:]
    return prefix + segment


def parse_path(path: str) -> list[str | int]:
    """The keys (``str``) and array indexes (``int``) that ``path`` names, outermost first.

    >>> parse_path('fields[0].value')
    ['fields', 0, 'value']
    >>> parse_path('["a.b"][2]')
    ['a.b', 2]
    """
    parts: list[str | int] = []
    decoder = json.JSONDecoder()
    position = 0
    length = len(path)
    while position < length:
        char = path[position]
        if char == "[":
            if path.startswith('["', position):
                key, end = decoder.raw_decode(path, position + 1)
                if not path.startswith("]", end):
                    raise ValueError(f"unclosed quoted key at {position} in path {path!r}")
                parts.append(key)
                position = end + 1
            else:
                end = path.index("]", position)
                parts.append(int(path[position + 1 : end]))
                position = end + 1
            continue
        if char == ".":
            position += 1
        end = position
        while end < length and path[end] not in ".[":
            end += 1
        if end == position:
            raise ValueError(f"empty key at {position} in path {path!r}")
        parts.append(path[position:end])
        position = end
    return parts


def _as_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return None


def _str_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([_as_str(value) for value in values], type=pa.string())


def _int_array(values: list[Any]) -> pa.Array:
    return pa.array([_as_int(value) for value in values], type=pa.int64())


def _category_array(values: list[Any]) -> pa.Array:
    return _str_array(values).dictionary_encode()


def _timestamp_array(values: list[Any]) -> pa.Array:
    """ISO 8601 strings as UTC timestamps; anything unparseable becomes null."""
    texts = [value if isinstance(value, str) and value else None for value in values]
    target = pa.timestamp("us", tz="UTC")
    try:
        return pa.array(texts, type=pa.string()).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = pd.to_datetime(
            pd.Series(texts, dtype=object), utc=True, format="ISO8601", errors="coerce"
        )
        return pa.array(parsed.dt.as_unit("us"), type=target)


def _object_or_extra(value: Any, fields: frozenset[str]) -> tuple[Mapping[str, Any], Any]:
    """A known sub-object and what in it is unknown (``None`` when nothing is)."""
    if type(value) is dict or isinstance(value, Mapping):
        if value.keys() <= fields:
            return value, None
        extra = {key: item for key, item in value.items() if key not in fields}
        return value, extra or None
    return {}, value


class _Collector:
    """Column lists for the three tables, filled in one depth-first pass."""

    def __init__(self, fetch: Callable[[str], Mapping[str, Any]] | None) -> None:
        self.fetch = fetch
        # runs
        self.run_id: list[Any] = []
        self.root_run_id: list[Any] = []
        self.parent_run_id: list[Any] = []
        self.parent_step_id: list[Any] = []
        self.run_depth: list[int] = []
        self.run_row_key: list[Any] = []
        self.workflow_id: list[Any] = []
        self.workflow_name: list[Any] = []
        self.run_status: list[Any] = []
        self.step_count: list[int] = []
        self.steps_completed: list[Any] = []
        self.steps_total: list[Any] = []
        self.created_at: list[Any] = []
        self.started_at: list[Any] = []
        self.updated_at: list[Any] = []
        self.completed_at: list[Any] = []
        self.duration_ms: list[Any] = []
        self.computed_duration_ms: list[Any] = []
        self.error_code: list[Any] = []
        self.error_message: list[Any] = []
        self.run_extra: list[str | None] = []
        # steps (run-level columns come from the run's position: step_run)
        self.step_run: list[int] = []
        self.step_index: list[int] = []
        self.step_id: list[Any] = []
        self.step_name: list[Any] = []
        self.step_type: list[Any] = []
        self.step_status: list[Any] = []
        self.step_message: list[Any] = []
        self.has_output: list[bool] = []
        self.nested_count: list[Any] = []
        self.nested_seen: list[int] = []
        self.step_extra: list[str | None] = []
        # outputs (step-level columns come from the step's position: leaf_count per step)
        self.leaf_count: list[int] = []
        self.paths: list[str] = []
        self.values: list[Any] = []
        self._key_paths: dict[tuple[str, Any], str] = {}
        self._index_paths: dict[tuple[str, int], str] = {}

    # -- outputs ---------------------------------------------------------------------------
    def _walk(self, node: Any, prefix: str) -> None:
        """Append the leaves of a non-empty object or array to ``paths``/``values``."""
        paths = self.paths
        values = self.values
        walk = self._walk
        is_object = type(node) is dict
        # One str object per distinct path: repeated paths cost no memory. Keys and indexes
        # have their own caches so that a key 0 and an index 0 never share a path.
        known = self._key_paths if is_object else self._index_paths
        for key, value in node.items() if is_object else enumerate(node):
            path = known.get((prefix, key))
            if path is None:
                path = known[(prefix, key)] = _child_path(prefix, key, is_object)
            kind = type(value)
            if kind is dict:
                if value:
                    walk(value, path)
                else:
                    paths.append(path)
                    values.append(_EMPTY_OBJECT)
            elif kind is list:
                if value:
                    walk(value, path)
                else:
                    paths.append(path)
                    values.append(_EMPTY_ARRAY)
            else:
                paths.append(path)
                values.append(value)

    def _output(self, output: Any) -> int:
        """Append an output's leaves; return how many."""
        before = len(self.paths)
        kind = type(output)
        if kind is dict or kind is list:
            if output:
                self._walk(output, "")
            else:
                self.paths.append("")
                self.values.append(_EMPTY_OBJECT if kind is dict else _EMPTY_ARRAY)
        elif isinstance(output, Mapping):
            return self._output(dict(output))
        elif isinstance(output, tuple):
            return self._output(list(output))
        else:
            self.paths.append("")
            self.values.append(output)
        return len(self.paths) - before

    # -- runs and steps --------------------------------------------------------------------
    def add_run(
        self,
        run: Mapping[str, Any],
        *,
        root_id: Any,
        parent_id: Any,
        parent_step_id: Any,
        depth: int,
        row_key: Any,
    ) -> None:
        """Append ``run``, its steps and outputs, then its nested runs (depth-first)."""
        run_id = run.get("id")
        if run_id is None:
            run_id = run.get("runId")
        if depth == 0:
            root_id = run_id
        position = len(self.run_id)
        extra: dict[str, Any] | None = None
        if not run.keys() <= _RUN_KNOWN:
            extra = {key: value for key, value in run.items() if key not in _RUN_KNOWN}
        workflow, workflow_extra = _object_or_extra(run.get("workflow"), _SUBFIELDS["workflow"])
        progress, progress_extra = _object_or_extra(run.get("progress"), _SUBFIELDS["progress"])
        error, error_extra = _object_or_extra(run.get("error"), _SUBFIELDS["error"])
        for name, value in (
            ("workflow", workflow_extra),
            ("progress", progress_extra),
            ("error", error_extra),
        ):
            if value is not None:
                if extra is None:
                    extra = {}
                extra[name] = value
        workflow_id = workflow.get("id")
        if workflow_id is None:
            workflow_id = run.get("workflowId")
        steps = run.get("steps")
        if not isinstance(steps, list):
            if steps is not None:
                extra = {**(extra or {}), "steps": steps}
            steps = []

        self.run_id.append(run_id)
        self.root_run_id.append(root_id)
        self.parent_run_id.append(parent_id)
        self.parent_step_id.append(parent_step_id)
        self.run_depth.append(depth)
        self.run_row_key.append(row_key)
        self.workflow_id.append(workflow_id)
        self.workflow_name.append(workflow.get("name"))
        self.run_status.append(run.get("status"))
        self.step_count.append(len(steps))
        self.steps_completed.append(progress.get("stepsCompleted"))
        self.steps_total.append(progress.get("stepsTotal"))
        self.created_at.append(run.get("createdAt"))
        self.started_at.append(run.get("startedAt"))
        self.updated_at.append(run.get("updatedAt"))
        self.completed_at.append(run.get("completedAt"))
        self.duration_ms.append(run.get("durationMs"))
        self.computed_duration_ms.append(run.get("computedDurationMs"))
        self.error_code.append(error.get("code"))
        self.error_message.append(error.get("message"))
        self.run_extra.append(
            None if extra is None else json.dumps(extra, ensure_ascii=False, default=str)
        )

        nested_runs: list[tuple[Any, list[Mapping[str, Any]]]] = []
        for index, step in enumerate(steps):
            if type(step) is not dict and not isinstance(step, Mapping):
                step = {} if step is None else {"value": step}
            step_id = step.get("id")
            output = step.get("output")
            step_extra: dict[str, Any] | None = None
            if not step.keys() <= _STEP_KNOWN:
                step_extra = {key: value for key, value in step.items() if key not in _STEP_KNOWN}
            nested, nested_extra = _object_or_extra(
                step.get("nestedRuns"), _SUBFIELDS["nestedRuns"]
            )
            if nested_extra is not None:
                step_extra = {**(step_extra or {}), "nestedRuns": nested_extra}
            items = nested.get("data")
            children = (
                [item for item in items if type(item) is dict or isinstance(item, Mapping)]
                if isinstance(items, list)
                else []
            )
            self.step_run.append(position)
            self.step_index.append(index)
            self.step_id.append(step_id)
            self.step_name.append(step.get("name"))
            self.step_type.append(step.get("type"))
            self.step_status.append(step.get("status"))
            self.step_message.append(step.get("message"))
            self.has_output.append(output is not None)
            self.nested_count.append(nested.get("count"))
            self.nested_seen.append(len(children))
            self.step_extra.append(
                None if not step_extra else json.dumps(step_extra, ensure_ascii=False, default=str)
            )
            self.leaf_count.append(0 if output is None else self._output(output))
            if children:
                nested_runs.append((step_id, children))

        for step_id, children in nested_runs:
            for child in children:
                child = self._expanded(child)
                self.add_run(
                    child,
                    root_id=root_id,
                    parent_id=run_id,
                    parent_step_id=step_id,
                    depth=depth + 1,
                    row_key=row_key,
                )

    def _expanded(self, child: Mapping[str, Any]) -> Mapping[str, Any]:
        """The full model of a nested run given as a summary (no steps), when fetching is on."""
        if self.fetch is None:
            return child
        steps = child.get("steps")
        if isinstance(steps, list) and any(isinstance(step, Mapping) for step in steps):
            return child
        child_id = child.get("id", child.get("runId"))
        if not isinstance(child_id, str) or not child_id:
            return child
        return run_payload(self.fetch(child_id))

    # -- building --------------------------------------------------------------------------
    def tables(self) -> Tables:
        row_key, row_key_type = _row_key_array(self.run_row_key)
        runs = pa.Table.from_arrays(
            [
                _str_array(self.run_id),
                _str_array(self.root_run_id),
                _str_array(self.parent_run_id),
                _str_array(self.parent_step_id),
                pa.array(self.run_depth, type=pa.int64()),
                row_key,
                _str_array(self.workflow_id),
                _str_array(self.workflow_name),
                _category_array(self.run_status),
                pa.array(self.step_count, type=pa.int64()),
                _int_array(self.steps_completed),
                _int_array(self.steps_total),
                _timestamp_array(self.created_at),
                _timestamp_array(self.started_at),
                _timestamp_array(self.updated_at),
                _timestamp_array(self.completed_at),
                _int_array(self.duration_ms),
                _int_array(self.computed_duration_ms),
                _str_array(self.error_code),
                _str_array(self.error_message),
                pa.array(self.run_extra, type=pa.string()),
            ],
            schema=schema_for("runs", row_key_type),
        )

        step_run = pa.array(self.step_run, type=pa.int64())
        step_ids = _str_array(self.step_id)
        step_names = _str_array(self.step_name)
        step_index = pa.array(self.step_index, type=pa.int64())
        step_run_id = runs.column("run_id").take(step_run)
        step_root = runs.column("root_run_id").take(step_run)
        step_row_key = runs.column("row_key").take(step_run)
        step_depth = runs.column("depth").take(step_run)
        steps = pa.Table.from_arrays(
            [
                step_run_id,
                step_index,
                step_ids,
                step_names,
                _category_array(self.step_type),
                _category_array(self.step_status),
                _str_array(self.step_message),
                pa.array(self.has_output, type=pa.bool_()),
                _int_array(self.nested_count),
                pa.array(self.nested_seen, type=pa.int64()),
                step_root,
                step_row_key,
                step_depth,
                pa.array(self.step_extra, type=pa.string()),
            ],
            schema=schema_for("steps", row_key_type),
        )

        leaf_step = pa.array(
            np.repeat(
                np.arange(len(self.leaf_count), dtype=np.int64),
                np.asarray(self.leaf_count, dtype=np.int64),
            )
        )
        values = _leaf_columns(self.values)
        outputs = pa.Table.from_arrays(
            [
                step_run_id.take(leaf_step),
                step_index.take(leaf_step),
                step_ids.take(leaf_step),
                step_names.take(leaf_step),
                pa.array(self.paths, type=pa.string()),
                *values,
                step_root.take(leaf_step),
                step_row_key.take(leaf_step),
                step_depth.take(leaf_step),
            ],
            schema=schema_for("outputs", row_key_type),
        )
        return Tables(
            runs=frame_from_arrow(runs),
            steps=frame_from_arrow(steps),
            outputs=frame_from_arrow(outputs),
        )


def _leaf_columns(values: list[Any]) -> list[pa.Array]:
    """``value_type`` and the five value columns of the output leaves, built column-wise."""
    count = len(values)
    codes_map: defaultdict[type, int] = defaultdict(lambda: -1, _LEAF_CODES)
    codes = np.fromiter(map(codes_map.__getitem__, map(type, values)), dtype=np.int8, count=count)
    objects = np.empty(count, dtype=object)
    objects[:] = values
    json_text = np.full(count, None, dtype=object)

    empties = np.flatnonzero(codes == -1)
    for position in empties:
        value = objects[position]
        if value is _EMPTY_OBJECT:
            codes[position] = _OBJECT
            json_text[position] = "{}"
        elif value is _EMPTY_ARRAY:
            codes[position] = _ARRAY
            json_text[position] = "[]"
        elif isinstance(value, bool):
            codes[position] = _BOOLEAN
        elif isinstance(value, int):
            codes[position] = _INTEGER
            objects[position] = int(value)
        elif isinstance(value, float):
            codes[position] = _FLOAT
            objects[position] = float(value)
        else:  # not a JSON type (a custom decoder's Decimal...): keep its text
            codes[position] = _STRING
            objects[position] = str(value)

    def pick(code: int) -> np.ndarray:
        picked = np.full(count, None, dtype=object)
        mask = codes == code
        picked[mask] = objects[mask]
        return picked

    integers = pick(_INTEGER)
    try:
        value_int = pa.array(integers, type=pa.int64())
    except OverflowError:
        for position in np.flatnonzero(codes == _INTEGER):
            number = integers[position]
            if not _INT64_MIN <= number <= _INT64_MAX:
                integers[position] = None
                json_text[position] = str(number)
        value_int = pa.array(integers, type=pa.int64())
    value_type = pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(list(VALUE_TYPES), type=pa.string())
    )
    return [
        value_type,
        pa.array(pick(_STRING), type=pa.string()),
        value_int,
        pa.array(pick(_FLOAT), type=pa.float64()),
        pa.array(pick(_BOOLEAN), type=pa.bool_()),
        pa.array(json_text, type=pa.string()),
    ]


def _row_key_array(keys: list[Any]) -> tuple[pa.Array, pa.DataType]:
    """Row keys as ``int64`` when all are integers, else as text (``str(key)``)."""
    present = [key for key in keys if key is not None]
    if present and all(
        isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_))
        for key in present
    ):
        return pa.array([None if key is None else int(key) for key in keys], pa.int64()), pa.int64()
    return pa.array([_row_key_text(key) for key in keys], type=pa.string()), pa.string()


def _row_key_text(key: Any) -> str | None:
    if key is None:
        return None
    return key if isinstance(key, str) else str(key)


def _sources(
    runs: Any, row_keys: Mapping[str, Any] | None
) -> tuple[list[Mapping[str, Any]], dict[Any, Any]]:
    """The raw run dicts of ``runs`` and the row key of each top-level run id."""
    keys: dict[Any, Any] = {}
    source = getattr(runs, "_flatten_source", None)
    if callable(source):
        runs, batch_keys = source()
        keys.update(batch_keys or {})
    elif (
        not isinstance(runs, (Mapping, list, tuple))
        and hasattr(runs, "runs")
        and hasattr(runs, "row_keys")
    ):
        keys.update(runs.row_keys or {})
        runs = runs.runs
    if row_keys:
        keys.update(row_keys)
    if isinstance(runs, Mapping) or hasattr(runs, "raw"):
        runs = [runs]
    raw_runs: list[Mapping[str, Any]] = []
    for item in runs:
        raw = getattr(item, "raw", None)
        if isinstance(raw, Mapping) and not isinstance(item, Mapping):
            raw_runs.append(raw)
        elif isinstance(item, Mapping):
            raw_runs.append(run_payload(item))
        else:
            raise TypeError(
                f"flatten() takes Run objects, run dicts or event payloads, got "
                f"{type(item).__name__}: pass run.raw or the parsed JSON of the run"
            )
    return raw_runs, keys


def flatten(
    runs: Any,
    *,
    row_keys: Mapping[str, Any] | None = None,
    expand_nested: bool = False,
    client: Any = None,
) -> Tables:
    """Flatten runs into tidy ``runs``, ``steps`` and ``outputs`` tables.

    ``runs``: an iterable of :class:`~plextera_data.Run` objects, raw run dicts or event payloads
    (``{"eventType", "data": run}`` or the bare run; ``runId``/``workflowId`` are read like
    ``id``/``workflow.id``), or a Batch. A single run or payload is accepted too.

    ``row_keys`` maps a submitted run's id to its input row's index value; nested runs inherit
    their root's key. A Batch supplies its own.

    ``expand_nested=True`` fetches, with ``client.get_run``, each nested run given as a summary
    (no step objects) and flattens its full model instead. Nested runs the API counts
    (``nestedRuns.count``) but does not list in ``nestedRuns.data`` have no id and cannot be
    fetched: compare ``steps.nested_run_count`` with ``steps.nested_runs_seen`` to find them.

    >>> tables = flatten([{"id": "r1", "status": "COMPLETED", "steps": [
    ...     {"id": "s1", "name": "Extract", "status": "COMPLETED", "output": {"n": 3}}]}])
    >>> tables.outputs[["run_id", "path", "value_type", "value_int"]].to_dict("records")
    [{'run_id': 'r1', 'path': 'n', 'value_type': 'integer', 'value_int': 3}]
    """
    fetch: Callable[[str], Mapping[str, Any]] | None = None
    if expand_nested:
        if client is None:
            raise ValueError(
                "expand_nested=True needs a client to fetch nested runs: pass client=px.Client()"
            )

        def fetch(run_id: str) -> Mapping[str, Any]:
            fetched = client.get_run(run_id)
            if inspect.isawaitable(fetched):
                close = getattr(fetched, "close", None)
                if callable(close):
                    close()
                raise TypeError(
                    "expand_nested=True fetches with a synchronous client: pass px.Client(), "
                    "not px.AsyncClient()"
                )
            raw = getattr(fetched, "raw", fetched)
            return raw if isinstance(raw, Mapping) else {}

    raw_runs, keys = _sources(runs, row_keys)
    collector = _Collector(fetch)
    for run in raw_runs:
        run_id = run.get("id")
        if run_id is None:
            run_id = run.get("runId")
        collector.add_run(
            run,
            root_id=run_id,
            parent_id=None,
            parent_step_id=None,
            depth=0,
            row_key=keys.get(run_id) if isinstance(run_id, (str, int)) else None,
        )
    return collector.tables()


# -- wide outputs and results ---------------------------------------------------------------


def _step_labels(outputs: pd.DataFrame, sep: str) -> pd.Series:
    step = outputs["step_name"].fillna(outputs["step_id"])
    step = step.fillna("step " + outputs["step_index"].astype("string"))
    path = outputs["path"]
    return step.where(path == "", step + sep + path).astype(object)


def _python_values(frame: pd.DataFrame) -> list[Any]:
    values: list[Any] = []
    columns = zip(
        frame["value_type"].astype(object),
        frame["value_str"].astype(object),
        frame["value_int"].astype(object),
        frame["value_float"].astype(object),
        frame["value_bool"].astype(object),
        frame["value_json"].astype(object),
        strict=True,
    )
    for kind, text, integer, number, flag, raw in columns:
        if kind == "string":
            values.append(text)
        elif kind == "integer":
            values.append(int(raw) if integer is pd.NA else integer)
        elif kind == "float":
            values.append(number)
        elif kind == "boolean":
            values.append(flag)
        elif kind in ("object", "array"):
            values.append(json.loads(raw))
        else:
            values.append(None)
    return values


def _wide_column(group: pd.DataFrame) -> tuple[Any, Any]:
    kinds = set(group["value_type"].astype(object)) - {"null"}
    big = group["value_json"].notna() & (group["value_type"] == "integer")
    if kinds == {"string"}:
        return group["value_str"].array, None
    if kinds == {"integer"} and not big.any():
        return group["value_int"].array, None
    if kinds and kinds <= {"integer", "float"} and not big.any():
        merged = group["value_float"].fillna(group["value_int"].astype("Float64"))
        return merged.array, None
    if kinds == {"boolean"}:
        return group["value_bool"].array, None
    mixed = np.empty(len(group), dtype=object)
    for position, value in enumerate(_python_values(group)):
        mixed[position] = value
    return mixed, object


def outputs_wide(
    tables: Tables, by: str = "run_id", *, sep: str = " / ", depth: int | None = 0
) -> pd.DataFrame:
    """See :meth:`Tables.outputs_wide`."""
    if by not in ("run_id", "row_key"):
        raise ValueError(f"by must be 'run_id' or 'row_key', not {by!r}")
    runs = tables.runs
    outputs = tables.outputs
    if depth is not None:
        runs = runs[runs["depth"] == depth]
        outputs = outputs[outputs["depth"] == depth]
    index = pd.Index(runs[by].dropna().unique(), name=by)
    outputs = outputs[outputs[by].notna()]
    labels = _step_labels(outputs, sep)
    frame = outputs.assign(_label=labels)
    # A label met again in the same row (same `by` key) from another step or run: number it.
    first_step = frame.groupby([by, "_label"], sort=False, dropna=False)
    repeat = first_step.cumcount()
    if (repeat > 0).any():
        frame["_label"] = frame["_label"].where(
            repeat == 0, frame["_label"] + " (" + (repeat + 1).astype(str) + ")"
        )
    columns: dict[str, Any] = {}
    for label, group in frame.groupby("_label", sort=False):
        values, dtype = _wide_column(group)
        series = pd.Series(values, index=pd.Index(group[by].array), dtype=dtype)
        columns[str(label)] = series.reindex(index)
    if not columns:
        return pd.DataFrame(index=index)
    wide = pd.DataFrame(columns, index=index)
    wide.columns.name = None
    return wide


def _key_strings(values: Iterable[Any]) -> list[str | None]:
    return [None if value is None else str(value) for value in values]


def results(
    frame: pd.DataFrame, tables: Tables, *, suffix: str = "_plextera", **outputs_wide_kwargs: Any
) -> pd.DataFrame:
    """``frame`` (same index, same order) with its runs' ``run_id``, ``status``, ``error_code``,
    ``error_message`` and one column per step output (:meth:`Tables.outputs_wide`, by row key).

    An added column whose name the frame already has gets ``suffix``. ``frame`` is not changed.
    """
    runs = tables.runs
    runs = runs[(runs["depth"] == 0) & runs["row_key"].notna()]
    runs = runs.drop_duplicates("row_key", keep="last").set_index("row_key")
    added = runs[["run_id", "status", "error_code", "error_message"]]
    wide = tables.outputs_wide(by="row_key", **outputs_wide_kwargs)
    added = added.join(wide, how="left") if len(wide.columns) else added
    if pd.api.types.is_integer_dtype(added.index.dtype) and pd.api.types.is_integer_dtype(
        frame.index.dtype
    ):
        aligned = added.reindex(frame.index)
    else:
        lookup = added.copy()
        lookup.index = pd.Index(_key_strings(lookup.index), dtype=object)
        aligned = lookup.reindex(pd.Index(_key_strings(frame.index), dtype=object))
    aligned.index = frame.index
    aligned.columns = [
        f"{column}{suffix}" if column in frame.columns else column for column in aligned.columns
    ]
    return pd.concat([frame, aligned], axis=1)
