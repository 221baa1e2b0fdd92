"""Nothing hangs: callers with signal handlers of their own, nested maps, scripts without a
``__main__`` guard. Each scenario that could hang runs as a script in a child interpreter, in a
session of its own, under a timeout; every process it started must be gone when it ends."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import parmap
import parmap.backends._futures
from parmap import BackendName, WorkerCrashedError, pmap, run_processes
from parmap._worker import pool_initializer

from .helpers import busy_program, run_script, session_leftovers, wait_gone

SCRIPTS = Path(__file__).parent / "scripts"
#: A script that hangs runs until this; one that works ends well within it.
SCRIPT_TIMEOUT = 40.0
#: "Promptly": a call, or a signalled caller's exit, on a loaded machine.
BOUND = 10.0
#: A whole script: interpreters and workers started (spawn), two calls, the exit.
SCRIPT_BOUND = 20.0


# -- a service-style SIGTERM handler in the caller -----------------------------------------------

HANDLER_CASES = [
    # A handler is inherited by fork only; an ignored SIGTERM survives exec too.
    *[(backend, "fork", handler) for backend in ("pool", "process", "futures")
      for handler in ("exit", "ignore", "asyncio")],
    ("pool", "spawn", "ignore"),
    ("pool", "forkserver", "ignore"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("backend", "start_method", "handler"), HANDLER_CASES, ids=["-".join(c) for c in HANDLER_CASES]
)
def test_an_item_that_raises_beside_a_busy_worker_with_the_callers_sigterm_handler(
    backend: str, start_method: str, handler: str
) -> None:
    """Stopping the busy worker (Pool.terminate() sends SIGTERM) must not run the caller's
    handler in it: the worker would report its SystemExit as a reply and live on, and
    terminate() would wait for it forever."""
    args = [str(SCRIPTS / "service_map.py"), backend, start_method, handler, "raise"]
    done = run_script(args, SCRIPT_TIMEOUT)
    assert done.returncode == 0, done.err
    lines = [line for line in done.out.splitlines() if not line.startswith("started")]
    assert lines[0].startswith("raised item -1 failed after"), done.out
    assert float(lines[0].split()[-1].rstrip("s")) < BOUND, done.out
    assert lines[1:] == ["next call: [1, 2]"], done.out  # the caller's handler never ran
    assert done.seconds < SCRIPT_TIMEOUT / 2


@contextmanager
def busy_service(backend: str) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A caller with a ``sys.exit(1)`` SIGTERM handler mapping slow items, and its two busy
    workers' pids; everything in its session is killed at the end."""
    script = str(SCRIPTS / "service_map.py")
    pid = None
    try:
        with busy_program(script, backend, "fork", "exit", "busy") as running:
            pid = running[0].pid
            yield running
    finally:
        if pid is not None:  # once its session was killed, nothing of it may be left
            session_leftovers(pid, 0)


SIGNAL_CASES = [("SIGTERM", False), ("SIGTERM", True), ("SIGINT", True)]


@pytest.mark.parametrize(
    ("name", "to_group"),
    SIGNAL_CASES,
    ids=["sigterm-caller", "sigterm-group", "ctrl-c-group"],
)
@pytest.mark.parametrize("backend", ["pool", "process", "futures"])
def test_a_signalled_service_exits_and_leaves_no_worker(
    backend: str, name: str, to_group: bool
) -> None:
    """SIGTERM to the caller (``kill``), to its whole group (a service manager stopping it), or
    Ctrl-C: the caller exits as its handlers say, promptly, and takes its workers with it."""
    number = getattr(signal, name)
    with busy_service(backend) as (proc, workers):
        began = time.monotonic()
        if to_group:
            os.killpg(proc.pid, number)
        else:
            os.kill(proc.pid, number)
        try:
            _, err = proc.communicate(timeout=BOUND * 3)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the caller did not exit within {BOUND * 3}s of {name}")
        assert time.monotonic() - began < BOUND
        # sys.exit(1) from the SIGTERM handler; Python ends on KeyboardInterrupt by SIGINT.
        assert proc.returncode == (1 if number == signal.SIGTERM else -number), err.decode()
        if number == signal.SIGINT:
            assert err.decode().rstrip().endswith("KeyboardInterrupt"), err.decode()
        for pid in workers:
            assert wait_gone(pid, BOUND), f"worker {pid} outlived the caller"
        assert not session_leftovers(proc.pid, BOUND), "processes outlived the caller"


