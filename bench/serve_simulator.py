"""Serve a simulator on loopback in this process until killed; prints the base URL and key.

    python bench/serve_simulator.py [port]

Used by bench_submit.py to keep the simulator's CPU out of the measured client process.
"""

from __future__ import annotations

import sys
import threading

from plextera_data.simulator import Simulator, StepSpec, Workflow

ECHO = Workflow("echo", "Echo", steps=(StepSpec("Echo", "web_function"),), start_delay=0.0)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sim = Simulator(seed=0, speed=None, workflows=[ECHO])
    with sim.serve(port=port) as server:
        print(server.base_url, sim.api_key, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
