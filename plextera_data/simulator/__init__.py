"""A local, faithful, deterministic simulator of the Plextera Workflow Runs API.

    from plextera_data.simulator import Simulator

    sim = Simulator(seed=0, speed=50.0)          # 50 simulated seconds per wall second
    with sim.serve() as server:                  # uvicorn on loopback, background thread
        print(server.base_url)                   # http://127.0.0.1:<port>/api/public/v1
        client = px.Client(**server.client_options())

    client = px.Client(**sim.client_options())   # or in-process, through httpx's ASGI transport

Layers, bottom to top (each imports only those below it): ``clock``, ``ids``, ``faults``,
``files``, ``stats``, ``workflows``, ``runs``; ``state`` (the simulated workspace); ``app`` (the
ASGI app on the state) and ``delivery`` (events, and their deliveries to subscriptions);
``server`` (the app on a port); ``core`` (:class:`Simulator`, the face). Nothing here imports the
client, the engines or ``plextera_data.events``.

See docs/guide/simulator.md for the workflows, the input flags that force outcomes, the faults and
the request accounting.
"""

from __future__ import annotations

from plextera_data.simulator.app import (
    API_PREFIX,
    SPEED_HEADER,
    ConnectionDroppedError,
    SimulatorApp,
)
from plextera_data.simulator.clock import DEFAULT_EPOCH, SimClock
from plextera_data.simulator.core import Simulator
from plextera_data.simulator.delivery import DeliveryAttempt, DeliveryOptions, EventDeliveries
from plextera_data.simulator.faults import FAULT_KINDS, Fault, parse_faults
from plextera_data.simulator.runs import RunRecord, StepPlan
from plextera_data.simulator.server import SimulatorServer
from plextera_data.simulator.state import DEFAULT_API_KEY, SimulatorState, Subscription
from plextera_data.simulator.stats import SimStats
from plextera_data.simulator.workflows import NestedSpec, StepSpec, Workflow, builtin_workflows

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "DEFAULT_EPOCH",
    "FAULT_KINDS",
    "SPEED_HEADER",
    "ConnectionDroppedError",
    "DeliveryAttempt",
    "DeliveryOptions",
    "EventDeliveries",
    "Fault",
    "NestedSpec",
    "RunRecord",
    "SimClock",
    "SimStats",
    "Simulator",
    "SimulatorApp",
    "SimulatorServer",
    "SimulatorState",
    "StepPlan",
    "StepSpec",
    "Subscription",
    "Workflow",
    "builtin_workflows",
    "parse_faults",
]
