"""Reruns with the journal recognise a start by its request's content, not only by its row key:
the same rows under another index, reordered, as a subset or superset, duplicated, or under a
MultiIndex, start no second run (the simulator's accounting proves it)."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import plextera_data as px
from plextera_data.simulator import Simulator

# ``sim`` (manual clock, with the ``echo`` workflow) and ``client`` come from conftest.py.


def customers(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {"customerId": [f"c-{i:03d}" for i in range(n)], "amount": [10 * i for i in range(n)]}
    )


def runs_per_customer(sim: Simulator) -> Counter[str]:
    return Counter(body["customerId"] for _, body in sim.created_runs("echo"))


def submit(df: pd.DataFrame, client: px.Client, journal: Path) -> px.Batch:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return px.submit(df, "echo", client=client, journal=journal, progress=False)


def run_ids(batch: px.Batch) -> dict[str, str]:
    """customerId -> run id, from the batch's own frame."""
    assert batch.frame is not None
    return dict(zip(batch.frame["customerId"], batch.status["run_id"], strict=True))


def test_same_rows_under_another_index_start_nothing(
    sim: Simulator, client: px.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    df = customers()
    first = submit(df, client, journal)
    with pytest.warns(UserWarning, match="20 rows match starts the journal recorded under other"):
        again = px.submit(
            df.set_index("customerId", drop=False),
            "echo",
            client=client,
            journal=journal,
            progress=False,
        )
    assert sim.stats.post_attempts["echo"] == 20
    assert runs_per_customer(sim) == Counter({c: 1 for c in df["customerId"]})
    assert len(again.adopted) == 20
    assert again.adopted["c-003"] == 3  # new key -> old key
    assert run_ids(again) == run_ids(first)
    assert list(again.status.index) == list(df["customerId"])
    assert "adopted" in again._repr_html_()


def test_reordered_rows_under_a_fresh_range_index_are_recognised(
    sim: Simulator, client: px.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    df = customers()
    first = submit(df, client, journal)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = submit(shuffled, client, journal)
    assert sim.stats.post_attempts["echo"] == 20
    assert again.changed_rows == []
    assert run_ids(again) == run_ids(first)


def test_a_subset_then_a_superset_send_only_what_is_new(
    sim: Simulator, client: px.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    df = customers(30)
    first = submit(df.iloc[5:15].reset_index(drop=True), client, journal)
    assert sim.stats.post_attempts["echo"] == 10
    bigger = submit(df, client, journal)
    assert sim.stats.post_attempts["echo"] == 30
    assert runs_per_customer(sim) == Counter({c: 1 for c in df["customerId"]})
    for customer, run_id in run_ids(first).items():
        assert run_ids(bigger)[customer] == run_id
    smaller = submit(df.iloc[:3], client, journal)
    assert sim.stats.post_attempts["echo"] == 30
    assert run_ids(smaller) == {c: run_ids(bigger)[c] for c in df["customerId"][:3]}


def test_identical_rows_are_distinct_starts_and_are_recognised_as_such(
    sim: Simulator, client: px.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    same = pd.DataFrame({"customerId": ["c-1"] * 3 + ["c-2"], "amount": [5, 5, 5, 7]})
    first = submit(same, client, journal)
    assert sim.stats.post_attempts["echo"] == 4
    assert len(set(first.status["run_id"])) == 4  # three identical requests, three runs
    again = submit(same.iloc[::-1].reset_index(drop=True), client, journal)
    assert sim.stats.post_attempts["echo"] == 4
    assert set(again.status["run_id"]) == set(first.status["run_id"])
    four = submit(pd.concat([same, same.iloc[:1]], ignore_index=True), client, journal)
    assert sim.stats.post_attempts["echo"] == 5  # a fourth identical row is a new start
    assert four.status["run_id"].nunique() == 5


def test_a_multiindex_rerun_keeps_its_runs(
    sim: Simulator, client: px.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    df = customers(12)
    df["region"] = ["north", "south", "east"] * 4
    indexed = df.set_index(["region", "customerId"], drop=False)
    first = submit(indexed, client, journal)
    again = submit(indexed.iloc[::-1], client, journal)
    plain = submit(df, client, journal)
    assert sim.stats.post_attempts["echo"] == 12
    assert run_ids(again) == run_ids(first) == run_ids(plain)
    resumed = px.resume(journal, client=client)
    assert sorted(resumed.status["run_id"]) == sorted(run_ids(first).values())


def test_changed_content_under_the_same_key_is_still_reported(
    sim: Simulator, client: px.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    df = customers(5)
    submit(df, client, journal)
    changed = df.copy()
    changed.loc[2, "amount"] = 999
    with pytest.warns(UserWarning, match="1 rows differ"):
        batch = px.submit(changed, "echo", client=client, journal=journal, progress=False)
    assert batch.changed_rows == [2]
    assert sim.stats.post_attempts["echo"] == 5


def test_resume_after_a_rerun_under_other_keys_shows_the_latest_keys(
    sim: Simulator, client: px.Client, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    df = customers(6)
    submit(df, client, journal)
    submit(df.set_index("customerId", drop=False), client, journal)
    resumed = px.resume(journal, client=client)
    assert list(resumed.status.index) == list(df["customerId"])
    assert resumed.status["run_id"].notna().all()
    resumed.resubmit(["c-001"], frame=df.set_index("customerId", drop=False))
    assert runs_per_customer(sim)["c-001"] == 2  # asked for: a second run, on purpose
    assert sim.stats.post_attempts["echo"] == 7
