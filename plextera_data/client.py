"""The Plextera Workflow Runs API client: :class:`AsyncClient` and its sync face :class:`Client`.

    import plextera_data as px

    client = px.Client()      # PLEXTERA_API_KEY, PLEXTERA_BASE_URL
    run = client.start_run("daily-lab-loader", json={"customerId": "customer-42"})
    run = client.wait(run.id, timeout=600)

What goes over the wire:

* ``Authorization: api-key <key>``, ``Accept: application/json``, a ``User-Agent`` naming this
  library, and an ``X-Request-Id`` (``pxd_`` + 32 hex digits unless given) on every request. One
  logical call keeps its id across retries, so the vendor's logs tie the attempts together.
* Ids are single path segments, percent-encoded with nothing left safe; ``.`` and ``..`` become
  ``%2E`` and ``%2E%2E`` so that no id can change the path.
* A JSON start sends the object as ``application/json``. A multipart start
  (``fields=``/``files=``) sends, in the order given:

  - a text field as a part with no ``Content-Type`` and no filename (plain text);
  - a number or a boolean as its JSON text (``42``, ``true``), also plain text;
  - a dict, a list or ``None`` as a part with ``Content-Type: application/json`` and no filename,
    holding the JSON text (``{"a": 1}``, ``null``): the vendor parses such parts as JSON, so a
    ``None`` reaches the workflow as ``null`` rather than as an empty string;
  - a file as a part with a ``filename`` and its ``Content-Type`` (from the tuple, else guessed
    from the file name, else ``application/octet-stream``); a list of files gives several parts
    under the same name.

Retries follow :mod:`plextera_data.retry`: a GET is retried on 429, 5xx, ``retryable: true``,
connection errors, timeouts and malformed bodies; a start only on 429 and on a connection that
was never opened, because creation is not idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import json as jsonlib
import logging
import math
import mimetypes
import os
import platform
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeAlias
from urllib.parse import quote

import httpx

from plextera_data import errors
from plextera_data._loop import run_sync
from plextera_data._version import __version__
from plextera_data.models import Run
from plextera_data.retry import (
    DEFAULT_RETRY_POLICY,
    RetryPolicy,
    SleepFunction,
    is_retryable_for_get,
    is_retryable_for_post,
    parse_retry_after,
    retry_async,
)

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "Client",
    "FileInput",
    "RunsPage",
    "encode_path_segment",
    "new_request_id",
]

logger = logging.getLogger("plextera_data")

#: Environment variable read for the API key when ``api_key`` is not given.
API_KEY_ENV = "PLEXTERA_API_KEY"
#: Environment variable read for the base URL when ``base_url`` is not given.
BASE_URL_ENV = "PLEXTERA_BASE_URL"
#: The vendor's documented base URL.
DEFAULT_BASE_URL = "https://api.plextera.com/api/public/v1"
#: 30 s for reading an answer, 10 s to open a connection.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Sent by the project's simulator (not by the vendor): simulated seconds per wall second.
SIMULATOR_SPEED_HEADER = "X-Plextera-Simulator-Speed"

#: A file to upload: a path, bytes, a binary file object, or ``(filename, content[, type])``.
FileInput: TypeAlias = (
    str
    | os.PathLike[str]
    | bytes
    | IO[bytes]
    | tuple[str, bytes | IO[bytes]]
    | tuple[str, bytes | IO[bytes], str | None]
)

_KEY_PATTERN = re.compile(r"(?i)(api-key\s+)[^\s'\",;]+")
_REDACTED = "<redacted>"


class _RedactKeyFilter(logging.Filter):
    """Replaces ``api-key <anything>`` in a log record's text with ``api-key <redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a broken record is the logging module's business, not ours
            return True
        if _KEY_PATTERN.search(text):
            record.msg = _KEY_PATTERN.sub(r"\1" + _REDACTED, text)
            record.args = ()
        return True


def _install_log_filter() -> None:
    for name in ("plextera_data", "httpx", "httpcore"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _RedactKeyFilter) for f in target.filters):
            target.addFilter(_RedactKeyFilter())


_install_log_filter()


def new_request_id() -> str:
    """A fresh client-side request id: ``pxd_`` followed by 32 hex digits."""
    return "pxd_" + uuid.uuid4().hex


