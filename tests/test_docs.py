"""The documentation: the site builds in strict mode, and every Python example in it runs.

Each page's ```python blocks run top to bottom in one fresh namespace, in a temporary working
directory, with ``PLEXTERA_BASE_URL`` / ``PLEXTERA_API_KEY`` pointing at a served simulator: the
examples are exactly what a user with the simulator (or a key) would type. A block preceded by
``<!-- no-run -->`` is skipped; keep that for the few examples that need a real API key.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plextera_data.simulator import Simulator, SimulatorServer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NO_RUN_MARKER = "<!-- no-run -->"
# Fast enough that the examples' runs finish in well under a second of wall time.
SIMULATOR_SPEED = 400.0

_FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<rest>.*)$")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced code block of a Markdown page."""

    page: Path
    line: int  # 1-based line of the first code line
    language: str
    code: str
    opted_out: bool


def code_blocks(page: Path) -> list[CodeBlock]:
    """The fenced code blocks of ``page``, with their language and first line number."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[CodeBlock] = []
    previous = ""
    position = 0
    while position < len(lines):
        opening = _FENCE_OPEN.match(lines[position])
        if opening is None:
            if lines[position].strip():
                previous = lines[position].strip()
            position += 1
            continue
        indent = len(opening["indent"])
        fence = opening["fence"]
        body: list[str] = []
        position += 1
        start = position + 1
        while position < len(lines) and not lines[position].strip().startswith(fence):
            text = lines[position]
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            position += 1
        position += 1  # the closing fence
        blocks.append(
            CodeBlock(
                page=page,
                line=start,
                language=opening["lang"].lower(),
                code="\n".join(body) + "\n",
                opted_out=previous == NO_RUN_MARKER,
            )
        )
        previous = ""
    return blocks


def documented_pages() -> list[Path]:
    """The pages whose examples run: docs/*.md and docs/guide/*.md."""
    return sorted([*DOCS.glob("*.md"), *(DOCS / "guide").glob("*.md")])


def python_blocks(page: Path) -> list[CodeBlock]:
    return [block for block in code_blocks(page) if block.language in ("python", "py")]


PAGES_WITH_EXAMPLES = [page for page in documented_pages() if python_blocks(page)]


@pytest.fixture(scope="module")
def served_simulator() -> Iterator[SimulatorServer]:
    simulator = Simulator(seed=7, speed=SIMULATOR_SPEED)
    with simulator.serve() as server:
        yield server


# --------------------------------------------------------------------------- the parser


def test_code_blocks_reads_language_line_and_opt_out(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n```python\nx = 1\n```\n\n<!-- no-run -->\n\n```python\nneeds_a_key()\n```\n"
        "\n```bash\nls\n```\n\n!!! note\n    ```python\n    y = 2\n    ```\n",
        encoding="utf-8",
    )
    blocks = code_blocks(page)
    assert [(b.language, b.line, b.code, b.opted_out) for b in blocks] == [
        ("python", 4, "x = 1\n", False),
        ("python", 10, "needs_a_key()\n", True),
        ("bash", 14, "ls\n", False),
        ("python", 19, "y = 2\n", False),
    ]


def test_the_docs_have_examples_to_run() -> None:
    # Guards the runner itself: a parser that found nothing would make every page "pass".
    pages = {page.relative_to(DOCS).as_posix() for page in PAGES_WITH_EXAMPLES}
    assert {"index.md", "quickstart.md"} <= pages


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize(
    "page", PAGES_WITH_EXAMPLES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES_WITH_EXAMPLES]
)
def test_examples_run(
    page: Path,
    served_simulator: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLEXTERA_BASE_URL", served_simulator.base_url)
    monkeypatch.setenv("PLEXTERA_API_KEY", served_simulator.api_key)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": "__main__"}
    ran = 0
    for block in python_blocks(page):
        if block.opted_out:
            continue
        where = f"{page.relative_to(ROOT).as_posix()}:{block.line}"
        # Pad with newlines so a traceback's line numbers are the page's line numbers.
        source = "\n" * (block.line - 1) + block.code
        try:
            exec(compile(source, where, "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"the example at {where} failed: {exc!r}") from exc
        ran += 1
    assert ran > 0, f"every example of {page.name} is opted out; at least one should run"


# --------------------------------------------------------------------------- the site


def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    # No skip when mkdocs is missing: `.[docs]` is installed wherever the tests run.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_COLOR": "1", "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    )
    reference = (site / "reference" / "client" / "index.html").read_text(encoding="utf-8")
    assert "start_run" in reference  # mkdocstrings rendered the docstrings
    assert (site / "quickstart" / "index.html").exists()
    assert (site / "cli" / "index.html").exists()
