"""``EventStore``: one row per event id, the latest run per run id, safe to share and to reopen."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from vendor_examples import VENDOR_FAILED_EVENT

import plextera_data as px
from plextera_data.events import EventStore, parse_event


def _event(
    event_id: str, run_id: str, status: str, occurred_at: str, **data: Any
) -> px.events.Event:
    kind = "workflow.run.completed" if status == "COMPLETED" else "workflow.run.failed"
    return parse_event(
        {
            "eventId": event_id,
            "eventType": kind,
            "occurredAt": occurred_at,
            "apiVersion": "v1",
            "data": {"id": run_id, "status": status, **data},
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "events.db")


def test_a_redelivered_event_is_stored_once_and_counted(store: EventStore) -> None:
    event = _event("evt_1", "run_1", "COMPLETED", "2026-04-07T10:12:30Z", steps=[])
    assert store.add(event, delivery_id="dlv_1") is True
    for attempt in range(2, 6):
        assert store.add(event, delivery_id=f"dlv_{attempt}") is False
    assert len(store) == 1
    assert "evt_1" in store
    assert "evt_2" not in store
    assert store.delivery_count("evt_1") == 5
    assert store.delivery_count("evt_2") == 0
    [stored] = list(store)
    assert stored.event_id == "evt_1"
    assert stored.raw == event.raw


def test_the_raw_body_is_kept_as_received(store: EventStore) -> None:
    body = json.dumps(VENDOR_FAILED_EVENT, indent=2).encode()
    store.add(parse_event(body), body=body)
    raw = sqlite3.connect(store.path).execute("SELECT body FROM events").fetchone()[0]
    assert bytes(raw) == body
    [run] = store.runs()
    assert run.id == "69d224901610662a576cd7e6"  # data.runId, as in the vendor's example
    assert run.status == "FAILED"
    assert store.terminal_run(run.id) == run


def test_runs_keep_the_latest_per_run_whatever_the_arrival_order(store: EventStore) -> None:
    later = _event("evt_b", "run_1", "COMPLETED", "2026-04-07T10:20:00Z")
    earlier = _event("evt_a", "run_1", "FAILED", "2026-04-07T10:10:00Z")
    other = _event("evt_c", "run_2", "FAILED", "2026-04-07T10:15:00Z")
    for event in (later, other, earlier):  # the older event of run_1 arrives last
        assert store.add(event)
    assert [(run.id, run.status) for run in store.runs()] == [
        ("run_1", "COMPLETED"),
        ("run_2", "FAILED"),
    ]
    assert len(store) == 3  # every event is kept
    assert store.terminal_run("run_1").status == "COMPLETED"  # type: ignore[union-attr]
    assert store.terminal_run("run_nope") is None


def test_terminal_runs_in_bulk_and_non_terminal_runs(store: EventStore) -> None:
    for n in range(700):  # more than one 500-id query
        status = "COMPLETED" if n % 3 else "PROCESSING"
        store.add(_event(f"evt_{n}", f"run_{n}", status, "2026-04-07T10:12:30Z"))
    found = store.terminal_runs(f"run_{n}" for n in range(0, 1400, 2))
    assert set(found) == {f"run_{n}" for n in range(0, 700, 2) if n % 3}
    assert all(run.status == "COMPLETED" for run in found.values())


def test_read_since_gives_only_what_is_new(store: EventStore) -> None:
    assert store.read_since(0) == ([], 0)
    store.add(_event("evt_1", "r1", "COMPLETED", "2026-04-07T10:00:00Z"))
    store.add(_event("evt_2", "r2", "COMPLETED", "2026-04-07T10:00:00Z"))
    events, cursor = store.read_since(0)
    assert [e.event_id for e in events] == ["evt_1", "evt_2"]
    store.add(_event("evt_2", "r2", "COMPLETED", "2026-04-07T10:00:00Z"))  # duplicate
    store.add(_event("evt_3", "r3", "FAILED", "2026-04-07T10:00:00Z"))
    events, cursor = store.read_since(cursor)
    assert [e.event_id for e in events] == ["evt_3"]
    assert store.read_since(cursor) == ([], cursor)
    assert store.cursor == cursor
    assert [e.event_id for e in store.events(after=1)] == ["evt_2", "evt_3"]


def test_threads_adding_the_same_events_store_each_once(store: EventStore) -> None:
    events = [
        _event(f"evt_{n}", f"run_{n}", "COMPLETED", "2026-04-07T10:00:00Z") for n in range(200)
    ]
    new: list[bool] = []
    lock = threading.Lock()

    def deliver(offset: int) -> None:
        for index in range(len(events)):
            found = store.add(events[(index + offset) % len(events)])
            with lock:
                new.append(found)

    threads = [threading.Thread(target=deliver, args=(k * 37,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(new) == 200  # each event new exactly once
    assert len(new) == 800
    assert len(store) == 200
    assert all(store.delivery_count(f"evt_{n}") == 4 for n in range(200))


def test_a_second_connection_reads_while_the_first_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    writer, reader = EventStore(path), EventStore(path, timeout=5)
    for n in range(50):
        writer.add(_event(f"evt_{n}", f"run_{n}", "COMPLETED", "2026-04-07T10:00:00Z"))
        assert len(reader) == n + 1  # each add is committed when it returns
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.close()
    with EventStore(path) as reopened:
        assert len(reopened) == 50
        assert reopened.add(_event("evt_0", "run_0", "COMPLETED", "2026-04-07T10:00:00Z")) is False


def test_px_events_is_the_module() -> None:
    assert px.events.EventStore is EventStore
    assert repr(EventStore(":memory:")) == "EventStore(':memory:')"
