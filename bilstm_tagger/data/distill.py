"""Gold rows plus teacher rows as one spaCy corpus: `@readers = "bilstm_tagger.DistillCorpus.v1"`.

- Gold rows come from a Hugging Face dataset, as `bilstm_tagger.HFDataset.v1` reads them (one row per Doc).
- `teacher_gold`: `annotate --marginals` shards over those same gold rows; each row's marginals are
  joined onto its gold Example by row id (tokens checked), so it trains on the gold NLL and the
  distillation term.
- `teacher`: folders of `annotate` shards over unlabeled rows. Shards written with `--marginals`
  give soft labels: the Example's reference has no entity annotation (no gold NLL) and carries the
  marginals in `reference.user_data["bilstm_tagger.teacher"]` (ml/distill.py), which the component's
  `get_loss` turns into the distillation term. Shards without marginals (hard-label mode, any
  pipeline that sets doc.ents, written with `--keep-tokens`) give silver gold: their entities become
  the reference's entities, every other token O.
"""
from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

from ..errors import DatasetError
from ..ml.distill import TEACHER_KEY
from .readers import HFDatasetReader


@dataclass
class TeacherRow:
    """One row of an annotate shard: its words and either soft labels (marginals) or entities."""

    id: str
    tokens: List[str]
    marginals: Optional[np.ndarray]  # float16 (n_tokens, n_tags)
    meta: Optional[dict]  # tags and scheme of the marginals
    entities: List[Tuple[int, int, str]]


def shard_files(folder: str) -> List[str]:
    """The parquet shards of an annotate output folder, in order (local engine: part-NNNNNN.parquet)."""
    if not Path(folder).is_dir():
        raise DatasetError(f"teacher folder {folder!r} does not exist; run `annotate` (or `distill`) first")
    files = sorted(glob.glob(str(Path(folder) / "*.parquet")))
    if not files:
        raise DatasetError(f"teacher folder {folder!r} holds no .parquet shards")
    return files


def read_teacher_rows(folder: str, limit: int = 0) -> Iterator[TeacherRow]:
    """Every row of the shards in `folder` (up to `limit` rows; 0 = all), soft or hard."""
    import pyarrow.parquet as pq

    from ..annotate.marginals import read_marginals, read_meta

    n = 0
    for path in shard_files(folder):
        table = pq.read_table(path)
        if "tokens" not in table.column_names:
            raise DatasetError(f"{path}: the shard has no 'tokens' column; write it with `annotate --marginals` or `--keep-tokens`")
        meta = read_meta(table.schema)
        probs = read_marginals(table.column("marginals"), len(meta["tags"])) if meta is not None else None
        for k, row in enumerate(table.select(["id", "tokens", "entities"]).to_pylist()):
            if limit and n >= limit:
                return
            if not row["tokens"]:
                continue
            entities = [(e["start_token"], e["end_token"], e["label"]) for e in row["entities"]]
            marginals = None if probs is None else probs[k].astype(np.float16)
            yield TeacherRow(row["id"], row["tokens"], marginals, meta, entities)
            n += 1


