"""Flatten runs (with their steps, nested runs and step outputs) into tidy :class:`Tables`.

    tables = px.flatten(runs)              # Run objects, raw dicts, event payloads, or a Batch
    tables.steps.query("status == 'FAILED'")
    tables.outputs_wide()                  # one row per run, one column per step output leaf
    px.flatten(runs, to="out/")            # parquet datasets, written as the runs come

    with TableWriter("out/", row_key_type="int64") as writer:   # the same, chunk by chunk
        for chunk, keys in chunks:
            writer.add(chunk, row_keys=keys)

The work is one pass in plain Python over the raw JSON (read through :mod:`plextera_data.models`,
which alone knows its field names) that appends to flat lists: a few values per run and per step,
and per output leaf its value (in a list per JSON type) and one number for its path and type. Then
numpy and arrow build each column at once: the positions of runs and steps give the ``run_id``,
``step_id``... of the rows below them (dictionary-encoded: one copy of each id), and the lists of
values become the value columns. No Python object is made per row.

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
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import pyarrow as pa

from plextera_data.models import (
    RUN_PARTS,
    has_steps,
    run_id_of,
    run_parts,
    run_payload,
    step_parts,
)
from plextera_data.parquet import PartWriter
from plextera_data.tables import (
    TABLE_NAMES,
    TEXT,
    VALUE_TYPES,
    Tables,
    outputs_wide,
    results,
    schema_for,
)

__all__ = [
    "TableWriter",
    "Tables",
    "flatten",
    "outputs_wide",
    "parse_path",
    "results",
    "row_key_type_of",
]

RowKeyType = Literal["int64", "string"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Type codes of output leaves, in the order of VALUE_TYPES.
_STRING, _INTEGER, _FLOAT, _BOOLEAN, _NULL, _OBJECT, _ARRAY = range(7)


class _EmptyObject:
    """An empty object met as a leaf of an output."""

    json = "{}"


class _EmptyArray:
    """An empty array met as a leaf of an output."""

    json = "[]"


_EMPTY_OBJECT = _EmptyObject()
_EMPTY_ARRAY = _EmptyArray()

_LEAF_CODES: dict[type, int] = {
    str: _STRING,
    int: _INTEGER,
    float: _FLOAT,
    bool: _BOOLEAN,
    type(None): _NULL,
    _EmptyObject: _OBJECT,
    _EmptyArray: _ARRAY,
}

# Where the collector's flat lists keep each value of a run / a step (see _Collector).
_RUN_LAYOUT = (
    # models.run_parts, in its order
    *RUN_PARTS,
    # the run's place in its tree (the positions of its root and parent, its depth: in
    # _Collector.places)
    "parent_step_id",
    "row_key",
)
# A step's kind: its id, name, type and status (the first of models.step_parts). The steps of a
# batch are of a few kinds (the steps of its workflows, in a few statuses): each kind is kept
# once, each step its number (values that compare equal, such as step ids 1 and 1.0, share a
# kind).
_KIND_LAYOUT = ("id", "name", "type", "status")
_STEP_LAYOUT = ("message", "nested_run_count", "nested_runs_seen", "extra")
_STEPS_PART = _RUN_LAYOUT.index("steps")
# The extra_json key under which a step that is not an object is kept.
_NOT_AN_OBJECT = "value"
# Above this many distinct paths the streaming writer forgets them between row groups.
_MAX_KEPT_PATHS = 100_000


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


# A leaf's tag: its path id shifted left by 3 bits, its type code (0..6) in the low 3 bits.
_TYPE_BITS = 3
_TYPE_MASK = (1 << _TYPE_BITS) - 1
# The pseudo path whose item 0 is the output itself: a scalar or empty output is walked as
# ``[output]`` under it, so that it is a leaf at the path "" like any other leaf.
_AROUND_OUTPUT = -1 << _TYPE_BITS


class _Paths:
    """Every distinct output path met, by id (id 0 is ``""``, the output itself), and the tag
    (``id << _TYPE_BITS``) of each path's children by object key and by array index, by the
    tag of the parent (kept apart: key ``0`` and index ``0`` are different paths)."""

    def __init__(self) -> None:
        self.texts: list[str] = [""]
        self._tags: dict[str, int] = {"": 0}
        self.by_key: dict[int, dict[Any, int]] = {0: {}}
        self.by_index: dict[int, dict[Any, int]] = {0: {}, _AROUND_OUTPUT: {0: 0}}

    def __len__(self) -> int:
        return len(self.texts)

    def child(self, parent: int, key: Any, of_object: bool) -> int:
        """The tag of the path of member ``key`` (or item ``key``) under the path ``parent``."""
        text = _child_path(self.texts[parent >> _TYPE_BITS], key, of_object)
        tag = self._tags.get(text)
        if tag is None:
            tag = self._tags[text] = len(self.texts) << _TYPE_BITS
            self.texts.append(text)
            self.by_key[tag] = {}
            self.by_index[tag] = {}
        (self.by_key if of_object else self.by_index)[parent][key] = tag
        return tag


def _extra_text(extra: dict[str, Any] | None) -> str | None:
    return None if extra is None else json.dumps(extra, ensure_ascii=False, default=str)


def _odd_leaf(value: Any) -> tuple[int, Any]:
    """The type code and value of a leaf whose type is not JSON's own (a subclass, a numpy
    scalar, a custom decoder's Decimal): the JSON type it stands for, else its text."""
    if isinstance(value, (bool, np.bool_)):
        return _BOOLEAN, bool(value)
    if isinstance(value, (int, np.integer)):
        return _INTEGER, int(value)
    if isinstance(value, (float, np.floating)):
        return _FLOAT, float(value)
    return _STRING, str(value)


