"""The :class:`Tables` of flattened runs (``runs``, ``steps``, ``outputs``): schemas and pivots.

Each table has a fixed arrow schema (see :data:`SCHEMAS`). :class:`Tables` holds arrow tables and
makes a pandas frame of one when it is first read (:func:`frame_from_arrow`, the one conversion,
used both after :func:`~plextera_data.flatten.flatten` and after :meth:`Tables.read_parquet`), so
a parquet round trip gives equal frames and a table that is only written costs no pandas at all.

Column types in pandas: texts are ``string`` (``pd.StringDtype("pyarrow")``, missing is ``pd.NA``),
integers ``Int64``, floats ``Float64``, booleans ``boolean``, times ``datetime64[us, UTC]``.
``status``/``type``/``value_type`` are categoricals (categories sorted, ``value_type`` in the fixed
order of :data:`VALUE_TYPES`), and so are the identifiers that repeat down the ``steps`` and
``outputs`` tables (``run_id``, ``root_run_id``, ``step_id``, ``name``/``step_name``, ``path``):
arrow dictionaries, categories in order of first appearance. ``row_key`` is ``Int64`` when every
key is an integer and ``string`` otherwise.

The parquet files carry pandas metadata next to the arrow schema, so plain ``pd.read_parquet``
reads the same dtypes (``Int64`` integers with nulls, ``boolean`` with nulls), while polars, DuckDB
and pyarrow read the arrow types.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from plextera_data import parquet

__all__ = [
    "SCHEMAS",
    "TEXT",
    "VALUE_TYPES",
    "Tables",
    "arrow_from_frame",
    "frame_from_arrow",
    "outputs_wide",
    "results",
    "schema_for",
]

#: The values of ``outputs.value_type``, in the categorical's order.
VALUE_TYPES: tuple[str, ...] = ("string", "integer", "float", "boolean", "null", "object", "array")

# Text: strings with 64-bit offsets, the form pandas keeps them in (a frame is made without a copy).
TEXT = pa.large_string()
_STR = TEXT
_INT = pa.int64()
_TS = pa.timestamp("us", tz="UTC")
_CAT = pa.dictionary(pa.int32(), pa.string())
# A repeated identifier: one copy of each distinct value, the rows hold its position.
_ID = _CAT

#: The two arrow types of ``row_key``: ``int64`` when every key is an integer, else text.
ROW_KEY_TYPES: tuple[pa.DataType, ...] = (_INT, _STR)

RUNS_SCHEMA = pa.schema(
    [
        ("run_id", _STR),
        ("root_run_id", _STR),
        ("parent_run_id", _STR),
        ("parent_step_id", _STR),
        ("depth", _INT),
        ("row_key", _STR),
        ("workflow_id", _STR),
        ("workflow_name", _STR),
        ("status", _CAT),
        ("step_count", _INT),
        ("steps_completed", _INT),
        ("steps_total", _INT),
        ("submitted_at", _TS),
        ("started_at", _TS),
        ("updated_at", _TS),
        ("finished_at", _TS),
        ("duration_ms", _INT),
        ("computed_duration_ms", _INT),
        ("error_code", _STR),
        ("error_message", _STR),
        ("extra_json", _STR),
    ]
)

STEPS_SCHEMA = pa.schema(
    [
        ("run_id", _ID),
        ("step_index", _INT),
        ("step_id", _ID),
        ("name", _ID),
        ("type", _CAT),
        ("status", _CAT),
        ("message", _STR),
        ("has_output", pa.bool_()),
        ("nested_run_count", _INT),
        ("nested_runs_seen", _INT),
        ("root_run_id", _ID),
        ("row_key", _STR),
        ("depth", _INT),
        ("extra_json", _STR),
    ]
)

OUTPUTS_SCHEMA = pa.schema(
    [
        ("run_id", _ID),
        ("step_index", _INT),
        ("step_id", _ID),
        ("step_name", _ID),
        ("path", _ID),
        ("value_type", _CAT),
        ("value_str", _STR),
        ("value_int", _INT),
        ("value_float", pa.float64()),
        ("value_bool", pa.bool_()),
        ("value_json", _STR),
        ("root_run_id", _ID),
        ("row_key", _STR),
        ("depth", _INT),
    ]
)

#: The arrow schema of each table (``row_key`` is shown as text; it may be int64).
SCHEMAS: dict[str, pa.Schema] = {
    "runs": RUNS_SCHEMA,
    "steps": STEPS_SCHEMA,
    "outputs": OUTPUTS_SCHEMA,
}

TABLE_NAMES: tuple[str, ...] = ("runs", "steps", "outputs")

# Categoricals whose categories are the values present, sorted (the others keep arrow's order).
_SORTED_CATEGORIES = ("status", "type")

_PANDAS_TYPES: dict[pa.DataType, Any] = {
    pa.string(): pd.StringDtype("pyarrow"),
    pa.large_string(): pd.StringDtype("pyarrow"),
    _INT: pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def schema_for(name: str, row_key_type: pa.DataType) -> pa.Schema:
    """The arrow schema of table ``name`` with ``row_key`` of type ``row_key_type``, carrying the
    pandas metadata that makes plain ``pd.read_parquet`` read the same dtypes as :class:`Tables`."""
    schema = SCHEMAS[name]
    schema = schema.set(schema.get_field_index("row_key"), pa.field("row_key", row_key_type))
    return _with_pandas_metadata(schema)


@functools.lru_cache(maxsize=32)
def _with_pandas_metadata(schema: pa.Schema) -> pa.Schema:
    empty = frame_from_arrow(schema.empty_table())
    return schema.with_metadata(pa.Schema.from_pandas(empty, preserve_index=False).metadata)


def frame_from_arrow(table: pa.Table, *, borrow: bool = False) -> pd.DataFrame:
    """The pandas frame of an arrow table: the one conversion used on build and on read-back.

    Column by column, so that each arrow column can be let go once converted (when nothing
    else holds it): integers, floats and booleans become masked arrays (``Int64``, ``Float64``,
    ``boolean``), strings arrow-backed ``string``, dictionaries categoricals (one categories
    index per distinct dictionary), anything else what pyarrow makes of it.

    ``borrow=True`` lets the numbers of a one-chunk column stay in the arrow buffer (no copy),
    which the frame may then write into: only for a table that nothing else holds.
    """
    names = table.column_names
    columns = [table.column(index) for index in range(table.num_columns)]
    del table
    categories: dict[tuple[int, int, int], pd.CategoricalDtype] = {}
    converted: dict[str, Any] = {}
    for position, name in enumerate(names):
        column, columns[position] = columns[position], None
        values = _pandas_values(column, categories, borrow)
        del column
        if name in _SORTED_CATEGORIES and isinstance(values, pd.Categorical):
            used = values.remove_unused_categories()
            values = used.set_categories(sorted(used.categories))
        elif name == "value_type" and isinstance(values, pd.Categorical):
            values = values.set_categories(list(VALUE_TYPES))
        converted[name] = values
    return pd.DataFrame(converted, copy=False)


def _validity(chunk: pa.Array) -> np.ndarray | None:
    """Which items of ``chunk`` are not null (``None`` when none is null)."""
    if chunk.null_count == 0:
        return None
    bits = np.frombuffer(chunk.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bits, count=chunk.offset + len(chunk), bitorder="little")
    return valid[chunk.offset :].astype(bool)


def _masked(column: pa.ChunkedArray, numpy_type: type[np.generic], borrow: bool) -> tuple[Any, Any]:
    """The values and the null mask of a fixed-width column: one copy of the data, or with
    ``borrow`` and one chunk in a writable buffer, that buffer itself. Booleans are unpacked
    from their bits."""
    data, mask = [], []
    for chunk in column.chunks:
        count = len(chunk)
        if numpy_type is np.bool_:
            raw = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
            bits = np.unpackbits(raw, count=chunk.offset + count, bitorder="little")
            data.append(bits[chunk.offset :].astype(bool))
        else:
            raw = np.frombuffer(chunk.buffers()[1], dtype=numpy_type)
            data.append(raw[chunk.offset : chunk.offset + count])
        valid = _validity(chunk)
        mask.append(np.zeros(count, dtype=bool) if valid is None else ~valid)
    if not data:
        return np.zeros(0, dtype=numpy_type), np.zeros(0, dtype=bool)
    if len(data) == 1 and borrow and data[0].flags.writeable and numpy_type is not np.bool_:
        return data[0], mask[0]
    return np.concatenate(data), np.concatenate(mask)


_MASKED: dict[pa.DataType, tuple[type[np.generic], Any]] = {
    _INT: (np.int64, pd.arrays.IntegerArray),
    pa.float64(): (np.float64, pd.arrays.FloatingArray),
    pa.bool_(): (np.bool_, pd.arrays.BooleanArray),
}


def _categorical(
    column: pa.ChunkedArray, categories: dict[tuple[int, int, int], pd.CategoricalDtype]
) -> pd.Categorical:
    if column.num_chunks > 1:
        column = column.unify_dictionaries()
    chunks = column.chunks or [pa.array([], type=column.type)]
    dictionary = chunks[0].dictionary
    # Tables built together share dictionaries (one categories index for all their columns).
    data = dictionary.buffers()[-1]
    key = (0 if data is None else data.address, dictionary.offset, len(dictionary))
    dtype = categories.get(key)
    if dtype is None:
        values = dictionary.to_pandas(types_mapper=_PANDAS_TYPES.get)
        dtype = categories[key] = pd.CategoricalDtype(pd.Index(values))
    codes = np.concatenate(
        [chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False) for chunk in chunks]
    )
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def _pandas_values(
    column: pa.ChunkedArray,
    categories: dict[tuple[int, int, int], pd.CategoricalDtype],
    borrow: bool,
) -> Any:
    """One arrow column as the values of a pandas column."""
    arrow_type = column.type
    if arrow_type in _MASKED:
        numpy_type, masked = _MASKED[arrow_type]
        data, mask = _masked(column, numpy_type, borrow)
        return masked(data, mask, copy=False)
    if arrow_type in (pa.string(), pa.large_string()):
        return pd.arrays.ArrowStringArray(column)
    if pa.types.is_dictionary(arrow_type) and pa.types.is_string(arrow_type.value_type):
        return _categorical(column, categories)
    return column.to_pandas(types_mapper=_PANDAS_TYPES.get).array


def arrow_from_frame(name: str, frame: pd.DataFrame) -> pa.Table:
    """``frame`` as arrow: the fixed schema for its known columns (others as pyarrow infers), by
    name, with pandas metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fixed = SCHEMAS[name]
    fields = []
    for arrow_field in table.schema:
        if arrow_field.name == "row_key":
            wanted = arrow_field.type if arrow_field.type in ROW_KEY_TYPES else _STR
            fields.append(pa.field("row_key", wanted))
        elif arrow_field.name in fixed.names:
            fields.append(fixed.field(arrow_field.name))
        else:
            fields.append(arrow_field)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def _polars() -> Any:
    try:
        import polars
    except ImportError:
        raise ImportError(
            "Tables.to_polars() needs polars, which plextera-data does not install: "
            "pip install polars"
        ) from None
    return polars