def teacher_record(row: TeacherRow) -> dict:
    return {"marginals": row.marginals, "tags": tuple(row.meta["tags"]), "scheme": row.meta["scheme"]}


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# DistillCorpus's own settings that `distill` also takes as overrides: name -> (is it valid, what is).
SETTING_RULES: Dict[str, Tuple[Callable[[object], bool], str]] = {
    "gold_repeats": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "teacher_limit": (lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
    "teacher_hard": (lambda v: isinstance(v, bool), "true or false"),
}


class DistillCorpus:
    """Callable corpus: the gold Examples (with teacher marginals where `teacher_gold` has the row), then the teacher rows."""

    def __init__(self, gold: Optional[HFDatasetReader], teacher: Sequence[str], teacher_gold: Optional[str], teacher_limit: int,
                 split: str = "train", teacher_hard: bool = False, gold_repeats: int = 1) -> None:
        if gold is None and not teacher:
            raise DatasetError("DistillCorpus needs gold rows (path) or teacher rows (teacher), or both")
        valid, what = SETTING_RULES["gold_repeats"]
        if not valid(gold_repeats):
            raise DatasetError(f"gold_repeats must be {what} (times each gold row is read per epoch), got {gold_repeats!r}")
        self.gold, self.split, self.hard, self.gold_repeats = gold, split, teacher_hard, gold_repeats
        self.rows: List[TeacherRow] = [row for folder in teacher for row in read_teacher_rows(folder, teacher_limit)]
        self.joined: Dict[str, TeacherRow] = {}
        if teacher_gold:
            if gold is None:
                raise DatasetError("teacher_gold joins teacher marginals onto gold rows: give the gold dataset (path) too")
            for row in read_teacher_rows(teacher_gold):
                if row.marginals is not None:
                    self.joined[row.id] = row

    def __call__(self, nlp: Language) -> Iterator[Example]:
        for _ in range(self.gold_repeats if self.gold is not None else 0):
            yield from self._gold_examples(nlp)
        for row in self.rows:
            yield self._teacher_example(nlp, row, self.hard)

    def _gold_examples(self, nlp: Language) -> Iterator[Example]:
        """One pass over the gold rows: a fresh Example per row, so repeated rows share no Doc."""
        mismatched = 0
        if self.gold is not None:
            for row_id, words, tags in self.gold._rows():
                eg = self.gold._example(nlp, [words], [tags], [])
                # annotate derives SPLIT:ROW where the dataset has no id column; the gold reader, ROW
                teacher = self.joined.get(row_id) or self.joined.get(f"{self.split}:{row_id}")
                if teacher is not None and teacher.tokens == list(words):
                    eg.reference.user_data[TEACHER_KEY] = teacher_record(teacher)
                elif teacher is not None:
                    mismatched += 1
                yield eg
        if mismatched:
            warnings.warn(f"DistillCorpus: {mismatched} gold row(s) have teacher marginals over other tokens; those marginals were not used")

    @staticmethod
    def _teacher_example(nlp: Language, row: TeacherRow, hard: bool = False) -> Example:
        predicted = Doc(nlp.vocab, words=row.tokens)
        reference = Doc(nlp.vocab, words=row.tokens)
        if row.marginals is not None and not hard:
            reference.user_data[TEACHER_KEY] = teacher_record(row)
        else:  # hard labels: the teacher's entities are silver gold
            reference.set_ents([Span(reference, s, e, label) for s, e, label in row.entities], default="outside")
        return Example(predicted, reference)

    def __len__(self) -> int:
        return (len(self.gold) * self.gold_repeats if self.gold is not None else 0) + len(self.rows)


@registry.readers("bilstm_tagger.DistillCorpus.v1")
def create_distill_reader(
    path: Optional[str] = None,
    split: str = "train",
    name: Optional[str] = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    target: str = "ents",
    spans_key: str = "sc",
    limit: int = 0,
    revision: Optional[str] = None,
    teacher: List[str] = [],
    teacher_gold: Optional[str] = None,
    teacher_limit: int = 0,
    teacher_hard: bool = False,
    gold_repeats: int = 1,
) -> Callable[[Language], Iterator[Example]]:
    """Gold rows of a Hugging Face dataset (as bilstm_tagger.HFDataset.v1, one row per Doc; path None =
    none) plus teacher rows from `annotate` shard folders: soft labels where the shards have marginals,
    silver entities where they do not. `teacher_gold` is an `annotate --marginals` folder over the gold
    rows themselves, joined by row id. `teacher_limit` caps the rows read from each teacher folder.
    `teacher_hard` trains on the teacher rows' entities (the teacher's best path) as silver gold even
    where their shards hold marginals, to compare hard and soft labels from one tagging pass.
    `gold_repeats` reads every gold row that many times per epoch, to keep gold from being swamped
    when the teacher rows outnumber it."""
    gold = None
    if path is not None:
        gold = HFDatasetReader(path, split, name, tokens_column, tags_column, target, spans_key, limit, revision)
    return DistillCorpus(gold, list(teacher), teacher_gold, teacher_limit, split, teacher_hard, gold_repeats)
