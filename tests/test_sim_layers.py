"""The simulator's layers and its ways in: no import back up, client options, its own header."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx

import plextera_data as px
from plextera_data.simulator import SPEED_HEADER, Simulator, SimulatorState

PACKAGE = Path(__file__).resolve().parents[1] / "plextera_data" / "simulator"

#: Each module of the simulator and the simulator modules it may import (any depth).
LAYERS = {
    "clock": set(),
    "ids": set(),
    "faults": set(),
    "stats": set(),
    "workflows": {"files"},
    "files": {"clock"},
    "runs": {"clock", "ids", "files", "workflows"},
    "state": {"clock", "ids", "faults", "files", "stats", "workflows", "runs"},
    "app": {"faults", "files", "state"},
    "delivery": {"clock", "ids", "runs", "state", "stats"},
    "server": {"app", "state"},
    "core": {"app", "delivery", "ids", "server", "state"},
}


def _imports(path: Path) -> set[str]:
    """Every module named by an import in ``path``, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_each_module_imports_only_the_layers_below_it() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == set(LAYERS)
    for name, allowed in LAYERS.items():
        imported = _imports(PACKAGE / f"{name}.py")
        inside = {
            module.removeprefix("plextera_data.simulator.").split(".")[0]
            for module in imported
            if module.startswith("plextera_data.simulator.")
        }
        assert inside <= allowed, f"simulator.{name} imports {sorted(inside - allowed)}"
        outside = {
            module
            for module in imported
            if module.startswith("plextera_data") and not module.startswith("plextera_data.sim")
        }
        assert outside <= {
            "plextera_data._serving",
            "plextera_data._serving.BackgroundServer",
            "plextera_data._serving.url_host",
        }, (name, outside)


def test_client_options_in_process_reach_the_simulator() -> None:
    sim = Simulator(seed=1, speed=None)
    options = sim.client_options(timeout=5.0)
    assert set(options) == {"api_key", "base_url", "transport", "clock_rate", "timeout"}
    assert options["clock_rate"] == 1.0  # a manual clock
    assert Simulator(speed=40).client_options()["clock_rate"] == 40.0
    assert sim.client_options(api_key="other")["api_key"] == "other"
    assert sim.client_options()["transport"] is not options["transport"]  # a fresh transport
    options.pop("clock_rate")  # the client on this branch does not take it yet
    with px.Client(**options) as client:
        run = client.start_run("daily-lab-loader", json={"sampleId": "s-1"})
        sim.clock.advance(60)
        assert client.get_run(run.id).status == "COMPLETED"
    assert sim.stats.posts == {"daily-lab-loader": 1}


def test_server_client_options_and_the_speed_header() -> None:
    sim = Simulator(seed=1, speed=25)
    with sim.serve() as server:
        options = server.client_options()
        assert options == {"api_key": sim.api_key, "base_url": server.base_url, "clock_rate": 25.0}
        headers = {"Authorization": f"api-key {sim.api_key}"}
        answer = httpx.get(f"{server.base_url}/workflow-runs", headers=headers)
        assert answer.headers[SPEED_HEADER] == "25"
        assert server.stats is sim.stats  # the server reaches its simulator's state
    assert SPEED_HEADER == "X-Plextera-Simulator-Speed"
    assert isinstance(sim, SimulatorState)


def test_a_manual_clock_sends_no_speed_header() -> None:
    sim = Simulator(seed=1, speed=None)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=sim.transport(),
            base_url=sim.in_process_base_url,
            headers={"Authorization": f"api-key {sim.api_key}"},
        ) as http:
            return await http.get("/workflow-runs")

    assert SPEED_HEADER.lower() not in asyncio.run(go()).headers
