"""The errors plextera-data raises, one tree under :class:`PlexteraError`.

Transport problems (:class:`APIConnectionError`, :class:`APITimeoutError`) are kept apart from
answers with a bad status (:class:`APIStatusError` and its per-status subclasses), as in httpx.
Every request error carries the request's method and path and the ``X-Request-Id`` the client sent
(the vendor echoes it), so there is always an id to quote to Plextera's support. No error ever
holds the API key.

``may_have_created`` tells, for a failed *start* (POST), whether the run could exist on the
server all the same. The vendor states that creation is not idempotent, so a start is retried
only when ``may_have_created`` is false.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchTimeoutError",
    "ConfigurationError",
    "ConflictError",
    "ErrorDetail",
    "InvalidInputError",
    "JournalError",
    "MalformedResponseError",
    "MissingAPIKeyError",
    "NotFoundError",
    "PermissionDeniedError",
    "PlexteraError",
    "RateLimitError",
    "RunFailedError",
    "ServerError",
    "SubmissionRefusedError",
    "WaitTimeoutError",
]


class PlexteraError(Exception):
    """Base of every error raised by plextera-data."""


# --------------------------------------------------------------------------- configuration


class ConfigurationError(PlexteraError, ValueError):
    """The client is set up in a way that cannot work (for example ``http://`` to a remote host)."""


class MissingAPIKeyError(ConfigurationError):
    """No API key was given and ``PLEXTERA_API_KEY`` is not set."""

    def __init__(self, env_var: str = "PLEXTERA_API_KEY") -> None:
        self.env_var = env_var
        super().__init__(
            f"No Plextera API key: pass api_key=... to the client or set the {env_var} "
            "environment variable (Plextera > Account settings > API > API keys). "
            "To try the library without a key, use the local simulator: "
            "`plextera-data simulator` or `plextera_data.simulator.Simulator().serve()`."
        )


# --------------------------------------------------------------------------- input


class InvalidInputError(PlexteraError, ValueError):
    """Input that cannot be sent, found before any request: names the rows and columns at fault.

    ``problems`` holds ``(row_key, column, reason)`` triples, all of them (the message lists the
    first few and counts the rest).
    """

    def __init__(
        self,
        message: str,
        problems: Sequence[tuple[Any, str | None, str]] = (),
        *,
        shown: int = 5,
    ) -> None:
        self.problems: list[tuple[Any, str | None, str]] = list(problems)
        lines = [message]
        for row_key, column, reason in self.problems[:shown]:
            # A problem of a column or of the whole frame has no row (None): no "row None".
            where = [f"row {row_key!r}"] if row_key is not None else []
            if column is not None:
                where.append(f"column {column!r}")
            lines.append(f"  - {', '.join(where) or 'the frame'}: {reason}")
        rest = len(self.problems) - shown
        if rest > 0:
            lines.append(f"  ... and {rest} more")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- requests


class APIError(PlexteraError):
    """A request to the Plextera API did not give a usable answer.

    Attributes: ``method``, ``path`` (without the base URL and query), ``request_id`` (the
    ``X-Request-Id`` the client sent, echoed by the vendor), ``may_have_created`` (see the module
    docstring).
    """

    may_have_created: bool = True

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.method = method
        self.path = path
        self.request_id = request_id
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.message} ({self.method} {self.path}"
        if self.request_id:
            text += f", request id {self.request_id}"
        return text + ")"


class APIConnectionError(APIError):
    """The connection failed or dropped; no HTTP answer was received.

    ``request_sent`` is false when the connection could not even be opened, in which case the
    server cannot have acted on the request.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        request_id: str | None = None,
        request_sent: bool = True,
    ) -> None:
        self.request_sent = request_sent
        self.may_have_created = request_sent
        super().__init__(message, method=method, path=path, request_id=request_id)


class APITimeoutError(APIConnectionError):
    """No answer in time (connect, read, write or pool timeout)."""


class MalformedResponseError(APIError):
    """The server answered with a success status but a body that is not the documented JSON."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        request_id: str | None = None,
        status_code: int | None = None,
        body: str = "",
    ) -> None:
        self.status_code = status_code
        self.body = body[:500]
        super().__init__(message, method=method, path=path, request_id=request_id)


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of the vendor envelope's ``details`` (sent with ``VALIDATION_FAILED``)."""

    field: str | None
    issue: str | None


