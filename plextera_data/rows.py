"""Rows to requests: how a DataFrame row becomes the body of one start, checked before sending.

:func:`plan_requests` maps every row of a frame to a :class:`RowRequest` and runs the pre-flight
checks over *all* rows, raising one :class:`~plextera_data.errors.InvalidInputError` that lists
the offenders (row key, column, reason) before a single request is sent.

The mapping of a value (:func:`to_json_value` is the reference, applied element by element; the
frame path converts whole columns at once and gives the same result):

============================================  ==================================================
value                                         JSON
============================================  ==================================================
``None``, ``NaN``, ``pd.NA``, ``NaT``         ``null``
``bool`` / ``numpy.bool_``                    ``true`` / ``false``
int / numpy integer                           number
float / numpy floating (finite)               number; ``+/-inf`` is a pre-flight error
``decimal.Decimal``                           an integer if integral, else a float if the float
                                              reads back as the same decimal, else a string
                                              (``"0.1000000000000000000001"``): never lossy
``str``                                       string
``pd.Timestamp`` / ``datetime``               ISO 8601 (``isoformat()``): an aware value keeps
                                              its offset, a naive one is sent as given, no zone
``date`` / ``time``                           ISO 8601 (``2024-01-15``, ``09:30:00``)
``pd.Timedelta`` / ``timedelta``              ISO 8601 duration (``P0DT0H1M30S``)
``numpy.ndarray``, ``list``, ``tuple``        array (items converted the same way)
``dict`` (string keys)                        object (values converted the same way)
``bytes``                                     pre-flight error outside ``files=`` columns
anything else                                 pre-flight error naming the type
============================================  ==================================================

A column name holding ``sep`` (``"."`` by default) nests, as the inverse of
:func:`pandas.json_normalize`: ``document.fileId`` becomes ``{"document": {"fileId": ...}}``.
Columns ``a`` and ``a.b`` cannot both exist: that is a pre-flight error naming both.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.core.dtypes.dtypes import BaseMaskedDtype

from plextera_data.errors import InvalidInputError

__all__ = [
    "FileRef",
    "RowRequest",
    "fingerprint_json",
    "nest_columns",
    "plan_requests",
    "to_json_value",
]

#: Rows listed in a pre-flight error message; the rest are counted.
SHOWN_PROBLEMS = 5

Problem = tuple[Any, str | None, str]


class _Unsendable(ValueError):
    """A value with no JSON form; the message says why."""


# --------------------------------------------------------------------------- one value


def _decimal_value(value: decimal.Decimal) -> Any:
    if value.is_nan():
        return None
    if value.is_infinite():
        raise _Unsendable(f"{value} (infinity has no JSON form)")
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if decimal.Decimal(repr(as_float)) == value:
        return as_float
    return str(value)


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data (see the module docstring for the mapping).

    Raises ``ValueError`` with the reason when the value has no JSON form.

        >>> to_json_value(np.int64(3)), to_json_value(pd.NA), to_json_value(decimal.Decimal("2.50"))
        (3, None, 2.5)
    """
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise _Unsendable(f"{value} (infinity has no JSON form)")
        return float(value)
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        if isinstance(value, np.datetime64 | np.timedelta64):
            if np.isnat(value):
                return None
            value = pd.Timestamp(value) if isinstance(value, np.datetime64) else pd.Timedelta(value)
            return to_json_value(value)
        if isinstance(value, np.bytes_ | np.void):
            raise _Unsendable("bytes outside a files= column")
        return to_json_value(value.item())
    if isinstance(value, decimal.Decimal):
        return _decimal_value(value)
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return pd.Timedelta(value).isoformat()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise _Unsendable(f"a dict key {key!r} is not a string (JSON keys are strings)")
            out[str(key)] = to_json_value(item)
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_json_value(item) for item in value.tolist()]
    if isinstance(value, bytes | bytearray | memoryview):
        raise _Unsendable("bytes outside a files= column; list the column in files= to upload it")
    raise _Unsendable(
        f"type {type(value).__name__} has no JSON form; convert the column "
        "(for example with .astype(str)) before submitting"
    )


