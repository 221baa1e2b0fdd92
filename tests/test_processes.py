"""run_processes and queue_collect: the tutorial's Process and Queue programs, made safe."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from parmap import (
    Channel,
    TaskExitError,
    TaskTimeoutError,
    WorkerCrashedError,
    queue_collect,
    run_processes,
)

from .conftest import START_METHODS
from .helpers import children

CHANNELS = ["queue", "pipe", "manager"]


def square_after(n: int, seconds: float) -> int:
    time.sleep(seconds)  # the work: a stand-in for something slow
    return n * n


def fail_at(n: int) -> int:
    if n in (1, 3):
        raise LookupError(f"child {n}")
    return n


def die_at(n: int) -> int:
    if n == 1:
        os._exit(7)
    return n


def block(n: int) -> int:
    threading.Event().wait()
    return n


def square_numbers(numbers: list[int], q: Channel[int]) -> None:
    for n in numbers:
        q.put(n * n)


def put_big(count: int, size: int, q: Channel[bytes]) -> None:
    for i in range(count):
        q.put(bytes([i]) * size)


def put_big_forever(size: int, q: Channel[bytes]) -> None:
    while True:
        q.put(b"x" * size)


def put_then_raise(n: int, q: Channel[int]) -> None:
    q.put(n)
    if n == 2:
        raise ValueError("producer 2 failed")


def put_then_die(n: int, q: Channel[int]) -> None:
    q.put(n)
    if n == 1:
        os._exit(9)


def put_then_exit_zero(n: int, q: Channel[int]) -> None:
    q.put(n)
    os._exit(0)


def check_in_then_square(n: int, folder: str, count: int) -> tuple[int, bool]:
    """Check in, then wait (up to a generous bound) until ``count`` children have: only
    children running at the same time can all see each other."""
    Path(folder, str(n)).touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.01)  # the child's own polling, not the test's synchronisation
    return n * n, len(os.listdir(folder)) == count


@pytest.mark.parametrize("start_method", START_METHODS)
def test_run_processes_returns_values_in_order_and_runs_them_together(
    start_method: str, tmp_path: Path
) -> None:
    args = [(n, str(tmp_path), 4) for n in range(4)]
    out = run_processes(check_in_then_square, args, start_method=start_method)
    # In order, and every child saw the other three: all four ran at once, none waited for
    # another to finish (no timing involved, so a loaded machine cannot fail it).
    assert out == [(0, True), (1, True), (4, True), (9, True)]


def test_run_processes_raises_the_first_failure_with_its_type() -> None:
    with pytest.raises(LookupError, match="child 1") as info:
        run_processes(fail_at, [(n,) for n in range(5)])
    assert "child 1" in str(info.value.__cause__)  # the child's traceback


def test_run_processes_reports_a_dead_child() -> None:
    message = r"child 1 \(pid \d+\) died with exit code 7"
    with pytest.raises(WorkerCrashedError, match=message) as info:
        run_processes(die_at, [(n,) for n in range(3)])
    assert info.value.exitcode == 7
    assert info.value.index == 1


def test_run_processes_sys_exit_is_reported() -> None:
    import sys

    with pytest.raises(TaskExitError, match=r"called sys.exit\(2\)"):
        run_processes(sys.exit, [(2,)])


def test_run_processes_timeout_kills_the_children() -> None:
    with pytest.raises(TaskTimeoutError, match=r"child 0 ran longer than timeout=0.5s"):
        run_processes(block, [(0,), (1,)], timeout=0.5)


def test_run_processes_large_return_values() -> None:
    out = run_processes(bytes, [(10_000_000,), (5,)])
    assert [len(b) for b in out] == [10_000_000, 5]


def test_run_processes_lambda_target() -> None:
    assert run_processes(lambda a, b: a + b, [(1, 2), (3, 4)]) == [3, 7]


def test_run_processes_empty() -> None:
    assert run_processes(abs, []) == []


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("start_method", START_METHODS)
def test_queue_collect_tutorial(channel: str, start_method: str) -> None:
    out = queue_collect(
        square_numbers,
        [([1, 2, 3],), ([4, 5],), ([],), ([6],)],
        channel=channel,
        start_method=start_method,
    )
    assert out == [1, 4, 9, 16, 25, 36]


@pytest.mark.parametrize("channel", CHANNELS)
def test_queue_collect_multi_megabyte_items_do_not_deadlock(channel: str) -> None:
    out = queue_collect(put_big, [(3, 4_000_000), (2, 4_000_000)], channel=channel)
    assert [len(b) for b in out] == [4_000_000] * 5
    assert [b[0] for b in out] == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("channel", CHANNELS)
def test_queue_collect_producer_exception(channel: str) -> None:
    with pytest.raises(ValueError, match="producer 2 failed"):
        queue_collect(put_then_raise, [(n,) for n in range(4)], channel=channel)


@pytest.mark.parametrize("channel", CHANNELS)
def test_queue_collect_producer_death(channel: str) -> None:
    with pytest.raises(WorkerCrashedError, match=r"child 1 .* died with exit code 9"):
        queue_collect(put_then_die, [(n,) for n in range(3)], channel=channel)


@pytest.mark.parametrize("channel", CHANNELS)
def test_queue_collect_silent_exit_is_not_a_hang(channel: str) -> None:
    with pytest.raises(WorkerCrashedError, match="exited without reporting"):
        queue_collect(put_then_exit_zero, [(1,)], channel=channel)


def test_queue_collect_timeout() -> None:
    def forever(q: Any) -> None:
        q.put(1)
        threading.Event().wait()

    with pytest.raises(TaskTimeoutError):
        queue_collect(forever, [(), ()], timeout=0.5)


def put_unpicklable(q: Channel[object]) -> None:
    q.put(1)
    q.put(threading.Lock())
    q.put(3)


@pytest.mark.parametrize("channel", CHANNELS)
def test_queue_collect_an_item_that_will_not_pickle_is_the_producers_error(channel: str) -> None:
    """A shared queue pickles in a feeder thread, which printed the error and dropped the item:
    the call returned [1, 3]. Every channel now raises it as the producer's, as a pipe does."""
    with pytest.raises(TypeError, match="pickle") as info:
        queue_collect(put_unpicklable, [()], channel=channel)
    # The note names the producer (on 3.10, in the remote traceback's text).
    notes = getattr(info.value, "__notes__", None) or [str(info.value.__cause__)]
    assert "parmap: raised by child 0" in " ".join(notes)


