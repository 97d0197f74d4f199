"""Run a coroutine to completion from synchronous code, with or without a running event loop.

The sync :class:`plextera_data.Client` is a thin face over :class:`plextera_data.AsyncClient`;
every sync method goes through :func:`run_sync`:

* **No loop running on this thread** (a script, a terminal, a worker thread): the coroutine runs on
  a private event loop kept per thread and reused for every call, so connection pools stay warm
  between calls. It is never installed as the thread's current loop.
* **A loop is running on this thread** (a Jupyter kernel, or sync code called from a coroutine):
  that loop is made re-entrant with ``nest_asyncio2.apply(loop)`` and the coroutine runs on it with
  ``loop.run_until_complete``. The patch is applied only then, at the first such call, never at
  import. ``nest-asyncio2`` is the maintained drop-in fork of ``nest-asyncio`` (archived; breaks on
  Python 3.14), the one ipykernel moved to; the original ``nest_asyncio`` is used only if the fork
  is not installed.

Async code should ``await`` the :class:`~plextera_data.AsyncClient` methods instead: nesting
blocks the outer loop while the inner call runs.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

_local = threading.local()
_patch_lock = threading.Lock()


class _PrivateLoop:
    """A thread's private event loop; closed when the thread ends and its locals are freed."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        loop = self.loop
        if not loop.is_closed() and not loop.is_running():
            loop.close()


def _private_loop() -> asyncio.AbstractEventLoop:
    """This thread's private loop, created at first use and reused afterwards."""
    holder: _PrivateLoop | None = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _local.holder = _PrivateLoop()
    return holder.loop


def _nest(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` re-entrant (once per loop) with nest-asyncio2, else nest-asyncio."""
    with _patch_lock:
        if getattr(loop, "_nest_patched", False):  # set by either package on the loop's class
            return
        module: Any = None
        for name in ("nest_asyncio2", "nest_asyncio"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            break
        if module is None:
            raise RuntimeError(
                "A sync plextera-data call was made while an event loop is running on this thread "
                "(as in a Jupyter cell). That needs the package 'nest-asyncio2' "
                "(pip install nest-asyncio2); or use AsyncClient and 'await' its methods."
            )
        module.apply(loop)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result, from sync code.

    Works whether or not an event loop is running on the calling thread (see the module
    docstring for how).
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None:
        return _private_loop().run_until_complete(coro)
    try:
        _nest(running)
    except BaseException:
        coro.close()
        raise
    return running.run_until_complete(coro)
