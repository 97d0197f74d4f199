"""Drive a real JupyterLab in headless Chromium through a batch's progress display; screenshots.

    python scripts/notebook_display.py                  # writes build/notebook-display/*.png
    python scripts/notebook_display.py --out shots/ --speed 6

Needs the dev extra (``jupyterlab``, ``playwright``) and Debian's Chromium at /usr/bin/chromium
(``apt-get install -y chromium``): playwright drives it, its own browser download is not used.
The simulator is served by this script on loopback; JupyterLab runs in a fresh temporary folder
with its own settings, so the script can be rerun at will and touches nothing of yours.

What it does, and the screenshot each step writes:

1. ``01-mid-run.png``: ``px.submit(claims, ..., wait=True)`` running (300 sample claims).
2. ``02-after-reload.png``: the notebook saved, then the page reloaded while the cell runs.
   The page shows the display as saved (it says when it was updated); a reloaded page gets no
   updates of the running cell (JupyterLab routes them to the page that ran it).
3. ``03-final.png``: a batch run to the end without a reload.
4. ``04-reopened-after-kernel-shutdown.png``: that notebook saved, its kernel shut down, the
   page opened again: the saved HTML, no widget error.
5. ``05-watch-reattached-after-reload.png``: ``batch.watch()`` (the kernel stays free); after a
   reload, ``reporter`` in a new cell shows the live display again and follows it to the end.
6. ``06-dark-theme.png``: JupyterLab Dark, with the contrast of the bar's colours and the text
   measured in the page.
7. ``07-nbconvert.png``: the saved notebook exported by nbconvert, opened as a plain file.
8. ``08-failure-groups.png`` and ``09-failure-groups-dark.png``: a hand-made snapshot of what
   the ledger and the pacer report (failure groups with their rows, actions and full messages
   opened, the batch's workflow and journal, why it is slow), light and dark.

Each step prints what the page shows; the script exits 1 if a check fails (a widget error, a
display that did not reach its final state, a saved notebook holding a widget, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "plextera-display-check"
DISPLAY = ".jp-NotebookPanel:not(.lm-mod-hidden) .plextera-progress"  # in the notebook on show
WIDGET_ERRORS = ("Loading widget", "Error displaying widget", "model not found")

SETUP = """\
import plextera_data as px
from plextera_data.demo import load_sample

# PLEXTERA_API_KEY and PLEXTERA_BASE_URL point at the simulator scripts/notebook_display.py serves.
client = px.Client()
claims = load_sample("claims")
len(claims)"""

WAIT = """\
batch = px.submit(
    claims, "incoming-claim", client=client, wait=True, journal="claims.plextera.db"
)"""

WATCH = """\
import pandas as pd

from plextera_data.progress import open_progress

# Three times the sample (900 rows), so that the batch outlasts a page reload.
rows = pd.concat([claims.set_axis(claims.index + f"-{n}") for n in range(3)])
batch = px.submit(rows, "incoming-claim", client=client, progress=False)
reporter = open_progress("notebook", total=len(batch.rows))
batch.watch(progress=reporter);"""


GALLERY = """\
# What the display shows with the new engines' snapshots: failure groups per kind and code, which
# batch it is, and why it is slow (a hand-made snapshot: no API involved).
from plextera_data.progress import FailureGroup, NotebookReporter, PacingState, Snapshot