def ended(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie not yet joined counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def first_ends_while_second_runs(n: int, folder: str) -> bool:
    """Child 0 leaves its pid and returns; child 1 waits (up to a generous bound) for it to
    exit, and says whether it did while child 1 itself was still running."""
    if n == 0:
        Path(folder, "pid.tmp").write_text(str(os.getpid()))
        Path(folder, "pid.tmp").rename(Path(folder, "pid"))
        return True
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if Path(folder, "pid").exists() and ended(int(Path(folder, "pid").read_text())):
            return True
        time.sleep(0.01)  # the child's own polling, not the test's synchronisation
    return False


def test_run_processes_a_child_ends_once_its_value_is_in(tmp_path: Path) -> None:
    """A child does not linger (with its memory) until the last one is done: it is asked to
    quit as soon as its value is in; and every child is joined before the call returns."""
    before = children()
    out = run_processes(first_ends_while_second_runs, [(0, str(tmp_path)), (1, str(tmp_path))])
    assert out == [True, True]
    assert children() <= before


def lower_waits_for_a_later_one_to_end(n: int, folder: str) -> None:
    """Child 2 leaves its pid and runs on; child 1 fails once child 2 is running; child 0 waits
    (up to a bound) for child 2 to end, and writes down whether it did."""
    pid_file = Path(folder, "pid")
    if n == 2:
        Path(folder, "pid.tmp").write_text(str(os.getpid()))
        Path(folder, "pid.tmp").rename(pid_file)
        threading.Event().wait()
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the child's own polling, not the test's synchronisation
    if n == 1:
        raise ValueError("child 1 fails")
    while time.monotonic() < deadline:
        if ended(int(pid_file.read_text())):
            Path(folder, "seen").write_text("child 2 was stopped")
            return
        time.sleep(0.01)
    Path(folder, "seen").write_text("child 2 ran on")


def test_run_processes_stops_later_children_once_one_fails(tmp_path: Path) -> None:
    """As the loop would never have run them: a later child's side effects end with the
    failure, not when every earlier child is done (child 0 here sees child 2 end first)."""
    before = children()
    args = [(n, str(tmp_path)) for n in range(3)]
    with pytest.raises(ValueError, match="child 1 fails") as info:
        run_processes(lower_waits_for_a_later_one_to_end, args)
    # The note names the child (on 3.10, in the remote traceback's text).
    notes = getattr(info.value, "__notes__", None) or [str(info.value.__cause__)]
    assert "parmap: raised by child 1" in " ".join(notes)
    assert Path(tmp_path, "seen").read_text() == "child 2 was stopped"
    assert children() <= before


@pytest.mark.parametrize("channel", CHANNELS)
def test_queue_collect_timeout_with_large_items_in_flight(channel: str) -> None:
    """Producers killed at the timeout while writing megabyte items: a shared queue may hold
    half a message then, and is not read again (that read would never end)."""
    before = children()
    with pytest.raises(TaskTimeoutError):
        queue_collect(put_big_forever, [(1 << 20,)] * 3, channel=channel, timeout=0.5)
    assert children() <= before


def flood_or_fail(n: int, folder: str, q: Channel[bytes]) -> None:
    """Producer 2 puts 8 MB items for good; producer 1 fails once producer 2 is putting;
    producer 0 puts its item once producer 1 has failed."""
    if n == 2:
        q.put(b"y" * (8 << 20))
        Path(folder, "flooding").touch()
        while True:
            q.put(b"y" * (8 << 20))
    deadline = time.monotonic() + 30
    marker = Path(folder, "flooding" if n == 1 else "failing")
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the child's own polling, not the test's synchronisation
    if n == 1:
        Path(folder, "failing").touch()
        raise ValueError("producer 1 fails")
    q.put(b"x")


def test_queue_collect_a_failure_does_not_kill_a_producer_writing_to_the_shared_queue(
    tmp_path: Path,
) -> None:
    """Killed mid-write, producer 2 would hold the shared queue's write lock for good, and
    producer 0, still owed, could never flush its item: the call would hang."""
    before = children()
    with pytest.raises(ValueError, match="producer 1 fails"):
        queue_collect(flood_or_fail, [(n, str(tmp_path)) for n in range(3)], channel="queue")
    assert children() <= before


def put_many(count: int, q: Channel[int]) -> None:
    for i in range(count):
        q.put(i)


def test_queue_collect_never_returns_part_of_the_items_at_the_deadline() -> None:
    """Producers that returned before the deadline but whose items the caller had not all read
    by then fail as late; the call never returns a list with items missing."""
    try:
        out = queue_collect(put_many, [(20_000,)] * 2, channel="manager", timeout=1.0)
    except TaskTimeoutError:
        return
    assert len(out) == 40_000
