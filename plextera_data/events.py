"""Plextera webhook events: receive them, check the signature, store each event once.

A delivery is an HTTP POST whose body is ``{"eventId", "eventType", "occurredAt", "apiVersion",
"data"}`` and whose ``X-Plextera-Signature`` header is ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>">`` keyed with the subscription's signing secret.

    store = px.events.EventStore("events.db")          # SQLite, one row per event id
    app = px.events.receiver(SECRET, store=store)      # an ASGI app: verify, store, then 2xx
    with px.events.serve(SECRET, store=store) as hook:  # uvicorn on loopback, for development
        print(hook.url)
    store.runs()                                       # the runs the events carried

The parts, for a receiver of your own:

    from plextera_data.events import EventDeduplicator, parse_event, verify_signature

    seen = EventDeduplicator()

    def handle(body: bytes, headers: Mapping[str, str]) -> None:
        verify_signature(body, headers["X-Plextera-Signature"], SECRET)   # raises SignatureError
        event = parse_event(body)
        if seen.is_new(event.event_id):
            store(event.run)

Verify on the raw bytes as received, before any JSON parsing: re-serialising changes the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import anyio.to_thread

from plextera_data.errors import PlexteraError
from plextera_data.models import Run, is_terminal, parse_timestamp

if TYPE_CHECKING:
    from plextera_data._serving import BackgroundServer

__all__ = [
    "DEFAULT_TOLERANCE",
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "Event",
    "EventDeduplicator",
    "EventError",
    "EventReceiver",
    "EventServer",
    "EventStore",
    "FutureSignatureError",
    "MalformedSignatureError",
    "MissingSignatureError",
    "SignatureError",
    "SignatureMismatchError",
    "StaleSignatureError",
    "parse_event",
    "receiver",
    "serve",
    "sign",
    "verify_signature",
]

logger = logging.getLogger(__name__)

#: The header carrying the delivery's signature.
SIGNATURE_HEADER = "X-Plextera-Signature"

#: Workflow event types (the vendor also sends ``document-insights.*`` events).
EVENT_TYPES = ("workflow.run.completed", "workflow.run.failed")

#: Default replay window in seconds; the vendor says only "a few minutes".
DEFAULT_TOLERANCE = 300.0


class EventError(PlexteraError, ValueError):
    """An event delivery cannot be used (unreadable payload, bad signature)."""


class SignatureError(EventError):
    """The delivery's ``X-Plextera-Signature`` is missing, malformed, stale or does not match.

    Answer such a delivery with a 4xx and do not process it. ``reason`` says which, as one of
    the subclasses does: ``"missing"``, ``"malformed"``, ``"stale"``, ``"future"``,
    ``"mismatch"``.
    """

    reason = "invalid"


class MissingSignatureError(SignatureError):
    """The delivery has no ``X-Plextera-Signature`` header."""

    reason = "missing"


class MalformedSignatureError(SignatureError):
    """The header is not ``t=<unix seconds>,v1=<hex>``: no timestamp, no ``v1``, not a number."""

    reason = "malformed"


class StaleSignatureError(SignatureError):
    """The signature's timestamp is older than the replay window: perhaps a replayed delivery."""

    reason = "stale"


class FutureSignatureError(SignatureError):
    """The signature's timestamp is further ahead than the replay window (or the clocks
    disagree)."""

    reason = "future"


class SignatureMismatchError(SignatureError):
    """No ``v1`` signature matches the body: a wrong secret, or the body was changed."""

    reason = "mismatch"


def _as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _unix_seconds(moment: float | int | datetime) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("use a timezone-aware datetime for signature timestamps")
        return int(moment.timestamp())
    return int(moment)


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(body: bytes | str, secret: str, timestamp: float | int | datetime | None = None) -> str:
    """The ``X-Plextera-Signature`` value for ``body``: ``t=<timestamp>,v1=<hex>``.

    ``timestamp`` is unix seconds or an aware datetime (default: now).

        sign(b'{"eventId": "evt_1"}', "whsec_test", 1775556750)
    """
    if not secret:
        raise ValueError("the signing secret must not be empty")
    stamp = _unix_seconds(time.time() if timestamp is None else timestamp)
    return f"t={stamp},v1={_digest(_as_bytes(body), secret, stamp)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    stamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            try:
                stamp = int(value)
            except ValueError:
                raise MalformedSignatureError(
                    f"{SIGNATURE_HEADER} has a non-numeric timestamp t={value!r}"
                ) from None
        elif key == "v1" and value:
            signatures.append(value.lower())
    if stamp is None:
        raise MalformedSignatureError(
            f"{SIGNATURE_HEADER} has no timestamp; expected 't=<unix seconds>,v1=<hex signature>'"
        )
    if not signatures:
        raise MalformedSignatureError(
            f"{SIGNATURE_HEADER} has no v1 signature; "
            "expected 't=<unix seconds>,v1=<hex signature>'"
        )
    return stamp, signatures