class _Leaves:
    """The output leaves collected: per leaf its tag (path id and type code in one number), and
    the values of each type in a list of their own (``by_type[code]``), in leaf order."""

    def __init__(self) -> None:
        self.tags = array("i")
        self.by_type: list[list[Any]] = [[] for _ in VALUE_TYPES]

    def __len__(self) -> int:
        return len(self.tags)


def _walker(paths: _Paths, leaves: _Leaves) -> Callable[[Any, int], None]:
    """The function that appends the leaves of a non-empty object or array under a path tag
    (a closure: the per-leaf work is a handful of local lookups)."""
    add_tag = leaves.tags.append
    add_value = [values.append for values in leaves.by_type]
    code_of = _LEAF_CODES.get
    by_key, by_index, child = paths.by_key, paths.by_index, paths.child

    def walk(node: Any, prefix: int) -> None:
        is_object = type(node) is dict
        known = (by_key if is_object else by_index)[prefix]
        for key, value in node.items() if is_object else enumerate(node):
            tag = known.get(key)
            if tag is None:
                tag = child(prefix, key, is_object)
            kind = type(value)
            code = code_of(kind)
            if code is None:
                if kind is dict or kind is list:
                    if value:
                        walk(value, tag)
                        continue
                    code = _OBJECT if kind is dict else _ARRAY
                else:
                    code, value = _odd_leaf(value)
            add_tag(tag + code)
            add_value[code](value)

    return walk


