"""``"thread"``: threads parmap starts for the call and lets go of after it.

For functions that release the GIL (I/O, numpy, compiled code). Nothing is pickled. A thread
cannot be killed: when an item overruns ``timeout=``, the call raises at once and the thread is
left to finish that item on its own.

The threads are parmap's own (``Threads``), not a ``ThreadPoolExecutor``'s: once the main thread
has ended, a ThreadPoolExecutor refuses new work, so a map in a thread that outlived the main
thread failed with ``RuntimeError``; and at exit the interpreter waited for every item one had
been given. Here a thread takes the daemon flag of the thread that starts it, as threads do: a
daemon thread's map ends with the interpreter, as the loop in its place would, while the map of
a thread the interpreter waits for runs to its end. A call left open at exit (an ``imap`` half
read in a module global) has its chunks not yet started dropped; the items already running
finish first (see ``_ending``).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any

from .._errors import TaskTimeoutError
from ._base import Call
from ._executor import ExecutorBackend

__all__ = ["ThreadBackend", "Threads"]

_Job = tuple["cf.Future[Any]", Callable[[], Any]]


class Threads(cf.Executor):
    """Up to ``workers`` threads, started as work arrives, for one call."""

    def __init__(self, workers: int, name: str = "parmap-thread") -> None:
        self._workers = workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._workers:
            name = f"{self._name}_{len(self._threads)}"
            thread = threading.Thread(target=self._work, name=name)  # daemon as its starter
            thread.start()
            self._threads.append(thread)
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, run = job
            del job
            if future.set_running_or_notify_cancel():
                try:
                    result = run()
                except BaseException as exc:  # the future carries it, as an executor's does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                    del result
            del future, run
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class ThreadBackend(ExecutorBackend):
    name = "thread"

    def __init__(self, workers: int) -> None:
        super().__init__(None, workers)

    def start(self, call: Call) -> None:
        super().start(call)
        self.executor = Threads(self.workers)

    def let_go(self) -> None:
        executor = self.executor
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _close(self, abort: bool) -> None:
        executor, self.executor = self.executor, None
        if executor is not None:
            # After an overrun the stuck thread cannot be joined; every other exit joins all.
            executor.shutdown(wait=not self._timed_out(), cancel_futures=True)

    def _timed_out(self) -> bool:
        return self._fatal is not None and isinstance(self._fatal[1], TaskTimeoutError)