def encode_path_segment(value: str, what: str = "id") -> str:
    """``value`` as one percent-encoded path segment that cannot change the URL's path.

    Every reserved character is encoded (``/`` becomes ``%2F``), and the dot segments ``.`` and
    ``..`` are encoded too (``%2E``), since clients and servers resolve them literally.

        >>> encode_path_segment("../admin")
        '..%2Fadmin'
        >>> encode_path_segment("..")
        '%2E%2E'
    """
    if not isinstance(value, str):
        raise errors.InvalidInputError(
            f"The {what} must be a string, got {type(value).__name__} ({value!r})"
        )
    if not value:
        raise errors.InvalidInputError(f"The {what} is empty; pass the id as a non-empty string")
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; ``http://`` only to loopback hosts."""
    text = base_url.strip().rstrip("/")
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as exc:
        raise errors.ConfigurationError(f"Invalid base URL {text!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise errors.ConfigurationError(
            f"Invalid base URL {text!r}: expected https://host/..., for example {DEFAULT_BASE_URL}"
        )
    if url.scheme == "http" and not _is_loopback(url.host):
        raise errors.ConfigurationError(
            f"Refusing plain http:// to {url.host!r}: the API key would travel unencrypted. "
            "Use https://, or http:// only to a loopback host (127.0.0.1, ::1, localhost) such "
            "as the local simulator."
        )
    if url.query or url.fragment:
        raise errors.ConfigurationError(f"The base URL {text!r} must not have a query or fragment")
    return text


def _user_agent(suffix: str | None) -> str:
    agent = (
        f"plextera-data/{__version__} httpx/{httpx.__version__} python/{platform.python_version()}"
    )
    return f"{agent} {suffix}" if suffix else agent


# --------------------------------------------------------------------------- request bodies


@dataclass(frozen=True)
class _FilePart:
    """A file part, checked before any request; the path is opened only when sending."""

    name: str
    filename: str
    content_type: str
    content: bytes | IO[bytes] | None = None
    path: Path | None = None


_Part: TypeAlias = tuple[str, tuple[str | None, Any, str | None]]


def _guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _json_text(value: Any, where: str) -> bytes:
    try:
        return jsonlib.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise errors.InvalidInputError(
            f"{where} cannot be sent as JSON: {exc}. Convert it to plain str/int/float/bool/"
            "None/list/dict (NaN and infinity have no JSON form)"
        ) from None


def _field_part(name: str, value: Any) -> _Part:
    """One non-file multipart part (see the module docstring for the wire format)."""
    where = f"Field {name!r}"
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, list | dict):
        with contextlib.suppress(Exception):  # numpy scalars -> Python scalars
            value = value.item()
    if isinstance(value, str):
        return (name, (None, value.encode("utf-8"), None))
    if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
        return (name, (None, jsonlib.dumps(value).encode("ascii"), None))
    if isinstance(value, datetime | date):
        return (name, (None, value.isoformat().encode("ascii"), None))
    if value is None or isinstance(value, Mapping | list | tuple):
        payload = dict(value) if isinstance(value, Mapping) else value
        return (name, (None, _json_text(payload, where), "application/json"))
    if isinstance(value, float):
        raise errors.InvalidInputError(f"{where} is {value!r}, which has no JSON form")
    if isinstance(value, bytes | bytearray):
        raise errors.InvalidInputError(f"{where} holds bytes: pass file content in files=")
    raise errors.InvalidInputError(
        f"{where} has type {type(value).__name__}, which cannot be sent as a form field; "
        "use str, a number, a bool, None, a list or a dict"
    )


def _file_part(name: str, value: Any) -> _FilePart:
    """Check one file input and work out its filename and content type."""
    where = f"File {name!r}"
    if isinstance(value, tuple):
        if len(value) not in (2, 3) or not isinstance(value[0], str):
            raise errors.InvalidInputError(
                f"{where}: a tuple must be (filename, content) or (filename, content, type)"
            )
        filename, content = value[0], value[1]
        content_type = value[2] if len(value) == 3 and value[2] else _guess_type(filename)
        if isinstance(content, bytearray | memoryview):
            content = bytes(content)
        if not isinstance(content, bytes) and not hasattr(content, "read"):
            raise errors.InvalidInputError(
                f"{where}: the content in the tuple must be bytes or a binary file object"
            )
        _check_binary(content, where)
        return _FilePart(name, filename, str(content_type), content=content)
    if isinstance(value, str | os.PathLike):
        path = Path(os.fspath(value))
        if not path.is_file():
            raise errors.InvalidInputError(f"{where}: no such file {str(path)!r}")
        return _FilePart(name, path.name, _guess_type(path.name), path=path)
    if isinstance(value, bytes | bytearray | memoryview):
        # No name to go by: the part name stands in, so the server still sees a file part.
        return _FilePart(name, name, "application/octet-stream", content=bytes(value))
    if hasattr(value, "read"):
        _check_binary(value, where)
        raw_name = getattr(value, "name", None)
        filename = Path(raw_name).name if isinstance(raw_name, str) and raw_name else name
        return _FilePart(name, filename, _guess_type(filename), content=value)
    raise errors.InvalidInputError(
        f"{where} has type {type(value).__name__}; pass a path, bytes, a binary file object, "
        "or a (filename, content[, content_type]) tuple"
    )


