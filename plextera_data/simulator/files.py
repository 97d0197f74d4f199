"""The simulated File Service and a multipart/form-data reader that keeps each part's headers.

Starlette's form parser drops the content type of parts that are not files, so a part sent as
``application/json`` could not be told from a text field; this reader keeps it.
"""

from __future__ import annotations

import csv
import functools
import io
import mimetypes
import re
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from plextera_data.simulator.clock import DEFAULT_EPOCH, format_time

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = [
    "EXECUTABLE_SUFFIXES",
    "EXECUTABLE_TYPES",
    "MAX_FILE_BYTES",
    "Document",
    "MultipartError",
    "Part",
    "PayloadTooLargeError",
    "StoredFile",
    "detect_mime_type",
    "document_text",
    "file_reference",
    "is_executable",
    "read_multipart",
    "sample_files",
]

#: The vendor's upload limit, 50 MB, read strictly as 50,000,000 bytes: a client that keeps under
#: it here keeps under it on the real service, whichever megabyte the vendor means.
MAX_FILE_BYTES = 50_000_000

#: Names and media types of executables and scripts, which the vendor's File Service rejects.
EXECUTABLE_SUFFIXES = (
    ".exe", ".dll", ".so", ".dylib", ".com", ".scr", ".msi", ".apk", ".jar", ".app",
    ".bat", ".cmd", ".sh", ".bash", ".zsh", ".ps1", ".psm1", ".vbs", ".vbe", ".wsf",
    ".js", ".mjs", ".py", ".pyc", ".pl", ".rb", ".php",
)  # fmt: skip
EXECUTABLE_TYPES = (
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-executable",
    "application/x-mach-binary",
    "application/x-sharedlib",
    "application/java-archive",
    "application/vnd.android.package-archive",
    "application/x-sh",
    "application/x-shellscript",
    "application/x-bat",
    "application/javascript",
    "text/javascript",
    "text/x-python",
    "application/x-python-code",
    "application/x-perl",
    "application/x-ruby",
    "application/x-httpd-php",
)
#: Leading bytes of executables (PE, ELF, Mach-O, Java class / fat Mach-O) and scripts (``#!``).
EXECUTABLE_MAGIC = (
    b"MZ", b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe",
    b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"#!",
)  # fmt: skip


class MultipartError(ValueError):
    """The multipart body cannot be read (no boundary, broken framing, cut off, unnamed part)."""


class PayloadTooLargeError(Exception):
    """A file part is larger than the upload limit."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        super().__init__(f"file part {name!r} exceeds the {limit} byte limit")


@dataclass
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)

    @property
    def is_file(self) -> bool:
        return self.filename is not None


@dataclass
class StoredFile:
    """A file held by the simulated File Service."""

    id: str
    name: str
    mime_type: str
    data: bytes
    created_at: datetime

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    def node(self) -> dict[str, Any]:
        """The file node handed to workflows (and the upload answer, without ``createdAt``)."""
        return {
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "sizeBytes": self.size_bytes,
        }

    def metadata(self) -> dict[str, Any]:
        """``POST /files`` and ``GET /files/{id}`` answer."""
        return {**self.node(), "createdAt": format_time(self.created_at)}


_STREAM = re.compile(
    rb"<<(?P<dict>(?:(?!>>\s*stream).)*)>>\s*stream\r?\n(?P<data>.*?)\r?\nendstream", re.S
)
_TEXT_SHOW = re.compile(
    rb"\((?P<text>(?:[^\\()]|\\.)*)\)\s*(?:Tj|')|\[(?P<array>[^\]]*)\]\s*TJ", re.S
)
_STRING = re.compile(rb"\((?P<text>(?:[^\\()]|\\.)*)\)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_FIELD = re.compile(r"^\s*(?P<key>[^:\n]{1,60}?)\s*:\s*(?P<value>.*?)\s*$", re.M)


def _pdf_string(raw: bytes) -> str:
    """A PDF literal string's bytes, escapes resolved, as text (PDFDocEncoding ~ Latin-1)."""
    out = re.sub(
        rb"\\([nrtbf()\\]|[0-7]{1,3})",
        lambda m: _ESCAPES.get(m[1], bytes([int(m[1], 8) & 0xFF]) if m[1].isdigit() else m[1]),
        raw,
    )
    return out.decode("latin-1")


def _pdf_text(data: bytes) -> str | None:
    """The text shown by a PDF's content streams (plain or Flate), one line per text operator;
    ``None`` when it shows none (a scan without a text layer)."""
    lines: list[str] = []
    for stream in _STREAM.finditer(data):
        content = stream["data"]
        if b"/FlateDecode" in stream["dict"]:
            try:
                content = zlib.decompress(content)
            except zlib.error:
                continue
        for shown in _TEXT_SHOW.finditer(content):
            if shown["text"] is not None:
                lines.append(_pdf_string(shown["text"]))
            else:
                lines.append(
                    "".join(_pdf_string(m["text"]) for m in _STRING.finditer(shown["array"]))
                )
    return "\n".join(lines) if lines else None