class APIStatusError(APIError):
    """The API answered with a non-2xx status.

    Carries the vendor's error envelope parsed: ``code``, ``message`` (``vendor_message``),
    ``request_id``, ``retryable`` and ``details``. ``body`` holds the raw envelope (or the start
    of a non-JSON body).
    """

    may_have_created = False
    hint: str = ""

    def __init__(
        self,
        *,
        status_code: int,
        method: str,
        path: str,
        request_id: str | None = None,
        code: str | None = None,
        vendor_message: str | None = None,
        retryable: bool | None = None,
        details: Sequence[ErrorDetail] = (),
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.vendor_message = vendor_message
        self.retryable = retryable
        self.details = list(details)
        self.retry_after = retry_after
        self.body = body
        summary = f"HTTP {status_code}"
        if code:
            summary += f" {code}"
        if vendor_message:
            summary += f": {vendor_message}"
        for detail in self.details:
            summary += f" [{detail.field}: {detail.issue}]"
        if self.hint:  # the vendor's message may end with its own full stop: one is enough
            summary = f"{summary.rstrip('.')}. {self.hint}"
        super().__init__(summary, method=method, path=path, request_id=request_id)


class BadRequestError(APIStatusError):
    """400, 405, 406, 413, 415, 422 and other 4xx: the request itself is wrong; fix it first."""

    hint = "The request was rejected as invalid; fix it before sending it again"


class AuthenticationError(APIStatusError):
    """401: the API key is missing, malformed or revoked."""

    hint = (
        "Check the API key (PLEXTERA_API_KEY); it is sent as 'Authorization: api-key <key>'. "
        "A deactivated key stops working at once"
    )


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but not allowed this operation."""

    hint = "The key is valid but not allowed this operation; ask a workspace admin"


class NotFoundError(APIStatusError):
    """404: no such workflow or run in the key's workspace (or a wrong base URL)."""

    hint = "Check the id and PLEXTERA_BASE_URL; ids are scoped to the key's workspace"


class ConflictError(APIStatusError):
    """409: the request clashes with the resource's current state."""

    hint = "Re-read the resource; retry only if the error says it is retryable"


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` holds the server's ``Retry-After`` in seconds."""

    hint = "Too many requests; slow down (the client waits for Retry-After before retrying)"


class ServerError(APIStatusError):
    """5xx: the server failed. For a start (POST), the run may have been created all the same."""

    may_have_created = True
    hint = "The server failed; GET requests are retried, a start is not (it may have created a run)"


# --------------------------------------------------------------------------- batches


class RunFailedError(PlexteraError):
    """Runs ended ``FAILED`` or ``CLOSED`` and the caller asked to raise on failure.

    ``runs`` holds the failed :class:`plextera_data.Run` objects.
    """

    def __init__(self, message: str, runs: Sequence[Any] = ()) -> None:
        self.runs = list(runs)
        super().__init__(message)


class SubmissionRefusedError(PlexteraError):
    """The API refused a start in a way that no other row can succeed either (a bad key, a key
    without permission, a workflow that does not exist): submission stopped at once.

    ``cause`` is the API's answer; ``batch`` the batch (the refused rows are
    ``SUBMISSION_FAILED``, the rest ``NOT_SUBMITTED``: a rerun after the fix sends them).
    """

    def __init__(self, message: str, *, cause: APIStatusError, batch: Any = None) -> None:
        self.cause = cause
        self.batch = batch
        super().__init__(message)


class BatchTimeoutError(PlexteraError, TimeoutError):
    """``wait`` gave up before every run was terminal; polling can resume with ``wait`` again."""

    def __init__(self, message: str, *, still_running: int = 0) -> None:
        self.still_running = still_running
        super().__init__(message)


class WaitTimeoutError(BatchTimeoutError):
    """``Client.wait(run_id, timeout=...)`` gave up before the run was terminal.

    The run goes on on the server: call ``wait`` again (or ``get_run``) to pick it up. ``run_id``
    names it and ``last_run`` holds the last model seen (``None`` if no poll succeeded).
    """

    def __init__(self, run_id: str, timeout: float, last_run: Any = None) -> None:
        self.run_id = run_id
        self.timeout = timeout
        self.last_run = last_run
        status = getattr(last_run, "status", None)
        super().__init__(
            f"Run {run_id!r} was not finished after {timeout:g} s (last status: {status}). "
            "It keeps running on the server: call wait() again with a longer timeout, "
            "or get_run() later.",
            still_running=1,
        )


class JournalError(PlexteraError):
    """The journal cannot be used: a different workflow, a changed frame, or a damaged file."""