# -- nested maps ---------------------------------------------------------------------------------


def _inner_map(backend: BackendName, x: int) -> list[int]:
    return pmap(abs, [-x, -x - 1, -x - 2], backend=backend, workers=2)


def _costly(x: int) -> int:
    time.sleep(0.005)  # costly enough for "auto" to want worker processes
    return x * x


def _inner_costly_auto(x: int) -> tuple[bool, list[int]]:
    import multiprocessing

    return multiprocessing.current_process().daemon, pmap(_costly, range(x, x + 40))


def _inner_run_processes(x: int) -> list[int]:
    return run_processes(abs, [(-x,)])


PROCESS_BACKENDS: list[BackendName] = ["process", "pool", "futures"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("inner", PROCESS_BACKENDS)
def test_a_process_backend_inside_a_pool_worker_says_what_to_use_instead(
    inner: BackendName,
) -> None:
    began = time.monotonic()
    with pytest.raises(ValueError, match="daemonic worker") as info:
        pmap(functools.partial(_inner_map, inner), [1, 2], backend="pool", workers=2)
    assert time.monotonic() - began < BOUND
    message = str(info.value)
    assert f"backend={inner!r} starts processes" in message
    assert 'use backend="thread"' in message
    assert 'outer map with backend="process" or "futures"' in message
    # The next call works, nested the way the message says.
    outer = functools.partial(_inner_map, "thread")
    assert pmap(outer, [1, 2], backend="pool", workers=2) == [[1, 2, 3], [2, 3, 4]]


@pytest.mark.timeout(30)
def test_run_processes_inside_a_pool_worker_says_why_not() -> None:
    with pytest.raises(ValueError, match=r"run_processes\(\): it starts processes.*daemonic"):
        pmap(_inner_run_processes, [1], backend="pool", workers=1)


@pytest.mark.timeout(30)
def test_auto_inside_a_pool_worker_runs_in_the_worker() -> None:
    out = pmap(_inner_costly_auto, [0, 100], backend="pool", workers=2)
    assert out == [(True, [x * x for x in range(x, x + 40)]) for x in (0, 100)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("inner", [*PROCESS_BACKENDS, "auto"])
@pytest.mark.parametrize("outer", ["process", "futures"])
def test_nested_maps_under_process_and_futures_work(outer: BackendName, inner: BackendName) -> None:
    fn = functools.partial(_inner_map, inner)
    expected = [[x, x + 1, x + 2] for x in range(3)]
    assert pmap(fn, range(3), backend=outer, workers=2, chunksize=1) == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("outer", ["process", "futures"])
def test_nested_maps_under_spawned_workers_work(outer: BackendName) -> None:
    fn = functools.partial(_inner_map, "process")
    expected = [[x, x + 1, x + 2] for x in range(3)]
    out = pmap(fn, range(3), backend=outer, workers=2, chunksize=1, start_method="spawn")
    assert out == expected


# -- no __main__ guard ---------------------------------------------------------------------------

UNGUARDED = """\
import time

from parmap import WorkerCrashedError, pmap, queue_collect, run_processes


def double(x):
    time.sleep(0.02)  # costly enough for "auto" to start workers
    return x * 2


def produce(x, channel):
    channel.put(x)


# No `if __name__ == "__main__":` below: under spawn and forkserver every worker runs this again.
try:
    if {backend!r} == "run_processes":
        run_processes(double, [(1,), (2,)], start_method={start_method!r})
    elif {backend!r} == "queue_collect":
        queue_collect(produce, [(1,)], channel="manager", start_method={start_method!r})
    else:
        pmap(double, range(20), backend={backend!r}, workers=2, start_method={start_method!r})
except WorkerCrashedError as error:
    print("error:", error, flush=True)
print("next call:", pmap(double, range(4), workers=2, start_method="fork"), flush=True)
"""

MAIN_CASES = [
    *[(backend, method, "file") for backend in ("process", "pool", "futures", "auto")
      for method in ("spawn", "forkserver")],
    *[(backend, "spawn", "stdin") for backend in ("process", "pool", "futures", "auto")],
    ("process", "spawn", "module"),
    ("run_processes", "spawn", "file"),
    ("queue_collect", "spawn", "file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("backend", "start_method", "source"), MAIN_CASES, ids=["-".join(c) for c in MAIN_CASES]
)
def test_a_script_without_a_main_guard_is_told_why_its_workers_died(
    backend: str, start_method: str, source: str, tmp_path: Path
) -> None:
    """Each worker re-runs the script (or cannot read it again, from stdin) and dies while
    starting: the call says so at once, instead of blaming item 0 ("process", "futures",
    "auto") or respawning workers forever ("pool"); the next call works."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED.format(backend=backend, start_method=start_method))
    if source == "stdin":
        done = run_script(["-"], SCRIPT_TIMEOUT, stdin=script.read_bytes(), cwd=tmp_path)
    elif source == "module":
        done = run_script(["-m", "unguarded"], SCRIPT_TIMEOUT, cwd=tmp_path)
    else:
        done = run_script([str(script)], SCRIPT_TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, done.err
    assert done.seconds < SCRIPT_BOUND, done.err
    error, next_call = done.out.splitlines()
    assert next_call == "next call: [0, 2, 4, 6]"
    if backend == "run_processes":
        assert "child 0 (pid " in error, error
        assert "died with exit code 1; if it died while starting" in error, error
    elif backend == "queue_collect":
        assert "manager process (pid " in error, error
        assert " while starting died with exit code 1: " in error, error
    else:
        assert " while starting died with exit code 1: " in error, error
    assert f"under start_method={start_method!r} each worker first imports the main " in error
    if source == "stdin":
        assert "it was not read from a file ('<stdin>'" in error, error
        assert 'run the script from a file, or use start_method="fork"' in error, error
        assert "FileNotFoundError" in done.err
    else:
        where = "the module unguarded" if source == "module" else str(script)
        assert f"main module ({where}); a parmap call made there at module level" in error
        assert 'without `if __name__ == "__main__":`' in error, error
        # Each worker printed why it stopped; a few workers started, not hundreds.
        assert 1 <= done.err.count("bootstrapping phase") <= 8, done.err


_STARTED = multiprocessing.get_context("fork").Value("i", 0)


def _second_starts_slowly(*args: Any) -> None:
    """``pool_initializer``, but every worker after the first sleeps before it."""
    with _STARTED.get_lock():
        first = _STARTED.value == 0
        _STARTED.value += 1
    if not first:
        time.sleep(2)
    pool_initializer(*args)


def _kill_self(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.timeout(30)
def test_a_worker_the_executor_stops_while_it_starts_does_not_hide_the_death(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ProcessPoolExecutor stops every worker (SIGTERM) once one dies, some perhaps still
    starting: the death reported is the one that broke it."""
    _STARTED.value = 0
    monkeypatch.setattr(parmap.backends._futures, "pool_initializer", _second_starts_slowly)
    with pytest.raises(WorkerCrashedError, match=r"while running item 0 died with signal SIGKILL"):
        pmap(_kill_self, range(4), backend="futures", start_method="fork", workers=2, chunksize=1)
    assert _STARTED.value == 2  # the second worker was started, and stopped while starting


# -- a caller that ignores SIGCHLD ---------------------------------------------------------------

SIGCHLD_IGNORED = """\
import signal
import time

from parmap import pmap, run_processes


def slow_square(x):
    time.sleep(0.005)  # costly enough for "auto" to want worker processes
    return x * x


if __name__ == "__main__":
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # as a daemon does, to leave no zombies
    for backend in ("process", "pool", "futures"):
        try:
            pmap(abs, [-1, -2], backend=backend, workers=2)
        except ValueError as error:
            print(backend, "|", error, flush=True)
    try:
        run_processes(abs, [(-1,)])
    except ValueError as error:
        print("run_processes", "|", error, flush=True)
    print("auto", "|", pmap(slow_square, range(40), workers=2) == [x * x for x in range(40)])
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    print("restored", "|", pmap(abs, [-1, -2], backend="process", workers=2), flush=True)
"""


def test_a_caller_that_ignores_sigchld_is_told_to_restore_it(tmp_path: Path) -> None:
    """The system reaps such a caller's children unseen: multiprocessing never learns how a
    worker ended and ``Process.close()`` raised "Cannot close a process while it is still
    running" about workers long gone. Process backends say so before starting; "auto" runs
    in the caller."""
    script = tmp_path / "sigchld.py"
    script.write_text(SIGCHLD_IGNORED)
    done = run_script([str(script)], SCRIPT_TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, done.err
    lines = dict(line.split(" | ", 1) for line in done.out.splitlines())
    assert set(lines) == {"process", "pool", "futures", "run_processes", "auto", "restored"}
    for name in ("process", "pool", "futures", "run_processes"):
        assert "ignores SIGCHLD (SIG_IGN)" in lines[name], lines[name]
        assert "signal.signal(signal.SIGCHLD, signal.SIG_DFL)" in lines[name], lines[name]
    assert lines["auto"] == "True"
    assert lines["restored"] == "[1, 2]"


SLOW_START_CASES = [("fork", "ignore"), ("fork", "asyncio"), ("spawn", "ignore")]


@pytest.mark.parametrize(
    ("start_method", "handler"), SLOW_START_CASES, ids=["-".join(c) for c in SLOW_START_CASES]
)
def test_a_pool_call_that_ends_while_a_worker_starts_does_not_wait_for_it(
    start_method: str, handler: str, tmp_path: Path
) -> None:
    """Until it is set up, a worker keeps the caller's dispositions: Pool.terminate()'s SIGTERM
    would be ignored (or handled by asyncio's handler, which does nothing) and its join would
    wait forever; the worker is killed instead."""
    args = [str(SCRIPTS / "slow_start_pool.py"), start_method, handler, str(tmp_path / "first")]
    done = run_script(args, SCRIPT_TIMEOUT)
    assert done.returncode == 0, done.err
    (line,) = done.out.splitlines()  # and no "SIGTERM handled": no worker ran asyncio's handler
    result, seconds = line.rsplit(" ", 1)
    assert result == "[1, 2, 3]", done.out
    assert float(seconds) < 15, done.out  # before the slow worker would have been set up


def _own_pid(x: int) -> int:
    return os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_start_as_the_work_needs_them(method: str) -> None:
    """``workers=10000`` over a generator of 5 items starts at most 5 worker processes."""
    from .helpers import children

    parmap.shutdown()
    before = children()
    pids = pmap(_own_pid, (x for x in range(5)), backend="process", workers=10000,
                start_method=method)  # fmt: skip
    started = {p for p in children() - before if _is_a_worker(p)}  # the call's, kept warm
    parmap.shutdown()
    assert len(set(pids)) <= 5
    assert 1 <= len(started) <= 5


def _is_a_worker(pid: int) -> bool:
    """Not one of multiprocessing's own helpers (the resource tracker, the fork server)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" not in command and b"forkserver" not in command


UNDER_A_LOW_FD_LIMIT = """
import os, resource, parmap
resource.setrlimit(resource.RLIMIT_NOFILE, (24, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
assert parmap.pmap(abs, range(-20, 0), backend="process", workers=2) == list(range(20, 0, -1))
parmap.shutdown()
settled = None  # after the first failure (which may open what stays open, as imports do)
for _ in range(4):
    try:
        parmap.pmap(abs, range(-200, 0), backend="process", workers=8, chunksize=1)
    except OSError as exc:
        assert exc.errno == 24, exc
    parmap.shutdown()
    settled = settled or len(os.listdir("/proc/self/fd"))
    assert len(os.listdir("/proc/self/fd")) == settled, os.listdir("/proc/self/fd")
assert parmap.pmap(abs, range(-20, 0), backend="process", workers=2) == list(range(20, 0, -1))
print("ok")
"""


def test_workers_that_cannot_start_leak_nothing() -> None:
    """The issue's case 4: under ``ulimit -n 24``, starting 8 workers fails part-way; the
    workers already started are stopped, no descriptor is left, the next call works and the
    interpreter exits (``run_script`` fails on a leftover process or a hang)."""
    done = run_script(["-c", UNDER_A_LOW_FD_LIMIT], timeout=60)
    assert done.returncode == 0, done.err
    assert done.out.strip() == "ok"


def _siblings(x: int) -> int:
    """How many worker processes the caller (this worker's parent) has right now."""
    from .helpers import children

    return sum(1 for pid in children(os.getppid()) if _is_a_worker(pid))


@pytest.mark.parametrize("backend", ["pool", "futures"])
def test_stdlib_pools_open_with_no_more_workers_than_the_work(backend: BackendName) -> None:
    """``Pool`` starts every worker it is asked for (``ProcessPoolExecutor`` too, under fork):
    they open at the first wait, with no more workers than the chunks out by then."""
    counts = pmap(_siblings, (x for x in range(5)), backend=backend, workers=200,
                  start_method="fork")  # fmt: skip
    assert max(counts) <= 5, counts