class _Collector:
    """Flat lists for the three tables, filled in one depth-first pass over raw runs.

    ``runs`` holds ``len(_RUN_LAYOUT)`` values per run, ``steps`` ``len(_STEP_LAYOUT)`` per
    step; a run's steps are contiguous and follow the runs' order, so the position of each step's
    run and its index are recomputed from the step counts. The output leaves are in
    :class:`_Leaves`, their paths in :class:`_Paths`.
    """

    def __init__(self, fetch: Callable[[str], Mapping[str, Any]] | None) -> None:
        self.fetch = fetch
        self.paths = _Paths()
        self.clear()

    def rows(self) -> int:
        """Rows collected so far, steps and output leaves (what the memory held grows with)."""
        return len(self.leaf_ends) + len(self.leaves)

    def clear(self) -> None:
        """Forget the rows collected (the paths too, when there are many of them)."""
        self.runs: list[Any] = []
        self.steps: list[Any] = []
        # per run: the positions of its root and its parent run (-1: none), its depth
        self.places = array("q")
        # per step: the number of its kind, and how many output leaves were collected once its
        # own were
        self.kinds: dict[tuple[Any, ...], int] = {}
        self.step_kinds = array("i")
        self.leaf_ends = array("q")
        self.leaves = _Leaves()
        if len(self.paths) > _MAX_KEPT_PATHS:
            self.paths = _Paths()
        self._walk = _walker(self.paths, self.leaves)

    # -- outputs ---------------------------------------------------------------------------
    def _output(self, output: Any) -> None:
        """Append an output's leaves."""
        kind = type(output)
        if (kind is dict or kind is list) and output:
            self._walk(output, 0)
        elif kind is not dict and kind is not list and isinstance(output, Mapping):
            self._output(dict(output))
        elif kind is not dict and kind is not list and isinstance(output, tuple):
            self._output(list(output))
        else:
            self._walk([output], _AROUND_OUTPUT)

    # -- runs and steps --------------------------------------------------------------------
    def add(self, run: Mapping[str, Any], keys: Mapping[Any, Any]) -> None:
        """Append a submitted run (with its row key from ``keys``) and everything under it."""
        run_id = run_id_of(run)
        row_key = keys.get(run_id) if isinstance(run_id, (str, int)) else None
        self._add_tree(run, None, -1, None, 0, row_key)

    def _add_tree(
        self,
        run: Mapping[str, Any],
        root: int | None,
        parent: int,
        parent_step_id: Any,
        depth: int,
        row_key: Any,
    ) -> None:
        """Append ``run``, its steps and outputs, then its nested runs (depth-first); ``root``
        and ``parent`` are positions of runs already collected (``None``/``-1``: none)."""
        position = len(self.runs) // len(_RUN_LAYOUT)
        root = position if root is None else root
        parts = run_parts(run)
        self.runs.extend(parts)
        self.runs.append(parent_step_id)
        self.runs.append(row_key)
        self.places.extend((root, parent, depth))
        for step_id, children in self._add_steps(parts[_STEPS_PART]):
            for child in children:
                self._add_tree(self._expanded(child), root, position, step_id, depth + 1, row_key)

    def _add_steps(self, steps: list[Any]) -> list[tuple[Any, Sequence[Mapping[str, Any]]]]:
        """Append a run's steps and their outputs; return the nested runs of each step."""
        nested: list[tuple[Any, Sequence[Mapping[str, Any]]]] = []
        add = self.steps.extend
        kinds = self.kinds
        add_kind = self.step_kinds.append
        end = self.leaf_ends.append
        tags = self.leaves.tags
        walk = self._walk
        for step in steps:
            if type(step) is not dict and not isinstance(step, Mapping):
                step = {} if step is None else {_NOT_AN_OBJECT: step}
            kind, message, output, count, children, extra = step_parts(step)
            try:
                number = kinds.get(kind)
            except TypeError:  # a field holding an object: the kind keeps its JSON text
                number = kinds.setdefault(tuple(map(_as_str, kind)), len(kinds))
            if number is None:
                number = kinds[kind] = len(kinds)
            add_kind(number)
            add((message, count, len(children), extra))
            if type(output) is dict and output:  # the common case, without a call
                walk(output, 0)
            elif output is not None:
                self._output(output)
            end(len(tags))
            if children:
                nested.append((kind[0], children))
        return nested

    def _expanded(self, child: Mapping[str, Any]) -> Mapping[str, Any]:
        """The full model of a nested run given as a summary (no steps), when fetching is on."""
        if self.fetch is None or has_steps(child):
            return child
        child_id = run_id_of(child)
        if not isinstance(child_id, str) or not child_id:
            return child
        return run_payload(self.fetch(child_id))

    # -- building --------------------------------------------------------------------------
    def arrow_tables(self, row_key_type: pa.DataType | None) -> dict[str, pa.Table]:
        """The three tables of what was collected, as arrow tables of the fixed schemas.

        The collector is emptied first. Each field is taken out of its list and made a column
        in one go (while its values are fresh in the processor's caches), and the lists are let
        go as soon as they are used: runs and steps first, then the much larger outputs."""
        runs = _Records(self.runs, _RUN_LAYOUT)
        steps = _Records(self.steps, _STEP_LAYOUT)
        leaves, path_texts = self.leaves, pa.array(self.paths.texts, type=pa.string())
        tree = _Tree(runs, self.places, self.kinds, self.step_kinds, self.leaf_ends, row_key_type)
        self.clear()
        tables = {
            "runs": _table("runs", _run_columns(tree, runs)),
            "steps": _table("steps", _step_columns(tree, steps)),
        }
        del runs, steps
        tables["outputs"] = _table("outputs", _output_columns(tree, leaves, path_texts))
        return tables


class _Records:
    """Fixed-width records in one flat list (``layout`` names the fields in order); a field
    comes out as a list of its own when asked for."""

    def __init__(self, flat: list[Any], layout: tuple[str, ...]) -> None:
        self._flat = flat
        self._layout = layout

    def __len__(self) -> int:
        return len(self._flat) // len(self._layout)

    def __getitem__(self, name: str) -> list[Any]:
        width = len(self._layout)
        return self._flat[self._layout.index(name) :: width]


def _table(name: str, columns: dict[str, pa.Array]) -> pa.Table:
    """Table ``name`` from its columns by name, checked against its schema (``row_key``'s type is
    the one of the column given)."""
    schema = schema_for(name, columns["row_key"].type)
    if set(columns) != set(schema.names):
        missing = sorted(set(schema.names) - set(columns))
        unknown = sorted(set(columns) - set(schema.names))
        raise AssertionError(f"the {name} table's columns: missing {missing}, unknown {unknown}")
    return pa.Table.from_arrays([columns[field.name] for field in schema], schema=schema)


