"""Slices reconstructed side by side, their results handed back in the order they came in.

On a CPU one slice keeps one or two cores busy at best: a 230 x 180 slice is too small for
torch's intra-op threads to pay in full (``fast`` on the Berkeley slice: 2 threads 1.5x faster than
1 on an idle machine, slower than 1 on a busy one, docs/benchmarks.md), while the slices of a
series are independent. :class:`OrderedPipeline` runs up to ``workers`` reconstructions on threads (torch
releases the GIL inside its operators) and gives back their outcomes strictly in submission
order, so the images of a series leave the gadget in the order a sequential run sends them and
get the same image indices. With one worker nothing runs on a thread: each job runs inside
:meth:`OrderedPipeline.submit`, exactly as before.

The gadget's main thread keeps reading the stream while the workers reconstruct. A finished
job calls ``on_done`` on its worker thread (the gadget sends what is ready at the head of the
line from there, so an image leaves as soon as it and those before it are done, even while the
main thread waits for the next message); the gadget serialises its sends with a lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

Key = TypeVar("Key")
Value = TypeVar("Value")

MAX_AUTO_WORKERS = 4


@dataclass(frozen=True)
class Outcome(Generic[Key, Value]):
    """One finished job: its ``key`` and either its ``value`` or the ``error`` it raised."""

    key: Key
    value: Value | None
    error: BaseException | None


def auto_workers(device: torch.device) -> int:
    """Slices to reconstruct at once when the ``parallel_slices`` property is 0 (auto): 1 on a
    GPU; on a CPU the intra-op threads torch was given (``OMP_NUM_THREADS``, by default the
    cores), at most :data:`MAX_AUTO_WORKERS`."""
    if device.type != "cpu":
        return 1
    return max(1, min(MAX_AUTO_WORKERS, torch.get_num_threads()))


def share_threads(workers: int) -> int:
    """Give each of ``workers`` concurrent reconstructions its share of torch's CPU threads (at
    least 1); returns the threads per reconstruction. One worker changes nothing."""
    threads = torch.get_num_threads()
    if workers <= 1:
        return threads
    share = max(1, threads // workers)
    torch.set_num_threads(share)
    return share


class OrderedPipeline(Generic[Key, Value]):
    """Up to ``workers`` jobs at once; outcomes in submission order (module docstring).

    Args:
        workers: concurrent jobs (>= 1; 1 runs every job at once in :meth:`submit`).
        on_done: called without arguments on the worker thread after each threaded job ends.
    """

    def __init__(self, workers: int, on_done: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._on_done = on_done
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pogmdm-slice") if workers > 1 else None
        self._pending: deque[tuple[Key, Future[Value]]] = deque()

    def submit(self, key: Key, job: Callable[[], Value]) -> None:
        """Start ``job`` (or run it now with one worker); its outcome waits in line."""
        future: Future[Value]
        if self._pool is None:
            future = Future()
            try:
                future.set_result(job())
            except Exception as error:  # handed back as the job's outcome, like a worker's
                future.set_exception(error)
        else:
            future = self._pool.submit(job)
        self._pending.append((key, future))  # in line before ``on_done`` can look for it
        if self._pool is not None and self._on_done is not None:
            on_done = self._on_done
            future.add_done_callback(lambda _future: on_done())

    def __len__(self) -> int:
        return len(self._pending)

    def finished(self) -> Iterator[Outcome[Key, Value]]:
        """The outcomes ready at the head of the line, oldest first; a job still running holds
        back those submitted after it. Callers on several threads must hold one lock while they
        take outcomes, and must not wait for a job while holding it (a worker's ``on_done``
        may be waiting for that lock, with later jobs queued behind it)."""
        while self._pending and self._pending[0][1].done():
            key, future = self._pending.popleft()
            error = future.exception()
            yield Outcome(key, None if error is not None else future.result(), error)

    def wait_for_head(self) -> None:
        """Block until the oldest job not yet taken has ended (at once when none is left)."""
        if self._pending:
            wait([self._pending[0][1]])

    def close(self) -> None:
        """Wait for the running jobs and stop the threads (outcomes not yet taken are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
