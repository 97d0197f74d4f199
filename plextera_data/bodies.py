"""What a request sends, checked once: :class:`RequestBody`, :class:`FileRef` and value conversion.

Planning (:mod:`plextera_data.rows`) and the client (:mod:`plextera_data.client`) both build their
bodies here, so a value is converted and checked by one piece of code with one set of messages:
planning collects the reasons per row and column before anything is sent; the client raises them
for a direct ``start_run(json=/fields=/files=)`` or ``upload_file(...)``.

Bodies:

* **JSON** (``RequestBody.for_json``): the object's UTF-8 JSON text, sent as
  ``application/json``. NaN and infinity have no JSON form and are refused.
* **Multipart** (``RequestBody.for_multipart``), the parts in the order given:

  - a string as a text part (no ``Content-Type``, no filename);
  - a number or a boolean as a text part holding its JSON text (``42``, ``true``);
  - a dict, a list or ``None`` as an ``application/json`` part holding its JSON text, so that
    ``None`` reaches the workflow as ``null`` rather than as an empty string;
  - other scalars (numpy numbers, dates, decimals, ...) converted by :func:`to_json_value` first;
  - a file as a part with a filename and a ``Content-Type`` (given, else guessed from the name,
    else ``application/octet-stream``); a list of files gives several parts under one name.
* **Upload** (``RequestBody.for_upload``): ``POST /files`` takes one file part named ``file``.

Files (:func:`check_file`) are checked before any request: a missing or unreadable path, a text-
mode file object, more than :data:`MAX_FILE_BYTES`, or an executable or script (by extension,
:data:`EXECUTABLE_SUFFIXES`, or by its first bytes, :data:`EXECUTABLE_MAGIC`), which the vendor's
File Service rejects. A path is only opened to check and hash it, and again for each attempt
that sends it.

The value mapping of :func:`to_json_value` (applied element by element; planning converts whole
columns at once and gives the same result):

============================================  ==================================================
value                                         JSON
============================================  ==================================================
``None``, ``NaN``, ``pd.NA``, ``NaT``         ``null``
``bool`` / ``numpy.bool_``                    ``true`` / ``false``
int / numpy integer                           number
float / numpy floating (finite)               number; ``+/-inf`` is refused
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
``bytes``                                     refused outside file columns
anything else                                 refused, naming the type
============================================  ==================================================
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import io
import json
import math
import mimetypes
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np
import pandas as pd

from plextera_data.errors import InvalidInputError, PlexteraError

__all__ = [
    "EXECUTABLE_MAGIC",
    "EXECUTABLE_SUFFIXES",
    "JSON_CONTENT_TYPE",
    "MAX_FILE_BYTES",
    "FieldPart",
    "FileInput",
    "FileRef",
    "MissingFileIdError",
    "RequestBody",
    "Unsendable",
    "check_file",
    "encode_json",
    "field_part",
    "to_json_value",
]

#: The ``Content-Type`` of a JSON body.
JSON_CONTENT_TYPE = "application/json"

#: The File Service's documented limit, 50 MB, read as 50,000,000 bytes (as the simulator does).
MAX_FILE_BYTES = 50_000_000

#: File name endings of executables and scripts, which the File Service rejects.
EXECUTABLE_SUFFIXES: tuple[str, ...] = (
    ".exe", ".dll", ".com", ".scr", ".msi", ".bat", ".cmd", ".sh", ".bash", ".ps1", ".psm1",
    ".vbs", ".vbe", ".wsf", ".jar",
)  # fmt: skip

#: First bytes of executables and scripts: Windows PE (``MZ``), ELF, a ``#!`` script, Mach-O.
EXECUTABLE_MAGIC: tuple[bytes, ...] = (
    b"MZ",
    b"\x7fELF",
    b"#!",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
)
_HEAD = max(len(m) for m in EXECUTABLE_MAGIC)

#: A file to send: a path, bytes, a binary file object, or ``(filename, content[, type])``.
FileInput: TypeAlias = (
    str
    | os.PathLike[str]
    | bytes
    | IO[bytes]
    | tuple[str, bytes | IO[bytes]]
    | tuple[str, bytes | IO[bytes], str | None]
)


class Unsendable(ValueError):
    """A value that cannot be sent; the message says why (callers add where it was)."""


class MissingFileIdError(PlexteraError, LookupError):
    """A planned request needs a file id that the given mapping does not hold."""


# --------------------------------------------------------------------------- one value


def _decimal_value(value: decimal.Decimal) -> Any:
    if value.is_nan():
        return None
    if value.is_infinite():
        raise Unsendable(f"{value} (infinity has no JSON form)")
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if decimal.Decimal(repr(as_float)) == value:
        return as_float
    return str(value)


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data (see the module docstring for the mapping).

    Raises :class:`Unsendable` (a ``ValueError``) with the reason when it has no JSON form.

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
            raise Unsendable(f"{value} (infinity has no JSON form)")
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
            raise Unsendable("bytes outside a file column")
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
                raise Unsendable(f"a dict key {key!r} is not a string (JSON keys are strings)")
            out[str(key)] = to_json_value(item)
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_json_value(item) for item in value.tolist()]
    if isinstance(value, bytes | bytearray | memoryview):
        raise Unsendable(
            "bytes outside a file column; pass file content in files= (or list the column in "
            "files= or upload=)"
        )
    raise Unsendable(
        f"type {type(value).__name__} has no JSON form; convert it to str, a number, a bool, "
        "None, a list or a dict (a column: for example with .astype(str))"
    )


def _json_default(value: Any) -> Any:
    """``json.dumps``'s hook for types it does not know: the :func:`to_json_value` mapping."""
    try:
        return to_json_value(value)
    except Unsendable as exc:
        raise TypeError(str(exc)) from None


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_json_default)


