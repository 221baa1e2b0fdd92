"""Fixtures shared by the suite: the backend matrix and the leak guard.

Every test runs under pytest-timeout (pyproject sets the default) and under ``no_leaks``: a test
fails if a child process, a thread or a file descriptor it started is still there afterwards.
"""

from __future__ import annotations

import concurrent.futures as cf
import faulthandler
import gc
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings

import parmap

from .helpers import children, open_fds, tcp_ports

settings.register_profile("parmap", deadline=None, print_blob=True)
settings.register_profile("ci", parent=settings.get_profile("parmap"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "parmap")

START_METHODS = ["fork", "spawn", "forkserver"]


def _fatal_errors_to_captured_stderr() -> None:
    """In a forked child: write fatal-error dumps to fd 2, which pytest captures.

    pytest points ``faulthandler`` at a copy of the terminal's stderr, and a forked worker
    inherits that: every crash test's segfaulting worker printed a 60-line dump over the
    progress dots. On fd 2 a dump is shown with its test's output if that test fails (and
    ``test_faults`` reads one).
    """
    if faulthandler.is_enabled():
        faulthandler.enable(file=2, all_threads=True)


os.register_at_fork(after_in_child=_fatal_errors_to_captured_stderr)


@dataclass(frozen=True)
class SessionHelper:
    """A long-lived helper a session fixture started (a Dask cluster), whose processes and
    connections are not a test's: its workers are respawned by their nannies when a test kills
    one, and its scheduler opens connections to them whenever it likes."""

    #: The pids to leave alone.
    pids: Callable[[], set[int]]
    #: The TCP ports it listens on: a socket with one end on them is the helper's.
    ports: Callable[[], set[int]]


SESSION_HELPERS: list[SessionHelper] = []
#: Threads and descriptors such a helper opened while a test ran (a Dask nanny watching, by
#: pipes, the worker it restarted), recorded by that test.
SESSION_THREADS: set[threading.Thread] = set()
SESSION_FDS: set[int] = set()


@dataclass(frozen=True)
class Engine:
    """One way to run a map: what to pass as ``backend=`` and ``start_method=``."""

    name: str
    start_method: str | None = None
    processes: bool = True

    def options(self, executor: cf.Executor | None = None) -> dict[str, Any]:
        backend: Any = executor if executor is not None else self.name
        out: dict[str, Any] = {"backend": backend}
        if self.start_method is not None:
            out["start_method"] = self.start_method
        return out

    def __str__(self) -> str:
        return self.name if self.start_method is None else f"{self.name}-{self.start_method}"


PROCESS_ENGINES = [Engine(n, m) for n in ("process", "pool", "futures") for m in START_METHODS]
LOCAL_ENGINES = [
    Engine("thread", processes=False),
    Engine("serial", processes=False),
    Engine("thread-executor", processes=False),
]
EXECUTOR_ENGINES = [Engine("process-executor")]
ALL_ENGINES = PROCESS_ENGINES + LOCAL_ENGINES + EXECUTOR_ENGINES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the Dask tests last. Their session cluster keeps threads running until the session
    ends, and a fork beside running threads is what Python 3.12+ warns about (a thread holding
    a lock at that instant leaves it locked in the child): no other test should fork then."""
    items.sort(key=lambda item: item.path.name == "test_dask.py")


@pytest.fixture(scope="session", autouse=True)
def _warm_multiprocessing() -> None:
    """Start the forkserver and the resource tracker once, before any leak baseline.

    Both are long-lived helpers that multiprocessing starts on first use and keeps for the life
    of the process; they are not leaks of the test that happens to use them first.
    """
    for method in ("forkserver", "spawn"):
        assert parmap.pmap(abs, [-1, -2], backend="process", start_method=method) == [1, 2]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process, a thread or a file descriptor behind."""
    before_children = children()
    before_threads = set(threading.enumerate())
    before_fds = open_fds()
    yield
    parmap.shutdown()  # the warm workers a test leaves for the next call are not leaks
    # A descriptor held only by garbage awaiting collection (a cycle through a proxy or a
    # process object) is released here, as it would be at the program's next collection.
    gc.collect()
    left = children() - before_children
    helper_ports: set[int] = set()
    for helper in SESSION_HELPERS:
        left -= helper.pids()
        helper_ports |= helper.ports()
    threads = [
        t
        for t in threading.enumerate()
        if t not in before_threads and t not in SESSION_THREADS and t.is_alive()
    ]
    described = {fd: _describe_fd(fd) for fd in open_fds() - before_fds}
    # Gone already: the descriptor ``listdir`` itself used. Kept on purpose: multiprocessing's
    # heap arenas (``/dev/shm/pym-*``), which it grows once and reuses for later shared arrays;
    # tests/test_leaks.py shows descriptors do not grow over hundreds of calls.
    fds = {fd for fd, what in described.items() if what and "/dev/shm/pym-" not in what}
    fds -= SESSION_FDS
    if helper_ports:
        ports = tcp_ports()
        fds = {fd for fd in fds if not helper_ports & ports.get(described[fd], set())}
    described_children = {pid: _describe_pid(pid) for pid in left}
    for pid in left:  # do not let one test's leak break the next
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    assert not left, f"child processes outlived the test: {described_children}"
    assert not threads, f"threads outlived the test: {threads}"
    assert not fds, f"file descriptors outlived the test: { {fd: described[fd] for fd in fds} }"


def _describe_pid(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline") as f:
            return f"{state} {f.read().replace(chr(0), ' ')[:120]}"
    except OSError:
        return "gone"


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture(params=ALL_ENGINES, ids=str)
def engine(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``backend=``/``start_method=`` options for every way parmap can run a map."""
    yield from _options(request.param)


@pytest.fixture(params=PROCESS_ENGINES, ids=str)
def process_engine(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The engines whose workers are processes parmap starts (faults apply to these)."""
    yield from _options(request.param)


def _options(engine: Engine) -> Iterator[dict[str, Any]]:
    if engine.name == "thread-executor":
        with cf.ThreadPoolExecutor(2) as executor:
            yield engine.options(executor)
    elif engine.name == "process-executor":
        with cf.ProcessPoolExecutor(2) as pool:
            yield engine.options(pool)
    else:
        yield engine.options()