def _check_binary(content: Any, where: str) -> None:
    if isinstance(content, io.TextIOBase):
        raise errors.InvalidInputError(f"{where} is opened in text mode; open it with 'rb'")


def _build_multipart(
    fields: Mapping[str, Any] | None, files: Mapping[str, Any] | None
) -> tuple[list[_Part], list[_FilePart]]:
    field_parts = [_field_part(str(name), value) for name, value in (fields or {}).items()]
    file_parts: list[_FilePart] = []
    for name, value in (files or {}).items():
        items = value if isinstance(value, list) else [value]
        if not items:
            raise errors.InvalidInputError(f"File {name!r}: the list of files is empty")
        file_parts.extend(_file_part(str(name), item) for item in items)
    clash = set(fields or {}) & set(files or {})
    if clash:
        raise errors.InvalidInputError(
            f"The same name is used in fields= and files=: {sorted(clash)}; use distinct names"
        )
    return field_parts, file_parts


@contextlib.contextmanager
def _open_parts(field_parts: list[_Part], file_parts: list[_FilePart]) -> Iterator[list[_Part]]:
    """The httpx ``files=`` list, with paths opened for the length of one attempt."""
    with contextlib.ExitStack() as stack:
        parts = list(field_parts)
        for part in file_parts:
            content: Any = part.content
            if part.path is not None:
                try:
                    content = stack.enter_context(part.path.open("rb"))
                except OSError as exc:
                    raise errors.InvalidInputError(
                        f"File {part.name!r}: cannot open {str(part.path)!r}: {exc.strerror}"
                    ) from None
            parts.append((part.name, (part.filename, content, part.content_type)))
        yield parts


# --------------------------------------------------------------------------- answers


@dataclass
class RunsPage:
    """One page of ``GET /workflow-runs``: the runs and the ``pageInfo`` counters."""

    runs: list[Run]
    page: int | None
    size: int | None
    total_items: int | None
    total_pages: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


_STATUS_ERRORS: dict[int, type[errors.APIStatusError]] = {
    401: errors.AuthenticationError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    429: errors.RateLimitError,
}


def _error_class(status: int) -> type[errors.APIStatusError]:
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    if status >= 500:
        return errors.ServerError
    if 400 <= status < 500:
        return errors.BadRequestError
    return errors.APIStatusError


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _safe_cause(cause: Exception, redact: _Redactor) -> Exception | None:
    """``cause`` to chain to our error, or ``None`` if its text would show the key."""
    return cause if redact.text(str(cause)) == str(cause) else None


class _Redactor:
    """Removes a key from text and JSON-like values."""

    def __init__(self, key: str | None) -> None:
        self.key = key

    def text(self, text: str) -> str:
        if self.key and self.key in text:
            text = text.replace(self.key, _REDACTED)
        return _KEY_PATTERN.sub(r"\1" + _REDACTED, text)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


# --------------------------------------------------------------------------- clients