def encode_json(value: Any, where: str) -> bytes:
    """``value`` as UTF-8 JSON text; :class:`InvalidInputError` naming ``where`` if impossible.

    NaN and infinity are refused (they have no JSON form); values JSON does not know (numpy
    scalars, dates, decimals) are converted by :func:`to_json_value`.
    """
    try:
        text = _ENCODER.encode(value)  # one encoder for all: json.dumps would build one per call
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{where} cannot be sent as JSON: {exc}. Convert it to plain str/int/float/bool/"
            "None/list/dict (NaN and infinity have no JSON form)"
        ) from None
    return text.encode("utf-8")


# --------------------------------------------------------------------------- multipart fields


@dataclass(frozen=True)
class FieldPart:
    """One non-file multipart part: its name, the value given, and the bytes sent."""

    name: str
    value: Any
    data: bytes
    content_type: str | None  # None: a plain text part


def field_part(name: str, value: Any) -> FieldPart:
    """The multipart part for one field (see the module docstring for the wire format)."""
    where = f"Field {name!r}"
    if isinstance(value, bytes | bytearray | memoryview):
        raise InvalidInputError(f"{where} holds bytes: pass file content in files=")
    plain = value
    if not isinstance(value, str | bool | int | float | Mapping | list | tuple | type(None)):
        try:
            plain = to_json_value(value)
        except Unsendable as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
    if isinstance(plain, str):
        return FieldPart(name, value, plain.encode("utf-8"), None)
    if isinstance(plain, bool | int | float):
        return FieldPart(name, value, encode_json(plain, where), None)
    payload = dict(plain) if isinstance(plain, Mapping) else plain
    return FieldPart(name, value, encode_json(payload, where), "application/json")


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileRef:
    """A checked file: a path (opened when sending) or content in memory.

    ``size`` and ``sha256`` are known for every file planned by :mod:`plextera_data.rows` (it
    hashes each file once); a file object handed straight to the client is not read ahead, so
    there they may be ``None``.
    """

    filename: str
    size: int | None
    sha256: str | None
    path: Path | None = None
    content: bytes | IO[bytes] | None = None
    content_type: str | None = None

    @property
    def mime_type(self) -> str:
        """The type sent: as given, else guessed from the name, else octet-stream."""
        return self.content_type or _guess_type(self.filename)

    def to_input(self) -> Any:
        """What :meth:`AsyncClient.start_run` takes in ``files=`` for this file."""
        if self.path is not None:
            return self.path
        return (self.filename, self.content or b"", self.content_type)

    def describe(self) -> dict[str, Any]:
        """Name, size and content hash: what a request fingerprint records of the file."""
        return {"name": self.filename, "size": self.size, "sha256": self.sha256}

    @contextlib.contextmanager
    def opened(self) -> Iterator[bytes | IO[bytes]]:
        """The content for one attempt: a path is opened (and closed after), a stream rewound."""
        if self.path is None:
            content = self.content if self.content is not None else b""
            if not isinstance(content, bytes):
                with contextlib.suppress(OSError, ValueError):
                    _rewind(content)
            yield content
            return
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise InvalidInputError(
                f"File {self.filename!r}: cannot open {str(self.path)!r}: {exc.strerror or exc}"
            ) from None
        with handle:
            yield handle


