"""The end of a program: it exits promptly, with its own status, and leaves no process behind.

Each scenario runs as a program in a child interpreter (tests/scripts/at_exit.py), under time
limits; the pids of its workers are checked afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .helpers import Lines, wait_gone

SCRIPT = Path(__file__).parent / "scripts" / "at_exit.py"
#: "Promptly": the most seconds from the end of the main thread to the end of the process.
BOUND = 2.0
#: The most seconds a program may take to reach the point a test waits for.
REACH = 30.0


@dataclass
class Ending:
    """How a program ended."""

    returncode: int
    #: Seconds from the line ``end`` (the main thread ending) to the process ending.
    seconds: float
    stdout: list[str]
    stderr: str
    #: The worker processes it named (its children as it or a thread ended, and those that
    #: started items), checked to be gone after it ended.
    workers: set[int] = field(default_factory=set)

    def said(self, word: str) -> list[str]:
        """The words after ``word`` on the lines that start with it."""
        return [line.split()[1:] for line in self.stdout if line.split()[:1] == [word]][-1]


def run_to_end(
    scenario: str,
    backend: str,
    start_method: str,
    *,
    busy: int = 0,
    item_seconds: float = 60,
    status: int = 0,
) -> Ending:
    """Run a scenario; with ``busy``, let its main thread go on once that many items started;
    the program ends with ``sys.exit(status)``."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), scenario, backend, start_method],
        env={
            **os.environ,
            "AT_EXIT_ITEM_SECONDS": str(item_seconds),
            "AT_EXIT_STATUS": str(status),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None
    stdout: list[str] = []
    stderr = b""
    workers: set[int] = set()
    try:
        lines = Lines(proc)
        started = 0
        while not stdout or stdout[-1] != "end":
            stdout.append(lines.next(REACH))
            words = stdout[-1].split()
            if words[:1] == ["started"]:
                workers.add(int(words[1]))
                started += 1
                if started == busy:
                    proc.stdin.write(b"go\n")
                    proc.stdin.flush()
            elif words and words[0].endswith("workers"):
                workers.update(map(int, words[1:]))
        ended = time.monotonic()
        try:
            returncode = proc.wait(timeout=BOUND * 5 + item_seconds % 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{scenario}: the program did not exit; its output: {stdout}")
        seconds = time.monotonic() - ended
        for pid in workers:
            assert wait_gone(pid, BOUND), f"{scenario}: worker {pid} outlived the program"
    finally:
        with suppress(ProcessLookupError):  # its session: whatever a failed check left behind
            os.killpg(proc.pid, signal.SIGKILL)
        rest, stderr = proc.communicate(timeout=REACH)
    stdout += (lines.buffer + rest).decode().splitlines()
    return Ending(returncode, seconds, stdout, stderr.decode(), workers)


def assert_clean(ending: Ending, slack: float = 0.0, status: int = 0) -> None:
    """No output on stderr, the program's own status, and the exit within ``BOUND`` (plus
    ``slack``) seconds."""
    assert ending.stderr == "", ending.stderr
    assert ending.returncode == status
    assert ending.seconds < BOUND + slack, (
        f"exited {ending.seconds:.1f}s after the main thread ended"
    )


# "default": no backend= (so "auto") or no start_method= (so the platform's).
EVERY_START_METHOD = ["default", "fork", "spawn", "forkserver"]


@pytest.mark.parametrize(
    ("backend", "start_method"),
    [
        *[("default", m) for m in EVERY_START_METHOD],
        *[("process", m) for m in ("fork", "spawn", "forkserver")],
        ("pool", "fork"),
        ("pool", "spawn"),
        ("futures", "fork"),
        ("futures", "spawn"),
    ],
)
def test_a_half_read_imap_in_a_global_at_exit(backend: str, start_method: str) -> None:
    """The issue's case 2: the program never exited (its running workers waited forever);
    with "futures" it waited for every item handed to the executor (here a minute each)."""
    ending = run_to_end("imap-global", backend, start_method, busy=2)
    assert_clean(ending)
    assert ending.said("first") == ["0", "1"]
    assert ending.workers


def test_a_half_read_thread_imap_in_a_global_at_exit() -> None:
    """A thread cannot be stopped: the items running at exit finish, the rest are dropped
    (ThreadPoolExecutor's exit ran every chunk it had been given)."""
    ending = run_to_end("imap-global", "thread", "default", busy=2, item_seconds=3)
    assert_clean(ending, slack=3)
    assert ending.said("first") == ["0", "1"]
    assert sum(line.startswith("started") for line in ending.stdout) == 2


@pytest.mark.parametrize(
    ("backend", "start_method"),
    [
        ("default", "default"),
        ("default", "spawn"),
        *[("process", m) for m in ("fork", "spawn", "forkserver")],
        ("pool", "fork"),
        ("futures", "fork"),
        ("futures", "spawn"),
        ("thread", "default"),
    ],
)
def test_a_map_in_a_daemon_thread_at_exit(backend: str, start_method: str) -> None:
    """The issue's case 2: a daemon thread's map just stops, as a loop there would."""
    ending = run_to_end("daemon-thread", backend, start_method, busy=2)
    assert_clean(ending)
    assert ending.workers


@pytest.mark.parametrize("scenario", ["imap-global", "daemon-thread"])
def test_the_exit_status_is_the_programs(scenario: str) -> None:
    ending = run_to_end(scenario, "default", "default", busy=2, status=3)
    assert_clean(ending, status=3)


@pytest.mark.parametrize(
    ("call", "start_method"),
    [
        ("run_processes", "fork"),
        ("run_processes", "spawn"),
        ("queue_collect-queue", "fork"),
        ("queue_collect-pipe", "forkserver"),
        ("queue_collect-manager", "fork"),
    ],
)
def test_children_started_in_a_daemon_thread_at_exit(call: str, start_method: str) -> None:
    """The interpreter waited for ``run_processes``'s and ``queue_collect``'s children."""
    ending = run_to_end("daemon-thread-children", call, start_method, busy=2)
    assert_clean(ending)
    assert ending.workers


@pytest.mark.parametrize("backend", ["default", "process", "pool", "thread"])
def test_a_map_in_a_thread_that_outlives_the_main_thread(backend: str) -> None:
    """The interpreter waits for a (non-daemon) thread, and its map ends as it would anyway
    (with "thread" it raised RuntimeError: ThreadPoolExecutor refuses work at exit)."""
    ending = run_to_end("thread-outlives-main", backend, "default")
    assert_clean(ending)
    assert ending.said("thread-result") == [str(sum(range(100)))]


def test_a_futures_map_in_a_thread_that_outlives_the_main_thread() -> None:
    """ProcessPoolExecutor takes no work once the main thread has ended: a clear error (it was
    "RuntimeError: cannot schedule new futures after shutdown"), and nothing left running."""
    ending = run_to_end("thread-outlives-main", "futures", "default")
    assert_clean(ending)
    error = " ".join(ending.said("thread-error"))
    assert "'futures' backend" in error
    assert "once the main thread has ended" in error
    assert ending.said("thread-workers") == []


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("scenario", ["fork-idle", "fork-idle-maps"])
def test_a_forked_child_of_a_caller_with_warm_workers(scenario: str, start_method: str) -> None:
    """The issue's case 16: the child printed 'AssertionError: can only join a child process'."""
    ending = run_to_end(scenario, "process", start_method)
    assert_clean(ending)
    assert ending.said("child") == ["0"]
    assert ending.said("parent-workers-survived") == ["True"]
    if scenario == "fork-idle-maps":
        assert ending.said("child-result") == ["3", "2", "1"]
    first, second = (set(line.split()[1:]) for line in ending.stdout if line.startswith("result"))
    assert first == second  # the same warm workers, untouched by the child


@pytest.mark.parametrize("backend", ["process", "pool", "futures"])
def test_a_forked_child_of_a_caller_mid_call(backend: str) -> None:
    """The child of a caller running a "pool" call sent its parent's workers SIGTERM at exit."""
    ending = run_to_end("fork-running", backend, "fork", busy=2)
    assert_clean(ending)
    assert ending.said("child") == ["0"]
    assert ending.said("parent-workers-survived") == ["True"]


IN_FINALIZATION = """
import os, sys

class Holder:
    def __init__(self, backend):
        import parmap
        self.pmap, self.backend, self.write = parmap.pmap, backend, os.write

    def __del__(self):  # runs in the interpreter's last garbage collection
        try:
            result = self.pmap(abs, [-1, -2, -3], backend=self.backend)
            self.write(1, f"result {result}\\n".encode())
        except Exception as exc:
            self.write(1, f"error {type(exc).__name__} {exc}\\n".encode())

holder = Holder(sys.argv[1])
holder.cycle = holder
del holder
"""


@pytest.mark.parametrize("backend", ["auto", "serial", "process", "pool", "futures", "thread"])
def test_a_map_called_during_finalization(backend: str) -> None:
    """The issue's case 3: from a ``__del__`` run as the interpreter shuts down, "process",
    "pool" and "thread" hung for good (workers stuck starting). Now "auto" and "serial" map
    in the caller, and the others say why they cannot."""
    from .helpers import run_script

    done = run_script(["-c", IN_FINALIZATION, backend], timeout=30)
    assert done.returncode == 0, done.err
    if backend in ("auto", "serial"):
        assert done.out.strip() == "result [1, 2, 3]"
    else:
        assert done.out.startswith("error ValueError"), done.out
        assert "shutting down" in done.out