# --------------------------------------------------------------------------- whole columns


def _column_values(series: pd.Series, problems: list[Problem], keys: Sequence[Any]) -> list[Any]:
    """The column as JSON values, converted column-wise where the dtype allows it."""
    name = str(series.name)
    dtype = series.dtype
    kind = getattr(dtype, "kind", "O")
    values: list[Any]
    if isinstance(dtype, np.dtype) and kind in "biu":
        return list(series.to_numpy().tolist())
    if isinstance(dtype, np.dtype) and kind == "f":
        array = series.to_numpy()
        bad = np.isinf(array)
        if bad.any():
            for position in np.flatnonzero(bad):
                problems.append((keys[int(position)], name, f"{array[position]} has no JSON form"))
        values = array.tolist()
        if np.isnan(array).any():
            values = [None if v != v else v for v in values]
        return values
    if kind == "M" or isinstance(dtype, pd.DatetimeTZDtype):
        mask = series.isna().to_numpy()
        stamps = series.array
        return [None if mask[i] else stamps[i].isoformat() for i in range(len(stamps))]
    if kind == "m":
        mask = series.isna().to_numpy()
        deltas = series.array
        return [None if mask[i] else deltas[i].isoformat() for i in range(len(deltas))]
    if isinstance(dtype, pd.StringDtype) or dtype == "str":
        mask = series.isna().to_numpy()
        raw = series.to_numpy(dtype=object)
        if mask.any():
            return [None if mask[i] else raw[i] for i in range(len(raw))]
        return list(raw.tolist())
    if isinstance(dtype, BaseMaskedDtype):
        mask = series.isna().to_numpy()
        raw = series.to_numpy(dtype=object)
        values = []
        for i, value in enumerate(raw):
            values.append(None if mask[i] else _convert_one(value, keys[i], name, problems))
        return values
    # object, categorical and anything else: element by element.
    raw = series.to_numpy(dtype=object)
    return [_convert_one(value, keys[i], name, problems) for i, value in enumerate(raw)]


def _convert_one(value: Any, key: Any, column: str, problems: list[Problem]) -> Any:
    try:
        return to_json_value(value)
    except ValueError as exc:
        problems.append((key, column, str(exc)))
        return None


# --------------------------------------------------------------------------- nesting


def nest_columns(columns: Sequence[str], sep: str) -> tuple[list[tuple[str, ...]], list[Problem]]:
    """Each column's path (``"a.b"`` -> ``("a", "b")``) and the clashes between them.

    A clash is a column that is also the prefix of another (``a`` and ``a.b``), or two columns
    with the same path; both names are given in the reason.
    """
    paths = [tuple(str(c).split(sep)) if sep else (str(c),) for c in columns]
    problems: list[Problem] = []
    seen: dict[tuple[str, ...], str] = {}
    for column, path in zip(columns, paths, strict=True):
        if path in seen:
            problems.append(
                (None, str(column), f"columns {seen[path]!r} and {column!r} give the same key")
            )
        seen[path] = str(column)
    for column, path in zip(columns, paths, strict=True):
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix in seen:
                problems.append(
                    (
                        None,
                        str(column),
                        f"columns {seen[prefix]!r} and {column!r} conflict: {seen[prefix]!r} "
                        f"would be both a value and an object holding {sep.join(path[depth:])!r}",
                    )
                )
    return paths, problems


def _assemble(paths: list[tuple[str, ...]], columns: list[list[Any]], n: int) -> list[dict]:
    """Row dicts from converted columns; flat names take the fast ``dict(zip(...))`` path."""
    if all(len(p) == 1 for p in paths):
        names = [p[0] for p in paths]
        if not columns:
            return [{} for _ in range(n)]
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    bodies: list[dict] = []
    for row in zip(*columns, strict=True):
        body: dict[str, Any] = {}
        for path, value in zip(paths, row, strict=True):
            target = body
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
        bodies.append(body)
    return bodies


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileRef:
    """A checked file for a multipart start: a path (opened when sending) or bytes in memory."""

    filename: str
    size: int
    sha256: str
    path: Path | None = None
    content: bytes | None = None

    def to_input(self) -> Any:
        """What :meth:`AsyncClient.start_run` takes in ``files=``."""
        if self.path is not None:
            return self.path
        return (self.filename, self.content or b"")

    def describe(self) -> dict[str, Any]:
        return {"name": self.filename, "size": self.size, "sha256": self.sha256}


