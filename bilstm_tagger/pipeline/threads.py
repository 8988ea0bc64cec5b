"""How many torch threads the pipe uses.

`torch_threads > 0` fixes the count. The default, 0, measures: OpenMP threads
spin-wait at every barrier, so on a machine where another process holds a
core, two threads run slower than one (measured here: 2.3x slower tagging).
`ThreadTuner` times the pipe's own batches under each candidate count and keeps
the faster one per token, trying the other again now and then (less and less
often while the answer holds), because the machine's load changes. Worker processes of `nlp.pipe(n_process=N)` use one
thread, so N workers never oversubscribe the cores, and a process whose host fixed the count with
`fix_process_threads` (a Ray actor: threads = its CPUs) keeps it.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")

# Batches smaller than this are timed too noisily to teach the tuner anything.
_MIN_TOKENS = 300


# (pid, threads) set by a host that reserved CPUs for this process, e.g. a Ray actor: multiprocessing
# does not know a Ray worker as a child, so without this the tuner would move it to every core. The pid
# keeps a forked child from inheriting its parent's choice.
_process_threads: Optional[Tuple[int, int]] = None


def fix_process_threads(threads: int) -> None:
    """Fix torch's thread count for this process; it overrides every pipe's torch_threads setting."""
    import torch

    global _process_threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    _process_threads = (os.getpid(), threads)
    torch.set_num_threads(threads)


def process_threads() -> Optional[int]:
    """The count fix_process_threads set in this process, else None."""
    if _process_threads is not None and _process_threads[0] == os.getpid():
        return _process_threads[1]
    return None


def in_worker_process() -> bool:
    return multiprocessing.parent_process() is not None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ThreadTuner:
    """Chooses torch's intra-op thread count from measured seconds per token.

    The other count is retried after `explore_every` calls; each retry that confirms
    the choice doubles the wait (up to `max_every`), and a change of choice resets it,
    so a steady machine pays for almost no slow retries and a changing one is followed.
    """

    def __init__(self, choices: Sequence[int], explore_every: int = 16, max_every: int = 512, smoothing: float = 0.3) -> None:
        self.choices = sorted(set(choices))
        self.min_every = self.explore_every = explore_every
        self.max_every = max_every
        self.smoothing = smoothing
        self.cost: Dict[int, float] = {}  # smoothed seconds per token
        self.calls = 0
        self.next_explore = explore_every

    def best(self) -> int:
        return min(self.cost, key=self.cost.get) if self.cost else self.choices[-1]

    def choose(self) -> int:
        untried = [c for c in self.choices if c not in self.cost]
        if untried:
            return untried[0]
        if len(self.choices) > 1 and self.calls >= self.next_explore:
            others = [c for c in self.choices if c != self.best()]
            return others[(self.calls // self.min_every) % len(others)]
        return self.best()

    def record(self, threads: int, seconds: float, n_tokens: int) -> None:
        before = self.best() if len(self.cost) == len(self.choices) else None
        per_token = seconds / n_tokens
        old = self.cost.get(threads)
        self.cost[threads] = per_token if old is None else old + self.smoothing * (per_token - old)
        if before is not None and threads != before:  # that was a retry of the other count
            confirmed = self.best() == before
            self.explore_every = min(2 * self.explore_every, self.max_every) if confirmed else self.min_every
            self.next_explore = self.calls + self.explore_every

    def run(self, n_tokens: int, fn: Callable[[], T]) -> T:
        import torch

        self.calls += 1
        if n_tokens < _MIN_TOKENS or len(self.choices) == 1:
            torch.set_num_threads(self.best())
            return fn()
        threads = self.choose()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        result = fn()
        self.record(threads, time.perf_counter() - start, n_tokens)
        return result


def make_tuner(requested: int) -> Optional[ThreadTuner]:
    """A tuner for `torch_threads = 0` in the main process; None where the count is fixed."""
    import torch

    # The process's host knows the CPUs it reserved; a count saved with the model does not.
    fixed = process_threads() or requested
    if fixed > 0:
        torch.set_num_threads(fixed)
        return None
    if in_worker_process():
        torch.set_num_threads(1)
        return None
    # Not torch.get_num_threads(): an earlier tuner in this process may have set it to 1.
    cores = available_cores()
    return ThreadTuner([1, cores]) if cores > 1 else None


def configure_torch_threads(requested: int) -> None:
    """Fix the thread count where it is fixed (requested > 0, or one thread in worker processes)."""
    make_tuner(requested)