class AsyncClient:
    """Async client of the Plextera Workflow Runs API.

    ``api_key`` defaults to ``PLEXTERA_API_KEY`` (checked at the first call, not here);
    ``base_url`` to ``PLEXTERA_BASE_URL``, else the vendor's URL. ``retry`` is the
    :class:`~plextera_data.retry.RetryPolicy`; ``sleep`` and ``clock`` replace ``asyncio.sleep``
    and ``time.monotonic`` (for tests). ``transport`` plugs in any httpx transport, such as the
    simulator's in-process one.

    One ``httpx.AsyncClient`` (and connection pool) is kept per event loop, so the same client
    can be used from several loops, as the sync :class:`Client` does.

        async with AsyncClient() as client:
            run = await client.start_run("daily-lab-loader", json={"customerId": "c-42"})
            run = await client.wait(run.id)
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        user_agent_suffix: str | None = None,
        sleep: SleepFunction | None = None,
        clock: Callable[[], float] | None = None,
        clock_rate: float = 1.0,
    ) -> None:
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self._base_url = _check_base_url(
            base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        )
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = retry if retry is not None else DEFAULT_RETRY_POLICY
        self._transport = transport
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=min(max_connections, 20),
        )
        self._user_agent = _user_agent(user_agent_suffix)
        self._sleep: SleepFunction = sleep if sleep is not None else asyncio.sleep
        self._clock = clock if clock is not None else time.monotonic
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._closed = False
        #: The API's seconds per second of this client's clock: 1.0, unless the API said
        #: otherwise (the simulator, sped up, does in ``X-Plextera-Simulator-Speed``). The
        #: poller uses it to turn the runs' times into its own.
        self.clock_rate = clock_rate

    # ------------------------------------------------------------------ configuration

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def user_agent(self) -> str:
        """The ``User-Agent`` sent with every request."""
        return self._user_agent

    def __repr__(self) -> str:
        key = "<redacted>" if self._api_key else f"<not set: {API_KEY_ENV}>"
        return f"{type(self).__name__}(base_url={self._base_url!r}, api_key={key!r})"

    def _key(self) -> str:
        if not self._api_key:
            self._api_key = os.environ.get(API_KEY_ENV) or None
        if not self._api_key:
            raise errors.MissingAPIKeyError(API_KEY_ENV)
        return self._api_key

    def _http(self) -> httpx.AsyncClient:
        """The httpx client bound to the running event loop (created at first use)."""
        if self._closed:
            raise errors.ConfigurationError(
                "This client is closed; create a new Client/AsyncClient to send requests"
            )
        loop = asyncio.get_running_loop()
        http = self._clients.get(loop)
        if http is None:
            for old in [lp for lp in list(self._clients) if lp.is_closed()]:
                self._clients.pop(old, None)  # its connections died with the loop
            http = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits,
                transport=self._transport,
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
                follow_redirects=False,
            )
            self._clients[loop] = http
        return http

    async def aclose(self) -> None:
        """Close the connections opened on this loop; those of other loops are dropped."""
        self._closed = True
        clients, self._clients = self._clients, {}
        current = asyncio.get_running_loop()
        http = clients.get(current)
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ one request

    async def _send(
        self,
        method: str,
        path: str,
        request_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        files: list[_Part] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its JSON object, or raise the matching error."""
        key = self._key()
        redact = _Redactor(key)
        http = self._http()
        headers = {"Authorization": f"api-key {key}", "X-Request-Id": request_id}
        if content_type:
            headers["Content-Type"] = content_type
        url = self._base_url + path
        logger.debug("%s %s (request id %s)", method, path, request_id)
        try:
            response = await http.request(
                method, url, headers=headers, params=params, content=content, files=files
            )
        except httpx.TimeoutException as exc:
            not_sent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            raise errors.APITimeoutError(
                redact.text(f"No answer in time ({type(exc).__name__}: {exc or 'timed out'})"),
                method=method,
                path=path,
                request_id=request_id,
                request_sent=not not_sent,
            ) from _safe_cause(exc, redact)
        except httpx.TransportError as exc:
            not_sent = isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol)
            what = "Could not connect" if not_sent else "The connection failed"
            raise errors.APIConnectionError(
                redact.text(f"{what} ({type(exc).__name__}: {exc or 'no details'})"),
                method=method,
                path=path,
                request_id=request_id,
                request_sent=not not_sent,
            ) from _safe_cause(exc, redact)
        speed = response.headers.get(SIMULATOR_SPEED_HEADER)
        if speed is not None:
            with contextlib.suppress(ValueError):
                rate = float(speed)
                if 0 < rate < math.inf:
                    self.clock_rate = rate
        return self._read(response, method, path, request_id, redact)

    def _read(
        self,
        response: httpx.Response,
        method: str,
        path: str,
        request_id: str,
        redact: _Redactor,
    ) -> dict[str, Any]:
        echoed = response.headers.get("x-request-id") or request_id
        try:
            body: Any = response.json()
        except ValueError:
            body = None
            text = redact.text(response.text[:500])
        else:
            text = ""
        if response.is_success:
            if not isinstance(body, dict):
                shown = text or redact.text(jsonlib.dumps(body)[:500])
                raise errors.MalformedResponseError(
                    f"HTTP {response.status_code} with a body that is not a JSON object "
                    f"({shown[:80]!r})",
                    method=method,
                    path=path,
                    request_id=echoed,
                    status_code=response.status_code,
                    body=shown,
                )
            return body
        envelope = body.get("error") if isinstance(body, dict) else None
        envelope = envelope if isinstance(envelope, dict) else {}
        details = [
            errors.ErrorDetail(
                field=None if d.get("field") is None else str(d.get("field")),
                issue=None if d.get("issue") is None else redact.text(str(d.get("issue"))),
            )
            for d in envelope.get("details") or []
            if isinstance(d, dict)
        ]
        message = envelope.get("message")
        if message is None and text:
            message = text[:200]
        retryable = envelope.get("retryable")
        error_class = _error_class(response.status_code)
        exc = error_class(
            status_code=response.status_code,
            method=method,
            path=path,
            request_id=str(envelope.get("requestId") or echoed),
            code=None if envelope.get("code") is None else str(envelope.get("code")),
            vendor_message=None if message is None else redact.text(str(message)),
            retryable=retryable if isinstance(retryable, bool) else None,
            details=details,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            body=redact.value(body) if body is not None else text,
        )
        raise exc

    # ------------------------------------------------------------------ calls

    async def start_run(
        self,
        workflow_id: str,
        json: Mapping[str, Any] | None = None,
        *,
        fields: Mapping[str, Any] | None = None,
        files: Mapping[str, FileInput | list[FileInput]] | None = None,
        request_id: str | None = None,
        retry_rate_limits: bool = True,
        retry: bool = True,
    ) -> Run:
        """Start a run of ``workflow_id`` and return it (status ``PROCESSING``).

        Pass ``json=`` (any JSON object) for a JSON start, or ``fields=``/``files=`` for a
        multipart start (see the module docstring for the parts). Any 2xx answer is success.
        Retried only on 429 (unless ``retry_rate_limits`` is false) and when the connection could
        not be opened: other failures raise with ``may_have_created`` telling whether the run
        could exist anyway. All input is checked before the first request.

            run = await client.start_run("incoming-claim", fields={"claimId": "claim-42"},
                                         files={"document": "claim.pdf"})
        """
        path = f"/workflows/{encode_path_segment(workflow_id, 'workflow id')}/runs"
        request_id = request_id or new_request_id()
        if json is not None and (fields is not None or files is not None):
            raise errors.InvalidInputError(
                "Pass either json= (a JSON start) or fields=/files= (a multipart start), not both"
            )
        if fields is not None or files is not None:
            field_parts, file_parts = _build_multipart(fields, files)

            async def attempt() -> dict[str, Any]:
                with _open_parts(field_parts, file_parts) as parts:
                    return await self._send("POST", path, request_id, files=parts)

        else:
            if json is not None and not isinstance(json, Mapping):
                raise errors.InvalidInputError(
                    f"json= must be a mapping (a JSON object), got {type(json).__name__}"
                )
            content = _json_text(dict(json or {}), "The json= body")

            async def attempt() -> dict[str, Any]:
                return await self._send(
                    "POST", path, request_id, content=content, content_type="application/json"
                )

        if not retry:
            return Run.from_dict(await attempt())
        data = await retry_async(
            attempt,
            policy=self.retry,
            should_retry=partial(is_retryable_for_post, retry_rate_limits=retry_rate_limits),
            sleep=self._sleep,
            describe=f"POST {path} (request id {request_id})",
        )
        return Run.from_dict(data)

    async def get_run(
        self, run_id: str, *, request_id: str | None = None, retry: bool = True
    ) -> Run:
        """The current state of run ``run_id``; retried per the policy unless ``retry=False``."""
        path = f"/workflow-runs/{encode_path_segment(run_id, 'run id')}"
        data = await self._get(path, request_id=request_id, retry=retry)
        return Run.from_dict(data)

    async def list_runs(
        self,
        *,
        page: int | None = None,
        size: int | None = None,
        status: str | None = None,
        request_id: str | None = None,
    ) -> RunsPage:
        """One page of recent runs (``GET /workflow-runs``).

        The vendor documents no query parameters; ``page``, ``size`` and ``status`` are sent as
        such when given (our reading of the answer's ``pageInfo`` and the guide's status filter).
        """
        params = {
            name: value
            for name, value in (("page", page), ("size", size), ("status", status))
            if value is not None
        }
        data = await self._get("/workflow-runs", request_id=request_id, params=params or None)
        items = data.get("data")
        info = data.get("pageInfo")
        info = info if isinstance(info, dict) else {}
        return RunsPage(
            runs=[Run.from_dict(i) for i in items if isinstance(i, Mapping)]
            if isinstance(items, list)
            else [],
            page=_int(info.get("page")),
            size=_int(info.get("size")),
            total_items=_int(info.get("totalItems")),
            total_pages=_int(info.get("totalPages")),
            raw=data,
        )

    async def _get(
        self,
        path: str,
        *,
        request_id: str | None,
        retry: bool = True,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        request_id = request_id or new_request_id()

        async def attempt() -> dict[str, Any]:
            return await self._send("GET", path, request_id, params=params)

        if not retry:
            return await attempt()
        return await retry_async(
            attempt,
            policy=self.retry,
            should_retry=is_retryable_for_get,
            sleep=self._sleep,
            describe=f"GET {path} (request id {request_id})",
        )

    async def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = 600,  # noqa: ASYNC109 - the public contract; enforced below
        poll_interval: float = 1.0,
    ) -> Run:
        """Poll run ``run_id`` every ``poll_interval`` seconds until it is terminal.

        Returns the terminal run (``COMPLETED``, ``FAILED`` or ``CLOSED``; a failed run is
        returned, not raised). Raises :class:`~plextera_data.errors.WaitTimeoutError` after
        ``timeout`` seconds (``None``: no limit); the run goes on on the server.
        """
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        deadline = None if timeout is None else self._clock() + timeout
        last: Run | None = None
        while True:
            last = await self.get_run(run_id)
            if last.is_terminal:
                return last
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise errors.WaitTimeoutError(run_id, float(timeout or 0), last)
                await self._sleep(min(poll_interval, remaining))
            else:
                await self._sleep(poll_interval)


