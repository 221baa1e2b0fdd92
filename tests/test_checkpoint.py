"""The checkpoint store: results come back after a reopen, batches commit together, a killed
writer loses only its last batch and never the file, one holder at a time, and the function's
fingerprint changes when what it computes may have changed."""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import parmap
from parmap._checkpoint import Checkpoint
from parmap._errors import CheckpointError
from parmap._fingerprint import function_fingerprint, item_fingerprint

from .helpers import Lines

FN = "f" * 32  # a function fingerprint, for the store's own tests
#: The directory this parmap is imported from, for child interpreters.
SRC = str(Path(parmap.__file__).parent.parent)
#: The most seconds a child may take to reach the line a test waits for.
REACH = 30.0


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "run.sqlite")


def rows_seen_by_another_connection(path: str) -> int:
    other = sqlite3.connect(path)
    try:
        count: int = other.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        other.close()
    return count


def commits(checkpoint: Checkpoint) -> list[str]:
    """The COMMITs the checkpoint's connection runs from now on, from any thread."""
    seen: list[str] = []

    def trace(sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            seen.append(sql)

    checkpoint._connection.set_trace_callback(trace)
    return seen


@contextlib.contextmanager
def child(source: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Lines]]:
    """``python -c source args...`` importing this parmap, its stdin, stdout and stderr piped;
    its whole session is killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        env={**os.environ, "PYTHONPATH": SRC},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc, Lines(proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# --------------------------------------------------------------------------- the store


def test_results_come_back_after_a_reopen(path: str) -> None:
    with Checkpoint.open(path, FN) as checkpoint:
        for i in range(10):
            checkpoint.add(i, item_fingerprint(i), {"square": i * i})
        assert checkpoint.stored(3, item_fingerprint(3)) == (True, {"square": 9})
    with Checkpoint.open(Path(path), FN) as checkpoint:
        assert checkpoint.count() == 10
        assert checkpoint.stored(7, item_fingerprint(7)) == (True, {"square": 49})
        assert checkpoint.stored(7, item_fingerprint(7)) == (True, {"square": 49})  # again
        assert checkpoint.stored(10, item_fingerprint(10)) == (False, None)
        # Another item at index 3: never answered from the store; its new result replaces it.
        assert checkpoint.stored(3, item_fingerprint("three")) == (False, None)
        checkpoint.add(3, item_fingerprint("three"), "new")
        assert checkpoint.stored(3, item_fingerprint("three")) == (True, "new")
        assert checkpoint.stored(3, item_fingerprint(3)) == (False, None)
    with Checkpoint.open(path, FN) as checkpoint:
        assert checkpoint.stored(3, item_fingerprint("three")) == (True, "new")
        assert checkpoint.count() == 10


def test_another_function_is_never_answered_and_its_rows_are_kept(path: str) -> None:
    with Checkpoint.open(path, FN) as checkpoint:
        checkpoint.add(0, item_fingerprint(0), "by f")
    with Checkpoint.open(path, "g" * 32) as checkpoint:
        assert checkpoint.count() == 0
        assert checkpoint.stored(0, item_fingerprint(0)) == (False, None)
        checkpoint.add(0, item_fingerprint(0), "by g")
    with Checkpoint.open(path, FN) as checkpoint:
        assert checkpoint.stored(0, item_fingerprint(0)) == (True, "by f")


def test_a_batch_is_one_commit_and_invisible_until_it_is_made(path: str) -> None:
    with Checkpoint.open(path, FN) as checkpoint:
        checkpoint.batch_seconds = 3600.0  # only size and flush() commit here
        checkpoint.batch_items = 50
        seen = commits(checkpoint)
        for i in range(120):
            checkpoint.add(i, item_fingerprint(i), i)
        assert len(seen) == 2  # at 50 and at 100
        assert rows_seen_by_another_connection(path) == 100
        assert checkpoint.count() == 120
        checkpoint.flush()
        assert len(seen) == 3
        assert rows_seen_by_another_connection(path) == 120
        checkpoint.flush()  # nothing left: no empty transaction
        assert len(seen) == 3


def test_an_add_to_an_aged_batch_commits_it(path: str) -> None:
    with Checkpoint.open(path, FN) as checkpoint:
        checkpoint.batch_seconds = 3600.0
        checkpoint.add(0, item_fingerprint(0), 0)
        assert rows_seen_by_another_connection(path) == 0
        checkpoint._batch_began -= checkpoint.batch_seconds  # as if an hour had passed
        checkpoint.add(1, item_fingerprint(1), 1)
        assert rows_seen_by_another_connection(path) == 2


@pytest.mark.timeout(30)
def test_an_aged_batch_is_committed_while_no_result_arrives(path: str) -> None:
    """A slow map loses at most ``batch_seconds`` of results to a crash, not all since the
    last add."""
    with Checkpoint.open(path, FN) as checkpoint:
        checkpoint.batch_seconds = 0.2
        committed = threading.Event()
        checkpoint._connection.set_trace_callback(
            lambda sql: committed.set() if sql.strip().upper() == "COMMIT" else None
        )
        checkpoint.add(0, item_fingerprint(0), 0)
        assert committed.wait(20), "the flusher thread did not commit the aged batch"
        with checkpoint._condition:  # the flusher holds it until the commit is done
            assert rows_seen_by_another_connection(path) == 1


def test_it_works_from_another_thread_than_the_one_that_opened_it(path: str) -> None:
    """An ``imap`` may be consumed in another thread than the one that created it."""
    checkpoint = Checkpoint.open(path, FN)
    failures: list[BaseException] = []

    def use() -> None:
        try:
            for i in range(5):
                checkpoint.add(i, item_fingerprint(i), -i)
            checkpoint.flush()
            assert checkpoint.stored(4, item_fingerprint(4)) == (True, -4)
            checkpoint.close()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(30)
    assert not failures, failures
    with Checkpoint.open(path, FN) as reopened:
        assert reopened.count() == 5


def test_close_is_idempotent_and_a_closed_checkpoint_refuses_work(path: str) -> None:
    checkpoint = Checkpoint.open(path, FN)
    checkpoint.add(0, item_fingerprint(0), 0)
    checkpoint.close()
    checkpoint.close()
    with pytest.raises(CheckpointError, match="closed"):
        checkpoint.add(1, item_fingerprint(1), 1)
    with Checkpoint.open(path, FN) as reopened:
        assert reopened.count() == 1


def test_a_result_that_does_not_pickle_names_its_item(path: str) -> None:
    with Checkpoint.open(path, FN) as checkpoint:
        with pytest.raises(CheckpointError, match="result of item 4 cannot be pickled") as info:
            checkpoint.add(4, item_fingerprint(4), threading.Lock())
        assert info.value.index == 4
        assert info.value.path == path
        assert checkpoint.count() == 0
        checkpoint.add(5, item_fingerprint(5), lambda: 5)  # cloudpickle takes what pickle won't
    with Checkpoint.open(path, FN) as checkpoint:
        found, result = checkpoint.stored(5, item_fingerprint(5))
        assert found
        assert callable(result)
        assert result() == 5


def test_an_item_that_does_not_pickle_is_neither_answered_nor_stored(path: str) -> None:
    assert item_fingerprint(threading.Lock()) == b""
    with Checkpoint.open(path, FN) as checkpoint:
        checkpoint.add(0, b"", "x")
        assert checkpoint.count() == 0
        assert checkpoint.stored(0, b"") == (False, None)


def test_a_stored_result_that_no_longer_unpickles_is_computed_again(path: str) -> None:
    with Checkpoint.open(path, FN) as checkpoint:
        checkpoint.add(0, item_fingerprint(0), 0)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE results SET result = ?", (b"\x80\x05not a pickle",))
    connection.close()
    with Checkpoint.open(path, FN) as checkpoint:
        assert checkpoint.stored(0, item_fingerprint(0)) == (False, None)


# --------------------------------------------------------------------------- crashes and holders

WRITER = """
    import sys
    from parmap._checkpoint import Checkpoint

    checkpoint = Checkpoint.open(sys.argv[1], "f" * 32)
    checkpoint.batch_seconds = 3600.0
    index = 0
    for batch in range(5):
        for _ in range(200):
            checkpoint.add(index, index.to_bytes(16, "big"), [index] * 10)
            index += 1
        checkpoint.flush()
        print("flushed", index, flush=True)
    for _ in range(150):  # a batch that is never committed
        checkpoint.add(index, index.to_bytes(16, "big"), [index] * 10)
        index += 1
    print("ready", flush=True)
    sys.stdin.read()
