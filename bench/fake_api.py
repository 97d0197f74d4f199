"""An independent fake of the Plextera API for benchmarks: small, fast, with faults by probability.

    python bench/fake_api.py [--port 0] [--seed 1] [--post-429 0.05] [--post-500 0.01]
                             [--get-500 0.0167] [--get-drop 0.0167] [--get-malformed 0.0167]
                             [--get-429 0.01] [--retry-after 0]
                             [--bucket-rate 40 --bucket-burst 40 --bucket-retry-after exact]

Not the library's simulator: a raw ASGI app (no framework, nothing imported from
``plextera_data``) served by uvicorn on loopback, written from the vendor's documented wire format
(/work/shared/vendor-api.md) so that a benchmark against it does not share the simulator's
assumptions. It prints ``BASE_URL API_KEY`` on one line once it listens, and serves until killed.

The API, under ``/api/public/v1``, with ``Authorization: api-key KEY``:

* ``POST /workflows/{id}/runs`` (a JSON object): 202 and the run model (``id``, ``status:
  PROCESSING``, ``createdAt``, ``workflow``, ``progress``, ``steps``).
* ``GET /workflow-runs/{id}``: the run; each run is ``PROCESSING`` until its second answered GET,
  which (and every later one) shows it ``COMPLETED`` with ``completedAt``.
* ``GET /workflow-runs``: runs newest first, ``page`` (from 1) and ``size`` (default 20, at most
  100), ``pageInfo`` (``page``, ``size``, ``totalItems``, ``totalPages``).
* Every answer echoes ``X-Request-Id`` (or makes one up); every error is the vendor's envelope
  ``{"error": {"code", "message", "requestId", "retryable"}}``.

Faults, each with its own probability, drawn per request from a seeded generator: a POST answered
429 (``Retry-After: --retry-after``) or 500 (no run created); a GET answered 500, dropped (the TCP
connection aborted, no answer), 200 with a malformed (cut) body, or 429. A token bucket
(``--bucket-rate`` requests/s, ``--bucket-burst`` deep) applies to *every* request before the
other faults; a request finding it empty is answered 429 with a truthful ``Retry-After``: the
seconds until the next token (``exact``: a decimal such as ``0.013``; ``ceil``: whole seconds, as
HTTP's delta-seconds are written, so ``1``).

Accounting (no auth; not part of the API): ``GET /__fake__/stats`` gives the run ids created per
input ``rowId`` (proof that no row was started twice), requests per method, route and status, and
a timeline of every answer (seconds since the first request, method, route, status), and each
run's GETs (time, status).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import secrets
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIX = "/api/public/v1"
API_KEY = "sk_fake_" + "0" * 24
CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
}


def iso(t: float) -> str:
    """A UTC timestamp with milliseconds, as the vendor writes them (``...T09:30:00.000Z``)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _route(path: str) -> str:
    """The accounting's name for a path: ``start``, ``get``, ``list`` or ``other``."""
    if path == PREFIX + "/workflow-runs":
        return "list"
    if path.startswith(PREFIX + "/workflow-runs/"):
        return "get"
    if path.startswith(PREFIX + "/workflows/"):
        return "start"
    return "other"


class Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst``, full at the start."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until the next one."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class FakeAPI:
    """The ASGI app (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.bucket = Bucket(args.bucket_rate, args.bucket_burst) if args.bucket_rate else None
        self.runs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # run ids in creation order
        self.gets: Counter[str] = Counter()  # answered GETs per run
        self.by_row: defaultdict[str, list[str]] = defaultdict(list)
        self.requests: Counter[str] = Counter()
        self.timeline: list[tuple[float, str, str, int]] = []
        self.polls: defaultdict[str, list[tuple[float, int]]] = defaultdict(list)
        self.t0: float | None = None

    # ------------------------------------------------------------------ plumbing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id") or "req_" + secrets.token_hex(13).upper()
        method, path = scope["method"], scope["path"]
        if path == "/__fake__/stats":
            await self._send(send, 200, self.stats(), rid)
            return
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        route = _route(path)
        status, payload, extra = self.handle(method, path, headers, body, scope, rid)
        if status == 0:  # drop the connection: no answer at all
            self._count(now, method, route, 0, path)
            if transport is None:
                raise ConnectionAbortedError("dropped")
            transport.abort()
            while (await receive())["type"] != "http.disconnect":  # so nothing is sent, not a 500
                pass
            return
        self._count(now, method, route, status, path)
        await self._send(send, status, payload, rid, extra)

    def _count(self, now: float, method: str, route: str, status: int, path: str) -> None:
        self.requests[f"{method} {route} {status}"] += 1
        assert self.t0 is not None
        at = round(now - self.t0, 4)
        self.timeline.append((at, method, route, status))
        if route == "get":
            self.polls[path.rsplit("/", 1)[-1]].append((at, status))

    async def _send(
        self,
        send: Send,
        status: int,
        payload: Any,
        rid: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"x-request-id", rid.encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    @staticmethod
    def error(status: int, message: str, rid: str) -> dict[str, Any]:
        return {
            "error": {
                "code": CODES.get(status, "ERROR"),
                "message": message,
                "requestId": rid,
                "retryable": status == 429 or status >= 500,
            }
        }

    # ------------------------------------------------------------------ the API

    def handle(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        scope: Scope,
        rid: str,
    ) -> tuple[int, Any, dict[str, str] | None]:
        """(status, JSON payload or raw bytes, extra headers); status 0 drops the connection."""
        if not path.startswith(PREFIX + "/"):
            return 404, self.error(404, "No such path.", rid), None
        if headers.get("authorization") != f"api-key {API_KEY}":
            return 401, self.error(401, "API key missing, malformed or revoked.", rid), None
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait:
                exact = self.args.bucket_retry_after == "exact"
                shown = f"{max(wait, 0.001):.3f}" if exact else str(max(1, math.ceil(wait)))
                return 429, self.error(429, "Too many requests.", rid), {"retry-after": shown}
        parts = [unquote(p) for p in path[len(PREFIX) + 1 :].split("/")]
        if len(parts) == 3 and parts[0] == "workflows" and parts[2] == "runs":
            if method != "POST":
                return 405, self.error(405, "Method not allowed.", rid), None
            return self.start(parts[1], body, rid)
        if parts[0] == "workflow-runs" and len(parts) <= 2:
            if method != "GET":
                return 405, self.error(405, "Method not allowed.", rid), None
            fault = self.get_fault(rid)
            if fault is not None:
                return fault
            if len(parts) == 1:
                return self.list(scope, rid)
            return self.get(parts[1], rid)
        return 404, self.error(404, "No such path.", rid), None

    def start(self, workflow_id: str, body: bytes, rid: str) -> tuple[int, Any, Any]:
        a = self.args
        u = self.rng.random()
        if u < a.post_429:
            headers = {"retry-after": f"{a.retry_after:g}"}
            return 429, self.error(429, "Too many requests.", rid), headers
        if u < a.post_429 + a.post_500:
            return 500, self.error(500, "Internal error.", rid), None
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return 400, self.error(400, "The body must be a JSON object.", rid), None
        now = time.time()
        run_id = secrets.token_hex(12)
        run = {
            "id": run_id,
            "status": "PROCESSING",
            "createdAt": iso(now),
            "updatedAt": iso(now),
            "startedAt": iso(now),
            "workflow": {"id": workflow_id, "name": workflow_id.title()},
            "progress": {"stepsCompleted": 0, "stepsTotal": 1},
            "durationMs": 0,
            "steps": [
                {
                    "id": "step_01",
                    "name": "Echo",
                    "type": "web_function",
                    "status": "QUEUED",
                    "output": None,
                    "nestedRuns": {"count": 0, "data": []},
                }
            ],
            "_input": data,
            "_started": now,
        }
        self.runs[run_id] = run
        self.order.append(run_id)
        self.by_row[str(data.get("rowId"))].append(run_id)
        return 202, self.public(run), None

    def get_fault(self, rid: str) -> tuple[int, Any, Any] | None:
        a = self.args
        u = self.rng.random()
        if u < a.get_500:
            return 500, self.error(500, "Internal error.", rid), None
        u -= a.get_500
        if u < a.get_drop:
            return 0, None, None
        u -= a.get_drop
        if u < a.get_malformed:
            return 200, b'{"id": "', None
        u -= a.get_malformed
        if u < a.get_429:
            headers = {"retry-after": f"{a.retry_after:g}"}
            return 429, self.error(429, "Too many requests.", rid), headers
        return None

    def get(self, run_id: str, rid: str) -> tuple[int, Any, Any]:
        run = self.runs.get(run_id)
        if run is None:
            return 404, self.error(404, f"No workflow run {run_id!r}.", rid), None
        self.gets[run_id] += 1
        if self.gets[run_id] == 2:
            now = time.time()
            took = max(1, int((now - run["_started"]) * 1000))
            run.update(
                status="COMPLETED",
                updatedAt=iso(now),
                completedAt=iso(now),
                progress={"stepsCompleted": 1, "stepsTotal": 1},
                durationMs=took,
                computedDurationMs=took,
            )
            step = run["steps"][0]
            step.update(status="COMPLETED", output={"echo": run["_input"]})
        return 200, self.public(run), None

    def list(self, scope: Scope, rid: str) -> tuple[int, Any, Any]:
        query = parse_qs(scope.get("query_string", b"").decode())
        try:
            page = int(query.get("page", ["1"])[0])
            size = int(query.get("size", ["20"])[0])
        except ValueError:
            return 400, self.error(400, "page and size must be whole numbers.", rid), None
        if page < 1 or not 1 <= size <= 100:
            return 400, self.error(400, "page >= 1 and 1 <= size <= 100.", rid), None
        total = len(self.order)
        end = total - (page - 1) * size
        ids = self.order[max(0, end - size) : max(0, end)][::-1]  # newest first
        return (
            200,
            {
                "data": [self.public(self.runs[i]) for i in ids],
                "pageInfo": {
                    "page": page,
                    "size": size,
                    "totalItems": total,
                    "totalPages": max(1, math.ceil(total / size)),
                },
            },
            None,
        )

    @staticmethod
    def public(run: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in run.items() if not k.startswith("_")}

    def stats(self) -> dict[str, Any]:
        return {
            "runs_per_row": dict(self.by_row),
            "requests": dict(self.requests),
            "timeline": self.timeline,
            "polls": dict(self.polls),
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    for name in ("post-429", "post-500", "get-500", "get-drop", "get-malformed", "get-429"):
        parser.add_argument(f"--{name}", type=float, default=0.0, help="probability, 0-1")
    parser.add_argument("--retry-after", type=float, default=0.0, help="of the random 429s")
    parser.add_argument("--bucket-rate", type=float, default=0.0, help="requests/s; 0: none")
    parser.add_argument("--bucket-burst", type=float, default=40.0)
    parser.add_argument("--bucket-retry-after", choices=("exact", "ceil"), default="exact")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    app = FakeAPI(args)
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, http="h11", lifespan="off", log_level="error", access_log=False, backlog=1024
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        await server.serve(sockets=[sock])

    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets)
        print(f"http://{args.host}:{port}{PREFIX} {API_KEY}", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
