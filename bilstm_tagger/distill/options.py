"""The settings of one `distill` run (the command line's options, as a plain object)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class DistillOptions:
    """What to distil from, into what, and where; see `python -m bilstm_tagger distill --help`."""

    teacher: str
    config: str
    unlabeled: str
    output: str
    overrides: Dict = field(default_factory=dict)
    unlabeled_split: str = "train"
    unlabeled_limit: int = 0
    text_column: Optional[str] = None
    tokens_column: Optional[str] = None
    id_column: str = "id"
    engine: str = "local"
    hard_labels: bool = False
    teacher_train: bool = True
    shard_size: int = 5000
    batch_size: int = 256
    n_process: int = 1
    pack_words: int = 0  # 0: one unlabeled sentence per row; N: consecutive sentences packed up to N words
    ensemble: List[str] = field(default_factory=list)  # more teachers: the student learns the mean marginals
    teacher_only: bool = False  # stop after stage 1 (train elsewhere on DIR/teacher)
