"""Write notebooks/quickstart.ipynb and notebooks/bulk-analysis.ipynb and execute them in place.

    python scripts/make_notebooks.py            # needs .[test] (nbformat, nbclient, ipykernel)

The notebooks are committed with their outputs (a reader on the web sees the plots) and run as
tests by nbval (``python -m pytest``), which compares each cell's fresh output with the stored
one after the notebooks/sanitize.cfg rewrites (run ids, timestamps, ports, temporary paths).
Keep their outputs deterministic: a seeded simulator (it plans each run from its input, not its
arrival order, so concurrent starts give the same results), frames sorted before display, no
wall-clock values. Only the live progress cells are tagged ``nbval-ignore-output``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IGNORE_OUTPUT = {"tags": ["nbval-ignore-output"]}

SETUP = """\
import os

import pandas as pd

import plextera_data as px

pd.set_option("display.width", 120)
pd.set_option("display.max_colwidth", None)  # error messages in full
if os.environ.get("PLEXTERA_API_KEY") and os.environ.get("PLEXTERA_BASE_URL"):
    server = None
    client = px.Client()  # your key and base URL, from the environment
else:
    from plextera_data.simulator import Simulator

    # The local simulator of the API, seeded (the same runs every time) and 100x faster than
    # real time. `plextera-data simulator` serves the same thing from a terminal.
    server = Simulator(seed=42, speed=100).serve().start()
    client = px.Client(api_key=server.api_key, base_url=server.base_url)
