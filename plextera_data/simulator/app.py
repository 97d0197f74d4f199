"""The simulator's ASGI app: the Workflow Runs API under ``/api/public/v1``, built on Starlette's
request and response classes.

Routing is done on the *raw* path, one percent-decoded segment at a time, so that a workflow id
holding ``/`` (sent as ``%2F``) stays one id and ``..%2Fadmin`` can never reach another path.
Every answer carries ``X-Request-Id`` (the client's, echoed, or a new ``req_...``); every error
uses the vendor's envelope ``{"error": {"code", "message", "requestId", "retryable", "details"?}}``.
A simulator whose clock runs at a fixed speed also says so in :data:`SPEED_HEADER` (simulated
seconds per wall second; not a vendor header, for people reading the traffic: clients get the
speed from ``Simulator.client_options()`` as ``clock_rate``).

The app sits on the simulator's state (:class:`~plextera_data.simulator.state.SimulatorState`)
and changes it only through the state's methods.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from plextera_data.simulator.faults import FaultHit
from plextera_data.simulator.files import (
    MultipartError,
    Part,
    PayloadTooLargeError,
    StoredFile,
    detect_mime_type,
    is_executable,
    read_multipart,
)
from plextera_data.simulator.state import SimulatorState

__all__ = [
    "API_PREFIX",
    "ERROR_CODES",
    "EVENT_TYPES",
    "SPEED_HEADER",
    "ConnectionDroppedError",
    "SimulatorApp",
    "error_body",
    "is_loopback_url",
]

API_PREFIX = "/api/public/v1"

#: Sent by a simulator whose clock runs at a fixed speed: simulated seconds per wall second.
#: Not a vendor header; the real API never sends it.
SPEED_HEADER = "X-Plextera-Simulator-Speed"

#: The envelope's ``code`` per HTTP status (vendor codes up to 413; the rest are our choice).
ERROR_CODES: dict[int, str] = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_FAILED",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}

_SERVER_ERROR_MESSAGES = {
    500: "An unexpected error occurred.",
    502: "An upstream service did not answer correctly.",
    503: "The service is temporarily unavailable.",
}

#: The event types a subscription may ask for (the vendor's PROD names).
EVENT_TYPES = (
    "workflow.run.completed",
    "workflow.run.failed",
    "document-insights.extraction.completed",
    "document-insights.extraction.failed",
    "document-insights.extraction.rejected",
)

MALFORMED_FALLBACK = b'{"id": "abc", "status": '


class ConnectionDroppedError(httpx.RemoteProtocolError):
    """Raised in-process where a served simulator would drop the TCP connection."""

    def __init__(self, message: str = "Server disconnected without sending a response.") -> None:
        super().__init__(message)


def error_body(
    status: int,
    message: str,
    request_id: str,
    *,
    code: str | None = None,
    retryable: bool | None = None,
    details: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The vendor's error envelope."""
    error: dict[str, Any] = {
        "code": code or ERROR_CODES.get(status, "ERROR"),
        "message": message,
        "requestId": request_id,
        "retryable": (status == 429 or status >= 500) if retryable is None else retryable,
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


class ApiError(Exception):
    """An error answer, raised by a handler and turned into the envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(message)


@dataclass
class _Route:
    kind: str
    params: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()


#: Endpoints as (path pattern, handler per method); ``*`` is one id segment.
_ROUTES: list[tuple[tuple[str, ...], dict[str, str]]] = [
    (("workflows", "*", "runs"), {"POST": "start"}),
    (("workflow-runs",), {"GET": "list_runs"}),
    (("workflow-runs", "*"), {"GET": "get_run"}),
    (("files",), {"POST": "upload_file"}),
    (("files", "*"), {"GET": "get_file"}),
    (("files", "*", "download"), {"GET": "download_file"}),
    (("event-subscriptions",), {"GET": "list_subscriptions", "POST": "create_subscription"}),
    (("event-subscriptions", "*"), {"GET": "get_subscription", "DELETE": "delete_subscription"}),
]
#: The name of the id segment, per collection.
_ID_NAMES = {
    "workflows": "workflow_id",
    "workflow-runs": "run_id",
    "files": "file_id",
    "event-subscriptions": "subscription_id",
}


def _route(method: str, segments: list[str]) -> _Route:
    """Match decoded path segments (after the API prefix) to an endpoint."""
    if any(segment in ("", ".", "..") for segment in segments):
        return _Route("not_found")
    for pattern, handlers in _ROUTES:
        if len(pattern) != len(segments) or any(
            want not in ("*", got) for want, got in zip(pattern, segments, strict=True)
        ):
            continue
        ids = [got for want, got in zip(pattern, segments, strict=True) if want == "*"]
        params = {_ID_NAMES[pattern[0]]: ids[0]} if ids else {}
        kind = handlers.get("GET" if method == "HEAD" else method)
        if kind is None:
            return _Route("method_not_allowed", params, tuple(handlers))
        return _Route(kind, params, tuple(handlers))
    return _Route("not_found")


def _split_path(raw_path: bytes) -> list[str] | None:
    """The decoded segments after the API prefix, or ``None`` when outside it."""
    path = raw_path.split(b"?", 1)[0].decode("latin-1")
    if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
        return None
    rest = path[len(API_PREFIX) + 1 :]
    if rest.endswith("/"):
        rest = rest[:-1]
    return [unquote(segment, errors="strict") for segment in rest.split("/")]


def _json(
    status: int, payload: Any, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(
        payload, status_code=status, headers={"X-Request-Id": request_id, **(headers or {})}
    )


def _accepts_json(accept: str | None) -> bool:
    if not accept:
        return True
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("application/json", "*/*", "application/*", "*") or media.endswith("+json"):
            return True
    return False


def _retry_after_header(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def is_loopback_url(url: str) -> bool:
    """True for an ``http://`` URL whose host is ``localhost`` or a loopback address."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


class SimulatorApp:
    """ASGI app serving one simulator's state."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.state.account_in_flight(1)
        try:
            await self._handle(scope, receive, send)
        finally:
            self.state.account_in_flight(-1)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ request cycle

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self.state
        request = Request(scope, receive)
        method = request.method.upper()
        client_request_id = request.headers.get("x-request-id")
        request_id = client_request_id or sim.next_request_id()
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        try:
            segments = _split_path(raw_path)
        except UnicodeDecodeError:
            segments = None
        route = _Route("not_found") if segments is None else _route(method, segments)
        sim.account_request(route.kind, method, route.params, client_request_id)

        fault = sim.pick_fault(method, scope["path"])
        if fault is not None:
            sim.account_fault(fault.kind)
            if fault.kind == "slow":
                await asyncio.sleep(fault.fault.delay)
                fault = None
            elif fault.kind in ("rate_limit", "throttle", "server_error"):
                response = self._fault_response(fault, request_id)
                await self._send(response, route.kind, scope, receive, send)
                return
            elif fault.kind == "drop" and not fault.fault.after_processing:
                await self._drop(scope, receive)
                return

        state: dict[str, Any] = {}
        try:
            response = await self._dispatch(request, route, request_id, state)
        except ApiError as exc:
            body = error_body(exc.status, exc.message, request_id, details=exc.details)
            response = _json(exc.status, body, request_id, exc.headers)

        if fault is not None and fault.kind == "drop":
            await self._drop(scope, receive)
            return
        if fault is not None and fault.kind == "malformed":
            response = self._malformed(response, request_id)
        elif "terminal_run" in state:
            sim.mark_terminal_answer(state["terminal_run"])
        await self._send(response, route.kind, scope, receive, send)

    async def _send(
        self, response: Response, kind: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.state.account_answer(kind, response.status_code)
        speed = self.state.clock.speed
        if speed is not None:
            response.headers[SPEED_HEADER] = f"{speed:g}"
        await response(scope, receive, send)

    async def _drop(self, scope: Scope, receive: Receive) -> None:
        abort = scope.get("extensions", {}).get("plextera.abort_connection")
        if abort is None:
            raise ConnectionDroppedError()
        abort()
        # Wait until the server has seen the connection go, so it sends nothing (not even a 500).
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return

    def _fault_response(self, hit: FaultHit, request_id: str) -> Response:
        if hit.kind in ("rate_limit", "throttle"):
            body = error_body(
                429, "Too many requests; retry after the Retry-After delay.", request_id
            )
            headers = {"Retry-After": _retry_after_header(hit.retry_after)}
            return _json(429, body, request_id, headers)
        status = hit.fault.status or 500
        message = _SERVER_ERROR_MESSAGES.get(status, "The server failed.")
        return _json(status, error_body(status, message, request_id), request_id)

    def _malformed(self, response: Response, request_id: str) -> Response:
        real = bytes(response.body)
        status = response.status_code if 200 <= response.status_code < 300 else 200
        if 200 <= response.status_code < 300 and len(real) > 2:
            body = real[: max(1, len(real) // 2)]
        else:
            body = MALFORMED_FALLBACK
        return Response(
            body,
            status_code=status,
            media_type="application/json",
            headers={"X-Request-Id": request_id},
        )

    # ------------------------------------------------------------------ endpoints

    async def _dispatch(
        self, request: Request, route: _Route, request_id: str, state: dict[str, Any]
    ) -> Response:
        self._authenticate(request)
        if route.kind == "not_found":
            raise ApiError(404, "No such path in the Plextera public API.")
        if route.kind == "method_not_allowed":
            raise ApiError(
                405,
                f"{request.method} is not supported on this path; use {', '.join(route.allowed)}.",
                headers={"Allow": ", ".join(route.allowed)},
            )
        if route.kind != "download_file" and not _accepts_json(request.headers.get("accept")):
            raise ApiError(406, "This endpoint answers application/json; send Accept accordingly.")
        handler = getattr(self, f"_{route.kind}")
        response: Response = await handler(request, request_id, state, **route.params)
        return response

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(
                401, "Missing Authorization header; send 'Authorization: api-key <key>'."
            )
        expected = f"api-key {self.state.api_key}".encode()
        if not hmac.compare_digest(header.encode("utf-8", "replace"), expected):
            raise ApiError(
                401,
                "The API key is missing, malformed or revoked; "
                "send 'Authorization: api-key <key>'.",
            )

    async def _start(
        self, request: Request, request_id: str, state: dict[str, Any], *, workflow_id: str
    ) -> Response:
        sim = self.state
        workflow = sim.workflows.get(workflow_id)
        if workflow is None:
            raise ApiError(404, f"Workflow {workflow_id!r} was not found in this workspace.")
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            run_input = self._json_object(await request.body())
        elif media == "multipart/form-data":
            run_input = await self._multipart_input(request, content_type)
        else:
            raise ApiError(
                415,
                f"Unsupported Content-Type {media or '(none)'!r}; send application/json or "
                "multipart/form-data.",
            )
        record = sim.create_run(workflow, run_input)
        return _json(202, record.render(sim.clock.now()), request_id)

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return value

    async def _read_parts(self, request: Request, content_type: str) -> list[Part]:
        try:
            return await read_multipart(
                content_type, request.stream(), max_file_bytes=self.state.max_file_bytes
            )
        except PayloadTooLargeError as exc:
            raise ApiError(
                413,
                f"The file in part {exc.name!r} is larger than the {exc.limit} byte limit.",
            ) from None
        except MultipartError as exc:
            raise ApiError(400, f"Broken multipart body: {exc}.") from None

    async def _multipart_input(self, request: Request, content_type: str) -> dict[str, Any]:
        parts = await self._read_parts(request, content_type)
        run_input: dict[str, Any] = {}
        texts: dict[str, list[str]] = {}
        for part in parts:
            if part.is_file:
                stored = self._store(part)
                nodes = run_input.setdefault(part.name, [])
                if not isinstance(nodes, list):
                    nodes = run_input[part.name] = [nodes]
                nodes.append(stored.node())
                continue
            media = (part.content_type or "").split(";")[0].strip().lower()
            if media == "application/json" or media.endswith("+json"):
                try:
                    run_input[part.name] = json.loads(bytes(part.data).decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise ApiError(400, f"The JSON part {part.name!r} is not valid JSON.") from None
                continue
            try:
                text = bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, f"The text part {part.name!r} is not UTF-8.") from None
            texts.setdefault(part.name, []).append(text)
        for name, values in texts.items():
            run_input[name] = values[0] if len(values) == 1 else values
        return run_input

    def _store(self, part: Part) -> StoredFile:
        data = bytes(part.data)
        mime = detect_mime_type(part.filename, part.content_type, data)
        if is_executable(part.filename, mime, data):
            raise ApiError(415, f"Executable and script files are rejected ({part.filename!r}).")
        return self.state.store_file(part.filename or part.name, mime, data)

    async def _get_run(
        self, request: Request, request_id: str, state: dict[str, Any], *, run_id: str
    ) -> Response:
        sim = self.state
        now = sim.clock.now()
        record = sim.runs.get(run_id)
        if record is None or not record.visible(now):
            raise ApiError(404, f"Workflow run {run_id!r} was not found in this workspace.")
        if record.is_terminal_at(now):
            state["terminal_run"] = run_id
        return _json(200, record.render(now), request_id)

    async def _list_runs(
        self, request: Request, request_id: str, state: dict[str, Any]
    ) -> Response:
        query = request.query_params
        page = self._int_param(query.get("page"), "page", default=1, low=1)
        size = self._int_param(query.get("size"), "size", default=20, low=1, high=100)
        statuses = frozenset(
            s.strip().upper() for s in query.get("status", "").split(",") if s.strip()
        )
        as_of = query.get("asOf") or None
        try:
            found = self.state.list_runs(
                page, size, statuses=statuses, workflow_id=query.get("workflowId"), as_of=as_of
            )
        except KeyError:
            message = f"Query parameter 'asOf' names no listed run ({as_of!r})."
            raise ApiError(400, message) from None
        now = self.state.clock.now()
        payload = {
            "data": [record.render(now) for record in found.records],
            "pageInfo": {
                "page": page,
                "size": size,
                "totalItems": found.total,
                "totalPages": math.ceil(found.total / size),
            },
        }
        return _json(200, payload, request_id)

    @staticmethod
    def _int_param(
        value: str | None, name: str, *, default: int, low: int, high: int | None = None
    ) -> int:
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise ApiError(400, f"Query parameter {name!r} must be an integer.") from None
        if number < low or (high is not None and number > high):
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ApiError(400, f"Query parameter {name!r} must be {limit}.")
        return number

    async def _upload_file(
        self, request: Request, request_id: str, state: dict[str, Any]
    ) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            raise ApiError(415, "Upload files as multipart/form-data with a part named 'file'.")
        parts = await self._read_parts(request, content_type)
        file_part = next((p for p in parts if p.name == "file" and p.is_file), None)
        if file_part is None:
            raise ApiError(400, "The multipart body has no file part named 'file'.")
        stored = self._store(file_part)
        return _json(201, stored.metadata(), request_id)

    async def _get_file(
        self, request: Request, request_id: str, state: dict[str, Any], *, file_id: str
    ) -> Response:
        stored = self.state.find_file(file_id)
        if stored is None:
            raise ApiError(404, f"File {file_id!r} was not found in this workspace.")
        return _json(200, stored.metadata(), request_id)

    async def _download_file(
        self, request: Request, request_id: str, state: dict[str, Any], *, file_id: str
    ) -> Response:
        stored = self.state.find_file(file_id)
        if stored is None:
            raise ApiError(404, f"File {file_id!r} was not found in this workspace.")
        filename = stored.name.replace('"', "")
        return Response(
            stored.data,
            media_type=stored.mime_type,
            headers={
                "X-Request-Id": request_id,
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
        )

    async def _create_subscription(
        self, request: Request, request_id: str, state: dict[str, Any]
    ) -> Response:
        body = self._json_object(await request.body())
        details: list[dict[str, str]] = []
        endpoint = body.get("endpointUrl")
        if not isinstance(endpoint, str) or not endpoint.strip():
            details.append({"field": "endpointUrl", "issue": "must not be blank"})
        elif not re.fullmatch(r"https://.+", endpoint) and not is_loopback_url(endpoint):
            details.append(
                {
                    "field": "endpointUrl",
                    "issue": 'must match "^https://.+$" (http:// only on loopback)',
                }
            )
        event_types = body.get("eventTypes")
        if not isinstance(event_types, list) or not event_types:
            details.append({"field": "eventTypes", "issue": "must not be empty"})
        else:
            for index, value in enumerate(event_types):
                if value not in EVENT_TYPES:
                    details.append(
                        {
                            "field": f"eventTypes[{index}]",
                            "issue": f"must be one of {', '.join(EVENT_TYPES)}",
                        }
                    )
        secret = body.get("signingSecret")
        if not isinstance(secret, str) or not secret:
            details.append({"field": "signingSecret", "issue": "must not be blank"})
        filters = body.get("filters")
        if filters is not None:
            if not isinstance(filters, dict):
                details.append({"field": "filters", "issue": "must be an object"})
            else:
                for key, value in filters.items():
                    if key != "workflowId":
                        details.append(
                            {"field": f"filters.{key}", "issue": "only workflowId is supported"}
                        )
                    elif not isinstance(value, str) or not value:
                        details.append(
                            {"field": "filters.workflowId", "issue": "must not be blank"}
                        )
        if details:
            body_ = error_body(
                422, "One or more request fields are invalid.", request_id, details=details
            )
            return _json(422, body_, request_id)
        subscription = self.state.create_subscription(
            str(endpoint), list(event_types or []), str(secret), filters or None
        )
        return _json(201, subscription.public(), request_id)

    async def _list_subscriptions(
        self, request: Request, request_id: str, state: dict[str, Any]
    ) -> Response:
        subs = [sub.public() for sub in self.state.subscriptions.values()]
        payload = {
            "data": subs,
            "pageInfo": {"page": 1, "size": len(subs), "totalItems": len(subs), "totalPages": 1},
        }
        return _json(200, payload, request_id)

    async def _get_subscription(
        self, request: Request, request_id: str, state: dict[str, Any], *, subscription_id: str
    ) -> Response:
        sub = self.state.subscriptions.get(subscription_id)
        if sub is None:
            raise ApiError(404, f"Event subscription {subscription_id!r} was not found.")
        return _json(200, sub.public(), request_id)

    async def _delete_subscription(
        self, request: Request, request_id: str, state: dict[str, Any], *, subscription_id: str
    ) -> Response:
        if not self.state.delete_subscription(subscription_id):
            raise ApiError(404, f"Event subscription {subscription_id!r} was not found.")
        return Response(status_code=204, headers={"X-Request-Id": request_id})
