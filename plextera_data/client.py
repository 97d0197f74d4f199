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
* The bodies of starts and uploads are built and checked by :mod:`plextera_data.bodies` (the
  same code planning uses): a JSON start sends the object as ``application/json``; a multipart
  start (``fields=``/``files=``) sends text, JSON and file parts as described there; an upload
  sends one file part named ``file`` to ``POST /files``.

Retries follow the client's :class:`~plextera_data.retry.RetryPolicy` on every call: a read (GET)
is retried on 429, 5xx, ``retryable: true``, connection errors, timeouts and malformed bodies;
a start or an upload only on 429 and on a connection that was never opened, because creation is
not idempotent. ``retry=False`` on a call (or ``RetryPolicy(max_retries=0)``) makes exactly one
attempt.

The first client made installs a log filter on the ``plextera_data``, ``httpx`` and ``httpcore``
loggers that replaces ``api-key <anything>`` with ``api-key <redacted>``: the key never reaches a
log line, whoever logs it. Importing the package installs nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json as jsonlib
import logging
import math
import os
import platform
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from plextera_data import errors
from plextera_data._loop import run_sync
from plextera_data._version import __version__
from plextera_data.bodies import (
    JSON_CONTENT_TYPE,
    FileInput,
    FileRef,
    RequestBody,
    Unsendable,
    check_file,
)
from plextera_data.models import File, Run, RunHead
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

T = TypeVar("T")

#: Environment variable read for the API key when ``api_key`` is not given.
API_KEY_ENV = "PLEXTERA_API_KEY"
#: Environment variable read for the base URL when ``base_url`` is not given.
BASE_URL_ENV = "PLEXTERA_BASE_URL"
#: The vendor's documented base URL.
DEFAULT_BASE_URL = "https://api.plextera.com/api/public/v1"
#: 30 s for reading an answer, 10 s to open a connection.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

_KEY_PATTERN = re.compile(r"(?i)(api-key\s+)[^\s'\",;]+")
_REDACTED = "<redacted>"
_REDACTED_LOGGERS = ("plextera_data", "httpx", "httpcore")


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
    """Put the redacting filter on the loggers that could see the key (once per logger)."""
    for name in _REDACTED_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _RedactKeyFilter) for f in target.filters):
            target.addFilter(_RedactKeyFilter())


def new_request_id() -> str:
    """A fresh client-side request id: ``pxd_`` followed by 32 hex digits (128 random bits)."""
    return "pxd_" + os.urandom(16).hex()


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


# --------------------------------------------------------------------------- what a call sends


def _start_body(
    json: Mapping[str, Any] | None,
    fields: Mapping[str, Any] | None,
    files: Mapping[str, Any] | None,
    body: RequestBody | None,
) -> RequestBody:
    """The body of a start from ``start_run``'s arguments; checked before any request."""
    if body is not None:
        if json is not None or fields is not None or files is not None:
            raise errors.InvalidInputError(
                "Pass body= (a prepared request) or json= / fields=/files=, not both"
            )
        if not isinstance(body, RequestBody):
            raise errors.InvalidInputError(
                f"body= takes a RequestBody (see RowRequest.start_kwargs()), got "
                f"{type(body).__name__}"
            )
        return body
    if json is not None and (fields is not None or files is not None):
        raise errors.InvalidInputError(
            "Pass either json= (a JSON start) or fields=/files= (a multipart start), not both"
        )
    if fields is not None or files is not None:
        return RequestBody.for_multipart(fields, files)
    return RequestBody.for_json(json)


