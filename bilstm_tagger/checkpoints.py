"""Crash-safe pipeline saving: write to a temp dir, then swap it into place (util/atomic.py's write_dir_atomic).

`spacy train` replaces model-best with rmtree + copytree, so a kill at the
wrong moment leaves no loadable model. `python -m bilstm_tagger train` runs
spaCy's own training loop but saves through this module instead: whatever
happens, model-best is either the previous good model or the new one.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from spacy.language import Language
from spacy.util import registry

# The directory swap lives in util/atomic.py (replace_dir stays importable from here). `_exchange` is
# deliberately not re-exported: a test that patched it here would silently patch nothing; patch
# bilstm_tagger.util.atomic._exchange.
from .util.atomic import recover_dir_swaps, replace_dir, write_dir_atomic  # noqa: F401


def save_pipeline(nlp: Language, target: Path) -> None:
    """nlp.to_disk(target), atomically."""
    write_dir_atomic(target, nlp.to_disk)


def save_checkpoint(nlp: Language, target: Path) -> None:
    """save_pipeline under the optimizer's averaged weights, where it keeps averages (use_averages = true).

    spaCy evaluates a checkpoint under the averages, so they are what won model-best; its own
    save_checkpoint swaps them in the same way.
    """
    from .pipeline.component import last_optimizer

    optimizer = last_optimizer(nlp)
    with nlp.use_params(optimizer.averages if optimizer is not None else None):
        save_pipeline(nlp, target)


def copy_pipeline(source: Path, target: Path) -> None:
    """shutil.copytree(source, target), atomically, replacing target."""
    write_dir_atomic(target, lambda tmp: shutil.copytree(source, tmp))


def remove_stale_temp_dirs(output: Path) -> None:
    """Leftovers of a run that was killed while saving model-best or model-last (see recover_dir_swaps)."""
    recover_dir_swaps(output, "model-*")


@registry.loggers("bilstm_tagger.CheckpointLogger.v1")
def checkpoint_logger(output_path: str, logger: Optional[Callable] = None) -> Callable:
    """Wraps another training logger; saves model-last at every evaluation and model-best on a new best."""
    output = Path(output_path)

    def setup(nlp: Language, stdout=sys.stdout, stderr=sys.stderr):
        output.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(output)
        inner_step, inner_finalize = logger(nlp, stdout, stderr) if logger else (lambda info: None, lambda: None)
        best: list = []

        def step(info: Optional[dict]) -> None:
            inner_step(info)
            if info is None:
                return
            save_checkpoint(nlp, output / "model-last")
            # As spaCy's loop: a score equal to the best so far is a new best.
            if not best or info["score"] >= best[0]:
                best[:] = [info["score"]]
                copy_pipeline(output / "model-last", output / "model-best")

        def finalize() -> None:
            inner_finalize()
            save_checkpoint(nlp, output / "model-last")

        return step, finalize

    return setup
