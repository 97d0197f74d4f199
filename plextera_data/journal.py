"""The batch journal: a SQLite record of what was sent, what the API accepted, and how it ended.

One journal file records one batch (one workflow). Per start it keeps the request's fingerprint
and occurrence (its identity: a rerun recognises a start by its content, whatever key or position
its row has now), the row key and position it had in the latest frame, the run id, the status,
the last error (and its code) and request id, the number of POST attempts and the times; per
finished run it keeps the final run JSON, written once, so tables can be rebuilt offline and
finished runs are never fetched again.

Durability: WAL mode with ``synchronous=NORMAL`` (each commit is in the operating system's hands
at once, so a killed process loses nothing committed; only an OS crash or power cut can roll back
the last commits, never corrupt the file: pass ``Journal(path, synchronous="FULL")`` to fsync
every commit, at about 5 ms each, see docs/guide/journal.md).
A row is marked ``SUBMITTING`` (with the
``X-Request-Id`` it will send) and committed *before* its POST leaves: with ``NORMAL`` each start
commits its mark at once (with every write made so far), with ``FULL`` the marks of one event-loop
turn share one commit (:meth:`Journal.flush`). The run id of an accepted start is committed with
the next commit, at the latest at the loop's next turn. So a process killed at any instant leaves
either no trace of a row's start (it was never sent), a ``SUBMITTING`` row (it may or may not have
a run: resume reports it as ``SUBMISSION_UNCERTAIN``), or the run id. Row writes wait in a queue
and are written just before the commit, one ``executemany`` per kind of write.

The API key is never written: the journal holds no client settings at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plextera_data.errors import JournalError

__all__ = [
    "SCHEMA_VERSION",
    "Journal",
    "JournalBatch",
    "JournalRow",
    "decode_key",
    "encode_key",
]

SCHEMA_VERSION = 2

#: The SQLite page cache of a journal's connection, in KiB.
_CACHE_KIB = 1024

#: Rows inserted per ``executemany`` (see :meth:`Journal.add_rows`).
_INSERT_CHUNK = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    final_json TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    sha256 TEXT PRIMARY KEY,
    file_id TEXT NOT NULL,
    name TEXT,
    size INTEGER,
    uploaded_at TEXT NOT NULL
);
"""

#: One row per start: identified by its request's content (``fingerprint``) and ``occurrence``
#: (0 for the first row of a frame with that content, 1 for the next identical one...), so a
#: rerun recognises a start whatever key or position its row has now.
_ROWS = """
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    fingerprint TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    row_key TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    position INTEGER NOT NULL,
    run_id TEXT,
    status TEXT NOT NULL,
    error TEXT,
    error_code TEXT,
    request_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at TEXT,
    submitted_at TEXT,
    finished_at TEXT,
    UNIQUE (batch_id, fingerprint, occurrence)
);
"""

#: Version 1 keyed rows by their row key; its rows move to version 2's table as they are.
_FROM_V1 = (
    """
ALTER TABLE rows RENAME TO rows_v1;
DROP INDEX IF EXISTS rows_by_run;
"""
    + _ROWS
    + """
INSERT INTO rows (batch_id, fingerprint, occurrence, row_key, position, run_id, status, error,
                  request_id, attempts, submitted_at, finished_at)
SELECT batch_id, fingerprint,
       ROW_NUMBER() OVER (PARTITION BY batch_id, fingerprint ORDER BY position) - 1,
       row_key, position, run_id, status, error, request_id, attempts, submitted_at, finished_at
FROM rows_v1;
DROP TABLE rows_v1;
"""
)


