"""The SQLite journal: key round trips, schema version, grouped commits, no secrets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from plextera_data.errors import JournalError
from plextera_data.journal import SCHEMA_VERSION, Journal, decode_key, encode_key


@pytest.mark.parametrize(
    "key",
    [
        0,
        -7,
        1.5,
        "row-1",
        "ü文",
        True,
        None,
        pd.Timestamp("2024-01-15 09:30", tz="UTC"),
        dt.date(2024, 1, 15),
        pd.Timedelta(seconds=3),
        ("a", 1),
        float("nan"),
    ],
)
def test_row_keys_round_trip(key: object) -> None:
    back = decode_key(encode_key(key))
    if isinstance(key, float) and key != key:
        assert back != back
    else:
        assert back == key
        assert type(back) is type(key)


def test_schema_version_and_newer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(JournalError, match="newer plextera-data"):
        Journal(path)


def test_not_a_database_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="Cannot use"):
        Journal(path)


@pytest.mark.parametrize(("synchronous", "commits"), [("NORMAL", 20), ("FULL", 1)])
def test_a_flush_returns_once_its_writes_are_committed(
    tmp_path: Path, synchronous: str, commits: int
) -> None:
    """With NORMAL (the default) a flush commits at once: waiting a loop turn to share the
    commit would cost more than the commit. With FULL (an fsync per commit) the writers of one
    loop turn share one commit. Either way every writer's row is on disk when its flush
    returns."""
    path = tmp_path / "j.db"
    journal = Journal(path, synchronous=synchronous)
    batch_id = journal.create_batch("wf", {})
    keys = [encode_key(i) for i in range(20)]
    ids = journal.add_rows(
        batch_id, ((k, i, "f", i, 0, "NOT_SUBMITTED") for i, k in enumerate(keys))
    )
    journal.commit()
    before = journal.commits

    def on_disk(row_id: int) -> str:
        with contextlib.closing(sqlite3.connect(path)) as other:
            return other.execute("SELECT status FROM rows WHERE id = ?", (row_id,)).fetchone()[0]

    async def writer(row_id: int) -> None:
        journal.save_row(
            row_id,
            run_id=f"r{row_id}",
            status="PROCESSING",
            error=None,
            error_code=None,
            request_id=None,
            attempts=1,
            sent_at=None,
            submitted_at=None,
            finished_at=None,
        )
        await journal.flush()
        assert on_disk(row_id) == "PROCESSING"  # seen by another connection

    async def main() -> None:
        await asyncio.gather(*(writer(i) for i in ids))

    asyncio.run(main())
    assert journal.commits == before + commits
    journal.close()
    loaded = Journal(tmp_path / "j.db").load()
    assert loaded is not None
    assert [r.status for r in loaded.rows] == ["PROCESSING"] * 20
    assert [r.key for r in loaded.rows] == list(range(20))


def test_queued_row_writes_keep_their_order_and_are_read_back_before_the_commit(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.db")
    batch_id = journal.create_batch("wf", {})
    first, second = journal.add_rows(
        batch_id, ((encode_key(k), i, f"f{i}", 0, 0, "NOT_SUBMITTED") for i, k in enumerate("ab"))
    )
    journal.commit()
    sent = dt.datetime(2026, 11, 29, 4, 0, tzinfo=dt.UTC)
    journal.save_start(first, status="SUBMITTING", request_id="pxd_1", attempts=1, sent_at=sent)
    journal.save_start(second, status="SUBMITTING", request_id="pxd_2", attempts=1, sent_at=sent)
    journal.save_accepted(first, run_id="run-a", status="PROCESSING", submitted_at=sent)
    loaded = journal.load()  # this connection reads its own writes, queued or not
    assert loaded is not None
    a, b = loaded.rows
    assert (a.status, a.run_id, a.request_id, a.attempts) == ("PROCESSING", "run-a", "pxd_1", 1)
    assert (a.sent_at, a.submitted_at) == (sent, sent)
    assert (b.status, b.run_id, b.request_id) == ("SUBMITTING", None, "pxd_2")
    journal.close()
    again = Journal(tmp_path / "j.db").load()
    assert again is not None
    assert [(r.status, r.run_id) for r in again.rows] == [
        ("PROCESSING", "run-a"),
        ("SUBMITTING", None),
    ]


def test_a_failed_grouped_commit_raises_in_every_writer_it_held(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db", synchronous="FULL")
    batch_id = journal.create_batch("wf", {})
    ids = journal.add_rows(
        batch_id, ((encode_key(i), i, "f", i, 0, "NOT_SUBMITTED") for i in range(3))
    )
    journal.commit()

    class Failing:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> object:
            return getattr(self.conn, name)

        def commit(self) -> None:
            raise sqlite3.OperationalError("disk I/O error")

    before = journal.commits
    journal._conn = Failing(journal._conn)  # type: ignore[assignment]
    sent = dt.datetime(2026, 11, 29, 4, 0, tzinfo=dt.UTC)

    async def writer(row_id: int) -> None:
        journal.save_start(
            row_id, status="SUBMITTING", request_id="pxd_x", attempts=1, sent_at=sent
        )
        await journal.flush()

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(writer(i) for i in ids), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, JournalError) for o in outcomes), outcomes
    assert journal.commits == before


V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE batches (id INTEGER PRIMARY KEY, workflow_id TEXT NOT NULL, created_at TEXT NOT NULL,
    options TEXT NOT NULL, frame_fingerprint TEXT);
CREATE TABLE rows (batch_id INTEGER NOT NULL REFERENCES batches(id), row_key TEXT NOT NULL,
    key_type TEXT NOT NULL, position INTEGER NOT NULL, fingerprint TEXT NOT NULL, run_id TEXT,
    status TEXT NOT NULL, error TEXT, request_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT, finished_at TEXT, PRIMARY KEY (batch_id, row_key));
CREATE INDEX rows_by_run ON rows (run_id);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, batch_id INTEGER NOT NULL REFERENCES batches(id),
    final_json TEXT NOT NULL, recorded_at TEXT NOT NULL);
INSERT INTO batches VALUES (1, 'wf', '2026-11-28T10:00:00+00:00', '{"sep": "."}', 'x');
INSERT INTO rows VALUES (1, '"a"', 'str', 0, 'f1', 'run-a', 'COMPLETED', NULL, 'pxd_1', 1,
    '2026-11-28T10:00:01+00:00', '2026-11-28T10:00:09+00:00');
INSERT INTO rows VALUES (1, '"b"', 'str', 1, 'f1', NULL, 'SUBMITTING', NULL, 'pxd_2', 1, NULL,
    NULL);
INSERT INTO rows VALUES (1, '"c"', 'str', 2, 'f2', 'run-c', 'PROCESSING', NULL, 'pxd_3', 2,
    '2026-11-28T10:00:02+00:00', NULL);
INSERT INTO runs VALUES ('run-a', 1, '{"id": "run-a", "status": "COMPLETED"}', '2026-11-28');
"""


def test_a_version_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.plextera.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    journal = Journal(path)
    loaded = journal.load()
    assert loaded is not None
    assert [r.key for r in loaded.rows] == ["a", "b", "c"]
    # Identical requests become distinct starts, numbered in the order of their rows.
    assert [(r.fingerprint, r.occurrence) for r in loaded.rows] == [
        ("f1", 0),
        ("f1", 1),
        ("f2", 0),
    ]
    assert [r.status for r in loaded.rows] == ["COMPLETED", "SUBMITTING", "PROCESSING"]
    assert loaded.rows[2].attempts == 2
    assert dict(journal.final_runs(loaded.id)) == {"run-a": {"id": "run-a", "status": "COMPLETED"}}
    journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        columns = {row[1] for row in db.execute("PRAGMA table_info(rows)")}
        assert "key_type" not in columns
        assert {"occurrence", "generation", "sent_at", "error_code"} <= columns