class Tables:
    """Flattened runs: ``runs`` (one row per run, nested runs included), ``steps`` (one row per
    step of any run) and ``outputs`` (one row per leaf of a step's output).

    Every table carries ``root_run_id`` and ``row_key`` so it joins back to the input rows.
    Each of ``runs``, ``steps`` and ``outputs`` may be given as a pandas DataFrame or an arrow
    table; reading the attribute gives a DataFrame (made once, then kept: edit it as any frame).
    :meth:`to_arrow` and :meth:`to_polars` give the other forms.
    """

    TABLE_NAMES: ClassVar[tuple[str, ...]] = TABLE_NAMES

    def __init__(
        self,
        runs: pd.DataFrame | pa.Table,
        steps: pd.DataFrame | pa.Table,
        outputs: pd.DataFrame | pa.Table,
    ) -> None:
        self._arrow: dict[str, pa.Table] = {}
        self._frames: dict[str, pd.DataFrame] = {}
        # Arrow tables that someone else may hold (given, or handed out by to_arrow): their
        # frames copy the data. The others' frames may keep it in the arrow buffers.
        self._shared: set[str] = set()
        for name, table in zip(TABLE_NAMES, (runs, steps, outputs), strict=True):
            self._set(name, table)

    @classmethod
    def _of_own(cls, tables: dict[str, pa.Table]) -> Tables:
        """Tables over arrow tables made for them alone (built or read by this library)."""
        made = cls(**tables)
        made._shared.clear()
        return made

    def _set(self, name: str, table: pd.DataFrame | pa.Table) -> None:
        self._arrow.pop(name, None)
        self._frames.pop(name, None)
        if isinstance(table, pa.Table):
            self._arrow[name] = table
            self._shared.add(name)
        elif isinstance(table, pd.DataFrame):
            self._frames[name] = table
        else:
            raise TypeError(
                f"Tables.{name} takes a pandas DataFrame or a pyarrow Table, "
                f"not {type(table).__name__}"
            )

    def _frame(self, name: str) -> pd.DataFrame:
        frame = self._frames.get(name)
        if frame is None:
            # The frame is the table from now on (it may be edited in place): drop the arrow.
            borrow = name not in self._shared
            frame = frame_from_arrow(self._arrow.pop(name), borrow=borrow)
            self._frames[name] = frame
        return frame

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run, submitted or nested."""
        return self._frame("runs")

    @runs.setter
    def runs(self, table: pd.DataFrame | pa.Table) -> None:
        self._set("runs", table)

    @property
    def steps(self) -> pd.DataFrame:
        """One row per step of any run."""
        return self._frame("steps")

    @steps.setter
    def steps(self, table: pd.DataFrame | pa.Table) -> None:
        self._set("steps", table)

    @property
    def outputs(self) -> pd.DataFrame:
        """One row per leaf of a step's output."""
        return self._frame("outputs")

    @outputs.setter
    def outputs(self, table: pd.DataFrame | pa.Table) -> None:
        self._set("outputs", table)

    def _rows(self, name: str) -> int:
        table = self._arrow.get(name)
        return table.num_rows if table is not None else len(self._frames[name])

    def _arrow_tables(self) -> dict[str, pa.Table]:
        return {
            name: self._arrow[name]
            if name in self._arrow
            else arrow_from_frame(name, self._frames[name])
            for name in TABLE_NAMES
        }

    def to_arrow(self) -> dict[str, pa.Table]:
        """The three tables as pyarrow Tables (fixed schemas, pandas metadata), by name."""
        self._shared.update(self._arrow)
        return self._arrow_tables()

    def to_polars(self) -> dict[str, Any]:
        """The three tables as polars DataFrames, by name (needs polars; dictionary columns
        become ``Categorical``)."""
        polars = _polars()
        return {name: polars.from_arrow(table) for name, table in self.to_arrow().items()}

    def outputs_wide(
        self, by: str = "run_id", *, sep: str = " / ", depth: int | None = 0
    ) -> pd.DataFrame:
        """Outputs pivoted to one row per run (``by="run_id"``) or per input row (``"row_key"``).

        One column per ``step name + sep + path`` (just the step name for a scalar output); a
        step without a name is labelled by its id. A label met twice in one row (two steps with
        one name, or several nested runs under one row key) gets `` (2)``, `` (3)``... in API
        order. A column is typed when its values agree (``string``, ``Int64``, ``Float64`` for
        floats or a mix of integers and floats, ``boolean``), else it holds Python objects.
        ``depth`` keeps runs of that depth only (0: submitted runs); ``None`` keeps all.
        """
        return outputs_wide(self, by=by, sep=sep, depth=depth)

    def to_parquet(self, directory: str | Path) -> dict[str, Path]:
        """Write ``runs.parquet``, ``steps.parquet`` and ``outputs.parquet`` into ``directory``
        (created if missing) with the fixed arrow schemas; return the path of each table."""
        return parquet.write_files(directory, self._arrow_tables())

    @classmethod
    def read_parquet(cls, directory: str | Path) -> Tables:
        """Read the three tables back from ``directory``: the files :meth:`to_parquet` writes
        (``runs.parquet``...) or the datasets ``px.flatten(..., to=...)`` writes (``runs/``...),
        into frames equal to the ones written."""
        return cls._of_own(
            {name: parquet.read_table(parquet.table_path(directory, name)) for name in TABLE_NAMES}
        )

    def _status_counts(self) -> str:
        runs = self._arrow.get("runs")
        if runs is not None:
            if "status" not in runs.column_names or runs.num_rows == 0:
                return ""
            counts = runs.column("status").cast(pa.string()).fill_null("<none>").value_counts()
            found = {item["values"].as_py(): item["counts"].as_py() for item in counts}
            return ", ".join(f"{status} {found[status]}" for status in sorted(found))
        frame = self._frames["runs"]
        if "status" not in frame.columns or frame.empty:
            return ""
        values = frame["status"].astype("object").fillna("<none>").value_counts(sort=False)
        return ", ".join(f"{status} {count}" for status, count in values.items())

    def _top_level_runs(self) -> int:
        runs = self._arrow.get("runs")
        if runs is not None:
            if "depth" not in runs.column_names:
                return runs.num_rows
            return int(np.count_nonzero(runs.column("depth").to_numpy(zero_copy_only=False) == 0))
        frame = self._frames["runs"]
        return int((frame["depth"] == 0).sum()) if "depth" in frame.columns else len(frame)

    def _summary(self, fmt: Callable[[str], str] = str) -> str:
        total = self._rows("runs")
        top = self._top_level_runs()
        text = f"{total} runs"
        if total - top:
            text += f" ({top} submitted, {total - top} nested)"
        statuses = self._status_counts()
        if statuses:
            text += f" [{fmt(statuses)}]"
        return f"{text}, {self._rows('steps')} steps, {self._rows('outputs')} output values"

    def _head(self, name: str, rows: int) -> pd.DataFrame:
        table = self._arrow.get(name)
        if table is not None:
            return frame_from_arrow(table.slice(0, rows))
        return self._frames[name].head(rows)

    def __repr__(self) -> str:
        return f"<Tables: {self._summary()}>"

    def _repr_html_(self) -> str:
        summary = html.escape(self._summary())
        parts = [f"<div><b>Tables</b>: {summary}"]
        for name in TABLE_NAMES:
            head = self._head(name, 5)
            parts.append(
                f"<details><summary><code>.{name}</code> ({self._rows(name)} rows, "
                f"{len(head.columns)} columns)</summary>{head.to_html()}</details>"
            )
        parts.append("</div>")
        return "".join(parts)


# -- wide outputs and results ---------------------------------------------------------------


def _text(values: pd.Series) -> pd.Series:
    """A column as ``string``, whether it is a categorical of identifiers or text already."""
    return values.astype(pd.StringDtype("pyarrow"))


def _step_labels(outputs: pd.DataFrame, sep: str) -> pd.Series:
    step = _text(outputs["step_name"]).fillna(_text(outputs["step_id"]))
    step = step.fillna("step " + outputs["step_index"].astype("string"))
    path = _text(outputs["path"])
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
    frame = outputs.assign(_label=_step_labels(outputs, sep), _by=outputs[by].astype(index.dtype))
    # A label met again in the same row (same `by` key) from another step or run: number it.
    repeat = frame.groupby(["_by", "_label"], sort=False, dropna=False, observed=True).cumcount()
    if (repeat > 0).any():
        frame["_label"] = frame["_label"].where(
            repeat == 0, frame["_label"] + " (" + (repeat + 1).astype(str) + ")"
        )
    columns: dict[str, Any] = {}
    for label, group in frame.groupby("_label", sort=False):
        values, dtype = _wide_column(group)
        series = pd.Series(values, index=pd.Index(group["_by"].array), dtype=dtype)
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