_UPDATE_ROW = (
    "UPDATE rows SET run_id = ?, status = ?, error = ?, error_code = ?, request_id = ?, "
    "attempts = ?, sent_at = ?, submitted_at = ?, finished_at = ?"
)
_UPDATE_ROW_BY_ID = _UPDATE_ROW + " WHERE id = ?"
#: A row whose start leaves now (see :meth:`Journal.save_start`).
_UPDATE_START = (
    "UPDATE rows SET status = ?, request_id = ?, attempts = ?, sent_at = ?, run_id = NULL, "
    "error = NULL, error_code = NULL, submitted_at = NULL, finished_at = NULL WHERE id = ?"
)
#: A row whose start was accepted (see :meth:`Journal.save_accepted`).
_UPDATE_ACCEPTED = (
    "UPDATE rows SET run_id = ?, status = ?, submitted_at = ?, error = NULL, error_code = NULL "
    "WHERE id = ?"
)


# --------------------------------------------------------------------------- row keys


def _plain(key: Any) -> Any:
    if isinstance(key, np.generic):
        return key.item()
    return key


def _tag(key: Any) -> Any:
    key = _plain(key)
    if key is None or isinstance(key, bool | int | str):
        return key
    if isinstance(key, float):
        return key if math.isfinite(key) else {"float": repr(key)}
    if isinstance(key, pd.Timestamp | dt.datetime):
        return {"timestamp": pd.Timestamp(key).isoformat()}
    if isinstance(key, dt.date):
        return {"date": key.isoformat()}
    if isinstance(key, pd.Timedelta | dt.timedelta):
        return {"timedelta": pd.Timedelta(key).isoformat()}
    if isinstance(key, tuple):
        return {"tuple": [_tag(k) for k in key]}
    return {"repr": repr(key)}


_KEY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_key(key: Any) -> str:
    """A row key (index value) as canonical JSON text; round-trips ints, floats, strings, bools,
    timestamps, dates, timedeltas and tuples (MultiIndex); other types are kept as their repr."""
    # One encoder for every key: json.dumps with options makes a new one per call.
    return _KEY_JSON.encode(_tag(key))