class _Codes:
    """A dictionary-encoded column: numpy codes (``-1`` for null) into a dictionary of distinct
    values. ``compact`` is true when every value of the dictionary is used."""

    def __init__(self, codes: np.ndarray, dictionary: pa.Array, compact: bool) -> None:
        self.codes = codes
        self.dictionary = dictionary
        self.compact = compact

    @classmethod
    def of(cls, values: pa.Array) -> _Codes:
        """The codes of a column of values, in order of first appearance."""
        encoded = values.dictionary_encode()
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return cls(codes.astype(np.int32, copy=False), encoded.dictionary.cast(pa.string()), True)

    def spread(self, index: np.ndarray, kept: np.ndarray | None = None) -> _Codes:
        """The column of the rows below: row ``j`` below takes the value of row ``index[j]``.
        ``kept`` marks the rows that ``index`` points at (``None``: all of them); the dictionary
        is cut to their values before the (much longer) column below is made."""
        cut = self._cut(kept)
        return _Codes(cut.codes[index], cut.dictionary, True)

    def _cut(self, kept: np.ndarray | None) -> _Codes:
        """The codes renumbered into a dictionary of the values the ``kept`` rows use (rows not
        kept may point anywhere)."""
        codes = self.codes if kept is None else self.codes[kept]
        used = np.zeros(len(self.dictionary), dtype=bool)
        used[codes[codes >= 0]] = True
        if used.all():
            return _Codes(self.codes, self.dictionary, kept is None)
        renumber = np.cumsum(used, dtype=np.int32) - 1
        codes = np.where(self.codes >= 0, renumber[self.codes], -1).astype(np.int32)
        return _Codes(codes, self.dictionary.filter(pa.array(used)), kept is None)

    def array(self) -> pa.DictionaryArray:
        """The column as an arrow dictionary array whose dictionary holds the values present."""
        column = self if self.compact else self._cut(None)
        missing = column.codes < 0
        mask = missing if missing.any() else None
        return pa.DictionaryArray.from_arrays(pa.array(column.codes, mask=mask), column.dictionary)


class _Tree:
    """Where the rows of each table sit: how many steps each run has and how many leaves each
    step, the position of each step's run and each leaf's step, and the columns that steps
    repeat from their runs (and outputs from their steps)."""

    def __init__(
        self,
        runs: _Records,
        places: array[int],
        kinds: dict[tuple[Any, ...], int],
        step_kinds: array[int],
        ends: array[int],
        row_key_type: pa.DataType | None,
    ) -> None:
        self.step_counts = np.fromiter(map(len, runs["steps"]), dtype=np.int64, count=len(runs))
        self.leaf_counts = np.diff(np.frombuffer(ends, dtype=np.int64), prepend=np.int64(0))
        self.step_run = _owners(self.step_counts)
        self.leaf_step = _owners(self.leaf_counts)
        first_step = np.cumsum(self.step_counts) - self.step_counts
        self.step_index = np.arange(len(self.step_run), dtype=np.int64)
        self.step_index -= first_step[self.step_run]
        self.run_id = _str_array(runs["id"])  # text; its codes index a string dictionary
        root, parent, depth = np.frombuffer(places, dtype=np.int64).reshape(-1, 3).T
        self.root, self.parent, self.depth = root.copy(), parent.copy(), depth.copy()
        self.row_key = _row_key_array(runs["row_key"], row_key_type, self.run_id)
        run_codes = _Codes.of(self.run_id)
        with_steps = self.step_counts > 0
        # At the steps' level: the run-level columns each step carries, and its own fields.
        self.step_run_id = run_codes.spread(self.step_run, with_steps)
        self.step_root_id = _Codes(run_codes.codes[self.root], run_codes.dictionary, False)
        self.step_root_id = self.step_root_id.spread(self.step_run, with_steps)
        self.step_depth = self.depth[self.step_run]
        self.step_row_key = self.row_key.take(pa.array(self.step_run))
        numbers = np.frombuffer(step_kinds, dtype=np.int32)
        fields = list(zip(*kinds, strict=True)) if kinds else [()] * len(_KIND_LAYOUT)
        self.step_kind = {
            name: _Codes.of(_str_array(list(values), pa.string())).spread(numbers)
            for name, values in zip(_KIND_LAYOUT, fields, strict=True)
        }

    def below_steps(self, codes: _Codes) -> pa.DictionaryArray:
        """A step-level column for the output leaves."""
        return codes.spread(self.leaf_step, self.leaf_counts > 0).array()


def _owners(counts: np.ndarray) -> np.ndarray:
    """For rows grouped under owners (``counts[i]`` rows under owner ``i``, in order): the
    position of each row's owner."""
    return np.repeat(np.arange(len(counts), dtype=np.int32), counts)


def _run_columns(tree: _Tree, runs: _Records) -> dict[str, pa.Array]:
    run_id = tree.run_id
    parent = tree.parent
    return {
        "run_id": run_id,
        "root_run_id": run_id.take(pa.array(tree.root)),
        "parent_run_id": run_id.take(pa.array(parent, mask=parent < 0)),
        "parent_step_id": _str_array(runs["parent_step_id"]),
        "depth": pa.array(tree.depth),
        "row_key": tree.row_key,
        "workflow_id": _str_array(runs["workflow_id"]),
        "workflow_name": _str_array(runs["workflow_name"]),
        "status": _category_array(runs["status"]),
        "step_count": pa.array(tree.step_counts),
        "steps_completed": _int_array(runs["steps_completed"]),
        "steps_total": _int_array(runs["steps_total"]),
        # submitted_at: when the API accepted the run (its createdAt); see docs/decisions.md.
        "submitted_at": _timestamp_array(runs["created_at"]),
        "started_at": _timestamp_array(runs["started_at"]),
        "updated_at": _timestamp_array(runs["updated_at"]),
        "finished_at": _timestamp_array(runs["completed_at"]),
        "duration_ms": _int_array(runs["duration_ms"]),
        "computed_duration_ms": _int_array(runs["computed_duration_ms"]),
        "error_code": _str_array(runs["error_code"]),
        "error_message": _str_array(runs["error_message"]),
        "extra_json": _extra_array(runs["extras"]),
    }


