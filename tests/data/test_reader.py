"""The Hugging Face reader on real datasets.load_dataset calls over files on disk."""
import re
import json
import warnings

import pytest
import spacy

from bilstm_tagger.errors import DatasetError
from bilstm_tagger.data.readers import create_hf_reader

from ..conftest import SAMPLE, conll_path


def write_dataset(root, splits):
    """A hub-layout dataset of JSON-lines files, one per split."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(root / f"{split}.jsonl", "w", encoding="utf8") as f:
            for i, (tokens, tags) in enumerate(rows):
                f.write(json.dumps({"id": f"r{i}", "tokens": tokens, "ner_tags": tags}) + "\n")
    return str(root)


GOOD = [(["Ann", "lives", "in", "Oslo"], ["B-PER", "O", "O", "B-LOC"])]


def test_conll_classlabel_tags_become_entities():
    nlp = spacy.blank("en")
    examples = list(create_hf_reader(str(conll_path()), split="validation", limit=5)(nlp))
    assert len(examples) == 5
    ref = examples[1].reference  # "LONDON 1996-08-30"
    assert [(e.text, e.label_) for e in ref.ents] == [("LONDON", "LOC")]
    assert examples[1].predicted.text == ref.text and not examples[1].predicted.ents


def test_string_tags_and_lazy_examples():
    reader = create_hf_reader(str(SAMPLE), split="train")
    assert len(reader) == 600
    first = next(iter(reader(spacy.blank("en"))))
    assert first.reference.ents


def test_pos_tags_as_token_tags():
    nlp = spacy.blank("en")
    eg = next(iter(create_hf_reader(str(conll_path()), split="train", tags_column="pos_tags", target="tag", limit=1)(nlp)))
    assert [t.tag_ for t in eg.reference] == ["NNP", "VBZ", "JJ", "NN", "TO", "VB", "JJ", "NN", "."]


def test_missing_dataset(tmp_path):
    with pytest.raises(DatasetError, match="^no such folder: .*nope$"):  # at once, not after the hub's retries
        create_hf_reader(str(tmp_path / "nope"))


def test_missing_split_lists_the_splits(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": GOOD})
    with pytest.raises(DatasetError, match=r"has no split 'validation'; it has: train"):
        create_hf_reader(path, split="validation")


def test_missing_column_names_it(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": GOOD})
    with pytest.raises(DatasetError, match=r"split 'train' has no tags column 'ner'; its columns are: id, tokens, ner_tags"):
        create_hf_reader(path, tags_column="ner")


def test_length_mismatch_names_the_row(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": GOOD + [(["a", "b"], ["O"])]})
    with pytest.raises(DatasetError, match=r"split 'train', column 'ner_tags', row id r1: 2 tokens but 1 tags"):
        create_hf_reader(path)


def test_unknown_prefix_names_the_row(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": GOOD + [(["a"], ["X-PER"])]})
    with pytest.raises(DatasetError, match=r"row id r1: tag 'X-PER' fits no scheme"):
        create_hf_reader(path)


def test_iob1_is_repaired_with_a_counting_warning(tmp_path):
    rows = [(["Ann", "Lee", "met", "Bo"], ["I-PER", "I-PER", "O", "I-PER"]), (["x"], ["O"])]
    path = write_dataset(tmp_path / "d", {"train": rows})
    with pytest.warns(UserWarning, match=r"repaired 2 ill-formed tag\(s\).* in 1 row\(s\), ids r0"):
        reader = create_hf_reader(path)
    ents = [(e.text, e.label_) for e in next(iter(reader(spacy.blank("en")))).reference.ents]
    assert ents == [("Ann Lee", "PER"), ("Bo", "PER")]


def test_labels_unseen_in_train_are_named(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": GOOD, "validation": [(["Acme"], ["B-ORG"])]})
    with pytest.warns(UserWarning, match=r"label\(s\) ORG never occur in the train split"):
        create_hf_reader(path, split="validation")


def test_empty_split_is_an_error(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": GOOD})
    (tmp_path / "d" / "test.jsonl").write_text("")
    for split in ("test", "train"):  # datasets cannot load any split while one is empty
        with pytest.raises(DatasetError, match=re.escape(f"dataset {path!r}, split 'test' is empty")):
            create_hf_reader(path, split=split)


def test_pos_target_requires_universal_tags(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": [(["a"], ["NN"])]})
    with pytest.raises(DatasetError, match="'NN' is not a Universal POS tag"):
        create_hf_reader(path, target="pos")


def test_clean_data_raises_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_hf_reader(str(SAMPLE), split="validation")