def verify_signature(
    body: bytes | str,
    header: str | None,
    secret: str | Iterable[str],
    *,
    tolerance: float | None = DEFAULT_TOLERANCE,
    now: float | int | datetime | None = None,
) -> None:
    """Check a delivery's signature; raise :class:`SignatureError` unless it is genuine and fresh.

    ``body``: the raw request body, unmodified. ``header``: the ``X-Plextera-Signature`` value.
    ``secret``: the subscription's signing secret, or several (while rotating secrets).
    ``tolerance``: the largest accepted gap in seconds between ``t`` and ``now`` (``None``: no
    replay check). The comparison runs in constant time.
    """
    if not header:
        raise MissingSignatureError(
            f"the delivery has no {SIGNATURE_HEADER} header; it cannot be trusted"
        )
    stamp, signatures = _parse_header(header)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(secrets):
        raise ValueError("the signing secret must not be empty")
    if tolerance is not None:
        current = _unix_seconds(time.time() if now is None else now)
        age = current - stamp
        if abs(age) > tolerance:
            error = StaleSignatureError if age > 0 else FutureSignatureError
            when = "old" if age > 0 else "in the future"
            raise error(
                f"the signature timestamp is {abs(age)} s {when}, beyond the {tolerance:g} s "
                "tolerance; this may be a replayed delivery (or the clocks disagree)"
            )
    raw = _as_bytes(body)
    for candidate in secrets:
        expected = _digest(raw, candidate, stamp)
        if any(hmac.compare_digest(expected, given) for given in signatures):
            return
    raise SignatureMismatchError(
        "the signature does not match the body: wrong signing secret, or the body was changed "
        "(verify the raw bytes as received, before parsing)"
    )


@dataclass(frozen=True)
class Event:
    """One webhook event. ``run`` is the parsed run (``data``); ``raw`` is the whole envelope."""

    event_id: str
    event_type: str
    occurred_at: datetime | None
    api_version: str | None
    run: Run
    raw: dict[str, Any] = field(repr=False)


