"""`bilstm_tagger.DistillCorpus.v1`: gold rows joined with their teacher marginals, teacher-only rows with
soft labels, and the component's loss using them."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
from spacy.util import registry

import bilstm_tagger.data.distill  # noqa: F401  (registers the reader without the entry points)
from bilstm_tagger.cli import main
from bilstm_tagger.errors import DatasetError, LabelError
from bilstm_tagger.ml.distill import TEACHER_KEY

from ..conftest import SAMPLE, TINY_MODEL, read_examples, train_pipeline


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A tiny teacher's marginals over the sample corpus' train split (gold) and its test rows (unlabeled)."""
    tmp = tmp_path_factory.mktemp("distill-reader")
    examples = read_examples(spacy.blank("en"), SAMPLE, "train")
    teacher = train_pipeline({"model": TINY_MODEL, "torch_threads": 1}, examples, steps=20)
    teacher.to_disk(tmp / "teacher")
    test = read_examples(spacy.blank("en"), SAMPLE, "test", limit=40)
    pq.write_table(pa.table({"id": [f"u{i}" for i in range(len(test))], "tokens": [[t.text for t in eg.reference] for eg in test]}),
                   tmp / "unlabeled.parquet")
    assert main(["annotate", str(tmp / "teacher"), str(tmp / "unlabeled.parquet"), str(tmp / "unlabeled"), "--marginals"]) == 0
    assert main(["annotate", str(tmp / "teacher"), str(SAMPLE), str(tmp / "gold"), "--split", "train", "--tokens-column", "tokens",
                 "--marginals"]) == 0
    return tmp, examples


def test_gold_rows_get_their_marginals_and_teacher_rows_only_marginals(shards):
    tmp, gold = shards
    reader = registry.readers.get("bilstm_tagger.DistillCorpus.v1")(
        path=str(SAMPLE), split="train", teacher=[str(tmp / "unlabeled")], teacher_gold=str(tmp / "gold"))
    egs = list(reader(spacy.blank("en")))
    assert len(egs) == len(gold) + 40 == len(reader)
    for eg, ref in zip(egs, gold):
        assert [(e.start, e.end, e.label_) for e in eg.reference.ents] == [(e.start, e.end, e.label_) for e in ref.reference.ents]
        record = eg.reference.user_data[TEACHER_KEY]
        assert record["marginals"].shape == (len(eg.reference), len(record["tags"]))
    for eg in egs[len(gold):]:
        assert not eg.reference.has_annotation("ENT_IOB")  # no gold: the distillation term alone
        np.testing.assert_allclose(eg.reference.user_data[TEACHER_KEY]["marginals"].astype(np.float32).sum(1), 1.0, atol=1e-3)


def test_teacher_hard_trains_on_the_teachers_entities_from_the_same_shards(shards):
    tmp, gold = shards
    reader = registry.readers.get("bilstm_tagger.DistillCorpus.v1")(
        path=str(SAMPLE), split="train", teacher=[str(tmp / "unlabeled")], teacher_gold=str(tmp / "gold"), teacher_hard=True)
    egs = list(reader(spacy.blank("en")))[len(gold):]
    table = pq.read_table(next((tmp / "unlabeled").glob("part-*.parquet")))
    expected = [[(e["start_token"], e["end_token"], e["label"]) for e in row] for row in table.column("entities").to_pylist()]
    assert len(egs) == len(expected) == 40 and sum(map(len, expected)) > 0
    for eg, ents in zip(egs, expected):
        assert TEACHER_KEY not in eg.reference.user_data  # no soft term on teacher rows
        assert eg.reference.has_annotation("ENT_IOB")
        assert [(e.start, e.end, e.label_) for e in eg.reference.ents] == ents


def test_gold_repeats_reads_each_gold_row_that_often_and_each_teacher_row_once(shards):
    tmp, gold = shards
    make = registry.readers.get("bilstm_tagger.DistillCorpus.v1")
    reader = make(path=str(SAMPLE), split="train", teacher=[str(tmp / "unlabeled")], teacher_gold=str(tmp / "gold"), gold_repeats=3)
    egs = list(reader(spacy.blank("en")))
    assert len(egs) == 3 * len(gold) + 40 == len(reader)
    gold_words = [[t.text for t in eg.reference] for eg in gold]
    for copy in range(3):
        block = egs[copy * len(gold):(copy + 1) * len(gold)]
        assert [[t.text for t in eg.reference] for eg in block] == gold_words
        assert all(TEACHER_KEY in eg.reference.user_data for eg in block)  # every copy keeps its marginals
    assert len({id(eg.reference) for eg in egs}) == len(egs)  # no Doc shared between copies
    assert not any(eg.reference.has_annotation("ENT_IOB") for eg in egs[3 * len(gold):])  # teacher rows, once
    for bad in (0, -1, 1.5, True):
        with pytest.raises(DatasetError, match="gold_repeats"):
            make(path=str(SAMPLE), teacher=[str(tmp / "unlabeled")], gold_repeats=bad)


def test_the_component_trains_on_them_and_refuses_a_teacher_label_it_lacks(shards):
    tmp, _ = shards
    reader = registry.readers.get("bilstm_tagger.DistillCorpus.v1")(path=str(SAMPLE), teacher=[str(tmp / "unlabeled")])
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL, "torch_threads": 1})
    examples = list(reader(nlp))
    optimizer = nlp.initialize(lambda: examples)
    teacher_only = examples[-8:]
    losses = nlp.update(teacher_only, sgd=optimizer)
    assert losses["bilstm_tagger"] > 0  # no gold on these rows: the loss is the distillation term
    small = spacy.blank("en")
    small.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    with pytest.raises(LabelError, match="MISC"):
        small.get_pipe("bilstm_tagger").initialize(lambda: examples, nlp=small, labels=["LOC", "ORG", "PER"])


def test_an_iob2_teacher_teaches_a_bilou_student(tmp_path):
    """The student's BILOU marginals are summed into the IOB2 teacher's classes (B=B+U, I=I+L)."""
    examples = read_examples(spacy.blank("en"), SAMPLE, "train")
    teacher = train_pipeline({"model": TINY_MODEL, "torch_threads": 1, "scheme": "IOB2"}, examples, steps=10)
    teacher.to_disk(tmp_path / "teacher")
    words = [[t.text for t in eg.reference] for eg in examples[:12]]
    pq.write_table(pa.table({"id": [f"u{i}" for i in range(12)], "tokens": words}), tmp_path / "u.parquet")
    assert main(["annotate", str(tmp_path / "teacher"), str(tmp_path / "u.parquet"), str(tmp_path / "out"), "--marginals"]) == 0
    reader = registry.readers.get("bilstm_tagger.DistillCorpus.v1")(path=str(SAMPLE), teacher=[str(tmp_path / "out")])
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL, "torch_threads": 1, "scheme": "BILOU"})
    egs = list(reader(nlp))
    assert egs[-1].reference.user_data[TEACHER_KEY]["scheme"] == "IOB2"
    optimizer = nlp.initialize(lambda: egs)
    assert nlp.update(egs[-12:], sgd=optimizer)["bilstm_tagger"] > 0