"""


@pytest.mark.timeout(60)
def test_kill_9_loses_only_the_last_batch_and_never_the_file(path: str) -> None:
    with child(WRITER, path) as (proc, lines):
        said = [lines.next(REACH) for _ in range(6)]
        assert said[-2:] == ["flushed 1000", "ready"]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(REACH) == -signal.SIGKILL
    assert Path(path + "-wal").exists()  # killed before it could fold the log into the file
    with Checkpoint.open(path, FN) as checkpoint:  # the lock went with the process
        assert checkpoint.count() == 1000
        assert checkpoint.stored(999, (999).to_bytes(16, "big")) == (True, [999] * 10)
        assert checkpoint.stored(1000, (1000).to_bytes(16, "big")) == (False, None)
        check = checkpoint._connection.execute("PRAGMA integrity_check").fetchall()
        assert check == [("ok",)]


def test_a_second_open_in_this_process_is_refused(path: str) -> None:
    with Checkpoint.open(path, FN):
        with pytest.raises(CheckpointError, match="in use") as info:
            Checkpoint.open(path, FN)
        assert info.value.path == path
        with pytest.raises(CheckpointError, match="in use"):
            Checkpoint.open(path, "g" * 32)  # whatever function
    with Checkpoint.open(path, FN):
        pass


HOLDER = """
    import sys
    from parmap._checkpoint import Checkpoint

    with Checkpoint.open(sys.argv[1], "f" * 32) as checkpoint:
        checkpoint.add(0, b"0" * 16, "held")
        print("holding", flush=True)
        sys.stdin.read()
    print("released", flush=True)