keys = tuple(f"claim-{n:04d}" for n in range(1, 6))
groups = (
    FailureGroup("submission failed", "FORBIDDEN", 403, keys,
                 "This API key may not start runs of workflow 'incoming-claim' in this "
                 "workspace. Check the key's scopes (request id pxd_01JZ4)."),
    FailureGroup("submission uncertain", "ReadTimeout", 2, ("claim-0417", "claim-0733"),
                 "The start timed out after the request was sent: the run may exist "
                 "(request id pxd_01JZ9)."),
    FailureGroup("failed", "UNSUPPORTED_DOCUMENT", 12, keys,
                 "Step 'Extract Document' failed: UNSUPPORTED_DOCUMENT: The document could "
                 "not be processed by Document Insights: page 3 is a scanned image without a "
                 "text layer, and OCR is not enabled for this workflow.", "run_01JZ7Q"),
)
snapshot = Snapshot(
    total=2000, completed=1204, failed=12, submit_failed=403, uncertain=2, running=290,
    not_submitted=89, elapsed=312.0, phase="submitting", workflow_id="incoming-claim",
    journal="claims.plextera.db", failures=groups,
    pacing=PacingState(in_flight=4, limit=4, max_in_flight=16, paused_for=1.8,
                       rate_limited=37, requests_per_second=6.2, backing_off=3),
)
NotebookReporter(snapshot.total).update(snapshot)"""


#: The contrast (WCAG) of the display's bar parts and text against the notebook's background.
CONTRAST = """(selector) => {
  const rgba = (s) => {
    const v = s.match(/[\\d.]+/g).map(Number);
    return [...v.slice(0, 3), v[3] ?? 1];
  };
  const lum = (c) => {
    const l = c.slice(0, 3).map((v) => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
  };
  const back = rgba(getComputedStyle(document.querySelector(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook')).backgroundColor);
  const over = (c) => c.slice(0, 3).map((v, i) => c[3] * v + (1 - c[3]) * back[i]);
  const ratio = (colour) => {
    const [a, b] = [lum(over(rgba(colour))), lum(back)];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  };
  const display = document.querySelector(selector);
  const out = {};
  for (const part of display.querySelectorAll('[title]')) {
    out[part.title.replace(/^[\\d,]+ /, '')] = ratio(getComputedStyle(part).backgroundColor);
  }
  out['text'] = ratio(getComputedStyle(display).color);
  return out;
}"""


class CheckFailed(Exception):
    """What the page shows is not what it should."""


# --------------------------------------------------------------------------- the pieces


def write_notebooks(folder: Path) -> None:
    kernel = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    wait = new_notebook(
        cells=[
            new_markdown_cell("# A batch, waited for"),
            new_code_cell(SETUP),
            new_code_cell(WAIT),
        ],
        metadata=kernel,
    )
    watch = new_notebook(
        cells=[
            new_markdown_cell("# A batch, watched in the background"),
            new_code_cell(SETUP),
            new_code_cell(WATCH),
            new_code_cell("reporter  # the live display, shown again (after a page reload)"),
        ],
        metadata=kernel,
    )
    gallery = new_notebook(
        cells=[new_markdown_cell("# Failure groups, pacing"), new_code_cell(GALLERY)],
        metadata=kernel,
    )
    nbformat.write(gallery, folder / "groups.ipynb")
    nbformat.write(wait, folder / "wait.ipynb")
    nbformat.write(watch, folder / "watch.ipynb")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lab_settings(folder: Path) -> None:
    """No news pop-up, no update check: nothing to cover the notebook in the screenshots."""
    apputils = folder / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


class Lab:
    """A JupyterLab server in ``folder`` on a free loopback port, with the simulator's key."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        state = folder.parent / "lab-state"
        lab_settings(state / "settings")
        self.env = {
            **os.environ,
            **env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),  # the kernel imports this checkout's plextera_data
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "IPYTHONDIR": str(state / "ipython"),
        }
        self.log = (folder.parent / "jupyterlab.log").open("w")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Lab:
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={self.port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={self.folder}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells, save, theme
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        self.process = subprocess.Popen(
            command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.folder
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.api("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not start; see {self.log.name}")

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def kernel_idle(self) -> bool:
        return all(k["execution_state"] == "idle" for k in self.api("GET", "/api/kernels"))

    def shut_down_kernels(self) -> None:
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={TOKEN}"


# --------------------------------------------------------------------------- the browser


class Page:
    """The JupyterLab page, through playwright and ``window.jupyterapp``."""

    def __init__(self, page: Any, out: Path) -> None:
        self.page = page
        self.out = out
        self.selector = DISPLAY

    async def open(self, url: str) -> None:
        """Open a notebook as the only tab, and wait until it is ready."""
        name = url.split("/tree/")[1].split("?")[0]
        await self.page.goto(url)
        ready = (
            "(name) => { const app = window.jupyterapp; if (!app) return false;"
            " for (const w of Array.from(app.shell.widgets('main')))"
            "   if (w.context && w.context.path !== name) w.dispose();"
            " const w = app.shell.currentWidget;"
            " return !!(w && w.context && w.context.path === name && w.context.isReady); }"
        )
        await self.page.wait_for_function(ready, arg=name, timeout=90_000)

    async def reload(self, url: str) -> list[str]:
        """Reload the page, open the notebook again, give it 3 s; what the displays show."""
        await self.page.reload()
        await self.open(url)
        await asyncio.sleep(3)
        return await self.displays()

    async def wait_kernel_idle(self) -> None:
        await self.page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
            timeout=90_000,
        )

    async def run_cell(self, index: int) -> None:
        """Run one cell without waiting for it to end."""
        await self.page.evaluate(
            "(i) => { const w = window.jupyterapp.shell.currentWidget;"
            " w.content.activeCellIndex = i; w.content.deselectAll();"
            " window.jupyterapp.commands.execute('notebook:run-cell'); }",
            index,
        )

    async def command(self, name: str, args: dict[str, Any] | None = None) -> None:
        await self.page.evaluate(
            "([n, a]) => window.jupyterapp.commands.execute(n, a)", [name, args or {}]
        )

    async def save(self) -> None:
        await self.command("docmanager:save")
        await self.page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000
        )

    async def displays(self) -> list[str]:
        """The text of every progress display in the notebook, in order."""
        return list(await self.page.locator(self.selector).all_inner_texts())

    async def outputs_text(self) -> str:
        return "\n".join(await self.page.locator(".jp-OutputArea").all_inner_texts())

    async def wait_for(
        self, test: Callable[[list[str]], bool], what: str, within: float = 180
    ) -> list[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            shown = await self.displays()
            if test(shown):
                return shown
            await asyncio.sleep(0.5)
        raise CheckFailed(f"timed out waiting for {what}; the page shows {await self.displays()}")

    async def shot(self, name: str, *, element: bool = True) -> Path:
        path = self.out / name
        if await self.page.locator(self.selector).count():
            await self.page.locator(self.selector).last.scroll_into_view_if_needed()
        await self.page.screenshot(path=str(path))
        if element and await self.page.locator(self.selector).count():
            crop = self.out / name.replace(".png", "-display.png")
            await self.page.locator(self.selector).last.screenshot(path=str(crop))
        print(f"  wrote {path}")
        return path

    async def no_widget_errors(self) -> None:
        text = await self.outputs_text()
        found = [error for error in WIDGET_ERRORS if error in text]
        if found:
            raise CheckFailed(f"the page shows {found}")


async def lab_idle(lab: Lab, within: float = 300) -> None:
    """Wait until every kernel is idle (the batch's cell has finished)."""
    for _ in range(int(within)):
        if lab.kernel_idle():
            return
        await asyncio.sleep(1)
    raise CheckFailed(f"the kernel was still busy after {within:g} s")


def status_line(shown: list[str]) -> str:
    """The last display's "phase · N of M finished" line ("" if there is none)."""
    for line in (shown[-1] if shown else "").splitlines():
        if " of " in line and line.rstrip().endswith("finished"):
            return line.strip()
    return ""


def finished(shown: list[str]) -> int:
    """Rows finished according to the last display's "N of M finished" (-1: no display)."""
    line = status_line(shown)
    return int(line.split("·")[-1].split(" of ")[0].replace(",", "")) if line else -1


def done(shown: list[str]) -> bool:
    return status_line(shown).startswith("done")


def say(step: str, shown: list[str]) -> None:
    print(f"{step}:")
    for text in shown:
        print("    " + text.replace("\n", "\n    "))


# --------------------------------------------------------------------------- the steps


async def reload_mid_run(page: Page, lab: Lab) -> None:
    print("\n1-2. px.submit(..., wait=True), reloaded mid-run")
    await page.open(lab.notebook_url("wait.ipynb"))
    await page.wait_kernel_idle()
    await page.run_cell(1)
    await page.run_cell(2)
    shown = await page.wait_for(lambda s: 40 <= finished(s) < 200, "a batch under way")
    await page.shot("01-mid-run.png")
    say("mid-run", shown)
    await page.save()
    saved = await page.displays()
    after = await page.reload(lab.notebook_url("wait.ipynb"))
    await page.shot("02-after-reload.png")
    say("after the reload (the notebook as saved a moment before)", after)
    await page.no_widget_errors()
    if not after or finished(after) != finished(saved):
        raise CheckFailed(f"after the reload the page shows {after}, saved was {saved}")
    if lab.kernel_idle():
        raise CheckFailed("the batch ended before the reloaded page was checked: lower --speed")
    await asyncio.sleep(4)
    later = await page.displays()
    print(
        "  4 s later the reloaded page "
        + ("follows the run" if later != after else "still shows the saved state")
        + " (the kernel keeps working; display `reporter`/`batch` again once it is free)"
    )
    await lab_idle(lab)


async def final_and_reopened(page: Page, lab: Lab, folder: Path) -> None:
    print("\n3-4. a batch to the end; saved; kernel shut down; reopened")
    lab.shut_down_kernels()  # a fresh kernel and journal: the batch runs again from the start
    for suffix in ("", "-wal", "-shm"):
        (folder / f"claims.plextera.db{suffix}").unlink(missing_ok=True)
    await page.open(lab.notebook_url("wait.ipynb"))
    await page.wait_kernel_idle()
    await page.run_cell(1)
    await page.run_cell(2)
    shown = await page.wait_for(done, "the final summary")
    await page.wait_kernel_idle()
    await page.shot("03-final.png")
    say("final", shown)
    await page.save()
    saved = nbformat.read(folder / "wait.ipynb", as_version=4)
    bundles = [o.get("data", {}) for c in saved.cells for o in c.get("outputs", [])]
    if any("application/vnd.jupyter.widget-view+json" in b for b in bundles):
        raise CheckFailed("the saved notebook holds a widget view")
    if "widgets" in saved.metadata:
        raise CheckFailed("the saved notebook holds widget state")
    html_outputs = [b["text/html"] for b in bundles if "text/html" in b]
    if not html_outputs or "done" not in html_outputs[-1]:
        raise CheckFailed(f"the saved display is not the final summary: {html_outputs[-1:]}")
    print("  saved file: the display is text/html + text/plain, final, no widget state")
    lab.shut_down_kernels()
    reopened = await page.reload(lab.notebook_url("wait.ipynb"))
    await page.shot("04-reopened-after-kernel-shutdown.png")
    say("reopened after a kernel shutdown", reopened)
    await page.no_widget_errors()
    if reopened != shown:
        raise CheckFailed(f"reopened, the page shows {reopened}, not {shown}")


async def watch_reattached(page: Page, lab: Lab) -> None:
    print("\n5. batch.watch(): reload mid-run, then `reporter` in a new cell")
    lab.shut_down_kernels()
    await page.open(lab.notebook_url("watch.ipynb"))
    await page.wait_kernel_idle()
    await page.run_cell(1)
    await page.run_cell(2)
    await page.wait_for(lambda s: 40 <= finished(s) < 200, "a watched batch under way")
    await page.save()
    await page.page.reload()
    await page.open(lab.notebook_url("watch.ipynb"))
    await page.wait_kernel_idle()  # watch() left the kernel free
    await page.run_cell(3)
    first = await page.wait_for(lambda s: len(s) == 2, "the display shown again")
    await asyncio.sleep(3)
    moving = await page.displays()
    await page.shot("05-watch-reattached-after-reload.png")
    say("after the reload: the saved display, then `reporter` in a new cell", moving)
    if done(first):
        raise CheckFailed("the watched batch ended before it was shown again: lower --speed")
    if finished(moving) <= finished(first):
        raise CheckFailed(f"the display shown again does not move: {first} then {moving}")
    end = await page.wait_for(done, "the watched batch's end")
    print(f"  it followed the batch to the end: {status_line(end)!r}")


async def failure_groups(page: Page, lab: Lab, name: str) -> None:
    await page.open(lab.notebook_url("groups.ipynb"))
    await page.wait_kernel_idle()
    await page.run_cell(1)
    shown = await page.wait_for(lambda s: len(s) == 1, "the hand-made display")
    await page.page.evaluate(  # the full messages, on demand: as if each were clicked
        "(sel) => document.querySelectorAll(sel + ' details').forEach((d) => { d.open = true; })",
        DISPLAY,
    )
    await page.shot(name)
    say("failure groups and pacing (a hand-made snapshot)", await page.displays())
    if "and 398 more" not in shown[-1] or "Slowed by the API" not in shown[-1]:
        raise CheckFailed(f"the groups or the slowdown are missing: {shown}")


async def dark_theme(page: Page, lab: Lab) -> None:
    print("\n6. JupyterLab Dark")
    await page.open(lab.notebook_url("wait.ipynb"))
    await page.command("apputils:change-theme", {"theme": "JupyterLab Dark"})
    await page.page.wait_for_function(
        "() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000
    )
    await asyncio.sleep(1.5)
    await page.shot("06-dark-theme.png")
    await failure_groups(page, lab, "09-failure-groups-dark.png")  # every part of the bar
    ratios = await page.page.evaluate(CONTRAST, DISPLAY)
    print("  contrast against the page: " + ", ".join(f"{k} {v:.1f}:1" for k, v in ratios.items()))
    low = {name: ratio for name, ratio in ratios.items() if ratio < 4.5}
    if low:
        raise CheckFailed(f"below 4.5:1 on the dark theme: {low}")
    await page.command("apputils:change-theme", {"theme": "JupyterLab Light"})


async def nbconvert(page: Page, folder: Path) -> None:
    print("\n7. nbconvert")
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nbconvert", "--to", "html", str(folder / "wait.ipynb")],
        check=True,
        capture_output=True,
    )
    await page.page.goto((folder / "wait.html").as_uri())
    page.selector = ".plextera-progress"  # a plain page, no JupyterLab around it
    await page.page.wait_for_selector(page.selector)
    await page.shot("07-nbconvert.png")
    shown = await page.displays()
    say("nbconvert's HTML", shown)
    if not done(shown):
        raise CheckFailed(f"nbconvert shows {shown}")


async def drive(lab: Lab, folder: Path, out: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 860})
            page = Page(await context.new_page(), out)
            try:
                await steps(page, lab, folder)
            except Exception:
                await page.page.screenshot(path=str(out / "failed-here.png"))
                print(f"  the page when it failed: {out / 'failed-here.png'}", file=sys.stderr)
                raise
        finally:
            await browser.close()


async def steps(page: Page, lab: Lab, folder: Path) -> None:
    await reload_mid_run(page, lab)
    await final_and_reopened(page, lab, folder)
    await watch_reattached(page, lab)
    print("\n8. failure groups, which batch, why slow (a hand-made snapshot)")
    await failure_groups(page, lab, "08-failure-groups.png")
    await dark_theme(page, lab)
    await nbconvert(page, folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "notebook-display"))
    parser.add_argument(
        "--speed", type=float, default=2.0, help="simulated seconds per second (default: 2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from plextera_data.simulator import Simulator, parse_faults

    work = Path(tempfile.mkdtemp(prefix="plextera-display-"))
    folder = work / "notebooks"
    folder.mkdir()
    write_notebooks(folder)
    # A few 429s, so that the display has a reason to give for going slower.
    simulator = Simulator(seed=0, speed=args.speed, faults=parse_faults("rate_limit:0.03"))
    server = simulator.serve().start()
    env = {"PLEXTERA_API_KEY": server.api_key, "PLEXTERA_BASE_URL": server.base_url}
    try:
        with Lab(folder, env) as lab:
            asyncio.run(drive(lab, folder, out))
    except CheckFailed as exc:
        print(f"\nCHECK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    print(f"\nall checks passed; screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
