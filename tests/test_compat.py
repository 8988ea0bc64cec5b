"""Pipelines saved by release 0.1 (flat BiLSTMTagger.v1, one safetensors file) load and predict identically."""
import json

import pytest
import spacy

from bilstm_tagger.ml.weights import looks_like_safetensors

from .conftest import REPO

LEGACY = REPO / "tests" / "data" / "legacy_0_1"
ONE_THREAD = {"components": {"bilstm_tagger": {"torch_threads": 1}}}  # exact equality needs fixed threads


def predictions(nlp, expected):
    # The texts were tagged from plain strings by release 0.1; do the same.
    docs = list(nlp.pipe(expected["texts"]))
    return [[[e.start, e.end, e.label_] for e in d.ents] for d in docs], [[t.tag_ for t in d] for d in docs]


# What each pipeline predicts: entities for the CRF NER one, token tags for the softmax tagger.
OUTPUT = {"ner_crf": "ents", "tag_softmax": "tags"}


@pytest.mark.parametrize("name", ["ner_crf", "tag_softmax"])
def test_a_release_0_1_pipeline_predicts_identically(name, tmp_path):
    expected = json.loads((LEGACY / f"{name}.expected.json").read_text())
    key = OUTPUT[name]
    stored = expected[key]
    # The stored outputs are real predictions: most texts have some, and not only "O".
    assert len(stored) == len(expected["texts"]) == 150
    assert sum(1 for per_text in stored if per_text) > 100
    if key == "ents":
        assert sum(map(len, stored)) > 100 and len({label for per_text in stored for _, _, label in per_text}) >= 3
    else:
        assert {tag for per_text in stored for tag in per_text} - {"O"}
    nlp = spacy.load(LEGACY / name, config=ONE_THREAD)
    ents, tags = predictions(nlp, expected)
    got = ents if key == "ents" else tags
    assert got == stored
    # Saved again, it is in today's format and still predicts the same.
    nlp.to_disk(tmp_path / "resaved")
    assert looks_like_safetensors((LEGACY / name / "bilstm_tagger" / "model").read_bytes())
    assert not looks_like_safetensors((tmp_path / "resaved" / "bilstm_tagger" / "model").read_bytes())
    again = spacy.load(tmp_path / "resaved", config=ONE_THREAD)
    again_ents, again_tags = predictions(again, expected)
    assert (again_ents if key == "ents" else again_tags) == stored


def test_a_release_0_1_file_with_other_sizes_is_refused_by_name(tmp_path):
    import shutil

    from bilstm_tagger.errors import ModelLoadError

    shutil.copytree(LEGACY / "ner_crf", tmp_path / "m")
    config = (tmp_path / "m" / "config.cfg").read_text()
    (tmp_path / "m" / "config.cfg").write_text(config.replace("hidden_size = 16", "hidden_size = 24"))
    with pytest.raises(ModelLoadError, match="hidden_size: saved 16, config 24"):
        spacy.load(tmp_path / "m")


@pytest.mark.parametrize("scheme", ["BILOU", "IOB2"])
def test_transition_constraints_are_restored_after_loading(scheme, sample_examples, tmp_path):
    """They are derived from the tag names, not saved, so loading must set them again."""
    import numpy as np

    from bilstm_tagger.ml.shim import get_module
    from bilstm_tagger.tags import transition_constraints

    from .conftest import TINY_MODEL, train_pipeline

    nlp = train_pipeline({"model": TINY_MODEL, "scheme": scheme}, sample_examples["train"][:20], steps=2)
    nlp.to_disk(tmp_path / "m")
    tagger = spacy.load(tmp_path / "m").get_pipe("bilstm_tagger")
    crf = get_module(tagger.model.get_ref("decoder"))
    start, trans, end = transition_constraints(tagger.tags, scheme)
    assert not trans.all()
    assert np.array_equal(crf.allowed_trans.numpy(), trans)
    assert np.array_equal(crf.allowed_start.numpy(), start) and np.array_equal(crf.allowed_end.numpy(), end)
