"""A local, faithful, deterministic simulator of the Plextera Workflow Runs API.

    from plextera_data.simulator import Simulator

    sim = Simulator(seed=0, speed=50.0)          # 50 simulated seconds per wall second
    with sim.serve() as server:                  # uvicorn on loopback, background thread
        print(server.base_url)                   # http://127.0.0.1:<port>/api/public/v1

    transport = sim.transport()                  # or in-process, through httpx's ASGI transport

See docs/guide/simulator.md for the workflows, the input flags that force outcomes, the faults and
the request accounting.
"""

from __future__ import annotations

from plextera_data.simulator.app import API_PREFIX, ConnectionDroppedError, SimulatorApp
from plextera_data.simulator.clock import DEFAULT_EPOCH, SimClock
from plextera_data.simulator.core import DEFAULT_API_KEY, Simulator, Subscription
from plextera_data.simulator.faults import FAULT_KINDS, Fault, parse_faults
from plextera_data.simulator.runs import RunRecord, StepPlan
from plextera_data.simulator.server import SimulatorServer
from plextera_data.simulator.stats import SimStats
from plextera_data.simulator.workflows import NestedSpec, StepSpec, Workflow, builtin_workflows

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "DEFAULT_EPOCH",
    "FAULT_KINDS",
    "ConnectionDroppedError",
    "Fault",
    "NestedSpec",
    "RunRecord",
    "SimClock",
    "SimStats",
    "Simulator",
    "SimulatorApp",
    "SimulatorServer",
    "StepPlan",
    "StepSpec",
    "Subscription",
    "Workflow",
    "builtin_workflows",
    "parse_faults",
]
