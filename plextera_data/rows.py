"""Rows to requests: how a frame's rows become ready starts, checked once before any is sent.

:func:`plan_requests` maps every row of a frame to a :class:`RowRequest` and runs the pre-flight
checks over *all* rows, raising one :class:`~plextera_data.errors.InvalidInputError` that lists
the offenders (row key, column, reason) before a single request is sent. What it plans is what
the client sends: each request holds its encoded :class:`~plextera_data.bodies.RequestBody`
(``RowRequest.start_kwargs()`` hands it to ``start_run(body=...)``), and each file is checked and
hashed here, once.

A frame is a pandas DataFrame (its index keys the rows), a polars DataFrame or a pyarrow Table
(rows keyed 0, 1, ...; see :func:`as_frame`). Values map to JSON as
:func:`~plextera_data.bodies.to_json_value` says (NaN/None/NaT -> null, numpy scalars -> numbers,
timestamps -> ISO 8601, ...); this module converts whole columns at once, with the same result.

A column name holding ``sep`` (``"."`` by default) nests, as the inverse of
:func:`pandas.json_normalize`: ``document.fileId`` becomes ``{"document": {"fileId": ...}}``.
Columns ``a`` and ``a.b`` cannot both exist: that is a pre-flight error naming both.

Files: ``files=[...]`` columns make the starts multipart (each cell a file part); ``upload=[...]``
columns are uploaded through the File Service first, and the JSON body holds
``{"fileId": <id>}`` at the column's (nested) place: :attr:`RowRequest.uploads` lists them and
``RowRequest.start_kwargs(file_ids)`` fills the ids in. Either way a cell is a path, bytes or a
binary file object (``None``/``NaN``: no file), checked before anything is sent (missing,
unreadable, over the 50 MB limit, an executable or script).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
from array import array
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.core.dtypes.dtypes import BaseMaskedDtype

from plextera_data.bodies import (
    FileRef,
    MissingFileIdError,
    RequestBody,
    Unsendable,
    check_file,
    to_json_value,
)
from plextera_data.errors import InvalidInputError

__all__ = [
    "FileRef",
    "PlannedRequests",
    "RowRequest",
    "Upload",
    "as_frame",
    "fingerprint_json",
    "nest_columns",
    "plan_requests",
    "to_json_value",
]

#: Rows planned at a time (see :func:`plan_requests`).
PLAN_CHUNK = 2_000

#: Rows listed in a pre-flight error message; the rest are counted.
SHOWN_PROBLEMS = 5

Problem = tuple[Any, str | None, str]


# --------------------------------------------------------------------------- input frames

_NULLABLE: dict[pa.DataType, Any] = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def as_frame(obj: Any) -> pd.DataFrame:
    """``obj`` as a pandas DataFrame: a pandas frame as is, a polars DataFrame or a pyarrow
    Table (or RecordBatch) converted with every value's type kept.

    Converted frames get a ``RangeIndex`` (rows keyed 0, 1, ...). Integers with nulls stay
    integers (pandas' nullable ``Int64`` and kin, not floats), booleans with nulls stay
    booleans, strings stay strings, dates stay ``datetime.date``, timestamps keep their unit and
    zone, lists and structs become lists and dicts. polars is never imported here: an object
    is taken for a polars frame only if polars is already loaded and says so. An index that
    pandas stored in an arrow table is not a data column and is left out.

        >>> as_frame(pa.table({"n": [1, None]}))["n"].tolist()
        [1, <NA>]
    """
    if isinstance(obj, pd.DataFrame):
        return obj
    polars = sys.modules.get("polars")
    if polars is not None and isinstance(obj, polars.DataFrame):
        return _from_arrow(obj.to_arrow())
    if polars is not None and isinstance(obj, polars.LazyFrame):
        raise InvalidInputError(
            "A polars LazyFrame holds no rows yet: call .collect() and pass the DataFrame; "
            "nothing was sent"
        )
    if isinstance(obj, pa.RecordBatch):
        obj = pa.Table.from_batches([obj])
    if isinstance(obj, pa.Table):
        return _from_arrow(obj)
    raise InvalidInputError(
        f"submit() takes a pandas DataFrame, a polars DataFrame or a pyarrow Table, got "
        f"{type(obj).__name__}; nothing was sent"
    )


def _from_arrow(table: pa.Table) -> pd.DataFrame:
    meta = table.schema.pandas_metadata or {}
    stored_index = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    if stored_index:
        table = table.drop_columns(stored_index)
    names = table.column_names
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        _raise(
            "The table has duplicated column names",
            [(None, c, "the column name appears more than once") for c in dupes],
        )
    columns = {
        name: column.to_pandas(types_mapper=_NULLABLE.get if column.null_count else None)
        for name, column in zip(names, table.columns, strict=True)
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


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
    except Unsendable as exc:
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


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Upload:
    """One file a row uploads before its start: the column, where its id goes, the file."""

    column: str
    at: tuple[str, ...]  # the place of ``{"fileId": ...}`` in the JSON body (or the fields)
    file: FileRef

    @property
    def sha256(self) -> str:
        """The file's content hash: the key of ``file_ids`` in :meth:`RowRequest.start_kwargs`."""
        return self.file.sha256 or ""


@dataclass(frozen=True)
class RowRequest:
    """What one row sends, ready: the encoded ``body``, the files to upload first, the
    ``fingerprint`` that recognises the same request in a rerun."""

    fingerprint: str
    body: RequestBody
    uploads: tuple[Upload, ...] = ()

    @property
    def json(self) -> dict[str, Any] | None:
        """The JSON body (for uploads, ``{"fileId": None}`` where the ids go); else ``None``."""
        return None if self.body.is_multipart else self.body.json

    @property
    def fields(self) -> dict[str, Any] | None:
        """The multipart fields by name, for a multipart start; else ``None``."""
        return self.body.field_values if self.body.is_multipart else None

    @property
    def files(self) -> dict[str, FileRef] | None:
        """The multipart files by part name, for a multipart start; else ``None``."""
        return dict(self.body.files) if self.body.is_multipart else None

    def start_kwargs(self, file_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for :meth:`AsyncClient.start_run`, ready to send.

        A request with :attr:`uploads` needs ``file_ids``, mapping each upload's ``sha256`` to
        the id the File Service gave it; a missing one raises
        :class:`~plextera_data.bodies.MissingFileIdError` (nothing is sent).
        """
        if not self.uploads:
            return {"body": self.body}
        ids = file_ids or {}
        missing = [u for u in self.uploads if u.sha256 not in ids]
        if missing:
            shown = ", ".join(
                f"{u.column!r} ({u.file.filename!r}, sha256 {u.sha256[:12]}...)" for u in missing
            )
            raise MissingFileIdError(
                f"No file id for {len(missing)} upload(s) of this request: {shown}. Upload them "
                "first (client.upload_file) and pass {sha256: file id} as file_ids"
            )
        filled = [(u.at, {"fileId": ids[u.sha256]}) for u in self.uploads]
        return {"body": self.body.with_values(filled)}


class PlannedRequests(Sequence[RowRequest]):
    """The planned requests of a frame's rows, in order, held compactly.

    A chunk of plain JSON requests (no files, no uploads) keeps one ``bytes`` of all its bodies
    and their end offsets; its :class:`RowRequest` objects are made when asked for. So a planned
    million rows holds what will be sent (and each row's fingerprint), with no object per row.
    Chunks with files or uploads keep their requests as they are.
    """

    def __init__(self) -> None:
        #: Each row's fingerprint, in order (the strings the requests hold).
        self.fingerprints: list[str] = []
        # Per chunk of PLAN_CHUNK rows: (bodies, end offsets) or the requests themselves.
        self._chunks: list[tuple[bytes, array[int]] | list[RowRequest] | None] = []

    def extend(self, requests: list[RowRequest]) -> None:
        """Add one chunk's requests (``PLAN_CHUNK`` of them, but the last chunk)."""
        if self._chunks and len(self.fingerprints) % PLAN_CHUNK:
            raise ValueError("only the last chunk of planned requests may be short")
        self.fingerprints.extend(r.fingerprint for r in requests)
        contents = [r.body.content for r in requests if not r.uploads]
        if len(contents) == len(requests) and None not in contents:
            plain: list[bytes] = contents  # type: ignore[assignment]
            ends = array("Q", itertools.accumulate(map(len, plain)))
            self._chunks.append((b"".join(plain), ends))
        else:
            self._chunks.append(list(requests))

    def __len__(self) -> int:
        return len(self.fingerprints)

    @overload
    def __getitem__(self, position: int) -> RowRequest: ...
    @overload
    def __getitem__(self, position: slice) -> list[RowRequest]: ...
    def __getitem__(self, position: int | slice) -> RowRequest | list[RowRequest]:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"planned request {position} out of range")
        return self._request_at(position)

    def _request_at(self, position: int) -> RowRequest:
        chunk = self._chunks[position // PLAN_CHUNK]
        if chunk is None:
            raise LookupError(f"planned request {position} was taken already (see take())")
        at = position % PLAN_CHUNK
        if isinstance(chunk, list):
            return chunk[at]
        content, ends = chunk
        start = ends[at - 1] if at else 0
        body = RequestBody(content=content[start : ends[at]])
        return RowRequest(self.fingerprints[position], body)

    def take(self, positions: Iterable[int]) -> Iterator[tuple[int, RowRequest]]:
        """``(position, request)`` for ascending ``positions``, each chunk let go once passed:
        what a sender that sends each row once needs, without keeping what was sent."""
        done = 0  # chunks before this one are let go
        for position in positions:
            current = position // PLAN_CHUNK
            while done < current:
                self._chunks[done] = None
                done += 1
            yield position, self._request_at(position)  # positions come from the planned rows
        while done < len(self._chunks):
            self._chunks[done] = None
            done += 1


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def fingerprint_json(workflow_id: str, payload: Any) -> str:
    """A stable hash of a request: SHA-256 of the canonical JSON (sorted keys, no spaces) of
    ``{"workflow": workflow_id, ...payload}``, first 32 hex digits."""
    text = _CANONICAL.encode({"workflow": workflow_id, "request": payload})
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


def _check_frame(frame: pd.DataFrame, workflow_id: str) -> None:
    """The checks on the whole frame: a workflow id, rows, keys, distinct column names."""
    if not isinstance(workflow_id, str) or not workflow_id.strip():
        raise InvalidInputError(
            f"The workflow id is empty ({workflow_id!r}); pass the workflow's id, such as "
            "'daily-lab-loader'; nothing was sent"
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


def _check_columns(
    frame: pd.DataFrame, selected: list[Any], file_columns: list[Any], upload_columns: list[Any]
) -> None:
    problems: list[Problem] = [
        (None, str(c), "no such column in the DataFrame")
        for c in [*selected, *file_columns, *upload_columns]
        if c not in frame.columns
    ]
    if problems:
        _raise("Unknown columns", problems)
    both = [c for c in upload_columns if c in file_columns]
    if both:
        _raise(
            "Columns listed in both files= and upload=",
            [
                (None, str(c), "a column is sent either as a file part or as an upload")
                for c in both
            ],
        )


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _file_column(
    series: pd.Series,
    keys: Sequence[Any],
    problems: list[Problem],
    cache: dict[str, FileRef],
) -> list[FileRef | None]:
    """Each cell's checked file (``None``: no file); a path used by many rows is read once."""
    column = str(series.name)
    refs: list[FileRef | None] = []
    for i, value in enumerate(series.to_numpy(dtype=object)):
        if _is_missing(value):
            refs.append(None)
            continue
        path_key = os.fspath(value) if isinstance(value, str | os.PathLike) else None
        try:
            ref = cache.get(path_key) if path_key is not None else None
            if ref is None:
                ref = check_file(value, column)
                if path_key is not None:
                    cache[path_key] = ref
        except Unsendable as exc:
            problems.append((keys[i], column, str(exc)))
            ref = None
        refs.append(ref)
    return refs


def _place(body: dict[str, Any], at: tuple[str, ...], value: Any) -> str | None:
    """Set ``value`` at ``at`` in ``body`` (a fresh dict of one row); the reason if it clashes."""
    target = body
    for depth, part in enumerate(at[:-1]):
        inner = target.setdefault(part, {})
        if not isinstance(inner, dict):
            return f"body(row) put a {type(inner).__name__} at {'.'.join(at[: depth + 1])!r}"
        target = inner
    if at[-1] in target:
        return f"body(row) already holds a value at {'.'.join(at)!r}, the upload's place"
    target[at[-1]] = value
    return None


def plan_requests(
    frame: Any,
    workflow_id: str,
    *,
    body: Callable[[pd.Series], Mapping[str, Any]] | None = None,
    columns: Sequence[Any] | None = None,
    files: Sequence[Any] | None = None,
    upload: Sequence[Any] | None = None,
    sep: str = ".",
) -> PlannedRequests:
    """One :class:`RowRequest` per row of ``frame``, in order, after checking every row (a
    :class:`PlannedRequests` sequence, compact however many rows).

    ``frame`` is a pandas DataFrame, a polars DataFrame or a pyarrow Table (see
    :func:`as_frame`). ``columns`` selects the columns sent (default: all); ``body(row)`` builds
    the JSON body from the row (a Series named by its index key, holding the selected columns)
    instead of the default mapping; ``files`` lists columns holding files, which makes the starts
    multipart; ``upload`` lists columns whose files are uploaded first and referenced as
    ``{"fileId": ...}`` at the column's place in the body. Raises
    :class:`~plextera_data.errors.InvalidInputError` naming rows and columns.
    """
    frame = as_frame(frame)
    _check_frame(frame, workflow_id)
    file_columns = list(files or [])
    upload_columns = list(upload or [])
    selected = list(frame.columns) if columns is None else list(columns)
    _check_columns(frame, selected, file_columns, upload_columns)
    data_columns = [c for c in selected if c not in file_columns and c not in upload_columns]
    problems: list[Problem] = []
    cache: dict[str, FileRef] = {}
    requests = PlannedRequests()
    # A chunk at a time: the rows' values and dicts live only while their chunk is encoded, so
    # planning a million rows keeps what will be sent, not every step on the way.
    for start in range(0, len(frame), PLAN_CHUNK):
        chunk = frame.iloc[start : start + PLAN_CHUNK]
        keys = chunk.index.tolist()
        bodies, upload_at = _bodies(chunk, data_columns, upload_columns, body, sep, keys, problems)
        file_refs = {str(c): _file_column(chunk[c], keys, problems, cache) for c in file_columns}
        upload_refs = [_file_column(chunk[c], keys, problems, cache) for c in upload_columns]
        uploads = _place_uploads(bodies, upload_columns, upload_at, upload_refs, keys, problems)
        if not problems:  # once a row is bad nothing is sent: stop encoding, keep checking
            requests.extend(_requests(workflow_id, bodies, file_refs, uploads))
    if problems:
        _raise("Some rows cannot be sent", problems)
    return requests


def _bodies(
    frame: pd.DataFrame,
    data_columns: list[Any],
    upload_columns: list[Any],
    body: Callable[[pd.Series], Mapping[str, Any]] | None,
    sep: str,
    keys: list[Any],
    problems: list[Problem],
) -> tuple[list[dict[str, Any]], list[tuple[str, ...]]]:
    """Each row's JSON body (or multipart fields) and the places of its upload columns."""
    names = [str(c) for c in [*data_columns, *upload_columns]]
    paths, nest_problems = nest_columns(names, sep)
    if nest_problems:
        _raise("Column names clash when nested", nest_problems)
    upload_at = paths[len(data_columns) :]
    if body is not None:
        return _call_body(body, frame[data_columns], keys, problems), upload_at
    converted = [_column_values(frame[c], problems, keys) for c in data_columns]
    return _assemble(paths[: len(data_columns)], converted, len(frame)), upload_at


def _place_uploads(
    bodies: list[dict[str, Any]],
    upload_columns: list[Any],
    upload_at: list[tuple[str, ...]],
    upload_refs: list[list[FileRef | None]],
    keys: list[Any],
    problems: list[Problem],
) -> list[tuple[Upload, ...]]:
    """Put ``{"fileId": None}`` (``null`` for no file) at each upload's place; list the uploads."""
    uploads: list[tuple[Upload, ...]] = []
    for i, payload in enumerate(bodies):
        row: list[Upload] = []
        for column, at, refs in zip(upload_columns, upload_at, upload_refs, strict=True):
            ref = refs[i]
            clash = _place(payload, at, None if ref is None else {"fileId": None})
            if clash is not None:
                problems.append((keys[i], str(column), clash))
            elif ref is not None:
                row.append(Upload(str(column), at, ref))
        uploads.append(tuple(row))
    return uploads


def _requests(
    workflow_id: str,
    bodies: list[dict[str, Any]],
    file_refs: dict[str, list[FileRef | None]],
    uploads: list[tuple[Upload, ...]],
) -> list[RowRequest]:
    """The encoded requests and their fingerprints (a file counts by its content hash)."""
    requests: list[RowRequest] = []
    for i, payload in enumerate(bodies):
        row_uploads = uploads[i]
        if not file_refs:
            request: dict[str, Any] = {"json": payload}
            prepared = RequestBody.for_json(payload)
        else:
            refs = {name: column[i] for name, column in file_refs.items()}
            present = {name: ref for name, ref in refs.items() if ref is not None}
            request = {"fields": payload, "files": {n: r.describe() for n, r in present.items()}}
            prepared = RequestBody.for_multipart(payload, present)
        if row_uploads:
            request["uploads"] = [[list(u.at), u.sha256] for u in row_uploads]
        fingerprint = fingerprint_json(workflow_id, request)
        requests.append(RowRequest(fingerprint, prepared, row_uploads))
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
        except Unsendable as exc:
            problems.append((key, None, f"body(row) returned a value with no JSON form: {exc}"))
            bodies.append({})
    return bodies