"""


@pytest.mark.timeout(60)
def test_a_checkpoint_held_by_another_process_is_refused_until_it_lets_go(path: str) -> None:
    with child(HOLDER, path) as (proc, lines):
        assert lines.next(REACH) == "holding"
        with pytest.raises(CheckpointError, match="in use by another process") as info:
            Checkpoint.open(path, FN)
        assert path in str(info.value)
        assert proc.stdin is not None
        proc.stdin.close()
        assert lines.next(REACH) == "released"
        assert proc.wait(REACH) == 0
    with Checkpoint.open(path, FN) as checkpoint:
        assert checkpoint.stored(0, b"0" * 16) == (True, "held")


@pytest.mark.timeout(30)
def test_a_forked_child_does_not_keep_the_lock(path: str) -> None:
    """A ``fork`` worker that outlives its caller's checkpoint does not hold the file."""
    checkpoint = Checkpoint.open(path, FN)
    go_read, go_write = os.pipe()  # the child waits on it until the end of the test
    up_read, up_write = os.pipe()  # the child says it runs (its fork hooks have run)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(go_write)
        os.close(up_read)
        os.write(up_write, b"u")
        os.read(go_read, 1)
        os._exit(0)
    try:
        os.close(go_read)
        os.close(up_write)
        assert os.read(up_read, 1) == b"u"
        checkpoint.close()
        with Checkpoint.open(path, FN):
            pass
    finally:
        os.close(go_write)
        os.close(up_read)
        os.waitpid(pid, 0)


def test_a_file_that_is_not_a_checkpoint_is_refused_and_left_alone(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"these are my notes, not a database\n" * 10)
    with pytest.raises(CheckpointError, match="not an SQLite database") as info:
        Checkpoint.open(garbage, FN)
    assert info.value.path == str(garbage)
    assert garbage.read_bytes() == b"these are my notes, not a database\n" * 10

    other = tmp_path / "other.sqlite"
    connection = sqlite3.connect(other)
    with connection:
        connection.execute("CREATE TABLE mine (x)")
    connection.close()
    before = other.read_bytes()
    with pytest.raises(CheckpointError, match="not a parmap checkpoint: another program's"):
        Checkpoint.open(other, FN)
    assert other.read_bytes() == before

    with pytest.raises(CheckpointError, match="cannot read it"):
        Checkpoint.open(tmp_path, FN)  # a directory
    with pytest.raises(CheckpointError, match="lock file"):
        Checkpoint.open(tmp_path / "missing" / "run.sqlite", FN)


def test_an_empty_file_becomes_a_checkpoint(tmp_path: Path) -> None:
    empty = tmp_path / "run.sqlite"
    empty.touch()
    with Checkpoint.open(empty, FN) as checkpoint:
        checkpoint.add(0, item_fingerprint(0), 0)
    with Checkpoint.open(empty, FN) as checkpoint:
        assert checkpoint.count() == 1


def test_checkpoint_error_round_trips_through_pickle() -> None:
    error = CheckpointError("/tmp/run.sqlite", "the result of item 3 cannot be pickled", index=3)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(error, protocol))
        assert type(back) is CheckpointError
        expected = "checkpoint '/tmp/run.sqlite': the result of item 3 cannot be pickled"
        assert str(back) == str(error) == expected
        assert (back.path, back.reason, back.index) == ("/tmp/run.sqlite", error.reason, 3)
        assert isinstance(back, parmap.ParmapError)


# --------------------------------------------------------------------------- fingerprints


def define(source: str, name: str = "f", filename: str = "<checkpoint-test>") -> Any:
    """Run ``source`` as a module of its own and return its ``name``."""
    namespace: dict[str, Any] = {"__name__": "checkpoint_test_module"}
    # dont_inherit: not this file's ``from __future__`` flags, which a child would not have
    exec(compile(textwrap.dedent(source), filename, "exec", dont_inherit=True), namespace)
    return namespace[name]


def module_level(x: int) -> int:
    return x + 1