def _hash_path(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _file_ref(value: Any, column: str) -> FileRef:
    """Check one file value (path, bytes or binary file object); raises ``ValueError``."""
    if isinstance(value, str | os.PathLike):
        path = Path(os.fspath(value))
        if not path.exists():
            raise _Unsendable(f"no such file {str(path)!r}")
        if not path.is_file():
            raise _Unsendable(f"{str(path)!r} is not a file")
        try:
            size, digest = _hash_path(path)
        except OSError as exc:
            raise _Unsendable(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        return FileRef(path.name, size, digest, path=path)
    if isinstance(value, bytes | bytearray | memoryview):
        content = bytes(value)
        return FileRef(column, len(content), hashlib.sha256(content).hexdigest(), content=content)
    if hasattr(value, "read"):
        if isinstance(value, io.TextIOBase):
            raise _Unsendable("the file object is opened in text mode; open it with 'rb'")
        try:
            content = value.read()
        except OSError as exc:
            raise _Unsendable(f"cannot read the file object: {exc}") from None
        if not isinstance(content, bytes):
            raise _Unsendable("the file object did not give bytes; open it in binary mode")
        raw_name = getattr(value, "name", None)
        filename = Path(raw_name).name if isinstance(raw_name, str) and raw_name else column
        return FileRef(filename, len(content), hashlib.sha256(content).hexdigest(), content=content)
    raise _Unsendable(
        f"a files= column holds {type(value).__name__}; use a path, bytes or a binary file object"
    )


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class RowRequest:
    """What one row sends: ``json`` for a JSON start, else ``fields`` and ``files`` (multipart)."""

    fingerprint: str
    json: dict[str, Any] | None = None
    fields: dict[str, Any] | None = None
    files: dict[str, FileRef] | None = None

    def start_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`AsyncClient.start_run`."""
        if self.json is not None:
            return {"json": self.json}
        files = {name: ref.to_input() for name, ref in (self.files or {}).items()}
        return {"fields": self.fields or {}, "files": files}


def fingerprint_json(workflow_id: str, payload: Any) -> str:
    """A stable hash of a request: SHA-256 of the canonical JSON (sorted keys, no spaces) of
    ``{"workflow": workflow_id, ...payload}``, first 32 hex digits."""
    text = json.dumps(
        {"workflow": workflow_id, "request": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _check_index(index: pd.Index) -> list[Problem]:
    try:
        duplicated = index.duplicated(keep=False)
    except TypeError as exc:
        bad = next((k for k in index if not isinstance(k, Hashable)), None)
        return [(bad, None, f"the index holds an unhashable value ({exc}); use set_index/reset")]
    if not duplicated.any():
        for key in index:
            try:
                hash(key)
            except TypeError:
                return [(key, None, "the index value is unhashable; give the frame a plain index")]
        return []
    problems: list[Problem] = []
    seen: set[Any] = set()
    for key in index[duplicated]:
        if key not in seen:
            seen.add(key)
            problems.append(
                (key, None, "the index value is duplicated; each row needs its own key")
            )
    return problems


def _raise(message: str, problems: list[Problem]) -> None:
    raise InvalidInputError(
        f"{message} ({len(problems)} problem{'s' if len(problems) != 1 else ''}); nothing was sent",
        problems,
        shown=SHOWN_PROBLEMS,
    )


def plan_requests(
    frame: pd.DataFrame,
    workflow_id: str,
    *,
    body: Callable[[pd.Series], Mapping[str, Any]] | None = None,
    columns: Sequence[Any] | None = None,
    files: Sequence[Any] | None = None,
    sep: str = ".",
) -> list[RowRequest]:
    """One :class:`RowRequest` per row of ``frame``, in order, after checking every row.

    ``columns`` selects the columns sent (default: all); ``body(row)`` builds the JSON body from
    the row (a Series named by its index key, holding the selected columns) instead of the
    default mapping; ``files`` lists columns holding files, which makes the starts multipart.
    Raises :class:`~plextera_data.errors.InvalidInputError` naming rows and columns.
    """
    if not isinstance(workflow_id, str) or not workflow_id.strip():
        raise InvalidInputError(
            f"The workflow id is empty ({workflow_id!r}); pass the workflow's id, such as "
            "'daily-lab-loader'; nothing was sent"
        )
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(
            f"submit() takes a pandas DataFrame, got {type(frame).__name__}; nothing was sent"
        )
    if len(frame) == 0:
        raise InvalidInputError("The DataFrame has no rows: there is nothing to submit")
    index_problems = _check_index(frame.index)
    if index_problems:
        _raise("The DataFrame's index cannot key the rows", index_problems)
    if frame.columns.has_duplicates:
        dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        _raise(
            "The DataFrame has duplicated column names",
            [(None, c, "the column name appears more than once") for c in dupes],
        )

    file_columns = list(files or [])
    selected = list(frame.columns) if columns is None else list(columns)
    missing = [c for c in [*selected, *file_columns] if c not in frame.columns]
    if missing:
        _raise(
            "Unknown columns",
            [(None, str(c), "no such column in the DataFrame") for c in missing],
        )
    data_columns = [c for c in selected if c not in file_columns]
    keys = frame.index.tolist()
    n = len(frame)
    problems: list[Problem] = []

    if body is not None:
        bodies = _call_body(body, frame[data_columns], keys, problems)
        paths: list[tuple[str, ...]] = []
    else:
        paths, nest_problems = nest_columns([str(c) for c in data_columns], sep)
        if nest_problems:
            _raise("Column names clash when nested", nest_problems)
        converted = [_column_values(frame[c], problems, keys) for c in data_columns]
        bodies = _assemble(paths, converted, n)

    file_refs: list[dict[str, FileRef]] = [{} for _ in range(n)]
    for column in file_columns:
        raw = frame[column].to_numpy(dtype=object)
        for i, value in enumerate(raw):
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                continue  # no file for this row: the part is left out
            try:
                file_refs[i][str(column)] = _file_ref(value, str(column))
            except ValueError as exc:
                problems.append((keys[i], str(column), str(exc)))

    if problems:
        _raise("Some rows cannot be sent", problems)

    requests: list[RowRequest] = []
    if not file_columns:
        for payload in bodies:
            fp = fingerprint_json(workflow_id, {"json": payload})
            requests.append(RowRequest(fp, json=payload))
        return requests
    for payload, refs in zip(bodies, file_refs, strict=True):
        described = {name: ref.describe() for name, ref in refs.items()}
        fp = fingerprint_json(workflow_id, {"fields": payload, "files": described})
        requests.append(RowRequest(fp, fields=payload, files=refs))
    return requests


def _call_body(
    body: Callable[[pd.Series], Mapping[str, Any]],
    frame: pd.DataFrame,
    keys: list[Any],
    problems: list[Problem],
) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for i, (_, row) in enumerate(frame.iterrows()):
        key = keys[i]
        try:
            result = body(row)
        except Exception as exc:
            problems.append((key, None, f"body(row) raised {type(exc).__name__}: {exc}"))
            bodies.append({})
            continue
        if not isinstance(result, Mapping):
            problems.append(
                (key, None, f"body(row) returned {type(result).__name__}; it must return a dict")
            )
            bodies.append({})
            continue
        try:
            bodies.append(to_json_value(result))
        except ValueError as exc:
            problems.append((key, None, f"body(row) returned a value with no JSON form: {exc}"))
            bodies.append({})
    return bodies
