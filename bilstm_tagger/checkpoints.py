"""Crash-safe pipeline saving: write to a temp dir, then swap it into place with a rename.

`spacy train` replaces model-best with rmtree + copytree, so a kill at the
wrong moment leaves no loadable model. `python -m bilstm_tagger train` runs
spaCy's own training loop but saves through this module instead: whatever
happens, model-best is either the previous good model or the new one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from spacy.language import Language
from spacy.util import registry

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_TMP_MARK = ".tmp-"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system can't."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished directory `new` at `target`, never leaving `target` half-written."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new)  # `new` now holds the old contents
        return
    old = target.with_name(f".{target.name}{_TMP_MARK}old-{os.getpid()}")
    os.rename(target, old)  # without renameat2: a moment with no target, never a partial one
    os.rename(new, target)
    shutil.rmtree(old)


def _temp_dir(target: Path) -> Path:
    return target.with_name(f".{target.name}{_TMP_MARK}{os.getpid()}")


def save_pipeline(nlp: Language, target: Path) -> None:
    """nlp.to_disk(target), atomically."""
    target = Path(target)
    tmp = _temp_dir(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    nlp.to_disk(tmp)
    replace_dir(tmp, target)


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
    tmp = _temp_dir(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    replace_dir(tmp, target)


def remove_stale_temp_dirs(output: Path) -> None:
    """Leftovers of a run that was killed while saving.

    Without renameat2 a kill between the two renames of `replace_dir` leaves the
    previous model only at `.NAME.tmp-old-PID`: it is moved back, not deleted.
    """
    for old in output.glob(f".model-*{_TMP_MARK}old-*"):
        target = output / old.name[1:].split(_TMP_MARK)[0]
        if not target.exists():
            os.rename(old, target)
    for path in output.glob(f".model-*{_TMP_MARK}*"):
        shutil.rmtree(path, ignore_errors=True)


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