def _guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _refused_kind(filename: str, head: bytes) -> str | None:
    """Why the File Service would refuse this file as an executable or script, or ``None``."""
    suffix = next((s for s in EXECUTABLE_SUFFIXES if filename.lower().endswith(s)), None)
    if suffix is not None:
        return f"{filename!r} is an executable or script (its name ends in {suffix!r})"
    magic = next((m for m in EXECUTABLE_MAGIC if head.startswith(m)), None)
    if magic is not None:
        return f"{filename!r} is an executable or script (its content starts with {magic!r})"
    return None


def _check_content(filename: str, size: int | None, head: bytes | None, limit: int) -> None:
    if size is not None and size > limit:
        raise Unsendable(
            f"{filename!r} is {size} bytes, over the File Service's limit of {limit} bytes "
            f"({limit / 1_000_000:g} MB)"
        )
    refused = _refused_kind(filename, head or b"")
    if refused is not None:
        raise Unsendable(f"{refused}; the File Service rejects executables and scripts")


def _hash_path(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _path_ref(path: Path, content_type: str | None, *, digest: bool, limit: int) -> FileRef:
    if not path.exists():
        raise Unsendable(f"no such file {str(path)!r}")
    if not path.is_file():
        raise Unsendable(f"{str(path)!r} is not a file")
    try:
        size = path.stat().st_size
        _check_content(path.name, size, None, limit)  # the size first: no need to read a huge file
        with path.open("rb") as handle:
            head = handle.read(_HEAD)
        _check_content(path.name, None, head, limit)
        sha256 = None
        if digest:
            size, sha256 = _hash_path(path)
    except OSError as exc:
        raise Unsendable(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return FileRef(path.name, size, sha256, path=path, content_type=content_type)


def _bytes_ref(filename: str, content: bytes, content_type: str | None, limit: int) -> FileRef:
    _check_content(filename, len(content), content[:_HEAD], limit)
    sha256 = hashlib.sha256(content).hexdigest()
    return FileRef(filename, len(content), sha256, content=content, content_type=content_type)


def _stream_ref(
    stream: Any, filename: str, content_type: str | None, *, digest: bool, limit: int
) -> FileRef:
    if isinstance(stream, io.TextIOBase):
        raise Unsendable("the file object is opened in text mode; open it with 'rb'")
    if digest:  # planning: read it now, once, so each attempt sends the same bytes
        try:
            _rewind(stream)
            content = stream.read()
        except OSError as exc:
            raise Unsendable(f"cannot read the file object: {exc}") from None
        if not isinstance(content, bytes):
            raise Unsendable("the file object did not give bytes; open it in binary mode")
        return _bytes_ref(filename, content, content_type, limit)
    size, head = _peek(stream)
    _check_content(filename, size, head, limit)
    return FileRef(filename, size, None, content=stream, content_type=content_type)


def _rewind(stream: Any) -> None:
    """Back to the start, where sending starts too (httpx rewinds a file part's stream)."""
    seekable = getattr(stream, "seekable", None)
    if callable(seekable) and seekable():
        stream.seek(0)


def _peek(stream: Any) -> tuple[int | None, bytes | None]:
    """Size and first bytes of a seekable stream, leaving it where it was; else ``None``s."""
    try:
        if not stream.seekable():
            return None, None
        position = stream.tell()
        stream.seek(0)
        head = stream.read(_HEAD)
        size = stream.seek(0, os.SEEK_END)
        stream.seek(position)
    except (AttributeError, OSError, ValueError):
        return None, None
    return size, head if isinstance(head, bytes) else None


def _stream_name(stream: Any, default: str) -> str:
    raw_name = getattr(stream, "name", None)
    return Path(raw_name).name if isinstance(raw_name, str) and raw_name else default


def check_file(
    value: Any,
    default_name: str,
    *,
    digest: bool = True,
    name: str | None = None,
    content_type: str | None = None,
    limit: int = MAX_FILE_BYTES,
) -> FileRef:
    """Check one file (a path, bytes, a binary file object, or ``(filename, content[, type])``).

    ``default_name`` names content that has no name of its own (bytes); ``name`` and
    ``content_type`` override what the value says. With ``digest`` (planning), paths are hashed
    and file objects read into memory; without it (a direct client call), nothing is read
    beyond the first bytes. Raises :class:`Unsendable` with the reason.
    """
    if isinstance(value, tuple):
        if len(value) not in (2, 3) or not isinstance(value[0], str):
            raise Unsendable("a tuple must be (filename, content) or (filename, content, type)")
        filename, content = name or value[0], value[1]
        given_type = content_type or (value[2] if len(value) == 3 else None)
        if isinstance(content, bytes | bytearray | memoryview):
            return _bytes_ref(filename, bytes(content), given_type, limit)
        if not hasattr(content, "read"):
            raise Unsendable("the content in the tuple must be bytes or a binary file object")
        return _stream_ref(content, filename, given_type, digest=digest, limit=limit)
    if isinstance(value, str | os.PathLike):
        ref = _path_ref(Path(os.fspath(value)), content_type, digest=digest, limit=limit)
        if name is not None:
            return FileRef(name, ref.size, ref.sha256, path=ref.path, content_type=content_type)
        return ref
    if isinstance(value, bytes | bytearray | memoryview):
        return _bytes_ref(name or default_name, bytes(value), content_type, limit)
    if hasattr(value, "read"):
        filename = name or _stream_name(value, default_name)
        return _stream_ref(value, filename, content_type, digest=digest, limit=limit)
    raise Unsendable(
        f"a file cannot have type {type(value).__name__}; pass a path, bytes, a binary file "
        "object, or a (filename, content[, content_type]) tuple"
    )


def _checked_file(value: Any, part: str) -> FileRef:
    """:func:`check_file` for a direct client call: the reason raised as InvalidInputError."""
    if isinstance(value, FileRef):
        return value
    try:
        return check_file(value, part, digest=False)
    except Unsendable as exc:
        raise InvalidInputError(f"File {part!r}: {exc}") from None


# --------------------------------------------------------------------------- whole bodies


@dataclass(frozen=True)
class RequestBody:
    """What one request sends, checked and encoded: a JSON object or multipart parts.

    Build it with :meth:`for_json`, :meth:`for_multipart` or :meth:`for_upload`. ``content`` is
    the encoded JSON object (a JSON body; :attr:`json` decodes it), ``fields`` and ``files`` the
    parts (a multipart body). Only the bytes are kept: a planned batch of a million rows holds
    what it will send, once.
    """

    content: bytes | None = None
    fields: tuple[FieldPart, ...] = ()
    files: tuple[tuple[str, FileRef], ...] = ()

    @property
    def json(self) -> dict[str, Any] | None:
        """The JSON object of a JSON body (decoded from :attr:`content`); ``None`` for multipart."""
        if self.content is None:
            return None
        decoded: dict[str, Any] = json.loads(self.content)
        return decoded

    @property
    def is_multipart(self) -> bool:
        """True for a multipart body."""
        return self.content is None

    @classmethod
    def for_json(cls, obj: Mapping[str, Any] | None, where: str = "The json= body") -> RequestBody:
        """A JSON body (``None`` sends ``{}``); raises :class:`InvalidInputError` if impossible."""
        if obj is not None and not isinstance(obj, Mapping):
            raise InvalidInputError(
                f"json= must be a mapping (a JSON object), got {type(obj).__name__}"
            )
        return cls(content=encode_json(dict(obj or {}), where))

    @classmethod
    def for_multipart(
        cls,
        fields: Mapping[str, Any] | None,
        files: Mapping[str, Any] | None = None,
    ) -> RequestBody:
        """A multipart body; ``files`` maps a part name to a file or a list of files.

        Every value is checked here, before any request: raises :class:`InvalidInputError`.
        """
        clash = set(fields or {}) & set(files or {})
        if clash:
            raise InvalidInputError(
                f"The same name is used in fields= and files=: {sorted(clash)}; use distinct names"
            )
        field_parts = tuple(field_part(str(name), value) for name, value in (fields or {}).items())
        file_parts: list[tuple[str, FileRef]] = []
        for name, value in (files or {}).items():
            items = value if isinstance(value, list) else [value]
            if not items:
                raise InvalidInputError(f"File {name!r}: the list of files is empty")
            file_parts.extend((str(name), _checked_file(item, str(name))) for item in items)
        return cls(fields=field_parts, files=tuple(file_parts))

    @classmethod
    def for_upload(cls, file: FileRef) -> RequestBody:
        """The body of ``POST /files``: one file part named ``file``."""
        return cls(files=(("file", file),))

    @property
    def field_values(self) -> dict[str, Any]:
        """The multipart fields as given, by name."""
        return {part.name: part.value for part in self.fields}

    def with_values(self, values: Iterable[tuple[Sequence[str], Any]]) -> RequestBody:
        """A copy with ``value`` set at each ``path`` of the JSON object (or of the fields);
        this body is left as it is."""
        if not self.is_multipart:
            obj = self.json or {}
            for path, value in values:
                _set_path(obj, path, value)
            return RequestBody(content=encode_json(obj, "The json= body"))
        fields = self.field_values
        touched: dict[str, None] = {}  # top-level names changed, in order
        for path, value in values:
            _set_path(fields, path, value)
            touched[path[0]] = None
        parts = [
            field_part(p.name, fields[p.name]) if p.name in touched else p for p in self.fields
        ]
        given = {p.name for p in self.fields}
        parts.extend(field_part(name, fields[name]) for name in touched if name not in given)
        return RequestBody(fields=tuple(parts), files=self.files)

    @contextlib.contextmanager
    def sent(self) -> Iterator[dict[str, Any]]:
        """Keyword arguments for one ``httpx`` request; file paths stay open for its length."""
        if not self.is_multipart:
            yield {"content": self.content, "headers": {"Content-Type": JSON_CONTENT_TYPE}}
            return
        with contextlib.ExitStack() as stack:
            parts: list[tuple[str, tuple[str | None, Any, str | None]]] = [
                (p.name, (None, p.data, p.content_type)) for p in self.fields
            ]
            for name, ref in self.files:
                content = stack.enter_context(ref.opened())
                parts.append((name, (ref.filename, content, ref.mime_type)))
            yield {"files": parts}


def _set_path(obj: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``obj[path[0]]...[path[-1]] = value``, copying each dict on the way (never mutating
    one that another body may share)."""
    target = obj
    for part in path[:-1]:
        inner = target.get(part)
        inner = dict(inner) if isinstance(inner, Mapping) else {}
        target[part] = inner
        target = inner
    target[path[-1]] = value
