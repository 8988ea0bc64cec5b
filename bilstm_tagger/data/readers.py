"""Hugging Face `datasets` as a spaCy corpus: `@readers = "bilstm_tagger.HFDataset.v1"`.

The dataset is loaded and checked once, when the reader is built, so a bad
column or row fails before training starts; Examples are then built lazily.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from confection import ConfigValidationError
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from ..errors import ConfigError, DatasetError, TagError
from ..pipeline.tasks import get_task
from .paths import hub_unreachable, missing_local_path, unreachable_message

_BATCH = 1000


class DatasetNotFoundError(DatasetError, ConfigValidationError):
    """A dataset that is neither a local folder nor reachable on the hub.

    Also a ConfigValidationError: `spacy train` resolves [corpora] and [training] inside its
    show_validation_error, which prints such an error as one line, where any other exception
    prints a 60-line traceback.
    """

    def __init__(self, message: str = "", **config_error) -> None:
        # show_validation_error rebuilds the error through from_error(), with keyword arguments only.
        config_error.setdefault("title", message)
        ConfigValidationError.__init__(self, **config_error)

    def __str__(self) -> str:
        return self.title or ""

    def __reduce__(self):  # picklable (multiprocessing), though __init__ takes keywords
        return (type(self), (self.title,))


@contextmanager
def _keep_global_rng() -> Iterator[None]:
    """datasets draws from Python's global `random` (fingerprints, caching), sometimes a varying
    number of times; spaCy's training shuffles with that same generator. Restoring its state
    keeps a seeded training run bit-for-bit reproducible."""
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def load_hf_dict(path: str, name: Optional[str] = None, revision: Optional[str] = None):
    """`datasets.load_dataset(path, name)` as a DatasetDict, with an error that names the dataset.

    A path that can only be local (see data.paths) and does not exist fails here at once: datasets
    would take it for a hub id and retry the network for half a minute.
    """
    missing = missing_local_path(path)
    if missing:
        raise DatasetNotFoundError(missing)
    path = os.path.expanduser(path)  # a config file's "~/data/x" is not expanded by any shell
    with _keep_global_rng():
        import datasets
    try:
        with _keep_global_rng():
            dataset_dict = datasets.load_dataset(path, name, revision=revision)
    except Exception as err:  # datasets raises many types here; all mean "cannot load"
        empty = re.search(r'Instruction "([^"]+)" corresponds to no data', str(err))
        if empty:  # datasets refuses every split of a dict in which one split is empty
            raise DatasetError(f"dataset {path!r}, split {empty.group(1)!r} is empty") from None
        if hub_unreachable(err):
            raise DatasetNotFoundError(unreachable_message(path)) from None
        raise DatasetError(f"could not load dataset {path!r}" + (f" (config {name!r})" if name else "") + f": {err}") from None
    if not isinstance(dataset_dict, datasets.DatasetDict):
        dataset_dict = datasets.DatasetDict({"train": dataset_dict})
    return dataset_dict


def load_hf_split(path: str, split: str, name: Optional[str] = None, revision: Optional[str] = None):
    """The DatasetDict and its `split`, or an error listing the splits there are."""
    dataset_dict = load_hf_dict(path, name, revision)
    if split not in dataset_dict:
        raise DatasetError(f"dataset {path!r} has no split {split!r}; it has: {', '.join(dataset_dict)}")
    return dataset_dict, dataset_dict[split]


def tag_names_of(dataset, column: str) -> Optional[List[str]]:
    """ClassLabel names of a sequence column, or None when it holds plain strings."""
    inner = getattr(dataset.features[column], "feature", None)
    names = getattr(inner, "names", None)
    if names is not None:
        return list(names)
    if getattr(inner, "dtype", None) == "string":
        return None
    raise DatasetError(
        f"column {column!r} holds {dataset.features[column]}, not a sequence of ClassLabel or string tags"
    )


@dataclass
class _Scan:
    rows: int = 0
    repairs: int = 0
    repaired_rows: List[str] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)


class HFDatasetReader:
    """Callable corpus: yields one Example per dataset row."""

    def __init__(
        self,
        path: str,
        split: str,
        name: Optional[str],
        tokens_column: str,
        tags_column: str,
        target: str,
        spans_key: str,
        limit: int,
        revision: Optional[str],
        extra_columns: Optional[Dict[str, str]] = None,
        group_sentences: int = 1,
        doc_marker: Optional[str] = "-DOCSTART-",
    ) -> None:
        if group_sentences < 1:
            raise DatasetError(f"group_sentences must be at least 1 (one row per Doc), not {group_sentences}")
        self.group_sentences, self.doc_marker = group_sentences, doc_marker
        try:
            self.task = get_task(target, spans_key=spans_key)
            self.extra_tasks = {column: get_task(t, spans_key=spans_key) for column, t in (extra_columns or {}).items()}
        except ConfigError as err:
            raise DatasetError(str(err)) from None
        self.where = f"dataset {path!r}, split {split!r}"
        dataset_dict, dataset = load_hf_split(path, split, name, revision)
        self._check_columns(dataset, tokens_column, tags_column, *self.extra_tasks)
        if limit:
            with _keep_global_rng():
                dataset = dataset.select(range(min(limit, len(dataset))))
        if len(dataset) == 0:
            raise DatasetError(f"{self.where} is empty")
        self.dataset = dataset
        self.tokens_column, self.tags_column = tokens_column, tags_column
        self.names = tag_names_of(dataset, tags_column)
        scan = self._scan(dataset, self.where)
        for column in self.extra_tasks:
            self._scan(dataset, self.where, column)
        self._report(scan, split, dataset_dict, path)

    def _check_columns(self, dataset, tokens_column: str, tags_column: str, *extra: str) -> None:
        for role, column in (("tokens", tokens_column), ("tags", tags_column), *(("extra tags", c) for c in extra)):
            if column not in dataset.column_names:
                raise DatasetError(
                    f"{self.where} has no {role} column {column!r}; its columns are: {', '.join(dataset.column_names)}"
                )

    def _rows(self, dataset=None, column: Optional[str] = None) -> Iterator[Tuple[str, List[str], List[str]]]:
        """(row id, tokens, tag strings of `column`, by default the tags column) for every row."""
        dataset = self.dataset if dataset is None else dataset
        tags_column = column or self.tags_column
        columns = [self.tokens_column, tags_column] + (["id"] if "id" in dataset.column_names else [])
        names = tag_names_of(dataset, tags_column)
        n = 0
        with _keep_global_rng():
            batches = dataset.select_columns(columns).iter(batch_size=_BATCH)
        while True:
            with _keep_global_rng():
                batch = next(batches, None)
            if batch is None:
                return
            ids = batch.get("id") or [str(n + i) for i in range(len(batch[self.tokens_column]))]
            for row_id, words, tags in zip(ids, batch[self.tokens_column], batch[tags_column]):
                yield str(row_id), words, [names[t] for t in tags] if names else tags
            n += len(ids)

    def _scan(self, dataset, where: str, column: Optional[str] = None) -> _Scan:
        scan = _Scan()
        column = column or self.tags_column
        task = self.extra_tasks.get(column, self.task)
        for row_id, words, tags in self._rows(dataset, column):
            at = f"{where}, column {column!r}, row id {row_id}"
            if len(words) != len(tags):
                raise DatasetError(f"{at}: {len(words)} tokens but {len(tags)} tags")
            if not all(isinstance(w, str) and w for w in words):
                raise DatasetError(f"{at}: column {self.tokens_column!r} has an empty or non-string token")
            scan.rows += 1
            try:
                labels, repairs = task.read_tags(tags)
            except TagError as err:
                raise DatasetError(f"{at}: {err}") from None
            if repairs:
                scan.repairs += repairs
                scan.repaired_rows.append(row_id)
            scan.labels.update(labels)
        return scan

    def _report(self, scan: _Scan, split: str, dataset_dict, path: str) -> None:
        if scan.repairs:
            shown = ", ".join(scan.repaired_rows[:5]) + (" ..." if len(scan.repaired_rows) > 5 else "")
            warnings.warn(
                f"{self.where}, column {self.tags_column!r}: repaired {scan.repairs} ill-formed tag(s) "
                f"(an I- or L- tag that does not continue its chunk starts a new one) in "
                f"{len(scan.repaired_rows)} row(s), ids {shown}",
                stacklevel=3,
            )
        if split != "train" and "train" in dataset_dict and self.tags_column in dataset_dict["train"].column_names:
            train_labels = self._scan(dataset_dict["train"], f"dataset {path!r}, split 'train'").labels
            unseen = sorted(set(scan.labels) - set(train_labels))
            if unseen:
                warnings.warn(
                    f"{self.where}: label(s) {', '.join(unseen)} never occur in the train split, "
                    "so no model trained on it can predict them",
                    stacklevel=3,
                )

    def __call__(self, nlp: Language) -> Iterator[Example]:
        extras = [self._rows(column=c) for c in self.extra_tasks]
        rows = (([words], [tags], [[next(r)[2]] for r in extras]) for _, words, tags in self._rows())
        for words, tags, extra_tags in self._grouped(rows):
            yield self._example(nlp, words, tags, extra_tags)

    def _grouped(self, rows):
        """Consecutive rows, up to group_sentences per Doc. A row that is only the doc marker
        (CoNLL's -DOCSTART-) ends a group and stays a Doc of its own, so every token is still scored."""
        group = None
        for row in rows:
            marker = self.doc_marker is not None and row[0][0] == [self.doc_marker]
            if group and (marker or len(group[0]) == self.group_sentences):
                yield group
                group = None
            if marker:
                yield row
            elif group is None:
                group = row
            else:
                group[0].extend(row[0])
                group[1].extend(row[1])
                for mine, theirs in zip(group[2], row[2]):
                    mine.extend(theirs)
        if group:
            yield group

    def _example(self, nlp: Language, sentences: List[List[str]], tags: List[List[str]], extra_tags) -> Example:
        words = [w for sentence in sentences for w in sentence]
        # Sentence starts are set on both sides, like `spacy convert -n`; the scorer scores sentence by sentence.
        starts = [i == 0 for sentence in sentences for i in range(len(sentence))] if len(sentences) > 1 else None
        predicted = Doc(nlp.vocab, words=words, sent_starts=starts)
        reference = Doc(nlp.vocab, words=words, sent_starts=starts)
        self.task.write_gold(reference, [t for sentence in tags for t in sentence])
        for task, column_tags in zip(self.extra_tasks.values(), extra_tags):
            task.write_gold(reference, [t for sentence in column_tags for t in sentence])
        return Example(predicted, reference)

    def __len__(self) -> int:
        """Rows in the split (Docs, unless group_sentences > 1 joins them)."""
        return len(self.dataset)


@registry.readers("bilstm_tagger.HFDataset.v1")
def create_hf_reader(
    path: str,
    split: str = "train",
    name: Optional[str] = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    target: str = "ents",
    spans_key: str = "sc",
    limit: int = 0,
    revision: Optional[str] = None,
    extra_columns: Dict[str, str] = {},
    group_sentences: int = 1,
    doc_marker: Optional[str] = "-DOCSTART-",
) -> Callable[[Language], Iterator[Example]]:
    """A corpus from a Hugging Face dataset (hub id or local dir) with a tokens and a tags column.

    Tags may be ClassLabel ids or strings, in IOB1/IOB2/BIOES/BILOU for entity
    targets ("ents", "spans"), or any labels for token targets ("tag", "pos").
    `extra_columns` maps more tag columns to their targets, e.g. {"pos_tags": "tag"},
    so one corpus trains several components (see configs/ner_shared_tok2vec.cfg).
    `group_sentences` > 1 joins up to that many consecutive rows into one Doc with
    sentence starts set (document context, as `spacy convert -n` does); a row
    holding only `doc_marker` (CoNLL's -DOCSTART-) starts a new group.
    """
    return HFDatasetReader(
        path, split, name, tokens_column, tags_column, target, spans_key, limit, revision, extra_columns,
        group_sentences, doc_marker,
    )