def parse_event(payload: bytes | str | Mapping[str, Any]) -> Event:
    """Parse a delivery body (bytes, text or an already decoded dict) into an :class:`Event`.

    The run in ``data`` may be named ``id`` (GET model) or ``runId`` (the vendor's failed-event
    example); both are accepted. Unknown event types are kept, not rejected.
    """
    if isinstance(payload, Mapping):
        envelope: Any = dict(payload)
    else:
        try:
            envelope = json.loads(_as_bytes(payload).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise EventError(f"the event body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise EventError("the event body must be a JSON object with eventId, eventType and data")
    event_id = envelope.get("eventId")
    event_type = envelope.get("eventType")
    data = envelope.get("data")
    missing = [
        name
        for name, value in (("eventId", event_id), ("eventType", event_type))
        if not isinstance(value, str) or not value
    ]
    if not isinstance(data, Mapping):
        missing.append("data")
    if missing:
        raise EventError(f"the event has no usable {', '.join(missing)}")
    api_version = envelope.get("apiVersion")
    return Event(
        event_id=str(event_id),
        event_type=str(event_type),
        occurred_at=parse_timestamp(envelope.get("occurredAt")),
        api_version=api_version if isinstance(api_version, str) else None,
        run=Run.from_dict(data),  # type: ignore[arg-type]
        raw=envelope,
    )


class EventDeduplicator:
    """Remembers event ids already handled, so a redelivered event is processed once.

    The vendor resends an event (same ``eventId``, new delivery id) until it gets a 2xx, and may
    deliver it twice in any case. ``max_size`` bounds memory (oldest ids are forgotten first);
    for restarts, persist the ids yourself.

        seen = EventDeduplicator()
        if seen.is_new(event.event_id):
            process(event)
    """

    def __init__(self, max_size: int | None = 100_000) -> None:
        self.max_size = max_size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def is_new(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen (and remembers it); False afterwards."""
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return False
        self._seen[event_id] = None
        if self.max_size is not None and len(self._seen) > self.max_size:
            self._seen.popitem(last=False)
        return True

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)


# --------------------------------------------------------------------------- the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    run_id TEXT,
    occurred_at REAL,
    received_at TEXT NOT NULL,
    delivery_id TEXT,
    deliveries INTEGER NOT NULL DEFAULT 1,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    occurred_at REAL NOT NULL,
    status TEXT
);
"""

#: ``occurred_at`` of an event that gave none: older than any that did.
_UNKNOWN_TIME = -1.0e300


class EventStore:
    """Webhook events in SQLite: one row per ``eventId`` however often it is delivered.

    ``add`` commits before it returns (the receiver answers 2xx only then), so an acknowledged
    event survives a crash. The file is in WAL mode with a busy timeout of ``timeout`` seconds,
    so a receiver process writing and a notebook reading can use it at the same time; each
    process opens its own ``EventStore`` on the same path. Safe to share between threads.

        store = EventStore("events.db")
        store.runs()                      # the latest run each event carried, one per run id
        store.terminal_run(run_id)        # that run if it is COMPLETED, FAILED or CLOSED
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # a commit is on disk when add() returns
        with self._lock:
            self._db.executescript(_SCHEMA)

    def add(
        self, event: Event, *, delivery_id: str | None = None, body: bytes | None = None
    ) -> bool:
        """Store ``event`` (``body``: the raw delivery, kept as received); True if it was new,
        False for a redelivery of a stored event (counted, not stored again). Committed on
        return. The run it carries replaces the stored one only if it occurred later."""
        raw = body if body is not None else json.dumps(event.raw, ensure_ascii=False).encode()
        occurred = event.occurred_at.timestamp() if event.occurred_at else _UNKNOWN_TIME
        received = datetime.now(UTC).isoformat()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "INSERT INTO events (event_id, event_type, run_id, occurred_at, received_at,"
                    " delivery_id, body) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (event_id) DO UPDATE SET deliveries = deliveries + 1"
                    " RETURNING seq, deliveries",
                    (event.event_id, event.event_type, event.run.id, occurred, received,
                     delivery_id, raw),
                ).fetchone()  # fmt: skip
                new = row[1] == 1
                if new and event.run.id is not None:
                    self._db.execute(
                        "INSERT INTO runs (run_id, seq, occurred_at, status) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq,"
                        " occurred_at = excluded.occurred_at, status = excluded.status"
                        " WHERE excluded.occurred_at >= runs.occurred_at",
                        (event.run.id, row[0], occurred, event.run.status),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def __len__(self) -> int:
        return int(self._scalar("SELECT COUNT(*) FROM events"))

    def __contains__(self, event_id: object) -> bool:
        return bool(self._scalar("SELECT COUNT(*) FROM events WHERE event_id = ?", (event_id,)))

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    def events(self, *, after: int = 0) -> list[Event]:
        """The stored events in the order they first arrived (``after``: from a :attr:`cursor`
        on, for reading only what is new)."""
        return self.read_since(after)[0]

    def read_since(self, cursor: int = 0) -> tuple[list[Event], int]:
        """The events stored after ``cursor`` and the cursor to pass next time (0: all)."""
        rows = self._rows("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq", (cursor,))
        events = [parse_event(bytes(body)) for _, body in rows]
        return events, (rows[-1][0] if rows else cursor)

    @property
    def cursor(self) -> int:
        """The position of the newest stored event (0 when empty)."""
        return int(self._scalar("SELECT COALESCE(MAX(seq), 0) FROM events"))

    def runs(self) -> list[Run]:
        """The runs carried by the stored events: per run id, the one whose event occurred last
        (a later-arriving older event does not replace it), in order of first arrival."""
        rows = self._rows("SELECT e.body FROM runs r JOIN events e ON e.seq = r.seq ORDER BY r.seq")
        return [parse_event(bytes(body)).run for (body,) in rows]

    def terminal_run(self, run_id: str) -> Run | None:
        """The latest stored run ``run_id`` if it is terminal, else ``None``."""
        return self.terminal_runs([run_id]).get(run_id)

    def terminal_runs(self, run_ids: Iterable[str]) -> dict[str, Run]:
        """``run_id -> Run`` for those of ``run_ids`` whose latest stored run is terminal."""
        wanted = list(dict.fromkeys(run_ids))
        found: dict[str, Run] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._rows(
                f"SELECT r.run_id, e.body FROM runs r JOIN events e ON e.seq = r.seq"
                f" WHERE r.run_id IN ({marks})",
                chunk,
            )
            for run_id, body in rows:
                run = parse_event(bytes(body)).run
                if is_terminal(run.status):
                    found[run_id] = run
        return found

    def delivery_count(self, event_id: str) -> int:
        """How many deliveries of ``event_id`` reached the store (0: none)."""
        value = self._scalar("SELECT deliveries FROM events WHERE event_id = ?", (event_id,))
        return int(value or 0)

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventStore({self.path!r})"


# --------------------------------------------------------------------------- the receiver

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]

#: The largest delivery body accepted (a completed event carries the whole run).
MAX_BODY_BYTES = 32 * 1024 * 1024


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class EventReceiver:
    """An ASGI app that receives Plextera deliveries (``POST``, any path) into an
    :class:`EventStore`; made by :func:`receiver`.

    Each delivery is verified on its raw bytes (signature and replay window) and parsed before
    anything is stored; it is answered 200 only after the store committed it (a redelivery of a
    stored event is answered 200 too, so the sender stops). An unverifiable delivery gets 401,
    an unreadable one 400, and neither is stored. A store failure answers 500: the sender
    retries. Counts: ``received``, ``stored``, ``duplicates``, ``refused``.
    """

    def __init__(
        self,
        secret: str | Iterable[str],
        store: EventStore,
        *,
        tolerance: float | None = DEFAULT_TOLERANCE,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.secrets = [secret] if isinstance(secret, str) else list(secret)
        if not self.secrets or not all(self.secrets):
            raise ValueError("the signing secret must not be empty")
        self.store = store
        self.tolerance = tolerance
        self.max_body_bytes = max_body_bytes
        self.received = self.stored = self.duplicates = self.refused = 0

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] in ("lifespan.startup", "lifespan.shutdown"):
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
        if scope["type"] != "http":
            return
        self.received += 1
        try:
            status, payload = 200, await self._accept(scope, receive)
        except _Refused as refused:
            self.refused += 1
            status = refused.status
            payload = {"error": {"code": refused.code, "message": str(refused)}}
        await _respond(send, status, payload)

    async def _accept(self, scope: _Scope, receive: _Receive) -> dict[str, Any]:
        if scope.get("method") != "POST":
            raise _Refused(405, "METHOD_NOT_ALLOWED", "deliveries are POSTed")
        body = await self._body(receive)
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        try:
            verify_signature(
                body, headers.get(SIGNATURE_HEADER.lower()), self.secrets, tolerance=self.tolerance
            )
        except SignatureError as exc:
            raise _Refused(401, f"SIGNATURE_{exc.reason.upper()}", str(exc)) from None
        try:
            event = parse_event(body)
        except EventError as exc:
            raise _Refused(400, "INVALID_EVENT", str(exc)) from None
        delivery_id = headers.get("x-plextera-delivery-id")
        try:
            new = await anyio.to_thread.run_sync(
                lambda: self.store.add(event, delivery_id=delivery_id, body=body)
            )
        except Exception as exc:
            logger.exception("could not store event %s", event.event_id)
            raise _Refused(500, "STORE_FAILED", f"the event could not be stored: {exc}") from None
        if new:
            self.stored += 1
        else:
            self.duplicates += 1
        return {"eventId": event.event_id, "stored": True, "duplicate": not new}

    async def _body(self, receive: _Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "INVALID_EVENT", "the delivery ended before its body did")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(413, "PAYLOAD_TOO_LARGE", "the delivery body is too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _respond(send: _Send, status: int, payload: Mapping[str, Any]) -> None:
    body = json.dumps(payload).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 405:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _open_store(store: EventStore | str | os.PathLike[str]) -> EventStore:
    return store if isinstance(store, EventStore) else EventStore(store)


def receiver(
    secret: str | Iterable[str],
    store: EventStore | str | os.PathLike[str],
    *,
    tolerance: float | None = DEFAULT_TOLERANCE,
) -> EventReceiver:
    """An ASGI app receiving Plextera deliveries into ``store`` (an :class:`EventStore` or its
    path); mount it in any ASGI server behind your public HTTPS endpoint.

    ``secret``: the subscription's signing secret, or several while rotating. ``tolerance``:
    the replay window in seconds (``None``: no replay check).
    """
    return EventReceiver(secret, _open_store(store), tolerance=tolerance)


class EventServer:
    """A :func:`receiver` served by uvicorn in a background thread (made by :func:`serve`).

    ``url`` is where to point a subscription (``http://127.0.0.1:<port>/``); ``stop()`` ends
    serving; a context manager.
    """

    def __init__(self, app: EventReceiver, server: BackgroundServer) -> None:
        self.app = app
        self.store = app.store
        self._server = server

    @property
    def url(self) -> str:
        """The receiver's URL."""
        return self._server.origin + "/"

    @property
    def port(self) -> int:
        return self._server.port

    def stop(self) -> None:
        """Stop serving (the store stays open)."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EventServer(url={self.url!r}, store={self.store!r})"


def serve(
    secret: str | Iterable[str],
    store: EventStore | str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tolerance: float | None = DEFAULT_TOLERANCE,
) -> EventServer:
    """Receive deliveries on ``host:port`` (0: a free port) with uvicorn, in a background
    thread, for development: started on return. Needs the ``events`` extra (uvicorn).

        with px.events.serve(SECRET, store="events.db") as hook:
            ...  # subscribe hook.url
    """
    # uvicorn is optional (the ``events`` extra): imported only when serving.
    from plextera_data._serving import BackgroundServer

    app = receiver(secret, store, tolerance=tolerance)
    server = BackgroundServer(app, host, port, name="plextera-events")
    return EventServer(app, server.start())