class Client:
    """Sync client of the Plextera Workflow Runs API: the same calls as :class:`AsyncClient`.

    Takes the same arguments. Works in scripts and inside a running event loop (a Jupyter
    kernel), see :mod:`plextera_data._loop`. ``aclient`` is the underlying :class:`AsyncClient`.

        with Client() as client:
            run = client.start_run("daily-lab-loader", json={"customerId": "customer-42"})
            run = client.wait(run.id, timeout=600)
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        user_agent_suffix: str | None = None,
        sleep: SleepFunction | None = None,
        clock: Callable[[], float] | None = None,
        clock_rate: float = 1.0,
    ) -> None:
        self.aclient = AsyncClient(
            api_key,
            base_url,
            timeout=timeout,
            retry=retry,
            transport=transport,
            max_connections=max_connections,
            user_agent_suffix=user_agent_suffix,
            sleep=sleep,
            clock=clock,
            clock_rate=clock_rate,
        )

    @classmethod
    def from_async(cls, aclient: AsyncClient) -> Client:
        """The sync face over an existing :class:`AsyncClient` (same connections, settings)."""
        face = cls.__new__(cls)  # interim: the client branch replaces this
        face.aclient = aclient
        return face

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self.aclient.base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self.aclient.retry

    def __repr__(self) -> str:
        return "Client" + repr(self.aclient)[len("AsyncClient") :]

    def start_run(
        self,
        workflow_id: str,
        json: Mapping[str, Any] | None = None,
        *,
        fields: Mapping[str, Any] | None = None,
        files: Mapping[str, FileInput | list[FileInput]] | None = None,
        request_id: str | None = None,
        retry_rate_limits: bool = True,
    ) -> Run:
        """Start a run; see :meth:`AsyncClient.start_run`."""
        return run_sync(
            self.aclient.start_run(
                workflow_id,
                json,
                fields=fields,
                files=files,
                request_id=request_id,
                retry_rate_limits=retry_rate_limits,
            )
        )

    def get_run(self, run_id: str, *, request_id: str | None = None, retry: bool = True) -> Run:
        """A run's current state; see :meth:`AsyncClient.get_run`."""
        return run_sync(self.aclient.get_run(run_id, request_id=request_id, retry=retry))

    def wait(self, run_id: str, *, timeout: float | None = 600, poll_interval: float = 1.0) -> Run:
        """Poll until the run is terminal; see :meth:`AsyncClient.wait`."""
        return run_sync(self.aclient.wait(run_id, timeout=timeout, poll_interval=poll_interval))

    def list_runs(
        self,
        *,
        page: int | None = None,
        size: int | None = None,
        status: str | None = None,
        request_id: str | None = None,
    ) -> RunsPage:
        """One page of recent runs; see :meth:`AsyncClient.list_runs`."""
        return run_sync(
            self.aclient.list_runs(page=page, size=size, status=status, request_id=request_id)
        )

    def close(self) -> None:
        """Close the connections."""
        run_sync(self.aclient.aclose())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