def _step_columns(tree: _Tree, steps: _Records) -> dict[str, pa.Array]:
    return {
        "run_id": tree.step_run_id.array(),
        "step_index": pa.array(tree.step_index),
        "step_id": tree.step_kind["id"].array(),
        "name": tree.step_kind["name"].array(),
        "type": tree.step_kind["type"].array(),
        "status": tree.step_kind["status"].array(),
        "message": _str_array(steps["message"]),
        "has_output": pa.array(tree.leaf_counts > 0),
        "nested_run_count": _int_array(steps["nested_run_count"]),
        "nested_runs_seen": pa.array(steps["nested_runs_seen"], type=pa.int64()),
        "root_run_id": tree.step_root_id.array(),
        "row_key": tree.step_row_key,
        "depth": pa.array(tree.step_depth),
        "extra_json": _extra_array(steps["extra"]),
    }


def _output_columns(tree: _Tree, leaves: _Leaves, path_texts: pa.Array) -> dict[str, pa.Array]:
    """The outputs' columns; ``leaves`` is emptied as they are made."""
    tags = np.frombuffer(leaves.tags, dtype=np.int32)
    paths = _Codes(tags >> _TYPE_BITS, path_texts, False)
    codes = (tags & _TYPE_MASK).astype(np.int8)
    del tags
    leaves.tags = array("i")
    leaf_step = tree.leaf_step
    return {
        "run_id": tree.below_steps(tree.step_run_id),
        "step_index": pa.array(tree.step_index[leaf_step]),
        "step_id": tree.below_steps(tree.step_kind["id"]),
        "step_name": tree.below_steps(tree.step_kind["name"]),
        "path": paths.array(),
        **_leaf_columns(codes, leaves.by_type),
        "root_run_id": tree.below_steps(tree.step_root_id),
        "row_key": tree.step_row_key.take(pa.array(leaf_step)),
        "depth": pa.array(tree.step_depth[leaf_step]),
    }


# -- typed columns ----------------------------------------------------------------------------


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


def _str_array(values: list[Any], arrow_type: pa.DataType = TEXT) -> pa.Array:
    """Values as text (``arrow_type``: ``TEXT``, or ``pa.string()`` for a dictionary's values);
    what is not a string as its text."""
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([_as_str(value) for value in values], type=arrow_type)


_PLAIN_INTEGERS: frozenset[type] = frozenset({int, type(None)})


def _int_array(values: list[Any]) -> pa.Array:
    """Integers as int64; anything else (a bool, a fractional float, text) becomes null."""
    if set(map(type, values)) <= _PLAIN_INTEGERS:
        try:
            return pa.array(values, type=pa.int64())
        except OverflowError:
            pass
    return pa.array([_as_int(value) for value in values], type=pa.int64())


def _extra_array(extras: list[dict[str, Any] | None]) -> pa.Array:
    """The ``extra_json`` column: each run's (or step's) unread parts as a JSON object."""
    return pa.array([None if extra is None else _extra_text(extra) for extra in extras], TEXT)


def _category_array(values: list[Any]) -> pa.Array:
    return _str_array(values, pa.string()).dictionary_encode()


_TEXTS: frozenset[type] = frozenset({str, type(None)})


def _timestamp_array(values: list[Any]) -> pa.Array:
    """ISO 8601 strings as UTC timestamps; anything unparseable becomes null."""
    target = pa.timestamp("us", tz="UTC")
    if set(map(type, values)) <= _TEXTS:
        try:
            return pa.array(values, type=pa.string()).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    texts = [value if isinstance(value, str) and value else None for value in values]
    parsed = pd.to_datetime(
        pd.Series(texts, dtype=object), utc=True, format="ISO8601", errors="coerce"
    )
    return pa.array(parsed.dt.as_unit("us"), type=target)


