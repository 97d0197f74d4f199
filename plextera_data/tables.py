"""The :class:`Tables` of flattened runs: ``runs``, ``steps``, ``outputs``, and their parquet form.

Each table has a fixed arrow schema (see :data:`SCHEMAS`). Frames are always made from arrow the
same way (:func:`frame_from_arrow`), both when :func:`~plextera_data.flatten.flatten` builds them
and when :meth:`Tables.read_parquet` reads them back, so a parquet round trip gives equal frames.

Column types in pandas: ids and texts are ``string`` (``pd.StringDtype("pyarrow")``, missing is
``pd.NA``), integers ``Int64``, floats ``Float64``, booleans ``boolean``, times
``datetime64[us, UTC]``, and ``status``/``type``/``value_type`` are categoricals (categories sorted,
``value_type`` in the fixed order of :data:`VALUE_TYPES`). ``row_key`` is ``Int64`` when every key
is an integer and ``string`` otherwise.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCHEMAS", "VALUE_TYPES", "Tables", "frame_from_arrow"]

#: The values of ``outputs.value_type``, in the categorical's order.
VALUE_TYPES: tuple[str, ...] = ("string", "integer", "float", "boolean", "null", "object", "array")

_STR = pa.string()
_INT = pa.int64()
_TS = pa.timestamp("us", tz="UTC")
_CAT = pa.dictionary(pa.int32(), pa.string())

#: Placeholder for ``row_key``: its arrow type is ``int64`` or ``string``, decided per flatten.
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
        ("run_id", _STR),
        ("step_index", _INT),
        ("step_id", _STR),
        ("name", _STR),
        ("type", _CAT),
        ("status", _CAT),
        ("message", _STR),
        ("has_output", pa.bool_()),
        ("nested_run_count", _INT),
        ("nested_runs_seen", _INT),
        ("root_run_id", _STR),
        ("row_key", _STR),
        ("depth", _INT),
        ("extra_json", _STR),
    ]
)

OUTPUTS_SCHEMA = pa.schema(
    [
        ("run_id", _STR),
        ("step_index", _INT),
        ("step_id", _STR),
        ("step_name", _STR),
        ("path", _STR),
        ("value_type", _CAT),
        ("value_str", _STR),
        ("value_int", _INT),
        ("value_float", pa.float64()),
        ("value_bool", pa.bool_()),
        ("value_json", _STR),
        ("root_run_id", _STR),
        ("row_key", _STR),
        ("depth", _INT),
    ]
)

#: The arrow schema of each table (``row_key`` is shown as string; it may be int64).
SCHEMAS: dict[str, pa.Schema] = {
    "runs": RUNS_SCHEMA,
    "steps": STEPS_SCHEMA,
    "outputs": OUTPUTS_SCHEMA,
}

_CATEGORICAL_COLUMNS = ("status", "type", "value_type")

_PANDAS_TYPES: dict[pa.DataType, Any] = {
    _STR: pd.StringDtype("pyarrow"),
    pa.large_string(): pd.StringDtype("pyarrow"),
    _INT: pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def schema_for(name: str, row_key_type: pa.DataType) -> pa.Schema:
    """The arrow schema of table ``name`` with ``row_key`` of type ``row_key_type``."""
    schema = SCHEMAS[name]
    return schema.set(schema.get_field_index("row_key"), pa.field("row_key", row_key_type))


def frame_from_arrow(table: pa.Table) -> pd.DataFrame:
    """The pandas frame of an arrow table: the one conversion used on build and on read-back."""
    frame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    for column in _CATEGORICAL_COLUMNS:
        if column in frame.columns and isinstance(frame[column].dtype, pd.CategoricalDtype):
            values = frame[column]
            if column == "value_type":
                frame[column] = values.cat.set_categories(list(VALUE_TYPES))
            else:
                used = values.cat.remove_unused_categories()
                frame[column] = used.cat.set_categories(sorted(used.cat.categories))
    return frame


def _arrow_from_frame(name: str, frame: pd.DataFrame) -> pa.Table:
    """``frame`` as arrow with the fixed schema for its known columns (others as pyarrow infers)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fixed = SCHEMAS[name]
    fields = []
    for arrow_field in table.schema:
        wanted = arrow_field.name in fixed.names and arrow_field.name != "row_key"
        if wanted:
            fields.append(fixed.field(arrow_field.name))
        elif arrow_field.name == "row_key" and arrow_field.type not in ROW_KEY_TYPES:
            fields.append(pa.field("row_key", _STR))
        else:
            fields.append(arrow_field)
    return table.cast(pa.schema(fields)).replace_schema_metadata(None)


@dataclass
class Tables:
    """Flattened runs: ``runs`` (one row per run, nested runs included), ``steps`` (one row per
    step of any run) and ``outputs`` (one row per leaf of a step's output).

    Every table carries ``root_run_id`` and ``row_key`` so it joins back to the input rows.
    """

    runs: pd.DataFrame
    steps: pd.DataFrame
    outputs: pd.DataFrame

    TABLE_NAMES: ClassVar[tuple[str, ...]] = ("runs", "steps", "outputs")

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
        from plextera_data.flatten import outputs_wide

        return outputs_wide(self, by=by, sep=sep, depth=depth)

    def to_parquet(self, directory: str | Path) -> dict[str, Path]:
        """Write ``runs.parquet``, ``steps.parquet`` and ``outputs.parquet`` into ``directory``
        (created if missing) with the fixed arrow schemas; return the path of each table."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for name in self.TABLE_NAMES:
            path = target / f"{name}.parquet"
            pq.write_table(_arrow_from_frame(name, getattr(self, name)), path)
            written[name] = path
        return written

    @classmethod
    def read_parquet(cls, directory: str | Path) -> Tables:
        """Read the three tables written by :meth:`to_parquet` back into equal frames."""
        source = Path(directory)
        frames: dict[str, pd.DataFrame] = {}
        for name in cls.TABLE_NAMES:
            path = source / f"{name}.parquet"
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: Tables.read_parquet expects the runs, steps and outputs "
                    "files that Tables.to_parquet writes into one directory"
                )
            frames[name] = frame_from_arrow(pq.read_table(path))
        return cls(runs=frames["runs"], steps=frames["steps"], outputs=frames["outputs"])

    def _status_counts(self) -> str:
        if "status" not in self.runs.columns or self.runs.empty:
            return ""
        counts = self.runs["status"].astype("object").fillna("<none>").value_counts(sort=False)
        return ", ".join(f"{status} {count}" for status, count in counts.items())

    def _summary(self, fmt: Callable[[str], str] = str) -> str:
        runs = self.runs
        top = int((runs["depth"] == 0).sum()) if "depth" in runs.columns else len(runs)
        nested = len(runs) - top
        text = f"{len(runs)} runs"
        if nested:
            text += f" ({top} submitted, {nested} nested)"
        statuses = self._status_counts()
        if statuses:
            text += f" [{fmt(statuses)}]"
        return f"{text}, {len(self.steps)} steps, {len(self.outputs)} output values"

    def __repr__(self) -> str:
        return f"<Tables: {self._summary()}>"

    def _repr_html_(self) -> str:
        summary = html.escape(self._summary())
        parts = [f"<div><b>Tables</b>: {summary}"]
        for name in self.TABLE_NAMES:
            frame: pd.DataFrame = getattr(self, name)
            parts.append(
                f"<details><summary><code>.{name}</code> ({len(frame)} rows, "
                f"{len(frame.columns)} columns)</summary>{frame.head(5).to_html()}</details>"
            )
        parts.append("</div>")
        return "".join(parts)