def document_text(stored: StoredFile) -> str | None:
    """What a document says, as text: a PDF's text layer, or a text file's content; ``None``
    when nothing can be read (images, scans, binary formats)."""
    if stored.mime_type == "application/pdf":
        return _pdf_text(stored.data)
    if stored.mime_type.startswith("text/") or stored.mime_type in ("application/json",):
        try:
            return stored.data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def file_reference(value: Any) -> str | None:
    """The id of the file a document value in a run's input refers to: ``{"fileId": id}`` (a
    JSON start), or the first node of a file-node array (a multipart start); else ``None``."""
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, Mapping):
        file_id = value.get("fileId", value.get("id"))
        if isinstance(file_id, str) and file_id:
            return file_id
    return None


@dataclass(frozen=True)
class Document:
    """A stored file opened by a workflow step: the file, its text (if any) and its pages."""

    file: StoredFile
    text: str | None

    @classmethod
    def open(cls, stored: StoredFile) -> Document:
        return cls(stored, document_text(stored))

    @property
    def page_count(self) -> int:
        """Pages of a PDF (1 for anything else, and for a PDF whose pages cannot be counted)."""
        if self.file.mime_type != "application/pdf":
            return 1
        return max(1, len(_PAGE.findall(self.file.data)))

    def fields(self) -> dict[str, str]:
        """``Label: value`` lines of the text, by label (the first of each), e.g.
        ``{"Claim": "claim-0001", "Amount claimed": "USD 1436.86"}``."""
        found: dict[str, str] = {}
        for match in _FIELD.finditer(self.text or ""):
            found.setdefault(match["key"], match["value"])
        return found


def detect_mime_type(filename: str | None, declared: str | None, data: bytes) -> str:
    """The media type: sniffed for common formats, else declared, else guessed from the name."""
    if data.startswith(b"%PDF"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if declared and declared.split(";")[0].strip() not in ("", "application/octet-stream"):
        return declared.split(";")[0].strip().lower()
    guessed, _ = mimetypes.guess_type(filename or "")
    return guessed or "application/octet-stream"


def is_executable(filename: str | None, mime_type: str, data: bytes) -> bool:
    """True for executables and scripts, which the vendor's File Service rejects."""
    name = (filename or "").lower()
    return (
        name.endswith(EXECUTABLE_SUFFIXES)
        or mime_type.lower() in EXECUTABLE_TYPES
        or data.startswith(EXECUTABLE_MAGIC)
    )


class _PartsReader:
    """The parser's callbacks: collect parts with their headers, note what goes wrong."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.parts: list[Part] = []
        self.too_large: PayloadTooLargeError | None = None
        self.problem: str | None = None
        self.finished = False
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._current: Part | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            self.problem = self.problem or (
                "a part has no 'Content-Disposition: form-data; name=...' header"
            )
            self._current = None
            return
        filename = options.get(b"filename")
        self._current = Part(
            name=name.decode("utf-8", "replace"),
            filename=None if filename is None else filename.decode("utf-8", "replace"),
            content_type=self._headers.get("content-type"),
        )
        self.parts.append(self._current)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None:
            return
        part.data.extend(data[start:end])
        if part.is_file and len(part.data) > self.max_file_bytes and self.too_large is None:
            self.too_large = PayloadTooLargeError(part.name, self.max_file_bytes)

    def _end(self) -> None:
        self.finished = True


async def read_multipart(
    content_type: str, chunks: AsyncIterator[bytes], *, max_file_bytes: int = MAX_FILE_BYTES
) -> list[Part]:
    """Read a ``multipart/form-data`` body into its parts, keeping each part's content type.

    Raises :class:`MultipartError` for a broken body and :class:`PayloadTooLargeError` for a file
    part over ``max_file_bytes``.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("the multipart Content-Type has no boundary parameter")
    reader = _PartsReader(max_file_bytes)
    parser = MultipartParser(boundary, callbacks=reader.callbacks())
    try:
        async for chunk in chunks:
            if chunk and reader.too_large is None:
                parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise MultipartError(f"the multipart body is malformed: {exc}") from None
    if reader.too_large is not None:
        raise reader.too_large
    if reader.problem is not None:
        raise MultipartError(reader.problem)
    if not reader.finished:
        raise MultipartError("the multipart body ends before its closing boundary")
    return reader.parts


#: Where the sample workspace's documents live, inside the package.
SAMPLE_FILES_DIR = "workspace-files"


@functools.cache
def sample_files() -> Mapping[str, StoredFile]:
    """The files of the sample workspace, by id: the documents ``plextera_data/data/claims.csv``
    refers to in its ``document.fileId`` column, listed in ``workspace-files/manifest.csv``.

    Read once per process; the mapping is read-only and shared by every simulator.
    """
    folder = resources.files("plextera_data").joinpath("data", SAMPLE_FILES_DIR)
    manifest = folder.joinpath("manifest.csv")
    if not manifest.is_file():
        return MappingProxyType({})
    files: dict[str, StoredFile] = {}
    for row in csv.DictReader(io.StringIO(manifest.read_text(encoding="utf-8"))):
        data = folder.joinpath(row["path"]).read_bytes()
        files[row["id"]] = StoredFile(row["id"], row["name"], row["mimeType"], data, DEFAULT_EPOCH)
    return MappingProxyType(files)