def _scatter(values: np.ndarray, mask: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """Fixed-width ``values`` (one per true item of ``mask``) as a column as long as ``mask``,
    null where ``mask`` is false."""
    count = len(mask)
    if len(values) == count:
        return pa.array(values, type=arrow_type)
    validity = pa.py_buffer(np.packbits(mask, bitorder="little"))
    where = np.flatnonzero(mask)  # assigning through positions: 3x faster than through a mask
    if arrow_type == pa.bool_():
        bits = np.zeros(count, dtype=bool)
        bits[where] = values
        data = pa.py_buffer(np.packbits(bits, bitorder="little"))
    else:
        full = np.zeros(count, dtype=values.dtype)
        full[where] = values
        data = pa.py_buffer(full)
    return pa.Array.from_buffers(arrow_type, count, [validity, data], count - len(values))


def _scatter_strings(values: pa.Array, mask: np.ndarray) -> pa.Array:
    """``values`` (text, no nulls, one per true item of ``mask``) spread as :func:`_scatter`."""
    count = len(mask)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[
        values.offset : values.offset + len(values) + 1
    ]
    # A null row repeats the end offset of the row before: each string's end offset holds from
    # its row up to the next string's.
    spread = np.empty(count + 1, dtype=np.int64)
    where = np.flatnonzero(mask)
    if len(where):
        spread[: where[0] + 1] = offsets[0]
        spread[where[0] + 1 :] = np.repeat(offsets[1:], np.diff(where, append=count))
    else:
        spread[:] = offsets[0]
    validity = None if len(values) == count else pa.py_buffer(np.packbits(mask, bitorder="little"))
    return pa.Array.from_buffers(
        TEXT, count, [validity, pa.py_buffer(spread), values.buffers()[2]], count - len(values)
    )


def _leaf_columns(codes: np.ndarray, by_type: list[list[Any]]) -> dict[str, pa.Array]:
    """``value_type`` and the five value columns of the output leaves (their type codes, and
    their values by type), built column-wise; each list of ``by_type`` is let go once used."""

    def values_of(code: int) -> list[Any]:
        values, by_type[code] = by_type[code], []
        return values

    columns = {
        "value_type": pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int32)), pa.array(list(VALUE_TYPES), type=pa.string())
        ),
        "value_str": _scatter_strings(pa.array(values_of(_STRING), type=TEXT), codes == _STRING),
    }
    integers = codes == _INTEGER
    value_int, big, digits = _int64_or_digits(values_of(_INTEGER), integers)
    columns["value_int"] = value_int
    floats, booleans = values_of(_FLOAT), values_of(_BOOLEAN)
    columns["value_float"] = _scatter(
        np.fromiter(floats, dtype=np.float64, count=len(floats)), codes == _FLOAT, pa.float64()
    )
    columns["value_bool"] = _scatter(
        np.fromiter(booleans, dtype=bool, count=len(booleans)), codes == _BOOLEAN, pa.bool_()
    )
    del floats, booleans
    as_json = big | (codes == _OBJECT) | (codes == _ARRAY)
    json_kinds = codes[as_json]
    json_texts = np.where(json_kinds == _OBJECT, _EmptyObject.json, _EmptyArray.json).astype(object)
    json_texts[json_kinds == _INTEGER] = digits
    columns["value_json"] = _scatter_strings(pa.array(json_texts, type=TEXT), as_json)
    return columns


def _int64_or_digits(
    numbers: list[int], integers: np.ndarray
) -> tuple[pa.Array, np.ndarray, list[str]]:
    """The ``value_int`` column of the integer leaves (``integers`` marks them), and those
    beyond int64 (where they are, their digits): they go to ``value_json`` instead."""
    big = np.zeros(len(integers), dtype=bool)
    try:
        values = np.fromiter(numbers, dtype=np.int64, count=len(numbers))
    except OverflowError:
        fits = np.fromiter((_INT64_MIN <= n <= _INT64_MAX for n in numbers), dtype=bool)
        big[np.flatnonzero(integers)[~fits]] = True
        values = np.fromiter((n for n, ok in zip(numbers, fits, strict=True) if ok), np.int64)
        digits = [str(n) for n, ok in zip(numbers, fits, strict=True) if not ok]
        return _scatter(values, integers & ~big, pa.int64()), big, digits
    return _scatter(values, integers, pa.int64()), big, []


# -- row keys ---------------------------------------------------------------------------------

_ROW_KEY_TYPES: dict[str, pa.DataType] = {"int64": pa.int64(), "string": TEXT}


def _is_integer_key(key: Any) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_))


def _decide_row_key_type(keys: Iterable[Any]) -> pa.DataType:
    """``int64`` when every key given is an integer (and there is one), else ``string``."""
    seen = False
    for key in keys:  # streamed: the keys of a million rows are never copied
        if key is None:
            continue
        if not _is_integer_key(key):
            return TEXT
        seen = True
    return pa.int64() if seen else TEXT


def row_key_type_of(keys: Iterable[Any]) -> RowKeyType:
    """The type :func:`flatten` gives ``row_key`` for runs of these row keys: ``"int64"`` when
    every key (``None`` aside) is an integer and there is one, else ``"string"``; for a
    :class:`TableWriter` that will be given the keys in chunks."""
    return "int64" if _decide_row_key_type(keys) == pa.int64() else "string"


def _row_key_type(value: RowKeyType | None) -> pa.DataType | None:
    if value is None:
        return None
    if value not in _ROW_KEY_TYPES:
        raise ValueError(f"row_key_type must be 'int64', 'string' or None, not {value!r}")
    return _ROW_KEY_TYPES[value]


_PLAIN_KEYS: dict[pa.DataType, frozenset[type]] = {
    pa.int64(): _PLAIN_INTEGERS,
    TEXT: _TEXTS,
}