def _untag(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    (kind, payload), *_ = value.items()
    if kind == "float":
        return float(payload)
    if kind == "timestamp":
        return pd.Timestamp(payload)
    if kind == "date":
        return dt.date.fromisoformat(payload)
    if kind == "timedelta":
        return pd.Timedelta(payload)
    if kind == "tuple":
        return tuple(_untag(v) for v in payload)
    return payload


def decode_key(text: str) -> Any:
    """The row key back from :func:`encode_key`."""
    return _untag(json.loads(text))


# --------------------------------------------------------------------------- records


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass
class JournalRow:
    """One row as the journal holds it."""

    id: int
    key_text: str
    key: Any
    position: int
    fingerprint: str
    occurrence: int
    generation: int
    run_id: str | None
    status: str
    error: str | None
    error_code: str | None
    request_id: str | None
    attempts: int
    sent_at: dt.datetime | None
    submitted_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclass
class JournalBatch:
    """The batch recorded in a journal: its settings and rows (in position order). The final
    runs stay on disk: :meth:`Journal.final_runs` reads them when asked."""

    id: int
    workflow_id: str
    created_at: dt.datetime | None
    options: dict[str, Any]
    rows: list[JournalRow] = field(default_factory=list)


# --------------------------------------------------------------------------- the journal


class Journal:
    """A batch's SQLite journal; one connection, used from one thread (the batch's loop).

    ``Journal(path)`` opens or creates the file. Writes are plain method calls inside an open
    transaction; :meth:`flush` (async) commits them, grouping the writers of one loop turn;
    :meth:`commit_soon` schedules a commit without waiting; :meth:`commit` commits now.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous}")
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            # A 1 MiB page cache (SQLite's default is 2 MiB): what a batch's writes touch is
            # near the end of its tables; the rest of a client's memory is per row.
            self._conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"Cannot use {str(self.path)!r} as a journal: {exc}. Pass another file name, or "
                "move the damaged file aside"
            ) from exc
        self._lock = threading.RLock()
        self._dirty = False
        # Whether writers awaiting flush() share a commit per loop turn (see flush()).
        self._group_commits = synchronous.upper() in ("FULL", "EXTRA")
        # Row writes waiting for the next commit, by row id: (statement, values). SQLite does
        # them at once, beside the commit, instead of one call each while HTTP work runs.
        self._queued: dict[int, tuple[str, tuple[Any, ...]]] = {}
        self._commit_handle: asyncio.Handle | None = None
        self._commit_loop: asyncio.AbstractEventLoop | None = None  # where that handle runs
        self._attempts = 0  # commits tried with writes pending
        self._failure: tuple[int, str] | None = None  # the last failed attempt, its message
        self.commits = 0

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def _migrate(self) -> None:
        with self._conn:
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                self._conn.executescript(_ROWS)
                self._conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise JournalError(
                    f"The journal {str(self.path)!r} was written by a newer plextera-data "
                    f"(schema {row[0]}, this version reads {SCHEMA_VERSION}); upgrade the library"
                )
            elif row[0] < SCHEMA_VERSION:
                self._conn.executescript(_FROM_V1)
                self._conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    # ------------------------------------------------------------------ reading

    def load(self) -> JournalBatch | None:
        """The batch recorded in this journal, or ``None`` for a new journal."""
        with self._lock:
            self._write_queued()  # a reader of this connection sees its own writes
            head = self._conn.execute(
                "SELECT id, workflow_id, created_at, options FROM batches ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if head is None:
                return None
            batch = JournalBatch(
                id=head[0],
                workflow_id=head[1],
                created_at=_from_iso(head[2]),
                options=json.loads(head[3]),
            )
            for rec in self._conn.execute(
                "SELECT id, row_key, position, fingerprint, occurrence, generation, run_id, "
                "status, error, error_code, request_id, attempts, sent_at, submitted_at, "
                "finished_at FROM rows WHERE batch_id = ? ORDER BY position, id",
                (batch.id,),
            ):
                batch.rows.append(
                    JournalRow(
                        id=rec[0],
                        key_text=rec[1],
                        key=decode_key(rec[1]),
                        position=rec[2],
                        fingerprint=rec[3],
                        occurrence=rec[4],
                        generation=rec[5],
                        run_id=rec[6],
                        status=rec[7],
                        error=rec[8],
                        error_code=rec[9],
                        request_id=rec[10],
                        attempts=rec[11],
                        sent_at=_from_iso(rec[12]),
                        submitted_at=_from_iso(rec[13]),
                        finished_at=_from_iso(rec[14]),
                    )
                )
            return batch

    def final_runs(
        self, batch_id: int, run_ids: Iterable[str] | None = None, *, chunk: int = 500
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(run id, final run JSON)`` of the batch's finished runs (or of ``run_ids``, in that
        order, those it has), read ``chunk`` at a time: a million runs never sit in memory."""
        if run_ids is None:
            last = ""
            while True:
                with self._lock:
                    found = self._conn.execute(
                        "SELECT run_id, final_json FROM runs WHERE batch_id = ? AND run_id > ? "
                        "ORDER BY run_id LIMIT ?",
                        (batch_id, last, chunk),
                    ).fetchall()
                if not found:
                    return
                for run_id, text in found:
                    yield run_id, json.loads(text)
                last = found[-1][0]
        wanted = list(run_ids)
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            marks = ",".join("?" * len(part))
            with self._lock:
                texts = dict(
                    self._conn.execute(
                        f"SELECT run_id, final_json FROM runs WHERE run_id IN ({marks})", part
                    )
                )
            for run_id in part:
                if run_id in texts:
                    yield run_id, json.loads(texts[run_id])

    # ------------------------------------------------------------------ writing

    def create_batch(self, workflow_id: str, options: dict[str, Any]) -> int:
        """Record a new batch and return its id (committed at once)."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO batches (workflow_id, created_at, options) VALUES (?, ?, ?)",
                (
                    workflow_id,
                    dt.datetime.now(dt.UTC).isoformat(),
                    json.dumps(options, sort_keys=True, default=str),
                ),
            )
            self._conn.commit()
            self.commits += 1
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def set_options(self, batch_id: int, options: dict[str, Any]) -> None:
        """Record the settings of the latest submission into this batch (not committed)."""
        with self._lock:
            self._conn.execute(
                "UPDATE batches SET options = ? WHERE id = ?",
                (json.dumps(options, sort_keys=True, default=str), batch_id),
            )
            self._dirty = True

    def add_rows(
        self, batch_id: int, rows: Iterable[tuple[str, int, str, int, int, str]]
    ) -> list[int]:
        """Insert rows ``(key_text, position, fingerprint, occurrence, generation, status)``;
        returns their ids, in order (not committed)."""
        with self._lock:
            first = self._conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM rows").fetchone()[0]
            count = 0
            # Inserted a chunk at a time: a million rows never sit in memory as tuples.
            pending = iter(rows)
            while chunk := list(itertools.islice(pending, _INSERT_CHUNK)):
                self._conn.executemany(
                    "INSERT INTO rows (id, batch_id, row_key, position, fingerprint, occurrence, "
                    "generation, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(first + count + i, batch_id, *row) for i, row in enumerate(chunk)],
                )
                count += len(chunk)
            self._dirty = True
        return list(range(first, first + count))

    def claim_rows(self, rows: Iterable[tuple[int, str, int, int]]) -> None:
        """Give recorded rows ``(id, key_text, position, generation)`` the key and position they
        have in the frame of this submission (not committed)."""
        with self._lock:
            self._conn.executemany(
                "UPDATE rows SET row_key = ?, position = ?, generation = ? WHERE id = ?",
                ((key, position, generation, row_id) for row_id, key, position, generation in rows),
            )
            self._dirty = True

    def save_row(
        self,
        row_id: int,
        *,
        run_id: str | None,
        status: str,
        error: str | None,
        error_code: str | None,
        request_id: str | None,
        attempts: int,
        sent_at: dt.datetime | None,
        submitted_at: dt.datetime | None,
        finished_at: dt.datetime | None,
        identity: tuple[str, int] | None = None,
    ) -> None:
        """Write a row's state (not committed: call :meth:`flush` or :meth:`commit_soon`).
        ``identity``: a new ``(fingerprint, occurrence)`` for the row (new content re-sent);
        left as it is otherwise, so that its index is not rewritten on every change."""
        values = (
            run_id,
            status,
            error,
            error_code,
            request_id,
            attempts,
            _iso(sent_at),
            _iso(submitted_at),
            _iso(finished_at),
        )
        with self._lock:
            if identity is None:
                self._queue(row_id, _UPDATE_ROW_BY_ID, (*values, row_id))
                return
            # Rare (new content re-sent), and it may meet the identity's unique constraint:
            # written now, so that a clash raises here.
            self._write_queued()
            self._conn.execute(
                _UPDATE_ROW + ", fingerprint = ?, occurrence = ? WHERE id = ?",
                (*values, *identity, row_id),
            )
            self._dirty = True

    def save_start(
        self, row_id: int, *, status: str, request_id: str, attempts: int, sent_at: dt.datetime
    ) -> None:
        """Write the state of a row whose start leaves now: ``status``, ``request_id``,
        ``attempts`` and ``sent_at``, with no run id, error, ``submitted_at`` or
        ``finished_at`` (not committed). What :meth:`save_row` writes for such a row, with
        fewer values to convert and bind: this is written once per start."""
        with self._lock:
            self._queue(
                row_id, _UPDATE_START, (status, request_id, attempts, sent_at.isoformat(), row_id)
            )

    def save_accepted(
        self, row_id: int, *, run_id: str, status: str, submitted_at: dt.datetime | None
    ) -> None:
        """Write that the start :meth:`save_start` recorded was accepted: the run id, the
        status and ``submitted_at``, no error; the rest stays as the start left it (not
        committed)."""
        with self._lock:
            self._queue(row_id, _UPDATE_ACCEPTED, (run_id, status, _iso(submitted_at), row_id))

    def uploads(self) -> dict[str, str]:
        """``sha256 -> file id`` of every file uploaded for this journal's batches."""
        with self._lock:
            return dict(self._conn.execute("SELECT sha256, file_id FROM uploads"))

    def save_upload(self, sha256: str, file_id: str, name: str | None, size: int | None) -> None:
        """Remember that content ``sha256`` was uploaded as ``file_id`` (not committed)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO uploads (sha256, file_id, name, size, uploaded_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (sha256, file_id, name, size, dt.datetime.now(dt.UTC).isoformat()),
            )
            self._dirty = True

    def save_final_run(self, batch_id: int, run_id: str, raw: dict[str, Any]) -> None:
        """Keep a finished run's JSON (the first one written wins; not committed)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, batch_id, final_json, recorded_at) "
                "VALUES (?, ?, ?, ?)",
                (
                    run_id,
                    batch_id,
                    json.dumps(raw, ensure_ascii=False, default=str),
                    dt.datetime.now(dt.UTC).isoformat(),
                ),
            )
            self._dirty = True

    def _queue(self, row_id: int, statement: str, values: tuple[Any, ...]) -> None:
        """Keep a row's write for the next commit (under the lock)."""
        if row_id in self._queued:
            self._write_queued()  # this row's writes stay in the order they were made
        self._queued[row_id] = (statement, values)
        self._dirty = True

    def _write_queued(self) -> None:
        """Run the queued row writes: one ``executemany`` per statement (under the lock).
        Each writes one row, by id, so rows may be written in any order."""
        queued, self._queued = self._queued, {}
        if not queued:
            return
        by_statement: dict[str, list[tuple[Any, ...]]] = {}
        for statement, values in queued.values():
            by_statement.setdefault(statement, []).append(values)
        try:
            for statement, rows in by_statement.items():
                self._conn.executemany(statement, rows)
        except sqlite3.Error:
            queued.update(self._queued)  # written again with the next commit (idempotent)
            self._queued = queued
            raise

    # ------------------------------------------------------------------ committing

    def commit(self) -> None:
        """Commit the writes made so far, now."""
        with self._lock:
            if not self._dirty:
                return
            self._attempts += 1
            try:
                self._write_queued()
                self._conn.commit()
            except sqlite3.Error as exc:
                message = f"Cannot write the journal {str(self.path)!r}: {exc}"
                self._failure = (self._attempts, message)
                raise JournalError(message) from exc
            self.commits += 1
            self._dirty = False

    def commit_soon(self) -> None:
        """Commit at the next turn of the running event loop (now if no loop is running)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        # One callback per loop turn at most; one left by a commit made since does nothing.
        if self._commit_handle is None or self._commit_loop is not loop:
            self._commit_handle = loop.call_soon(self._commit_quietly)
            self._commit_loop = loop

    def _commit_quietly(self) -> None:
        self._commit_handle = None
        # A plain commit_soon has no one to tell; a writer awaiting flush() commits (and meets
        # the error) itself.
        with contextlib.suppress(JournalError):
            self.commit()

    async def flush(self) -> None:
        """Commit the writes made so far; when it returns, they are committed.

        With ``synchronous`` OFF or NORMAL (the default) a commit hands the writes to the
        operating system without waiting for the disk (tens of microseconds): it is made at
        once. Waiting a loop turn so that other writers share it costs more than it saves: the
        caller's request would leave a turn later, and such a turn per start costs the client
        more CPU than the commit (measured with ``bench/bench_submit.py``). With FULL or EXTRA,
        a commit waits for the disk (an fsync, milliseconds): the
        caller yields one turn, so that every writer of that turn shares one commit, which is
        made unless a commit was tried meanwhile (that one held the caller's writes). A failed
        commit raises :class:`JournalError` in every caller whose writes it held."""
        if not self._dirty:
            return
        if not self._group_commits:
            self.commit()
            return
        tried = self._attempts
        await asyncio.sleep(0)
        if self._attempts == tried:
            self.commit()
        elif self._failure is not None and self._failure[0] > tried:
            raise JournalError(self._failure[1])

    def close(self) -> None:
        """Commit and close the connection."""
        with self._lock:
            try:
                self.commit()
            finally:
                self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
