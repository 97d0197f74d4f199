"""plextera-data: run Plextera workflows over the rows of a DataFrame, get tidy tables back.

    import plextera_data as px

    batch = px.submit(df, "daily-lab-loader", journal="labs.plextera.db")
    batch.wait()
    tables = batch.tables()          # runs, steps, outputs
    tables.to_parquet("out/")

Every public name is re-exported here; each concern lives in the module named after it.
"""

from __future__ import annotations

from plextera_data import errors, events
from plextera_data._version import __version__
from plextera_data.batch import Batch
from plextera_data.client import AsyncClient, Client
from plextera_data.flatten import Tables, flatten
from plextera_data.models import TERMINAL_STATUSES, Run, RunError, Step

# Imported last and bound explicitly: importing a submodule sets the package attribute of the same
# name to the module, and these two functions share their modules' names.
from plextera_data.submit import resume, submit  # isort: skip
from plextera_data.flatten import flatten  # isort: skip  # noqa: F811

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
    "events",
    "flatten",
    "resume",
    "submit",
]