def _row_key_array(keys: list[Any], arrow_type: pa.DataType | None, run_ids: pa.Array) -> pa.Array:
    """Row keys as ``int64`` (integers only) or as text (``str(key)``); ``arrow_type=None``
    decides from the keys (:func:`_decide_row_key_type`)."""
    kinds = set(map(type, keys))
    if arrow_type is None:
        present = kinds - {type(None)}
        plain = present and present <= _PLAIN_INTEGERS
        arrow_type = pa.int64() if plain else _decide_row_key_type(keys)
    if kinds <= _PLAIN_KEYS[arrow_type]:
        return pa.array(keys, type=arrow_type)
    if arrow_type == pa.int64():
        for key, run_id in zip(keys, run_ids.to_pylist(), strict=True):
            if key is not None and not _is_integer_key(key):
                raise ValueError(
                    f"row key {key!r} of run {run_id!r} is not an integer, but the tables' "
                    "row_key column is int64 (row_key_type='int64', or decided from the first "
                    "keys given): pass row_key_type='string'"
                )
        return pa.array([None if key is None else int(key) for key in keys], type=pa.int64())
    return pa.array([None if key is None else str(key) for key in keys], type=TEXT)


# -- sources ----------------------------------------------------------------------------------


def _sources(runs: Any, row_keys: Mapping[Any, Any] | None) -> tuple[Iterable[Any], dict[Any, Any]]:
    """The items of ``runs`` (not yet read) and the row key of each top-level run id."""
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
    return runs, keys


def _raw_runs(items: Iterable[Any]) -> Iterator[Mapping[str, Any]]:
    """The raw run dict of each item: a Run's ``raw``, a run dict, an event's run."""
    for item in items:
        raw = getattr(item, "raw", None)
        if isinstance(raw, Mapping) and not isinstance(item, Mapping):
            yield raw
        elif isinstance(item, Mapping):
            yield run_payload(item)
        else:
            raise TypeError(
                f"flatten() takes Run objects, run dicts or event payloads, got "
                f"{type(item).__name__}: pass run.raw or the parsed JSON of the run"
            )


def _fetcher(expand_nested: bool, client: Any) -> Callable[[str], Mapping[str, Any]] | None:
    """``client.get_run`` as a function of a run id giving its raw model (``expand_nested``)."""
    if not expand_nested:
        return None
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

    return fetch


# -- streaming --------------------------------------------------------------------------------


class TableWriter:
    """Flattened runs written to three parquet datasets as they come, in bounded memory.

        with TableWriter("out/", row_key_type="int64") as writer:
            for runs, keys in chunks:          # any number of runs, in any number of calls
                writer.add(runs, row_keys=keys)
        tables = Tables.read_parquet("out/")   # or pandas, polars, DuckDB, Dask on out/runs/...

    Writes ``DIR/runs/PART.parquet``, ``DIR/steps/PART.parquet`` and ``DIR/outputs/PART.parquet``
    (``part`` names the files: writers with different parts may share a directory; a part written
    again replaces its files whole). Runs are flattened as :func:`flatten` does; every
    ``rows_per_group`` rows (steps plus output leaves) the collected rows become one row group of
    each table and are let go, so memory does not grow with the number of runs. The files get
    their names on :meth:`close` (``with`` closes; an exception inside the block removes the
    unfinished files instead).

    ``row_key``'s type is fixed before the first row group: ``row_key_type="int64"`` or
    ``"string"``, or, left ``None``, decided by the first :meth:`add`: ``int64`` when every row
    key it is given is an integer, else ``string`` (also when it is given none). A later
    non-integer key under ``int64`` is an error; under ``string`` every key is stored as
    ``str(key)``.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        part: str = "part-00000",
        row_key_type: RowKeyType | None = None,
        expand_nested: bool = False,
        client: Any = None,
        rows_per_group: int = 200_000,
    ) -> None:
        if rows_per_group < 1:
            raise ValueError(f"rows_per_group must be at least 1, not {rows_per_group}")
        if not part or part != Path(part).name or part[0] in "._":
            raise ValueError(
                f"part names the files of this writer ({part}.parquet): a plain file name, "
                f"not starting with '.' or '_' (readers skip those), not {part!r}"
            )
        self.directory = Path(directory)
        self.part = part
        self.rows_per_group = rows_per_group
        self._row_key_type = _row_key_type(row_key_type)
        self._collector = _Collector(_fetcher(expand_nested, client))
        self._parts: dict[str, PartWriter] = {}
        self._closed = False
        #: Submitted runs added so far.
        self.runs_added = 0

    @property
    def paths(self) -> dict[str, Path]:
        """The directory of each table's dataset."""
        return {name: self.directory / name for name in TABLE_NAMES}

    @property
    def rows_written(self) -> dict[str, int]:
        """Rows written to each table so far."""
        return {name: self._parts[name].rows if name in self._parts else 0 for name in TABLE_NAMES}

    @property
    def pending_rows(self) -> int:
        """Rows (steps and output leaves) collected and not yet written: what memory holds."""
        return self._collector.rows()

    def add(self, runs: Any, row_keys: Mapping[Any, Any] | None = None) -> None:
        """Flatten ``runs`` (Run objects, raw dicts, event payloads, a Batch; read once) and
        write row groups as they fill. ``row_keys`` maps submitted run ids to row keys."""
        if self._closed:
            raise ValueError(f"the TableWriter of {self.directory} is closed")
        items, keys = _sources(runs, row_keys)
        if self._row_key_type is None:
            self._row_key_type = _decide_row_key_type(keys.values())
        collector = self._collector
        for run in _raw_runs(items):
            collector.add(run, keys)
            self.runs_added += 1
            if collector.rows() >= self.rows_per_group:
                self._flush()

    def _flush(self) -> None:
        """Write the rows collected as one row group of each table, and let them go."""
        tables = self._collector.arrow_tables(self._row_key_type)
        for name, table in tables.items():
            writer = self._parts.get(name)
            if writer is None:
                writer = self._parts[name] = PartWriter(
                    self.directory, name, self.part, table.schema
                )
            writer.write(table)

    def close(self) -> dict[str, Path]:
        """Write what is left and give the files their names; return each table's directory."""
        if not self._closed:
            if self._row_key_type is None:
                self._row_key_type = TEXT
            if self._collector.runs or not self._parts:  # rows left, or nothing written yet
                self._flush()
            for writer in self._parts.values():
                writer.close()
            self._closed = True
        return self.paths

    def abort(self) -> None:
        """Stop without writing: unfinished files are removed, earlier complete parts stay."""
        for writer in self._parts.values():
            writer.abort()
        self._closed = True

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


