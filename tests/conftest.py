"""Shared fixtures: a simulator (in-process or served on loopback) and clients for it.

``sim`` has a manual clock (nothing moves until ``sim.clock.advance``) and the ``echo``
workflow (one step of 1 s) beside the built-in ones; ``client`` talks to it in-process.
``served`` serves it on loopback; ``served_client`` talks to that. ``fast_sim`` runs 100x
faster than real time, for tests that wait on runs; ``fast_client`` talks to it on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import plextera_data as px
from plextera_data.simulator import Simulator, SimulatorServer, StepSpec, Workflow

#: A one-step workflow that starts at once: the simplest thing to submit.
ECHO = Workflow(
    "echo", "Echo", steps=(StepSpec("Echo", "web_function", duration=1.0),), start_delay=0.0
)

FAST_SPEED = 100.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=0, speed=None, workflows=[ECHO]) as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> Iterator[px.Client]:
    with px.Client(**sim.client_options()) as in_process:
        yield in_process


@pytest.fixture
def served(sim: Simulator) -> Iterator[SimulatorServer]:
    with sim.serve() as server:
        yield server


@pytest.fixture
def served_client(served: SimulatorServer) -> Iterator[px.Client]:
    with px.Client(**served.client_options()) as on_loopback:
        yield on_loopback


@pytest.fixture
def fast_sim() -> Iterator[Simulator]:
    with Simulator(seed=7, speed=FAST_SPEED) as simulator:
        yield simulator


@pytest.fixture
def fast_client(fast_sim: Simulator) -> Iterator[px.Client]:
    with fast_sim.serve() as server, px.Client(**server.client_options()) as on_loopback:
        yield on_loopback