def _start_rule(
    retry_rate_limits: bool | None, stacklevel: int = 3
) -> Callable[[BaseException], bool]:
    """Which failed starts are retried; warns about the deprecated ``retry_rate_limits``."""
    if retry_rate_limits is None:
        return is_retryable_for_post
    warnings.warn(
        "start_run(retry_rate_limits=...) is deprecated: pass retry=False to make exactly one "
        "attempt and decide retries with RetryPolicy.next_wait(exc, retries, creates=True)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return partial(is_retryable_for_post, retry_rate_limits=retry_rate_limits)


def _upload_ref(file: Any, name: str | None, content_type: str | None) -> FileRef:
    """The checked file of an upload; :class:`InvalidInputError` before any request."""
    if isinstance(file, FileRef):
        if name is None and content_type is None:
            return file
        return dataclasses.replace(
            file, filename=name or file.filename, content_type=content_type or file.content_type
        )
    try:
        return check_file(file, "file", digest=False, name=name, content_type=content_type)
    except Unsendable as exc:
        raise errors.InvalidInputError(f"The file to upload cannot be sent: {exc}") from None


# --------------------------------------------------------------------------- clients


class AsyncClient:
    """Async client of the Plextera Workflow Runs API.

    ``api_key`` defaults to ``PLEXTERA_API_KEY`` (checked at the first call, not here);
    ``base_url`` to ``PLEXTERA_BASE_URL``, else the vendor's URL. ``retry`` is the
    :class:`~plextera_data.retry.RetryPolicy` every call follows; ``sleep`` and ``clock`` replace
    ``asyncio.sleep`` and ``time.monotonic`` (for tests). ``transport`` plugs in any httpx
    transport, such as the simulator's in-process one. ``clock_rate`` is the API's seconds per
    second of this client's clock: 1 for the real service, the speed of a sped-up simulator
    (``Simulator.client_options()`` sets it); the poller turns the runs' times into its own with it.

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
        if not (isinstance(clock_rate, int | float) and 0 < clock_rate < math.inf):
            raise errors.ConfigurationError(
                "clock_rate must be a positive number of API seconds per client second, "
                f"got {clock_rate!r}"
            )
        _install_log_filter()
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
        self._start_paths: dict[str, str] = {}  # workflow id -> its start path, encoded
        self._urls: dict[str, httpx.URL] = {}  # start path -> its URL, parsed once
        self._closed = False
        #: The API's seconds per second of this client's clock (see the class docstring).
        self.clock_rate = float(clock_rate)

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
                # The key is set once per client: per-request headers cost httpx time each.
                headers={
                    "User-Agent": self._user_agent,
                    "Accept": "application/json",
                    "Authorization": f"api-key {self._key()}",
                },
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
        body: RequestBody | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its JSON object, or raise the matching error."""
        key = self._key()
        http = self._http()
        headers = {"X-Request-Id": request_id}  # and the client's (key, agent, accept)
        url = self._urls.get(path) or self._base_url + path
        logger.debug("%s %s (request id %s)", method, path, request_id)
        try:
            if body is None:
                response = await http.request(method, url, headers=headers, params=params)
            elif body.content is not None:  # a JSON body: nothing to open, no context needed
                headers["Content-Type"] = JSON_CONTENT_TYPE
                response = await http.request(
                    method, url, headers=headers, params=params, content=body.content
                )
            else:
                with body.sent() as sent:
                    headers.update(sent.pop("headers", {}))
                    response = await http.request(
                        method, url, headers=headers, params=params, **sent
                    )
        except httpx.TimeoutException as exc:
            redact = _Redactor(key)
            not_sent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            raise errors.APITimeoutError(
                redact.text(f"No answer in time ({type(exc).__name__}: {exc or 'timed out'})"),
                method=method,
                path=path,
                request_id=request_id,
                request_sent=not not_sent,
            ) from _safe_cause(exc, redact)
        except httpx.TransportError as exc:
            redact = _Redactor(key)
            not_sent = isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol)
            what = "Could not connect" if not_sent else "The connection failed"
            raise errors.APIConnectionError(
                redact.text(f"{what} ({type(exc).__name__}: {exc or 'no details'})"),
                method=method,
                path=path,
                request_id=request_id,
                request_sent=not not_sent,
            ) from _safe_cause(exc, redact)
        return self._read(response, method, path, request_id, key)

    async def _call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        retry: bool,
        should_retry: Callable[[BaseException], bool],
        describe: str,
    ) -> T:
        """``attempt()`` once (``retry=False``), else retried under this client's policy."""
        if not retry:
            return await attempt()
        return await retry_async(
            attempt,
            policy=self.retry,
            should_retry=should_retry,
            sleep=self._sleep,
            describe=describe,
        )

    def _read(
        self,
        response: httpx.Response,
        method: str,
        path: str,
        request_id: str,
        key: str,
    ) -> dict[str, Any]:
        if response.status_code == 204:  # No Content (a DELETE): nothing to read
            return {}
        try:
            body: Any = response.json()
        except ValueError:
            body, parsed = None, False
        else:
            if type(body) is dict and response.is_success:
                return body  # the common case: nothing to redact, no request id to echo
            parsed = True
        redact = _Redactor(key)
        echoed = response.headers.get("x-request-id") or request_id
        text = "" if parsed else redact.text(response.text[:500])
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
        files: Mapping[str, FileInput | FileRef | list[FileInput | FileRef]] | None = None,
        body: RequestBody | None = None,
        request_id: str | None = None,
        retry: bool = True,
        retry_rate_limits: bool | None = None,
    ) -> Run:
        """Start a run of ``workflow_id`` and return it (status ``PROCESSING``).

        Pass ``json=`` (any JSON object) for a JSON start, ``fields=``/``files=`` for a
        multipart start (see :mod:`plextera_data.bodies` for the parts), or ``body=``, a
        :class:`~plextera_data.bodies.RequestBody` prepared by planning
        (``RowRequest.start_kwargs()``). All input is checked before the first request. Any 2xx
        answer is success.

        Retried, per the client's policy, only on 429 and when the connection could not be
        opened: other failures raise with ``may_have_created`` telling whether the run could
        exist anyway. ``retry=False`` makes exactly one attempt (for callers that retry
        themselves, see :meth:`RetryPolicy.next_wait`). ``retry_rate_limits=False`` (deprecated:
        use ``retry=False``) leaves only 429s to the caller.

            run = await client.start_run("incoming-claim", fields={"claimId": "claim-42"},
                                         files={"document": "claim.pdf"})
        """
        should_retry = _start_rule(retry_rate_limits)
        prepared = _start_body(json, fields, files, body)
        return await self._start(workflow_id, prepared, request_id, retry, should_retry)

    async def start_run_head(
        self,
        workflow_id: str,
        *,
        body: RequestBody,
        request_id: str | None = None,
        retry: bool = True,
    ) -> RunHead:
        """:meth:`start_run` of a prepared ``body`` (``RowRequest.start_kwargs()``), its answer
        read only as far as a :class:`~plextera_data.models.RunHead` goes: the run's id, status
        and ``createdAt`` (``head.raw`` holds the rest, ``head.run()`` parses it). What a sender
        of many starts needs; retried as :meth:`start_run` is."""
        prepared = _start_body(None, None, None, body)
        path = self._start_path(workflow_id)
        if retry:
            data = await self._create(
                path, prepared, request_id, retry=True, should_retry=is_retryable_for_post
            )
        else:  # one attempt: straight to _send (each await between here and httpx costs)
            data = await self._send("POST", path, request_id or new_request_id(), body=prepared)
        return RunHead.from_dict(data)

    def _start_path(self, workflow_id: str) -> str:
        """``/workflows/{id}/runs``, encoded once per workflow id."""
        path = self._start_paths.get(workflow_id)
        if path is None:
            path = f"/workflows/{encode_path_segment(workflow_id, 'workflow id')}/runs"
            if len(self._start_paths) < 64:
                self._start_paths[workflow_id] = path
                self._urls[path] = httpx.URL(self._base_url + path)
        return path

    async def _start(
        self,
        workflow_id: str,
        body: RequestBody,
        request_id: str | None,
        retry: bool,
        should_retry: Callable[[BaseException], bool],
    ) -> Run:
        path = self._start_path(workflow_id)
        data = await self._create(path, body, request_id, retry=retry, should_retry=should_retry)
        return Run.from_dict(data)

    async def upload_file(
        self,
        file: FileInput | FileRef,
        *,
        name: str | None = None,
        content_type: str | None = None,
        request_id: str | None = None,
        retry: bool = True,
    ) -> File:
        """Upload one file to the File Service (``POST /files``) and return it as a :class:`File`.

        ``file`` is a path, bytes, a binary file object, a ``(filename, content[, type])`` tuple,
        or a :class:`~plextera_data.bodies.FileRef` checked by planning. ``name`` and
        ``content_type`` override the file's own (bytes are named ``file``). Checked before any
        request: a missing file, one over the 50 MB limit, or an executable or script raises
        :class:`~plextera_data.errors.InvalidInputError`. Retried like a start (an upload creates
        a file): on 429 and when the connection could not be opened; ``retry=False``: one attempt.

            uploaded = await client.upload_file("claim.pdf")
            run = await client.start_run("incoming-claim",
                                         json={"document": {"fileId": uploaded.id}})
        """
        ref = _upload_ref(file, name, content_type)
        data = await self._create(
            "/files",
            RequestBody.for_upload(ref),
            request_id,
            retry=retry,
            should_retry=is_retryable_for_post,
        )
        uploaded = File.from_dict(data)
        if not uploaded.id:
            raise errors.MalformedResponseError(
                "The File Service accepted the upload but its answer has no file id",
                method="POST",
                path="/files",
                request_id=request_id,
                body=jsonlib.dumps(data)[:500],
            )
        return uploaded

    async def _create(
        self,
        path: str,
        body: RequestBody,
        request_id: str | None,
        *,
        retry: bool,
        should_retry: Callable[[BaseException], bool],
    ) -> dict[str, Any]:
        """POST a request that creates something (a run, a file)."""
        request_id = request_id or new_request_id()

        async def attempt() -> dict[str, Any]:
            return await self._send("POST", path, request_id, body=body)

        return await self._call(
            attempt,
            retry=retry,
            should_retry=should_retry,
            describe=f"POST {path} (request id {request_id})",
        )

    async def create_subscription(
        self,
        endpoint_url: str,
        event_types: Sequence[str] = ("workflow.run.completed", "workflow.run.failed"),
        *,
        signing_secret: str,
        filters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Subscribe ``endpoint_url`` to events (``POST /event-subscriptions``); returns the
        subscription as the API shows it (``id``, ``status``...; never the secret). The vendor
        takes only ``https://`` endpoints. Retried like a start: it creates something.

            sub = client.create_subscription("https://hooks.example.com/plextera",
                                             signing_secret=secret,
                                             filters={"workflowId": "daily-lab-loader"})
        """
        payload: dict[str, Any] = {
            "endpointUrl": endpoint_url,
            "eventTypes": list(event_types),
            "signingSecret": signing_secret,
        }
        if filters:
            payload["filters"] = dict(filters)
        return await self._create(
            "/event-subscriptions",
            RequestBody.for_json(payload),
            request_id,
            retry=True,
            should_retry=is_retryable_for_post,
        )

    async def delete_subscription(
        self, subscription_id: str, *, request_id: str | None = None
    ) -> None:
        """Remove a subscription (``DELETE /event-subscriptions/{id}``; the path is our reading
        of the vendor's reference). Retried like a GET: deleting twice is harmless."""
        path = f"/event-subscriptions/{encode_path_segment(subscription_id, 'subscription id')}"
        rid = request_id or new_request_id()

        async def attempt() -> dict[str, Any]:
            return await self._send("DELETE", path, rid)

        await self._call(
            attempt, retry=True, should_retry=is_retryable_for_get, describe=f"DELETE {path}"
        )

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
        retry: bool = True,
    ) -> RunsPage:
        """One page of recent runs (``GET /workflow-runs``); retried unless ``retry=False``.

        The vendor documents no query parameters; ``page``, ``size`` and ``status`` are sent as
        such when given (our reading of the answer's ``pageInfo`` and the guide's status filter).
        """
        params = {
            name: value
            for name, value in (("page", page), ("size", size), ("status", status))
            if value is not None
        }
        data = await self._get(
            "/workflow-runs", request_id=request_id, params=params or None, retry=retry
        )
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

        return await self._call(
            attempt,
            retry=retry,
            should_retry=is_retryable_for_get,
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
    kernel), see :mod:`plextera_data._loop`. ``aclient`` is the underlying :class:`AsyncClient`;
    :meth:`from_async` builds the sync face over an existing one.

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
        aclient: AsyncClient | None = None,
    ) -> None:
        if aclient is None:
            aclient = AsyncClient(
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
        elif not isinstance(aclient, AsyncClient) or (
            any(v is not None for v in (api_key, base_url, retry, transport, user_agent_suffix))
            or any(v is not None for v in (sleep, clock))
            or (timeout, max_connections, clock_rate) != (DEFAULT_TIMEOUT, 100, 1.0)
        ):
            raise TypeError(
                "Client(aclient=...) takes an AsyncClient and no other argument: the AsyncClient "
                "carries the configuration (Client.from_async(aclient) says the same)"
            )
        self.aclient = aclient

    @classmethod
    def from_async(cls, aclient: AsyncClient) -> Client:
        """The sync face over ``aclient``: one configuration, one set of connection pools.

        aclient = px.AsyncClient()
        client = px.Client.from_async(aclient)   # client.aclient is aclient
        """
        return cls(aclient=aclient)

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self.aclient.base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self.aclient.retry

    @property
    def clock_rate(self) -> float:
        """The API's seconds per second of this client's clock (see :class:`AsyncClient`)."""
        return self.aclient.clock_rate

    def __repr__(self) -> str:
        return "Client" + repr(self.aclient)[len("AsyncClient") :]

    def start_run(
        self,
        workflow_id: str,
        json: Mapping[str, Any] | None = None,
        *,
        fields: Mapping[str, Any] | None = None,
        files: Mapping[str, FileInput | FileRef | list[FileInput | FileRef]] | None = None,
        body: RequestBody | None = None,
        request_id: str | None = None,
        retry: bool = True,
        retry_rate_limits: bool | None = None,
    ) -> Run:
        """Start a run; see :meth:`AsyncClient.start_run`."""
        should_retry = _start_rule(retry_rate_limits)
        prepared = _start_body(json, fields, files, body)
        return run_sync(self.aclient._start(workflow_id, prepared, request_id, retry, should_retry))

    def upload_file(
        self,
        file: FileInput | FileRef,
        *,
        name: str | None = None,
        content_type: str | None = None,
        request_id: str | None = None,
        retry: bool = True,
    ) -> File:
        """Upload one file to the File Service; see :meth:`AsyncClient.upload_file`."""
        return run_sync(
            self.aclient.upload_file(
                file, name=name, content_type=content_type, request_id=request_id, retry=retry
            )
        )

    def get_run(self, run_id: str, *, request_id: str | None = None, retry: bool = True) -> Run:
        """A run's current state; see :meth:`AsyncClient.get_run`."""
        return run_sync(self.aclient.get_run(run_id, request_id=request_id, retry=retry))

    def wait(self, run_id: str, *, timeout: float | None = 600, poll_interval: float = 1.0) -> Run:
        """Poll until the run is terminal; see :meth:`AsyncClient.wait`."""
        return run_sync(self.aclient.wait(run_id, timeout=timeout, poll_interval=poll_interval))

    def create_subscription(
        self,
        endpoint_url: str,
        event_types: Sequence[str] = ("workflow.run.completed", "workflow.run.failed"),
        *,
        signing_secret: str,
        filters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Subscribe an endpoint to events; see :meth:`AsyncClient.create_subscription`."""
        return run_sync(
            self.aclient.create_subscription(
                endpoint_url,
                event_types,
                signing_secret=signing_secret,
                filters=filters,
                request_id=request_id,
            )
        )

    def delete_subscription(self, subscription_id: str, *, request_id: str | None = None) -> None:
        """Remove a subscription; see :meth:`AsyncClient.delete_subscription`."""
        run_sync(self.aclient.delete_subscription(subscription_id, request_id=request_id))

    def list_runs(
        self,
        *,
        page: int | None = None,
        size: int | None = None,
        status: str | None = None,
        request_id: str | None = None,
        retry: bool = True,
    ) -> RunsPage:
        """One page of recent runs; see :meth:`AsyncClient.list_runs`."""
        return run_sync(
            self.aclient.list_runs(
                page=page, size=size, status=status, request_id=request_id, retry=retry
            )
        )

    def close(self) -> None:
        """Close the connections."""
        run_sync(self.aclient.aclose())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
