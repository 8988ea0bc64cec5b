"""`distill TEACHER CONFIG --unlabeled DATASET --output DIR`: teach CONFIG's student with TEACHER's marginals.

Stage 1 (`teacher.py`) cuts the unlabeled stories into sentences and has TEACHER tag them, and by
default the config's gold training split too, into DIR/teacher/ with the `annotate` machinery
(`--marginals`, or `--keep-tokens` in hard-label mode), so a rerun after a kill redoes only the
missing shards. Stage 2 (`student.py`) trains the student with spaCy's own loop on a
`bilstm_tagger.DistillCorpus.v1` corpus of gold + teacher rows, model-best chosen on the config's
gold dev corpus, into DIR/model-best and DIR/model-last.
"""
from __future__ import annotations

from .options import DistillOptions
from .run import distill

__all__ = ["DistillOptions", "distill"]
