"""Backends by name, imported only when first used so that ``import parmap`` stays cheap.

A named backend is built per call from ``(workers, start_method)``; a ``Backend`` or a
``concurrent.futures.Executor`` instance passed as ``backend=`` is used as it is.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import sys
from typing import Literal, NamedTuple

from .._errors import BackendUnavailableError, ParmapError
from . import _ending
from ._base import Backend as Backend
from ._base import Call as Call
from ._base import Chunk as Chunk
from ._base import FutureBackend as FutureBackend
from ._base import Outcome as Outcome
from ._dask import DaskBackend as DaskBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendName",
    "Call",
    "Chunk",
    "DaskBackend",
    "FutureBackend",
    "Outcome",
    "create",
    "shutdown",
    "wrap",
]


class _Entry(NamedTuple):
    module: str
    cls: str
    processes: bool  # whether ``start_method`` means anything to it
    extra: str | None = None  # the pip extra it needs, if any


BACKENDS: dict[str, _Entry] = {
    "process": _Entry("._process", "ProcessBackend", True),
    "pool": _Entry("._pool", "PoolBackend", True),
    "futures": _Entry("._futures", "FuturesBackend", True),
    "thread": _Entry("._thread", "ThreadBackend", False),
    "serial": _Entry("._serial", "SerialBackend", False),
    "dask": _Entry("._dask", "DaskBackend", False, "dask"),
}


BackendName = Literal["auto", "process", "pool", "futures", "thread", "serial", "dask"]
"""The names ``backend=`` accepts: ``"auto"`` and every registered engine, as a ``Literal``, so
that a misspelt name fails ``mypy``. Annotate a variable you pass as ``backend=`` with it."""


def create(
    name: str, workers: int, start_method: str | None, threads: int | None = None
) -> Backend:
    """Build the backend registered as ``name``; ``threads``: the BLAS/OpenMP thread limit for
    the worker processes it starts (None: none)."""
    entry = BACKENDS[name]
    try:
        module = importlib.import_module(entry.module, __name__)
    except ImportError as exc:
        extra = entry.extra or name
        raise BackendUnavailableError(
            f"the {name!r} backend needs an optional dependency: "
            f"pip install 'parmap-typed[{extra}]' ({exc})"
        ) from exc
    except RuntimeError as exc:  # concurrent.futures.process, first imported at exit
        if not _ending.exiting():
            raise
        raise ParmapError(
            f"the {name!r} backend cannot start once the main thread has ended ({exc}); "
            "backend='process' can"
        ) from exc
    cls = getattr(module, entry.cls)
    if hasattr(cls, "from_name"):  # a backend that finds its engine by itself
        found: Backend = cls.from_name(workers, start_method)
        return found
    if entry.processes:
        made: Backend = cls(workers, start_method, threads=threads)
        return made
    backend: Backend = cls(workers)
    return backend


def shutdown() -> None:
    """Stop the worker processes parmap keeps warm between calls.

    They start again on the next call that needs them. Called at interpreter exit on its own;
    call it yourself to free the processes sooner (or in tests that count child processes).
    """
    module = sys.modules.get(f"{__name__}._process")
    if module is not None:
        module.WARM.shutdown()


def wrap(executor: cf.Executor, workers: int | None) -> Backend:
    """A backend over an executor the caller owns (never shut down by parmap)."""
    from ._executor import ExecutorBackend

    return ExecutorBackend(executor, workers)
