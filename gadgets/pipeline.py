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

On a GPU one slice keeps the device mostly idle (every MAP iteration is a few dozen small kernels),
so :class:`BatchingPipeline` runs one job at a time on one thread but hands it every slice waiting
by then (at most ``max_batch``): the first slice of a series starts alone at once, those that
arrive while it runs go together next (:func:`recon_core.recon.batch.reconstruct_batch`). Their
outcomes come back one per slice, in submission order, exactly as from :class:`OrderedPipeline`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

Key = TypeVar("Key")
Value = TypeVar("Value")
Item = TypeVar("Item")

MAX_AUTO_WORKERS = 4
# Slices per GPU batch when the ``batch_slices`` property is 0 (auto). Not measured on a GPU yet:
# 8 slices of 256 x 256 x 32 coils need well under 1 GB of device memory for the MAP solve.
AUTO_GPU_BATCH = 8


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


def auto_batch(device: torch.device) -> int:
    """Slices per batch when the ``batch_slices`` property is 0 (auto): :data:`AUTO_GPU_BATCH`
    on a GPU, 1 (no batching: slices side by side instead) on a CPU, where a batch of slices was
    no faster than the slices one after the other."""
    return AUTO_GPU_BATCH if device.type != "cpu" else 1


def share_threads(workers: int) -> int:
    """Give each of ``workers`` concurrent reconstructions its share of torch's CPU threads (at
    least 1); returns the threads per reconstruction. One worker changes nothing."""
    threads = torch.get_num_threads()
    if workers <= 1:
        return threads
    share = max(1, threads // workers)
    torch.set_num_threads(share)
    return share


class _InOrder(Generic[Key, Value]):
    """Futures kept in submission order, their outcomes taken from the head of the line."""

    def __init__(self) -> None:
        self._pending: deque[tuple[Key, Future[Value]]] = deque()

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


class OrderedPipeline(_InOrder[Key, Value]):
    """Up to ``workers`` jobs at once; outcomes in submission order (module docstring).

    Args:
        workers: concurrent jobs (>= 1; 1 runs every job at once in :meth:`submit`).
        on_done: called without arguments on the worker thread after each threaded job ends.
    """

    def __init__(self, workers: int, on_done: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        super().__init__()
        self._on_done = on_done
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pogmdm-slice") if workers > 1 else None

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

    def close(self) -> None:
        """Wait for the running jobs and stop the threads (outcomes not yet taken are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class BatchingPipeline(_InOrder[Key, Value], Generic[Key, Item, Value]):
    """One batch at a time on one thread, of every item waiting when it starts (module docstring).

    Args:
        max_batch: the most items in one batch (>= 1).
        run_batch: ``items -> one value or exception per item``, in the items' order; an
            exception it raises (or a result of the wrong length) becomes every item's error.
        on_done: called without arguments on the worker thread after each item's outcome is set.
    """

    def __init__(
        self,
        max_batch: int,
        run_batch: Callable[[list[Item]], Sequence[Value | Exception]],
        on_done: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        super().__init__()
        self.max_batch = max_batch
        self._run_batch = run_batch
        self._on_done = on_done
        self._lock = threading.Lock()
        self._waiting: list[tuple[Item, Future[Value]]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pogmdm-batch")
        self.batch_sizes: list[int] = []  # of every batch run, for the log and the tests

    def submit(self, key: Key, item: Item) -> None:
        """Queue ``item``; the worker takes it with the others waiting when it is next free."""
        future: Future[Value] = Future()
        if self._on_done is not None:
            on_done = self._on_done
            future.add_done_callback(lambda _future: on_done())
        self._pending.append((key, future))  # in line before ``on_done`` can look for it
        with self._lock:
            self._waiting.append((item, future))
        self._pool.submit(self._next_batch)  # one call per item; a call finding none left returns

    def _next_batch(self) -> None:
        with self._lock:
            taken, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        if not taken:
            return
        self.batch_sizes.append(len(taken))
        try:
            values = list(self._run_batch([item for item, _ in taken]))
            if len(values) != len(taken):
                raise RuntimeError(f"a batch of {len(taken)} slices returned {len(values)} results")
        except BaseException as error:  # every item gets an outcome: a waiting slice is never lost
            values = [error] * len(taken)
        for (_, future), value in zip(taken, values, strict=True):
            if isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)

    def close(self) -> None:
        """Wait for the batches queued and stop the thread (outcomes not yet taken are dropped)."""
        self._pool.shutdown(wait=True)
