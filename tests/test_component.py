"""The spaCy component: training, annotation, batching, targets and serialization."""
import numpy as np
import pytest
import spacy
from spacy.tokens import Span


from .conftest import TINY_MODEL, read_examples, train_pipeline

TEXTS = [
    "Mara Lindqvist said on Tuesday that Northwind Bank would cut 200 jobs in Lisbon .",
    "",
    "   ",
    "Oslo",
    "Heavy rain closed roads across Canada on Wednesday .",
    "!!! ... ???",
]


def ents(doc):
    return [(e.start, e.end, e.label_) for e in doc.ents]


def test_sample_model_learns(ner_nlp, sample_examples):
    scores = ner_nlp.evaluate(sample_examples["test"])
    assert scores["ents_f"] > 0.6, scores
    assert set(scores["ents_per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    assert ner_nlp.get_pipe("bilstm_tagger").labels == ("LOC", "MISC", "ORG", "PER")


def test_pipe_equals_call_at_any_batch_size(ner_nlp):
    one_by_one = [ents(ner_nlp(t)) for t in TEXTS]
    for batch_size in (1, 2, 64):
        assert [ents(d) for d in ner_nlp.pipe(TEXTS, batch_size=batch_size)] == one_by_one
    assert list(ner_nlp.pipe([])) == []
    assert ents(ner_nlp("")) == []


def test_long_docs_are_windowed_without_changing_short_ones(ner_nlp):
    tagger = ner_nlp.get_pipe("bilstm_tagger")
    text = " ".join([TEXTS[0]] * 50)
    doc = ner_nlp(text)
    assert len(doc) > tagger.model.attrs["window"]
    assert all(0 <= e.start < e.end <= len(doc) for e in doc.ents)
    assert ents(ner_nlp(TEXTS[0])) == [(s, e, l) for s, e, l in ents(doc) if e <= 15]


def test_preset_entities_are_kept(ner_nlp):
    doc = ner_nlp.make_doc(TEXTS[0])
    doc.ents = [Span(doc, 0, 1, label="CUSTOM")]
    doc = ner_nlp.get_pipe("bilstm_tagger")(doc)
    assert doc.ents[0].label_ == "CUSTOM" and doc.ents[0].end == 1
    assert all(e.start >= 1 for e in doc.ents[1:])


def test_bytes_round_trip_gives_identical_predictions(ner_nlp):
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    nlp2.from_bytes(ner_nlp.to_bytes())
    a = ner_nlp.get_pipe("bilstm_tagger").predict([ner_nlp.make_doc(t) for t in TEXTS])
    b = nlp2.get_pipe("bilstm_tagger").predict([nlp2.make_doc(t) for t in TEXTS])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_disk_round_trip_gives_identical_predictions(ner_nlp, tmp_path):
    ner_nlp.to_disk(tmp_path / "m")
    nlp2 = spacy.load(tmp_path / "m")
    assert [ents(d) for d in nlp2.pipe(TEXTS)] == [ents(d) for d in ner_nlp.pipe(TEXTS)]
    assert nlp2.get_pipe("bilstm_tagger").cfg["labels"] == ["LOC", "MISC", "ORG", "PER"]


def test_labels_cannot_be_added_after_initialize(ner_nlp):
    with pytest.raises(ValueError, match="cannot add label 'NEW'"):
        ner_nlp.get_pipe("bilstm_tagger").add_label("NEW")


def test_bad_settings_fail_at_construction():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="target must be one of"):
        nlp.add_pipe("bilstm_tagger", config={"target": "chunks"})
    with pytest.raises(ValueError, match="proj_size needs cell = 'lstm'"):
        nlp.add_pipe("bilstm_tagger", name="b", config={"model": {**TINY_MODEL, "cell": "gru", "proj_size": 8}})
    with pytest.raises(ValueError, match="must divide the BiRNN output width"):
        nlp.add_pipe("bilstm_tagger", name="c", config={"model": {**TINY_MODEL, "attention_heads": 5}})


@pytest.mark.parametrize(
    "variant",
    [
        {"attention_heads": 4, "attention_layers": 2},
        {"cell": "gru", "num_layers": 2},
        {"proj_size": 16, "num_layers": 2},
        {"crf": False},
        {"char_width": 0},
        {"embed_attrs": ["NORM"], "embed_rows": [1000], "embed_widths": [16]},
    ],
)
def test_variants_train_and_round_trip(variant, sample_examples, tmp_path):
    nlp = train_pipeline({"model": {**TINY_MODEL, **variant}}, sample_examples["train"][:64], steps=3)
    nlp.to_disk(tmp_path / "m")
    nlp2 = spacy.load(tmp_path / "m")
    assert [ents(d) for d in nlp2.pipe(TEXTS)] == [ents(d) for d in nlp.pipe(TEXTS)]


def test_spans_target_writes_a_span_group(sample_examples):
    examples = []
    for eg in sample_examples["train"][:100]:
        eg.reference.spans["found"] = list(eg.reference.ents)
        examples.append(eg)
    nlp = train_pipeline({"model": TINY_MODEL, "target": "spans", "spans_key": "found", "scheme": "IOB2"}, examples, steps=20)
    doc = nlp(TEXTS[0])
    assert "found" in doc.spans and not doc.ents
    scores = nlp.evaluate(examples[:20])
    assert "spans_found_f" in scores and "spans_found_per_type" in scores


def test_tag_target_scores_accuracy():
    nlp = spacy.blank("en")
    from .conftest import conll_path

    examples = read_examples(nlp, conll_path(), "train", limit=200, tags_column="pos_tags", target="tag")
    nlp = train_pipeline({"model": TINY_MODEL, "target": "tag"}, examples, steps=40)
    scores = nlp.evaluate(examples[:50])
    assert scores["tag_acc"] > 0.5, scores
    assert nlp("The cat sat .")[1].tag_ in nlp.get_pipe("bilstm_tagger").labels


def test_missing_gold_entities_are_not_trained_as_O(sample_examples):
    eg = sample_examples["train"][0]
    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    nlp.initialize(lambda: sample_examples["train"][:50])
    ref = eg.reference.copy()
    ref.set_ents([], default="missing")
    from spacy.training import Example

    assert (tagger._gold_ids(Example(eg.predicted, ref)) == -1).all()


@pytest.mark.parametrize("scheme", ["BILOU", "IOB2"])
def test_fast_gold_path_equals_the_aligned_path(sample_examples, scheme):
    from spacy.training import Example

    from bilstm_tagger.component import _biluo_to

    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL, "scheme": scheme})
    tagger.add_label("LOC")
    tagger.add_label("PER")  # ORG and MISC stay unknown to the model: they must map to -1
    examples = list(sample_examples["train"][:80])
    partial = examples[0].reference.copy()
    partial.set_ents([], default="missing")  # all missing
    examples.append(Example(examples[0].predicted, partial))
    for eg in examples:
        slow = [tagger.tag_index.get(t, -1) if t else -1 for t in map(lambda t: _biluo_to(t, scheme), eg.get_aligned_ner())]
        assert tagger._gold_ents_fast(eg.reference).tolist() == slow
