"""How many torch threads the pipe uses, set once per process."""
from __future__ import annotations

import multiprocessing


def configure_torch_threads(requested: int) -> None:
    """`requested` > 0 sets torch's intra-op pool; 0 keeps torch's default, except in worker processes.

    nlp.pipe(n_process=N) starts N workers; each with a pool as large as the
    machine would oversubscribe the cores N times over, so workers use one thread.
    """
    import torch

    if requested > 0:
        torch.set_num_threads(requested)
    elif multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)