# -- flatten ----------------------------------------------------------------------------------


@overload
def flatten(
    runs: Any,
    *,
    row_keys: Mapping[Any, Any] | None = ...,
    expand_nested: bool = ...,
    client: Any = ...,
    row_key_type: RowKeyType | None = ...,
    to: None = ...,
) -> Tables: ...
@overload
def flatten(
    runs: Any,
    *,
    row_keys: Mapping[Any, Any] | None = ...,
    expand_nested: bool = ...,
    client: Any = ...,
    row_key_type: RowKeyType | None = ...,
    to: str | Path,
) -> dict[str, Path]: ...
def flatten(
    runs: Any,
    *,
    row_keys: Mapping[Any, Any] | None = None,
    expand_nested: bool = False,
    client: Any = None,
    row_key_type: RowKeyType | None = None,
    to: str | Path | None = None,
) -> Tables | dict[str, Path]:
    """Flatten runs into tidy ``runs``, ``steps`` and ``outputs`` tables.

    ``runs``: an iterable of :class:`~plextera_data.Run` objects, raw run dicts or event payloads
    (``{"eventType", "data": run}`` or the bare run; ``runId``/``workflowId`` are read like
    ``id``/``workflow.id``), or a Batch. A single run or payload is accepted too. It is read once,
    so a generator will do.

    ``row_keys`` maps a submitted run's id to its input row's index value; nested runs inherit
    their root's key. A Batch supplies its own. ``row_key`` is ``int64`` when every key is an
    integer, else text; ``row_key_type="int64"`` or ``"string"`` fixes it.

    ``expand_nested=True`` fetches, with ``client.get_run``, each nested run given as a summary
    (no step objects) and flattens its full model instead. Nested runs the API counts
    (``nestedRuns.count``) but does not list in ``nestedRuns.data`` have no id and cannot be
    fetched: compare ``steps.nested_run_count`` with ``steps.nested_runs_seen`` to find them.

    ``to="out/"`` writes the tables as parquet datasets ``out/runs/``, ``out/steps/`` and
    ``out/outputs/`` as the runs come (a :class:`TableWriter`: bounded memory for any number of
    runs; ``row_key``'s type is decided from ``row_keys`` as given, or by ``row_key_type``) and
    returns the directory of each, instead of the tables.

    >>> tables = flatten([{"id": "r1", "status": "COMPLETED", "steps": [
    ...     {"id": "s1", "name": "Extract", "status": "COMPLETED", "output": {"n": 3}}]}])
    >>> tables.outputs[["run_id", "path", "value_type", "value_int"]].to_dict("records")
    [{'run_id': 'r1', 'path': 'n', 'value_type': 'integer', 'value_int': 3}]
    """
    if to is not None:
        with TableWriter(
            to, row_key_type=row_key_type, expand_nested=expand_nested, client=client
        ) as writer:
            writer.add(runs, row_keys)
        return writer.paths
    collector = _Collector(_fetcher(expand_nested, client))
    items, keys = _sources(runs, row_keys)
    for run in _raw_runs(items):
        collector.add(run, keys)
    return Tables._of_own(collector.arrow_tables(_row_key_type(row_key_type)))