def test_the_same_function_has_the_same_fingerprint() -> None:
    assert function_fingerprint(module_level) == function_fingerprint(module_level)
    same = "f = lambda x: x * 2"
    assert function_fingerprint(define(same)) == function_fingerprint(define(same))
    # Where it sits in its file is not part of it.
    assert function_fingerprint(define(same)) == function_fingerprint(define("\n\n\n" + same))
    assert function_fingerprint(define(same)) == function_fingerprint(
        define(same, filename="elsewhere.py")
    )


def closure(value: object) -> Callable[[int], object]:
    def f(x: int) -> object:
        return (x, value)

    return f


CHANGES: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
    "body": (lambda: define("def f(x): return x + 1"), lambda: define("def f(x): return x + 2")),
    "name": (lambda: define("def f(x): return x"), lambda: define("def g(x): return x", "g")),
    "default": (
        lambda: define("def f(x, n=1): return x + n"),
        lambda: define("def f(x, n=2): return x + n"),
    ),
    "keyword-only default": (
        lambda: define("def f(x, *, n=1): return x + n"),
        lambda: define("def f(x, *, n=2): return x + n"),
    ),
    "closure value": (lambda: closure(1), lambda: closure(2)),
    "closure list": (lambda: closure([1, 2]), lambda: closure([1, 3])),
    "nested function": (
        lambda: define("def f(x):\n def g(): return x + 1\n return g()"),
        lambda: define("def f(x):\n def g(): return x - 1\n return g()"),
    ),
    "partial args": (
        lambda: functools.partial(module_level, 1),
        lambda: functools.partial(module_level, 2),
    ),
    "partial keywords": (
        lambda: functools.partial(closure, value=1),
        lambda: functools.partial(closure, value=2),
    ),
    "partial function": (
        lambda: functools.partial(define("def f(x): return x"), 1),
        lambda: functools.partial(define("def f(x): return -x"), 1),
    ),
    "helper in its module": (
        lambda: define("def helper(x): return x\ndef f(x): return helper(x)"),
        lambda: define("def helper(x): return -x\ndef f(x): return helper(x)"),
    ),
    "constant in its module": (
        lambda: define("SCALE = 2\ndef f(x): return x * SCALE"),
        lambda: define("SCALE = 3\ndef f(x): return x * SCALE"),
    ),
    "decorated function": (
        lambda: define(DECORATED.format(body="x + 1")),
        lambda: define(DECORATED.format(body="x + 2")),
    ),
    "bound object": (lambda: Scale(2).apply, lambda: Scale(3).apply),
    "callable object": (lambda: Scale(2), lambda: Scale(3)),
}

DECORATED = """
import functools
def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args)
    return wrapper
@logged
def f(x): return {body}
"""


class Scale:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def apply(self, x: int) -> int:
        return x * self.factor

    def __call__(self, x: int) -> int:
        return x * self.factor


@pytest.mark.parametrize("change", CHANGES)
def test_a_changed_function_has_another_fingerprint(change: str) -> None:
    before, after = CHANGES[change]
    assert function_fingerprint(before()) == function_fingerprint(before())
    assert function_fingerprint(before()) != function_fingerprint(after())


def test_a_recursive_function_has_a_fingerprint() -> None:
    fact = define("def f(n): return 1 if n < 2 else n * f(n - 1)")
    assert function_fingerprint(fact) == function_fingerprint(fact)


def test_builtins_and_classes_have_fingerprints() -> None:
    assert function_fingerprint(len) != function_fingerprint(abs)
    assert function_fingerprint(int) != function_fingerprint(str)
    assert function_fingerprint(Scale) == function_fingerprint(Scale)


def test_a_closure_over_what_cannot_be_pickled_has_no_fingerprint() -> None:
    with pytest.raises(TypeError, match="cannot fingerprint"):
        function_fingerprint(closure(threading.Lock()))


FINGERPRINTS = """
    import sys, textwrap
    from parmap._fingerprint import function_fingerprint, item_fingerprint

    namespace = {"__name__": "checkpoint_test_module"}
    exec(compile(sys.argv[1], "<checkpoint-test>", "exec"), namespace)
    print(function_fingerprint(namespace["f"]), item_fingerprint(eval(sys.argv[2])).hex())
"""

SOURCE = """
WORDS = frozenset({"alpha", "beta", "gamma", "delta"})
def f(x, seen=("a", 1.5, None)):
    return x in {"one", "two", "three"} or x in WORDS
"""
ITEM = "(1, 'two', 3.0, b'four', [5])"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", ["1", "2"])
def test_fingerprints_are_equal_in_another_interpreter(seed: str) -> None:
    """Same source, another process and another string hash seed: same fingerprints."""
    here = f"{function_fingerprint(define(SOURCE))} {item_fingerprint(eval(ITEM)).hex()}"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FINGERPRINTS), textwrap.dedent(SOURCE), ITEM],
        env={**os.environ, "PYTHONPATH": SRC, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        timeout=REACH,
        check=True,
    )
    assert proc.stdout.strip() == here