client"""


def quickstart() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# plextera-data quickstart\n\n"
            "Start Plextera workflow runs, wait for them, look at the result, and flatten it into "
            "tidy tables. With `PLEXTERA_API_KEY` and `PLEXTERA_BASE_URL` set this talks to "
            "your Plextera workspace; without them it starts the local simulator, so the "
            "notebook runs anywhere with no key."
        ),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## A run started with JSON\n\n"
            "`start_run` returns as soon as the API accepted the run: its status is "
            "`PROCESSING`. The JSON body is whatever the workflow expects."
        ),
        new_code_cell(
            'run = client.start_run(\n    "daily-lab-loader",\n'
            '    json={"customerId": "customer-42", '
            '"document": {"fileId": "file_01JY7M4ZVX5R1P3M3Q0TA1S7ZM"}},\n)\n'
            "run.status, run.workflow_id"
        ),
        new_markdown_cell(
            "`client.wait` polls until the run is `COMPLETED`, `FAILED` or `CLOSED` and "
            "returns it (a failed run is returned, not raised)."
        ),
        new_code_cell("run = client.wait(run.id, timeout=120, poll_interval=0.2)\nrun"),
        new_code_cell("[(step.name, step.type, step.status, step.output) for step in run.steps]"),
        new_markdown_cell(
            "## A run started with a file (multipart)\n\n"
            "`fields=` and `files=` make a `multipart/form-data` start: text fields plus file "
            "parts, which Plextera uploads to its File Service and hands to the workflow as "
            "file nodes. The package ships a few small claim PDFs to try it."
        ),
        new_code_cell(
            "from plextera_data.demo import sample_path\n\n"
            'document = sample_path("claim-documents/claim-9001.pdf")\n'
            "claim = client.start_run(\n"
            '    "incoming-claim",\n'
            '    fields={"claimId": "claim-9001", "state": "CT"},\n'
            '    files={"document": document},\n'
            ")\n"
            "claim = client.wait(claim.id, timeout=120, poll_interval=0.2)\n"
            "claim.status, [step.name for step in claim.steps]"
        ),
        new_code_cell("claim.steps[0].output"),
        new_markdown_cell(
            "## Flatten\n\n"
            "`px.flatten` turns runs (or raw JSON, or event payloads) into three tidy tables: "
            "`runs`, `steps` and `outputs` (one row per leaf of a step's output, with one typed "
            "value column per JSON type)."
        ),
        new_code_cell("tables = px.flatten([run, claim])\ntables"),
        new_markdown_cell(
            "Each leaf's value sits in the column of its type (`value_str`, `value_int`, "
            "`value_float`, `value_bool`; `value_json` for the rest), so integers stay integers."
        ),
        new_code_cell(
            'tables.outputs[["step_name", "path", "value_type", "value_str", "value_int",\n'
            '                "value_float", "value_bool"]]'
        ),
        new_code_cell("tables.outputs_wide().T"),
        new_markdown_cell(
            "## Many runs: a DataFrame\n\n"
            "`px.submit` starts one run per row and `wait=True` polls them together, with a "
            "progress display."
        ),
        new_code_cell(
            "labs = pd.DataFrame(\n"
            '    {"customerId": [f"customer-{n}" for n in range(1, 9)]},\n'
            '    index=pd.Index([f"sample-{n}" for n in range(1, 9)], name="sample"),\n'
            ")\n"
            'batch = px.submit(labs, "daily-lab-loader", client=client, '
            "wait=True)",
            metadata=IGNORE_OUTPUT,
        ),
        new_code_cell('batch.status[["status", "attempts"]]'),
        new_code_cell(
            'batch.results()[["customerId", "status", "Extract Lab Result / fieldCount"]]'
        ),
        new_code_cell("if server is not None:\n    server.stop()"),
    ]
    return new_notebook(cells=cells, metadata=_metadata())


def bulk_analysis() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# Bulk analysis: a few hundred runs, then pandas, matplotlib and DuckDB\n\n"
            "We send 300 insurance claims through `incoming-claim` and 200 lab results through "
            "`daily-lab-loader` (both sample files ship with the package), with a journal, "
            "watch them finish, then ask: what failed, where, and why? How long do runs take? "
            "What did the workflows extract, next to the input rows? Finally we export the "
            "tables to parquet and query them with DuckDB."
        ),
        new_code_cell("%matplotlib inline\n" + SETUP),
        new_code_cell(
            "import matplotlib.pyplot as plt\n\n"
            "from plextera_data.demo import load_sample\n\n"
            'claims = load_sample("claims")  # indexed by claimId\n'
            'labs = load_sample("lab-results")  # indexed by sampleId\n'
            "claims.shape, labs.shape"
        ),
        new_code_cell("claims.head()"),
        new_markdown_cell(
            "## Submit with a journal, watch the progress\n\n"
            "The journal (SQLite) records every accepted run id before anything else happens: "
            "if the kernel dies, `px.resume(path)` picks the batch up and no row is ever sent "
            "twice."
        ),
        new_code_cell(
            "import tempfile\nfrom pathlib import Path\n\n"
            'workdir = Path(tempfile.mkdtemp(prefix="plextera-bulk-"))\n'
            "claims_batch = px.submit(\n"
            '    claims, "incoming-claim", client=client, wait=True,\n'
            '    journal=workdir / "claims.plextera.db",\n'
            ")\n"
            "labs_batch = px.submit(\n"
            '    labs, "daily-lab-loader", client=client, wait=True,\n'
            '    journal=workdir / "labs.plextera.db",\n'
            ")",
            metadata=IGNORE_OUTPUT,
        ),
        new_code_cell(
            'claims_batch.status["status"].value_counts().sort_index(), '
            'labs_batch.status["status"].value_counts().sort_index()'
        ),
        new_markdown_cell(
            "## Failure rate per workflow and per step\n\n"
            "Each batch gives `runs`, `steps` and `outputs`; every table carries `row_key`, the "
            "input row's index value."
        ),
        new_code_cell(
            "claims_tables = claims_batch.tables()\n"
            "labs_tables = labs_batch.tables()\n"
            "runs = pd.concat([claims_tables.runs, labs_tables.runs], ignore_index=True)\n"
            "steps = pd.concat([claims_tables.steps, labs_tables.steps], ignore_index=True)\n\n"
            'per_workflow = runs.groupby("workflow_id")["status"].value_counts().unstack('
            "fill_value=0)\n"
            'per_workflow["failure rate"] = (per_workflow.get("FAILED", 0) / '
            "per_workflow.sum(axis=1)).round(3)\n"
            "per_workflow"
        ),
        new_code_cell(
            'per_step = steps.groupby(["name", "status"]).size().unstack(fill_value=0)\n'
            'per_step["failure rate"] = (per_step.get("FAILED", 0) / per_step.sum(axis=1))'
            ".round(3)\n"
            "per_step.sort_index()"
        ),
        new_code_cell(
            'failed = runs[runs["status"] == "FAILED"]\n'
            'failed.groupby(["workflow_id", "error_code", "error_message"]).size()'
            '.rename("runs").reset_index()'
        ),
        new_markdown_cell(
            "Which claims fail? Joining the runs back to the input by `row_key` shows it at "
            "once: claims from states the router does not serve always fail, the others only "
            "when the document is missing."
        ),
        new_code_cell(
            "from matplotlib.ticker import MaxNLocator, PercentFormatter\n\n"
            'claim_runs = claims_tables.runs.query("depth == 0").set_index("row_key")\n'
            "by_state = (\n"
            '    claims.join(claim_runs["status"])\n'
            '    .assign(failed=lambda frame: frame["status"] == "FAILED")\n'
            '    .groupby("state")["failed"].agg(failed="sum", runs="size")\n'
            '    .assign(rate=lambda frame: frame["failed"] / frame["runs"])\n'
            '    .sort_values(["rate", "runs"], ascending=False)\n'
            ")\n"
            "fig, ax = plt.subplots(figsize=(9, 3.4))\n"
            'bars = ax.bar(by_state.index, by_state["rate"], color="#2e86c1")\n'
            "# Every state gets its label, those without a failure too (a bar of height 0).\n"
            'labels = [f"{f}/{n}" for f, n in zip(by_state["failed"], by_state["runs"])]\n'
            "ax.bar_label(bars, labels=labels, padding=2, fontsize=8)\n"
            'ax.set_xlabel("state of the claim")\n'
            'ax.set_ylabel("runs that failed")\n'
            "ax.yaxis.set_major_formatter(PercentFormatter(1.0))\n"
            "ax.set_ylim(0, 1.15)\n"
            'ax.set_title("incoming-claim: failed runs per state (labels: failed / all runs)")\n'
            "fig.tight_layout()\n"
            "plt.show()"
        ),
        new_markdown_cell(
            "## How long do runs take?\n\n"
            "`computed_duration_ms` is the run's duration from its own timestamps (start to "
            "completion), so it does not depend on how fast we polled."
        ),
        new_code_cell(
            'runs["duration_s"] = runs["computed_duration_ms"] / 1000\n'
            'top = runs[runs["depth"] == 0]\n'
            'top.groupby(["workflow_id", "status"])["duration_s"].agg(\n'
            '    runs="size", median="median", p90=lambda s: s.quantile(0.9), longest="max"\n'
            ").round(2)"
        ),
        new_code_cell(
            "import numpy as np\n\n"
            "# One set of bins for every workflow, so the panels compare; failed runs apart.\n"
            'bins = np.histogram_bin_edges(top["duration_s"].dropna(), bins=24)\n'
            'workflows = sorted(top["workflow_id"].unique())\n'
            "fig, axes = plt.subplots(len(workflows), 1, figsize=(8, 2.4 * len(workflows)),\n"
            "                         sharex=True, squeeze=False)\n"
            "for ax, workflow_id in zip(axes[:, 0], workflows):\n"
            '    group = top[top["workflow_id"] == workflow_id]\n'
            '    done = group.loc[group["status"] == "COMPLETED", "duration_s"].dropna()\n'
            '    failed = group.loc[group["status"] == "FAILED", "duration_s"].dropna()\n'
            '    counts, _, _ = ax.hist(done, bins=bins, color="#2e86c1",\n'
            '                           label=f"completed ({len(done)})")\n'
            "    if len(failed):  # outlined bars where runs failed, beside the completed ones\n"
            "        failed_counts, _ = np.histogram(failed, bins=bins)\n"
            "        shown = failed_counts > 0\n"
            "        ax.bar(bins[:-1][shown], failed_counts[shown], width=np.diff(bins)[shown],\n"
            '               align="edge", fill=False, edgecolor="#b03a2e", linewidth=1.6,\n'
            '               label=f"failed ({len(failed)})")\n'
            "    ax.set_ylim(0, max(counts.max(), 1) * 1.35)  # room for the legend\n"
            '    ax.set_title(workflow_id, loc="left", fontsize=10)\n'
            '    ax.set_ylabel("runs")\n'
            "    ax.yaxis.set_major_locator(MaxNLocator(integer=True))\n"
            '    ax.legend(frameon=False, loc="upper right")\n'
            'axes[-1, 0].set_xlabel("run duration (s), from the run\'s own timestamps")\n'
            'fig.suptitle("How long runs take, per workflow")\n'
            "fig.tight_layout()\n"
            "plt.show()"
        ),
        new_markdown_cell(
            "## Outputs joined back to the input rows\n\n"
            "`batch.results()` is the input frame, same index and order, with each run's id, "
            "status and one column per step output. `difference` shows where the amount read "
            "from the document and the amount claimed disagree."
        ),
        new_code_cell(
            "wide = claims_batch.results()\n"
            "extracted = wide.rename(columns={\n"
            '    "Extracted Document / fields[2].value": "amountExtracted",\n'
            '    "Extracted Document / fields[2].confidence": "confidence",\n'
            '    "Route Result / queue": "queue",\n'
            "})\n"
            'extracted["difference"] = (\n'
            '    extracted["amountExtracted"] - extracted["amountClaimed"]\n'
            ").round(2)\n"
            'extracted[["state", "amountClaimed", "amountExtracted", "difference", "confidence", '
            '"status", "queue"]].head(8)'
        ),
        new_code_cell(
            'completed = extracted[extracted["status"] == "COMPLETED"]\n'
            'completed.groupby("queue")["amountExtracted"].agg(["size", "median", "max"])'
            '.round(2).sort_values("size", ascending=False).head(6)'
        ),
        new_markdown_cell(
            "## Parquet, and back with DuckDB\n\n"
            "Each value column has one arrow type whatever the outputs hold, so the tables "
            "write to parquet and read back equal."
        ),
        new_code_cell(
            'written = claims_tables.to_parquet(workdir / "claims-tables")\n'
            'again = px.Tables.read_parquet(workdir / "claims-tables")\n'
            "sorted(path.name for path in written.values()), again.runs.equals("
            "claims_tables.runs)"
        ),
        new_code_cell(
            "import duckdb\n\n"
            'folder = (workdir / "claims-tables").as_posix()\n'
            'duckdb.sql(f"""\n'
            "    select r.status, o.value_str as queue, count(*) as runs\n"
            "    from read_parquet('{folder}/runs.parquet') r\n"
            "    left join read_parquet('{folder}/outputs.parquet') o\n"
            "      on o.run_id = r.run_id and o.step_name = 'Route Result' and o.path = 'queue'\n"
            "    group by all\n"
            "    order by runs desc, queue\n"
            "    limit 8\n"
            '""").df()'
        ),
        new_markdown_cell(
            "## The journal\n\n"
            "After a restart, `px.resume` rebuilds the batch from the journal alone: finished "
            "runs come from it, with no request to the API."
        ),
        new_code_cell(
            'resumed = px.resume(workdir / "claims.plextera.db", client=client)\n'
            'resumed.status["status"].value_counts().sort_index()'
        ),
        new_code_cell(
            "import shutil\n\n"
            "resumed.journal.close()\n"
            "claims_batch.journal.close()\n"
            "labs_batch.journal.close()\n"
            "shutil.rmtree(workdir)\n"
            "if server is not None:\n"
            "    server.stop()"
        ),
    ]
    return new_notebook(cells=cells, metadata=_metadata())


def _metadata() -> dict[str, object]:
    return {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }


def main() -> None:
    wanted = set(sys.argv[1:])
    for name, build in (("quickstart", quickstart), ("bulk-analysis", bulk_analysis)):
        if wanted and name not in wanted:
            continue
        notebook = build()
        for number, cell in enumerate(notebook.cells):
            cell.id = f"{name}-{number:02d}"  # stable ids: a rebuild diffs only in outputs
        NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        ).execute()
        path = NOTEBOOKS / f"{name}.ipynb"
        nbformat.write(notebook, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
