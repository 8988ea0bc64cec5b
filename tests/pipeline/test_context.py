"""Document context and training schedules: grouped rows, per-row scores, averaged torch weights,
and settings that follow the size of the training data."""
import itertools

import numpy as np
import pytest
import spacy
from spacy.tokens import Span
from spacy.training import Example
from spacy.util import registry
from thinc.api import Adam

from bilstm_tagger.errors import DatasetError
from bilstm_tagger.pipeline.scoring import score_seqeval, tag_sequences
from bilstm_tagger.data.readers import create_hf_reader
from bilstm_tagger.data.schedules import count_words

from ..conftest import REPO, SAMPLE, TINY_MODEL, conll_path, read_examples
from ..data.test_reader import write_dataset


def _rows(n):
    return [([f"w{i}", "visited", f"Place{i}"], ["O", "O", "B-LOC"]) for i in range(n)]


def test_grouping_joins_consecutive_rows_with_sentence_starts(tmp_path):
    rows = _rows(5)
    rows.insert(2, (["-DOCSTART-"], ["O"]))
    path = write_dataset(tmp_path / "d", {"train": rows})
    nlp = spacy.blank("en")
    docs = [eg.reference for eg in create_hf_reader(path, split="train", group_sentences=2)(nlp)]
    # r0 r1 | DOCSTART (its own doc, a boundary) | r2 r3 | r4
    assert [len(d) for d in docs] == [6, 1, 6, 3]
    assert [[s.text for s in d.sents] for d in docs if len(d) == 6] == [
        ["w0 visited Place0", "w1 visited Place1"], ["w2 visited Place2", "w3 visited Place3"]]
    assert [e.text for e in docs[0].ents] == ["Place0", "Place1"]
    pred = create_hf_reader(path, split="train", group_sentences=2)(nlp)
    assert all(eg.predicted.has_annotation("SENT_START") for eg in pred if len(eg.predicted) > 3)
    with pytest.raises(DatasetError, match="group_sentences must be at least 1"):
        create_hf_reader(path, split="train", group_sentences=0)


def test_grouped_conll_scores_exactly_as_ungrouped():
    """Same tokens, same entities, same seqeval numbers: scores stay per row."""
    nlp = spacy.blank("en")
    flat = read_examples(nlp, conll_path(), "validation", limit=300)
    grouped = read_examples(nlp, conll_path(), "validation", limit=300, group_sentences=10)
    assert len(grouped) == 30 and sum(map(len, (e.reference for e in grouped))) == sum(map(len, (e.reference for e in flat)))

    def predictions(examples):
        # A deterministic, imperfect "model": every run of capitalised tokens is one ORG. In a grouped
        # doc a run can cross from the end of one row into the next; scored per row, it counts as the
        # two entities it is when the rows are tagged apart.
        out = []
        for eg in examples:
            doc = eg.predicted.copy()
            caps = [t.text[:1].isupper() for t in doc] + [False]
            starts = [i for i in range(len(doc)) if caps[i] and (i == 0 or not caps[i - 1])]
            ends = [next(j for j in range(i, len(caps)) if not caps[j]) for i in starts]
            doc.ents = [Span(doc, s, e, label="ORG") for s, e in zip(starts, ends)]
            out.append(Example(doc, eg.reference))
        return out

    a, b = score_seqeval(predictions(flat), target="ents"), score_seqeval(predictions(grouped), target="ents")
    assert 0 < a["ents_f"] < 1
    assert a == b
    # An entity that would run across a row boundary is two entities in both.
    flat_true, _ = tag_sequences(predictions(flat), lambda d: list(d.ents))
    grouped_true, _ = tag_sequences(predictions(grouped), lambda d: list(d.ents))
    assert flat_true == grouped_true
    crossing = [eg for eg in predictions(grouped) if any(
        any(t.is_sent_start for t in e[1:]) for e in eg.predicted.ents)]
    assert crossing  # the case above really occurs in this data


def test_averaged_weights_reach_torch_during_evaluation():
    """thinc's use_averages keeps a moving average of every torch parameter; evaluation and
    model-best must see it, and training must go on from the raw weights."""
    nlp = spacy.blank("en")
    examples = read_examples(nlp, SAMPLE, "train", limit=64)
    nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL, "torch_threads": 1})
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01, use_averages=True)
    for step in range(6):
        nlp.update(examples[step * 8 : step * 8 + 8], sgd=optimizer)
    pipe = nlp.get_pipe("bilstm_tagger")
    module = pipe.model.get_ref("encoder").shims[0]._model
    weight = module.output.weight
    raw = weight.detach().clone()
    key = (pipe.model.get_ref("encoder").shims[0].id, "output.weight")
    average = optimizer.averages[key]
    assert not np.allclose(average, raw.numpy())
    docs = [eg.predicted for eg in examples[:20]]
    with nlp.use_params(optimizer.averages):
        assert np.allclose(weight.detach().numpy(), average)
        averaged_scores = pipe.model.get_ref("encoder").predict(pipe.model.get_ref("embed").predict(docs))
    assert torch_equal(weight, raw)  # restored
    raw_scores = pipe.model.get_ref("encoder").predict(pipe.model.get_ref("embed").predict(docs))
    assert not np.allclose(np.concatenate(averaged_scores), np.concatenate(raw_scores))


def torch_equal(a, b) -> bool:
    return bool((a.detach() == b).all())


def test_epoch_steps_follow_the_data_size(tmp_path):
    path = write_dataset(tmp_path / "d", {"train": _rows(40)})  # 120 words
    steps = registry.misc.get("bilstm_tagger.epoch_steps.v1")
    assert count_words(path, "train", None, "tokens", 0) == 120
    assert steps(path, batch_words=10) == 12
    assert steps(path, batch_words=10, epochs=2.5) == 30
    assert steps(path, batch_words=1000, min_steps=5) == 5
    assert steps(path, batch_words=1, max_steps=50) == 50
    assert steps(str(conll_path()), batch_words=1000) == 204  # CoNLL-2003 train: 203,621 words


def test_epoch_decay_schedule():
    rates = list(itertools.islice(registry.schedules.get("bilstm_tagger.epoch_decay.v1")(0.002, 100, 0.05), 0, 301, 100))
    assert rates == pytest.approx([0.002, 0.002 / 1.05, 0.002 / 1.1, 0.002 / 1.15])


@pytest.mark.parametrize("dataset", ["sample", "conll"])
def test_the_default_config_sizes_evaluation_and_patience_by_the_data(dataset):
    """configs/ner.cfg: evaluate every 2 epochs (at least 100 steps), stop after 10 epochs without
    a better dev score (at least 500 steps), average the weights."""
    from spacy.util import load_config

    path = str(SAMPLE) if dataset == "sample" else conll_path()
    config = load_config(REPO / "configs" / "ner.cfg", overrides={"paths.dataset": path}, interpolate=False)
    training = registry.resolve(config.interpolate()["training"])
    words = count_words(path, "train", None, "tokens", 0)
    assert training["eval_frequency"] == max(100, round(2 * words / 1000))
    assert training["patience"] == max(500, round(10 * words / 1000))
    if dataset == "conll":
        assert (training["eval_frequency"], training["patience"]) == (407, 2036)
    assert training["optimizer"].averages is not None
