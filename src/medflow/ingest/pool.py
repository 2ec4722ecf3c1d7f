"""The worker pool of an image ingest: tasks in, per-sample results out, this process working too."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from collections import deque
from collections.abc import Iterable, Iterator

from medflow.ingest import pixels
from medflow.ingest.h5out import spool_dir
from medflow.ingest.pixels import SampleResult, Task


class Runner:
    """Results task by task (completion order; :func:`in_order` restores manifest order).

    threads=1: everything in this process (no pool start-up, no pickling). threads=N>1: a forked
    pool of N-1 workers *plus this process*, which takes a task itself whenever the pool has enough
    queued and no result is waiting to be written (tasks are handed out in manifest order, so
    results wait in :func:`in_order` only briefly); so N cores decode and this process also does all
    the HDF5 writing, instead of N workers fighting the writer for N cores. Pool workers leave
    their chunks in a RAM spool folder (see h5out) instead of pickling them through pipes.
    """

    def __init__(self, tasks: list[Task], threads: int) -> None:
        self.tasks = tasks
        self.pool = None
        self.spool: str | None = None
        pixels.init_worker()
        self.workers = min(threads, len(tasks)) - 1
        if self.workers >= 1:
            self.spool = spool_dir()
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            self.pool = ctx.Pool(self.workers, initializer=pixels.init_worker)
        self.results: Iterator[list[SampleResult]] = self._results()

    def _results(self) -> Iterator[list[SampleResult]]:
        if self.pool is None:
            for t in self.tasks:
                yield pixels.run_task(t)
            return
        pending: deque = deque()
        waiting = deque(self.tasks)
        # Two queued tasks per worker keep the pool busy while this process works on a task of its
        # own; towards the end the pool gets no more than half of what is left, so that this
        # process is not left idle waiting on a long queue of the pool's.
        depth = 2 * self.workers + 2
        while waiting or pending:
            while waiting and len(pending) < min(depth, max(1, len(waiting) * self.workers // (self.workers + 1))):
                task = waiting.popleft()
                task.spool = self.spool if task.kind != "patches" else None
                pending.append(self.pool.apply_async(pixels.run_task, (task,)))
            done = [r for r in pending if r.ready()]
            for r in done:
                pending.remove(r)
                yield r.get()
            if done:
                continue
            if waiting:  # the pool is busy: this process takes the next task itself
                task = waiting.popleft()
                task.spool = None
                yield pixels.run_task(task)
            else:
                yield pending.popleft().get()

    def close(self, ok: bool) -> None:
        if self.pool is not None:
            if ok:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
            self.pool = None
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


def in_order(batches: Iterable[list[SampleResult]], orders: list[int]) -> Iterator[SampleResult]:
    """Re-emit results in manifest order (patch containers may finish samples out of order)."""
    expected = sorted(orders)
    pending: dict[int, SampleResult] = {}
    k = 0
    for batch in batches:
        for r in batch:
            pending[r.order] = r
        while k < len(expected) and expected[k] in pending:
            yield pending.pop(expected[k])
            k += 1
    yield from (pending[o] for o in sorted(pending))
