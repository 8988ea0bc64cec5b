"""Entity confidence, n-best, alternatives, calibration, `pipe.inspect` and the `explain` report,
on tiny models trained on the bundled sample corpus (and small random CRFs)."""
import argparse
import itertools
import math

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import DocBin, Span
from torch import nn

from bilstm_tagger.inspection import calibrate, explain
from bilstm_tagger.pipeline.confidence import ScoreContext, get_records, make_record, record_confidences, spans_probability
from bilstm_tagger.inspection.inspect import token_vectors
from bilstm_tagger.ml import encoder_parts
from bilstm_tagger.tags import spans_from_tags, tag_names, transition_constraints

from ..conftest import SAMPLE, TINY_MODEL, read_examples, tiny_model, train_pipeline
from ..util import DomIndex, assert_non_trivial, chromium, decode_png, needs_chromium, needs_report

TEXTS = [
    "Mara Lindqvist said on Tuesday that Northwind Bank would cut 200 jobs in Lisbon .",
    "Heavy rain closed roads across Canada on Wednesday .",
    "Oslo",
    "",
    "Peter Jensen of Acme Corp met officials in Berlin and Paris .",
]


def ents(doc):
    return [(e.start, e.end, e.label_) for e in doc.ents]


def confidences(doc):
    return [e._.confidence for e in doc.ents]


# ---- exactness against brute force ---------------------------------------------------------


def brute_force(record, scheme):
    """P(span) for every span of every legal path, by enumerating all tag paths."""
    tags = list(record["tags"])
    em = np.asarray(record["emissions"], dtype=np.float64) / record["temperature"]
    n, L = em.shape
    crf = "transitions" in record
    if crf:
        start, trans, end = (np.where(np.asarray(record[k]) <= -1e4, -np.inf, np.asarray(record[k], dtype=np.float64)) / record["temperature"]
                             for k in ("start", "transitions", "end"))
    else:
        em = em - np.log(np.exp(em).sum(1, keepdims=True))
    paths = np.array(list(itertools.product(range(L), repeat=n)))
    scores = em[np.arange(n), paths].sum(1)
    if crf:
        scores = scores + start[paths[:, 0]] + trans[paths[:, :-1], paths[:, 1:]].sum(1) + end[paths[:, -1]]
    probs = np.exp(scores - np.logaddexp.reduce(scores))
    totals = {}
    for path, p in zip(paths, probs):
        if p > 0:
            for span in spans_from_tags([tags[i] for i in path]).spans:
                totals[span] = totals.get(span, 0.0) + p
    return totals


def random_record(scheme, crf, n_tokens, seed, temperature=1.0):
    rng = np.random.default_rng(seed)
    tags = tag_names(["PER", "LOC"], scheme)
    L = len(tags)
    scores = None
    if crf:
        allowed = transition_constraints(tags, scheme)
        scores = tuple(np.where(a, rng.normal(size=a.shape), -1e4).astype(np.float32) for a in allowed)
    emissions = (rng.normal(size=(n_tokens, L)) * 2).astype(np.float32)
    return make_record(ScoreContext(tuple(tags), scheme, scores, temperature), emissions.argmax(1), emissions)


