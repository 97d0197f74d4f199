"""plextera-data: run Plextera workflows over the rows of a DataFrame, get tidy tables back.

    import plextera_data as px

    batch = px.submit(df, "daily-lab-loader", journal="labs.plextera.db")
    batch.wait()
    tables = batch.tables()          # runs, steps, outputs
    tables.to_parquet("out/")

The public names are imported lazily, so ``import plextera_data`` stays fast and does not pull in
pandas or httpx until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from plextera_data import errors
from plextera_data._version import __version__
from plextera_data.models import TERMINAL_STATUSES, Run, RunError, Step

if TYPE_CHECKING:
    from plextera_data.batch import Batch
    from plextera_data.client import AsyncClient, Client
    from plextera_data.flatten import Tables, flatten
    from plextera_data.submit import resume, submit

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncClient",
    "Batch",
    "Client",
    "Run",
    "RunError",
    "Step",
    "Tables",
    "__version__",
    "errors",
    "flatten",
    "resume",
    "submit",
]

_LAZY = {
    "AsyncClient": "plextera_data.client",
    "Client": "plextera_data.client",
    "Batch": "plextera_data.batch",
    "Tables": "plextera_data.flatten",
    "flatten": "plextera_data.flatten",
    "resume": "plextera_data.submit",
    "submit": "plextera_data.submit",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'plextera_data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
