"""The settings of one `annotate` run (the command line's options, as a plain object)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

FORMATS = ("parquet", "jsonl", "docbin")
ENGINES = ("local", "ray")


@dataclass
class AnnotateOptions:
    """What to tag, how, and where to write it; see `python -m bilstm_tagger annotate --help`."""

    model: str
    input: str
    output_dir: str
    input_type: str = "auto"
    split: str = "train"
    name: Optional[str] = None
    revision: Optional[str] = None
    text_column: Optional[str] = None
    tokens_column: Optional[str] = None
    id_column: str = "id"
    format: str = "parquet"
    keep_text: bool = False
    marginals: bool = False
    keep_tokens: bool = False
    batch_size: int = 256
    shard_size: int = 5000
    limit: int = 0
    engine: str = "local"
    n_process: int = 1
    concurrency: int = 1
    num_cpus_per_actor: float = 1.0
