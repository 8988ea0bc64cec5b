"""Training settings that follow the size of the training data instead of fixed step counts.

A fixed `eval_frequency = 500` means 2.5 epochs of CoNLL-2003 but ten epochs of a
3.4k-sentence social-media set, whose dev score peaks before step 500 and falls
after it. These registered functions let a config say "every epoch", "ten
epochs without improvement" and "decay the learning rate per epoch" instead:

    [training.eval_frequency]
    @misc = "bilstm_tagger.epoch_steps.v1"
    path = ${paths.dataset}
    epochs = 1.0

They resolve to plain integers, so `spacy train` runs them as it runs any config. Use them in
[training] values only: spaCy resolves [training.optimizer] on its own, without interpolation, in
`nlp.create_optimizer()`, so `epoch_decay.v1` takes its steps per epoch as a number.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterator, Optional

from spacy.util import registry

from ..errors import ConfigError


@lru_cache(maxsize=16)
def count_words(path: str, split: str, name: Optional[str], tokens_column: str, limit: int) -> int:
    """Tokens in a split of a Hugging Face dataset (read once per process)."""
    import pyarrow.compute as pc

    from .readers import load_hf_split

    _, dataset = load_hf_split(path, split, name)
    if tokens_column not in dataset.column_names:
        raise ConfigError(f"dataset {path!r}, split {split!r} has no tokens column {tokens_column!r}")
    column = dataset.data.column(tokens_column)
    if limit:
        column = column.slice(0, limit)
    return int(pc.sum(pc.list_value_length(column)).as_py() or 0)


@registry.misc("bilstm_tagger.epoch_steps.v1")
def epoch_steps(
    path: str,
    split: str = "train",
    name: Optional[str] = None,
    tokens_column: str = "tokens",
    limit: int = 0,
    batch_words: int = 1000,
    epochs: float = 1.0,
    min_steps: int = 1,
    max_steps: int = 0,
) -> int:
    """How many update steps `epochs` passes over the split take, at `batch_words` words per batch
    (the batcher's final size), clamped to [min_steps, max_steps] (max_steps 0: no upper bound)."""
    if batch_words < 1 or epochs <= 0:
        raise ConfigError("bilstm_tagger.epoch_steps.v1 needs batch_words >= 1 and epochs > 0")
    steps = round(epochs * count_words(path, split, name, tokens_column, limit) / batch_words)
    steps = max(min_steps, steps)
    return min(steps, max_steps) if max_steps else steps


@registry.schedules("bilstm_tagger.epoch_decay.v1")
def epoch_decay(base_rate: float, steps_per_epoch: int, decay: float = 0.05, *, t: int = 0) -> Iterator[float]:
    """base_rate / (1 + decay * epochs so far): the per-epoch decay of Ma & Hovy (2016), counted in steps."""
    if steps_per_epoch < 1:
        raise ConfigError("bilstm_tagger.epoch_decay.v1 needs steps_per_epoch >= 1")
    while True:
        yield base_rate / (1.0 + decay * t / steps_per_epoch)
        t += 1