@pytest.mark.parametrize("scheme", ["BILOU", "IOB2"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_crf_span_probabilities_equal_brute_force(scheme, temperature):
    for seed in range(3):
        record = random_record(scheme, True, 4, seed, temperature)
        exact = brute_force(record, scheme)
        spans = sorted(exact)
        got = spans_probability(record, spans)
        np.testing.assert_allclose(got, [exact[s] for s in spans], rtol=1e-5, atol=1e-7)
        # A span no legal path has gets 0.
        assert spans_probability(record, [(0, 1, "ORG")])[0] == 0.0


def test_softmax_span_probability_is_the_token_product():
    record = random_record("IOB2", False, 4, 0)
    probs = np.exp(record["emissions"]) / np.exp(record["emissions"]).sum(1, keepdims=True)
    tags = list(record["tags"])
    B, I = tags.index("B-PER"), tags.index("I-PER")
    expected = probs[1, B] * probs[2, I] * (1 - probs[3, I])  # and not continued at token 3
    assert spans_probability(record, [(1, 3, "PER")])[0] == pytest.approx(expected, rel=1e-6)


def test_trained_model_confidences_equal_brute_force(ner_nlp):
    doc = ner_nlp("Oslo and Lisbon")
    record = get_records(doc)["bilstm_tagger"]
    exact = brute_force(record, "BILOU")
    assert doc.ents, "the sample model should tag these cities"
    for ent in doc.ents:
        assert ent._.confidence == pytest.approx(exact[(ent.start, ent.end, ent.label_)], rel=1e-5)


# ---- Span._.confidence on pipelines ------------------------------------------------------------


def test_every_predicted_entity_has_a_confidence_and_reading_it_changes_nothing(ner_nlp, sample_examples):
    texts = TEXTS + [eg.reference.text for eg in sample_examples["test"][:40]]
    docs = list(ner_nlp.pipe(texts))
    before = [ents(d) for d in docs]
    assert sum(map(len, before)) > 40
    for doc in docs:
        for ent in doc.ents:
            assert 0.0 < ent._.confidence <= 1.0
    assert [ents(d) for d in docs] == before == [ents(d) for d in ner_nlp.pipe(texts)]
    # Not predicted by the component -> None.
    assert Span(docs[0], 1, 4, "XYZ")._.confidence is None
    s, e, label = before[0][0]
    assert Span(docs[0], s, e + 1, label)._.confidence is None  # a different span of a predicted type


def test_preset_entities_have_no_confidence(ner_nlp):
    doc = ner_nlp.make_doc(TEXTS[0])
    doc.ents = [Span(doc, 0, 1, label="CUSTOM")]
    doc = ner_nlp.get_pipe("bilstm_tagger")(doc)
    assert doc.ents[0].label_ == "CUSTOM" and doc.ents[0]._.confidence is None
    assert all(e._.confidence is not None for e in doc.ents[1:])


def test_confidence_survives_docbin_and_worker_processes(ner_nlp):
    docs = list(ner_nlp.pipe(TEXTS))
    expected = [confidences(d) for d in docs]
    assert any(expected)
    store = DocBin(store_user_data=True, docs=docs)
    back = list(DocBin(store_user_data=True).from_bytes(store.to_bytes()).get_docs(ner_nlp.vocab))
    assert [confidences(d) for d in back] == expected
    two = list(ner_nlp.pipe(TEXTS, n_process=2, batch_size=2))
    assert [ents(d) for d in two] == [ents(d) for d in docs]
    for a, b in zip(expected, [confidences(d) for d in two]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.fixture(scope="module")
def spans_nlp():
    nlp = spacy.blank("en")
    examples = read_examples(nlp, SAMPLE, "train", target="spans")
    return train_pipeline({"model": tiny_model(crf=False)}, examples, steps=40, factory="bilstm_spans")


def test_spans_task_softmax_confidences(spans_nlp):
    docs = list(spans_nlp.pipe(TEXTS))
    spans = [s for d in docs for s in d.spans["sc"]]
    assert spans, "the spans model should predict some span"
    for doc in docs:
        record = get_records(doc).get("bilstm_spans")
        for span in doc.spans["sc"]:
            assert 0.0 < span._.confidence <= 1.0
            assert span._.confidence == pytest.approx(spans_probability(record, [(span.start, span.end, span.label_)])[0])


# ---- n-best and alternatives -------------------------------------------------------------------


def test_n_best_paths(ner_nlp):
    pipe = ner_nlp.get_pipe("bilstm_tagger")
    docs = [ner_nlp.make_doc(t) for t in TEXTS]
    best = pipe.n_best(docs, k=6)
    tagged = list(ner_nlp.pipe(TEXTS))
    for paths, doc in zip(best, tagged):
        if not len(doc):
            assert paths == []
            continue
        probs = [p.probability for p in paths]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert paths[0].spans == ents(doc)  # the first path is Viterbi's
        assert len(paths) == (5 if len(doc) == 1 else 6)  # one token: only O and the four U-X are legal
    # On a 2-token doc every legal BILOU path fits in k = 50 (29 with 4 labels): they sum to 1.
    everything = pipe.n_best([ner_nlp.make_doc("Oslo Lisbon")], k=50)[0]
    assert len(everything) == 29
    assert sum(p.probability for p in everything) == pytest.approx(1.0, abs=1e-5)


def test_alternatives_only_when_configured_and_settings_survive_reload(ner_nlp, tmp_path):
    doc = ner_nlp(TEXTS[0])
    assert "alternatives" not in doc.spans
    ner_nlp.to_disk(tmp_path / "m")
    nlp = spacy.load(tmp_path / "m", config={"components": {"bilstm_tagger": {"alternatives_key": "alternatives",
                                                                              "alternatives_threshold": 0.001, "alternatives_k": 8}}})
    assert nlp.get_pipe("bilstm_tagger").cfg["alternatives_key"] == "alternatives"
    docs = list(nlp.pipe(TEXTS))
    assert [ents(d) for d in docs] == [ents(d) for d in ner_nlp.pipe(TEXTS)]
    found = [(d, s) for d in docs for s in d.spans.get("alternatives", [])]
    assert found, "with threshold 0.001 there should be some alternative"
    for doc, span in found:
        assert (span.start, span.end, span.label_) not in ents(doc)
        conf = span._.confidence
        assert 0.001 <= conf < 1.0
        assert conf == pytest.approx(spans_probability(get_records(doc)["bilstm_tagger"], [(span.start, span.end, span.label_)])[0])
    for doc in docs:
        if "alternatives" in doc.spans:
            assert doc.spans["alternatives"].attrs["confidence"] == [s._.confidence for s in doc.spans["alternatives"]]


def test_bad_alternatives_settings_are_refused():
    from bilstm_tagger.errors import ConfigError

    nlp = spacy.blank("en")
    with pytest.raises(ConfigError, match="alternatives_key"):
        nlp.add_pipe("bilstm_tags", config={"alternatives_key": "x"})


# ---- temperature and calibrate -----------------------------------------------------------------


def test_temperature_is_stored_reloaded_and_used(ner_nlp, tmp_path):
    doc = ner_nlp(TEXTS[0])
    plain = confidences(doc)
    pipe = ner_nlp.get_pipe("bilstm_tagger")
    pipe.cfg["temperature"] = 3.0
    try:
        ner_nlp.to_disk(tmp_path / "m")
    finally:
        pipe.cfg["temperature"] = None
    nlp = spacy.load(tmp_path / "m")
    assert nlp.get_pipe("bilstm_tagger").cfg["temperature"] == 3.0
    hot = nlp(TEXTS[0])
    assert ents(hot) == ents(doc)
    record = get_records(hot)["bilstm_tagger"]
    assert record["temperature"] == 3.0
    assert confidences(hot) == pytest.approx(list(spans_probability(record, ents(hot), 3.0)))
    assert all(h < p for h, p in zip(confidences(hot), plain) if p > 0.6)  # softer at T = 3


def _args(parser_module, argv):
    """The real command line's parser (`python -m bilstm_tagger ...`)."""
    from bilstm_tagger.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.command == parser_module.__name__.rsplit(".", 1)[1]
    return args


# ---- inspect -----------------------------------------------------------------------------------


def _step_by_step(rnn, x):
    """Gates of layer 0 of a bidirectional LSTM/GRU, one nn.LSTMCell/nn.GRUCell step at a time."""
    out = {}
    for direction, suffix in (("forward", "_l0"), ("backward", "_l0_reverse")):
        w = {k: getattr(rnn, f"{k}{suffix}") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        H = rnn.hidden_size
        cell = (nn.LSTMCell if isinstance(rnn, nn.LSTM) else nn.GRUCell)(x.shape[1], H)
        cell.load_state_dict(w)
        h, c = torch.zeros(1, H), torch.zeros(1, H)
        rows = {}
        order = range(len(x)) if direction == "forward" else range(len(x) - 1, -1, -1)
        for t in order:
            pre_i, pre_h = x[t : t + 1] @ w["weight_ih"].T + w["bias_ih"], h @ w["weight_hh"].T + w["bias_hh"]
            if isinstance(rnn, nn.LSTM):
                i, f, g, o = (pre_i + pre_h).chunk(4, dim=1)
                h, c = cell(x[t : t + 1], (h, c))
                values = {"input": i.sigmoid(), "forget": f.sigmoid(), "candidate": g.tanh(), "output": o.sigmoid(), "cell": c, "hidden": h}
            else:
                (ir, iz, i_n), (hr, hz, hn) = pre_i.chunk(3, dim=1), pre_h.chunk(3, dim=1)
                r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
                h = cell(x[t : t + 1], h)
                values = {"reset": r, "update": z, "candidate": (i_n + r * hn).tanh(), "hidden": h}
            for k, v in values.items():
                rows.setdefault(k, {})[t] = v[0]
        out[direction] = {k: torch.stack([v[t] for t in range(len(x))]).numpy() for k, v in rows.items()}
    return out


def test_inspect_gates_match_lstm_cell_steps_on_the_trained_pipeline(ner_nlp):
    pipe = ner_nlp.get_pipe("bilstm_tagger")
    doc = ner_nlp(TEXTS[0])
    inspection = pipe.inspect([doc])[0]
    rnn, blocks = encoder_parts(pipe.model.get_ref("encoder"))
    assert not blocks and inspection.attention == []
    x = torch.as_tensor(token_vectors(pipe, [doc])[0])
    with torch.no_grad():
        expected = _step_by_step(rnn, x)
    for direction in ("forward", "backward"):
        got = inspection.rnn[(0, direction)]
        for name, values in expected[direction].items():
            np.testing.assert_allclose(got[name], values, atol=1e-5, err_msg=f"{direction} {name}")
    assert [(s, e, label) for s, e, label, _ in inspection.entities] == ents(doc)
    assert [c for *_, c in inspection.entities] == pytest.approx(confidences(doc))
    np.testing.assert_allclose(inspection.marginals.sum(1), 1.0, atol=1e-5)
    assert inspection.transitions.allowed_transitions.sum() < len(pipe.tags) ** 2  # BILOU forbids moves
    assert inspection.tags == [pipe.tags[i] for i in pipe.predict([doc])[0]]


def test_inspect_gru_two_layers_with_attention_reproduces_the_emissions(sample_examples):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config={"model": tiny_model(cell="gru", num_layers=2, attention_heads=2, attention_layers=2)})
    nlp.initialize(lambda: sample_examples["train"][:20])
    pipe = nlp.get_pipe("bilstm_tagger")
    doc = nlp.make_doc(TEXTS[4])
    inspection = pipe.inspect([doc])[0]
    rnn, blocks = encoder_parts(pipe.model.get_ref("encoder"))
    x = torch.as_tensor(token_vectors(pipe, [doc])[0])
    with torch.no_grad():
        expected = _step_by_step(rnn, x)
    for name in ("reset", "update", "candidate", "hidden"):
        np.testing.assert_allclose(inspection.rnn[(0, "forward")][name], expected["forward"][name], atol=1e-5)
    assert set(inspection.rnn) == {(0, "forward"), (0, "backward"), (1, "forward"), (1, "backward")}
    assert len(inspection.attention) == 2 and inspection.attention[0].shape == (2, len(doc), len(doc))
    np.testing.assert_allclose(inspection.attention[1].sum(-1), 1.0, atol=1e-5)
    # Feeding the blocks in order and the output layer reproduces the emission scores tagging used.
    module = pipe.model.get_ref("encoder").shims[0]._model
    with torch.no_grad():
        h = torch.as_tensor(inspection.hidden).unsqueeze(0)
        padding = torch.zeros(1, len(doc), dtype=torch.bool)
        for block in blocks:
            h = block(h, padding, 0.0)
        emissions = module.output(h)[0].numpy()
    np.testing.assert_allclose(emissions, inspection.emissions, atol=1e-4)


# ---- explain -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explained(ner_nlp, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    ner_nlp.to_disk(root / "m")
    args = _args(explain, ["explain", str(root / "m"), "--dataset", str(SAMPLE), "--split", "validation", "--n", "6",
                           "--output", str(root / "report.html"), "--png-dir", str(root / "png")])
    assert args.func(args) == 0
    nlp = spacy.load(root / "m")
    examples = read_examples(nlp, SAMPLE, "validation", limit=6)
    docs = list(nlp.pipe(eg.predicted for eg in examples))
    return root, docs


@needs_report
def test_explain_writes_pngs(explained):
    root, _ = explained
    names = sorted(p.name for p in (root / "png").iterdir())
    assert {"reliability.png", "transitions.png", "gate_saturation.png", "neurons_doc0.png"} <= set(names)
    for name in names:
        assert_non_trivial(decode_png((root / "png" / name).read_bytes()))


@needs_report
@needs_chromium
def test_explain_report_in_chromium(explained, tmp_path):
    root, docs = explained
    dom = chromium("--dump-dom", (root / "report.html").as_uri(), tmp_path=tmp_path).stdout.decode("utf-8")
    index = DomIndex()
    index.feed(dom)
    assert index.body.get("data-ready") == "1"
    expected = [(e.text, e.label_, str(e.start), str(e.end), f"{e._.confidence:.3f}") for d in docs for e in d.ents]
    got = [(m["text"].strip(), m["data-label"], m["data-start"], m["data-end"], m["data-confidence"]) for m in index.marks]
    assert expected and got == expected
    n_tokens = sum(len(d) for d in docs)
    assert len(index.cells) > 0 and len(index.cells) % n_tokens == 0
    assert index.forbidden > 0
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,1600", (root / "report.html").as_uri(), tmp_path=tmp_path)
    assert_non_trivial(decode_png(shot.read_bytes()))


def test_confidence_equals_introspect_span_marginals():
    """The getter's numpy forward pass is `ml.crf.span_marginals`, the documented definition."""
    from bilstm_tagger.inspection.calibration import scale_scores, span_marginals

    for seed, scheme in enumerate(["BILOU", "IOB2", "BILOU"]):
        record = random_record(scheme, True, 9, seed, temperature=1.7)
        spans = [(s, e, label) for s in range(9) for e in range(s + 1, min(s + 4, 9) + 1) for label in ("PER", "LOC")]
        em, st, tr, en = scale_scores(*(torch.as_tensor(np.asarray(record[k], dtype=np.float64))
                                        for k in ("emissions", "start", "transitions", "end")), 1.7)
        reference = span_marginals(em[None], torch.ones(1, 9, dtype=torch.bool), st, tr, en,
                                   [(0, s, e, label) for s, e, label in spans], list(record["tags"]), scheme)
        np.testing.assert_allclose(spans_probability(record, spans), reference.numpy(), rtol=1e-9, atol=1e-12)


def test_retokenized_doc_gives_no_stale_confidence(ner_nlp):
    doc = ner_nlp("Mara Lindqvist joined Northwind Bank in Lisbon .")
    assert doc.ents and all(c is not None for c in confidences(doc))
    with doc.retokenize() as retokenizer:
        retokenizer.merge(doc[3:5])  # "Northwind Bank" becomes one token
    assert all(c is None for c in confidences(doc))
