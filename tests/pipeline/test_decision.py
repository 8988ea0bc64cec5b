"""The decision bias and confidence thresholds (issue 17): exact under the bias, saved and reloaded,
fitted by `calibrate` only when it pays, and `min_confidence` at tag time."""
import itertools
import json

import numpy as np
import pytest
import spacy
from spacy.training import Example

from bilstm_tagger.inspection import calibrate
from bilstm_tagger.cli import build_parser
from bilstm_tagger.pipeline.confidence import get_records, token_marginals
from bilstm_tagger.errors import ConfigError, ModelLoadError
from bilstm_tagger.pipeline.decision import bias_vector
from bilstm_tagger.pipeline.scoring import score_seqeval
from bilstm_tagger.tags import spans_from_tags

from ..conftest import SAMPLE

TEXTS = [
    "Mara Lindqvist said on Tuesday that Northwind Bank would cut 200 jobs in Lisbon .",
    "Peter Jensen of Acme Corp met officials in Berlin and Paris .",
    "Heavy rain closed roads across Canada on Wednesday .",
    "",
]


def ents(doc):
    return [(e.start, e.end, e.label_) for e in doc.ents]


def with_bias(nlp, bias, path):
    """A copy of `nlp` with decision_bias = bias, through to_disk and spacy.load."""
    pipe = nlp.get_pipe("bilstm_tagger")
    old = pipe.cfg["decision_bias"]
    pipe.cfg["decision_bias"] = bias
    try:
        nlp.to_disk(path)
    finally:
        pipe.cfg["decision_bias"] = old
    return spacy.load(path)


def brute_force(em, start, trans, end, tags):
    """Best path, P(span) and token marginals of a CRF by enumerating every tag path."""
    n, L = em.shape
    paths = np.array(list(itertools.product(range(L), repeat=n)))
    scores = em[np.arange(n), paths].sum(1) + start[paths[:, 0]] + end[paths[:, -1]]
    if n > 1:
        scores = scores + trans[paths[:, :-1], paths[:, 1:]].sum(1)
    probs = np.exp(scores - np.logaddexp.reduce(scores))
    spans, marg = {}, np.zeros((n, L))
    for path, p in zip(paths, probs):
        marg[np.arange(n), path] += p
        for span in spans_from_tags([tags[i] for i in path]).spans:
            spans[span] = spans.get(span, 0.0) + p
    best = paths[scores.argmax()]
    return spans_from_tags([tags[i] for i in best]).spans, spans, marg


def test_bias_is_saved_and_changes_viterbi_nbest_and_marginals_consistently(ner_nlp, tmp_path):
    pipe = ner_nlp.get_pipe("bilstm_tagger")
    tags = list(pipe.tags)
    crf = [np.where(np.asarray(x) <= -1e4, -np.inf, np.asarray(x, dtype=np.float64))
           for x in (get_records(ner_nlp("Oslo"))["bilstm_tagger"][k] for k in ("start", "transitions", "end"))]
    for bias in (2.5, {"LOC": 3.0, "PER": -1.0}):
        biased = with_bias(ner_nlp, bias, tmp_path / "m")
        assert biased.get_pipe("bilstm_tagger").cfg["decision_bias"] == bias
        vec = bias_vector(tags, bias).astype(np.float64)
        n_ents = 0
        for text in ["Lindqvist visited Oslo", "Acme Corp said"]:
            raw = ner_nlp.get_pipe("bilstm_tagger").predict([ner_nlp.make_doc(text)]).scores[0].astype(np.float64)
            best, span_probs, marg = brute_force(raw + vec, *crf, tags)
            doc = biased(text)
            record = get_records(doc)["bilstm_tagger"]
            np.testing.assert_allclose(record["emissions"], raw + vec, atol=1e-5)  # the biased model is filed
            assert ents(doc) == best  # Viterbi under the bias
            n_ents += len(doc.ents)
            for ent in doc.ents:  # span marginals under the bias
                assert ent._.confidence == pytest.approx(span_probs[(ent.start, ent.end, ent.label_)], abs=1e-6)
            np.testing.assert_allclose(token_marginals(record), marg, atol=1e-6)  # token marginals
            paths = biased.get_pipe("bilstm_tagger").n_best([biased.make_doc(text)], k=3)[0]
            assert paths[0].spans == best  # n-best under the bias
            for path in paths:
                ids = [tags.index(t) for t in path.tags]
                em = raw + vec
                score = em[np.arange(len(ids)), ids].sum() + crf[0][ids[0]] + crf[2][ids[-1]] + sum(
                    crf[1][a, b] for a, b in zip(ids, ids[1:]))
                expected = np.exp(score - _log_z(em, *crf))
                assert path.probability == pytest.approx(expected, rel=1e-5)
        assert n_ents > 0, "the span marginals above were checked on no entity"
    # The bias moves decisions: more entities at +12 (the tiny model's O margins are about 8).
    loud = with_bias(ner_nlp, 12.0, tmp_path / "loud")
    assert sum(len(d.ents) for d in loud.pipe(TEXTS)) > sum(len(d.ents) for d in ner_nlp.pipe(TEXTS))


def _log_z(em, start, trans, end):
    alpha = start + em[0]
    for t in range(1, len(em)):
        alpha = np.logaddexp.reduce(alpha[:, None] + trans, axis=0) + em[t]
    return np.logaddexp.reduce(alpha + end)


def test_a_bias_naming_an_unknown_label_is_refused_at_load(ner_nlp, tmp_path):
    ner_nlp.to_disk(tmp_path / "m")
    cfg_path = tmp_path / "m" / "bilstm_tagger" / "cfg"
    cfg = json.loads(cfg_path.read_text())
    cfg["decision_bias"] = {"PERSON": 1.0}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="cfg: bilstm_tagger: decision_bias names label.*PERSON"):
        spacy.load(tmp_path / "m")


# ---- min_confidence ------------------------------------------------------------------------


def test_min_confidence_drops_exactly_the_spans_under_the_threshold(ner_nlp, tmp_path):
    ner_nlp.to_disk(tmp_path / "m")
    plain = list(ner_nlp.pipe(TEXTS))
    conf = {(i, s, e, label): p for i, d in enumerate(plain) for (s, e, label), p in
            zip(ents(d), (x._.confidence for x in d.ents))}
    assert len(conf) >= 4
    values = sorted(conf.values())
    threshold = (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2  # half fall below
    per_label = {"LOC": 0.999, "PER": threshold}
    for setting, limit in ((threshold, lambda label: threshold), (per_label, lambda label: per_label.get(label, 0.0))):
        if isinstance(setting, float):  # a number fits spacy.load's config overrides
            nlp = spacy.load(tmp_path / "m", config={"components": {"bilstm_tagger": {"min_confidence": setting}}})
        else:  # a table is set on the loaded pipe (a nested override would read as a config section)
            nlp = spacy.load(tmp_path / "m")
            nlp.get_pipe("bilstm_tagger").set_min_confidence(setting)
        got = {(i, *e) for i, d in enumerate(nlp.pipe(TEXTS)) for e in ents(d)}
        expected = {key for key, p in conf.items() if p >= limit(key[3])}
        assert got == expected
        assert expected != set(conf)  # something was dropped
        for i, doc in enumerate(nlp.pipe(TEXTS)):
            for ent in doc.ents:
                assert ent._.confidence == pytest.approx(conf[(i, ent.start, ent.end, ent.label_)])


def test_tables_naming_labels_the_model_does_not_predict_are_refused(ner_nlp):
    pipe = ner_nlp.get_pipe("bilstm_tagger")
    with pytest.raises(ConfigError, match="min_confidence names label.*PERSON"):
        pipe.set_min_confidence({"PERSON": 0.9})
    with pytest.raises(ConfigError, match="decision_bias names label.*PERSON"):
        pipe.set_decision_bias({"PERSON": 1.0})
    with pytest.raises(ConfigError, match="decision_bias must be"):
        pipe.set_decision_bias("high")
    assert pipe.cfg["min_confidence"] is None and pipe.cfg["decision_bias"] is None


def test_bad_min_confidence_is_refused():
    nlp = spacy.blank("en")
    with pytest.raises(ConfigError, match="min_confidence"):
        nlp.add_pipe("bilstm_tagger", config={"min_confidence": 1.5})
    with pytest.raises(ConfigError, match="span task"):
        nlp.add_pipe("bilstm_tags", config={"min_confidence": 0.5})


# ---- calibrate -----------------------------------------------------------------------------


def write_split(path, split, docs, extra=None):
    """A jsonl split whose gold is the given docs' entities (plus `extra` per doc: (start, end, label))."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / f"{split}.jsonl", "w") as f:
        for i, doc in enumerate(docs):
            spans = ents(doc) + list((extra or {}).get(i, []))
            tags = ["O"] * len(doc)
            for s, e, label in spans:
                tags[s:e] = [f"B-{label}"] + [f"I-{label}"] * (e - s - 1)
            f.write(json.dumps({"id": f"{split}-{i}", "tokens": [t.text for t in doc], "ner_tags": tags}) + "\n")


def sample_texts():
    rows = [json.loads(line) for s in ("validation", "test") for line in open(SAMPLE / f"{s}.jsonl")]
    return [r["tokens"] for r in rows if r["tokens"]]


def run_calibrate(argv):
    """`python -m bilstm_tagger calibrate ...` as the command line runs it (errors raise here)."""
    args = build_parser().parse_args(["calibrate", *argv])
    return args.func(args)


def test_calibrate_keeps_the_decision_when_no_bias_improves_f1(ner_nlp, tmp_path, capsys):
    """Gold = the model's own output under its current bias (0.5): F1 is 1.0 there, nothing beats it."""
    biased = with_bias(ner_nlp, 0.5, tmp_path / "m")
    docs = list(biased.pipe(spacy.tokens.Doc(biased.vocab, words=w) for w in sample_texts()))
    write_split(tmp_path / "data", "validation", docs)
    # The plain function the command runs: keyword arguments in, the --json summary out.
    summary = calibrate.calibrate(str(tmp_path / "m"), str(tmp_path / "data"), split="validation",
                                  output=str(tmp_path / "cal"), json_path=str(tmp_path / "cal.json"))
    assert summary == json.loads((tmp_path / "cal.json").read_text())
    assert summary["decision_bias"] == 0.5 and summary["decision"]["kind"] == "kept"
    out = capsys.readouterr().out
    assert "decision: +0.50 on every label (unchanged)" in out
    assert "validation before: P 100.00 R 100.00 F1 100.00" in " ".join(out.split())
    assert spacy.load(tmp_path / "cal").get_pipe("bilstm_tagger").cfg["decision_bias"] == 0.5


def test_calibrate_fits_a_bias_that_raises_recall_and_evaluate_agrees(ner_nlp, tmp_path, capsys):
    """Gold = what a more liberal tagger (bias +2) finds: calibrate should move the decision there, and
    the P/R/F1 it prints must equal what the saved pipeline scores with spaCy + seqeval."""
    liberal = with_bias(ner_nlp, 2.0, tmp_path / "liberal")
    words = sample_texts()
    gold_docs = list(liberal.pipe(spacy.tokens.Doc(liberal.vocab, words=w) for w in words))
    write_split(tmp_path / "data", "validation", gold_docs)
    ner_nlp.to_disk(tmp_path / "m")
    assert run_calibrate([str(tmp_path / "m"), str(tmp_path / "data"), "--split", "validation", "--scalar-only",
                          "--output", str(tmp_path / "cal")]) == 0
    out = capsys.readouterr().out
    nlp = spacy.load(tmp_path / "cal")
    bias = nlp.get_pipe("bilstm_tagger").cfg["decision_bias"]
    assert isinstance(bias, float) and bias > 0.5, out
    gold = [Example(spacy.tokens.Doc(nlp.vocab, words=[t.text for t in d]), d) for d in gold_docs]
    for model, line in ((ner_nlp, "validation before"), (nlp, "validation after")):
        tagged = list(model.pipe(eg.predicted.copy() for eg in gold))
        scores = score_seqeval([Example(d, eg.reference) for d, eg in zip(tagged, gold)])
        expected = f"{line}: P {100 * scores['ents_p']:.2f} R {100 * scores['ents_r']:.2f} F1 {100 * scores['ents_f']:.2f}"
        assert expected in " ".join(out.split()), out
    before = score_seqeval([Example(d, eg.reference) for d, eg in zip(ner_nlp.pipe(eg.predicted.copy() for eg in gold), gold)])
    after = score_seqeval([Example(d, eg.reference) for d, eg in zip(nlp.pipe(eg.predicted.copy() for eg in gold), gold)])
    assert after["ents_r"] > before["ents_r"] and after["ents_f"] > before["ents_f"]


def test_a_temperature_that_worsens_ece_is_not_saved(ner_nlp, tmp_path, capsys):
    """Gold = the model's entities (all correct, so ECE = 1 - mean confidence) plus an entity on a
    token the model is sure is O: the likelihood then asks for T > 1, which lowers every confidence
    and so raises ECE. Such a T must not be saved."""
    docs = list(ner_nlp.pipe(spacy.tokens.Doc(ner_nlp.vocab, words=w) for w in sample_texts()))
    extra = {}
    for i, doc in enumerate(docs):
        taken = {t for s, e, _ in ents(doc) for t in range(max(0, s - 1), e + 1)}
        free = [t for t in range(len(doc)) if t not in taken]
        if free:
            extra[i] = [(free[0], free[0] + 1, "MISC" if "MISC" in ner_nlp.get_pipe("bilstm_tagger").labels else "LOC")]
    write_split(tmp_path / "data", "validation", docs, extra)
    ner_nlp.to_disk(tmp_path / "m")
    assert run_calibrate([str(tmp_path / "m"), str(tmp_path / "data"), "--split", "validation", "--no-decision",
                          "--output", str(tmp_path / "cal")]) == 0
    out = capsys.readouterr().out
    fitted = float(out.split("T = ")[1].split()[0])
    assert fitted > 1.0, out
    assert "does not lower ECE" in out
    assert spacy.load(tmp_path / "cal").get_pipe("bilstm_tagger").cfg["temperature"] is None


def hand_ece(confidences, correct, n_bins=10):
    """Expected calibration error, written out here rather than taken from the package."""
    conf, ok = np.asarray(confidences), np.asarray(correct, dtype=float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return sum((bins == k).sum() / len(conf) * abs(ok[bins == k].mean() - conf[bins == k].mean())
               for k in range(n_bins) if (bins == k).any())


def test_calibrate_saves_a_temperature_that_lowers_ece_and_tagging_uses_it(ner_nlp, tmp_path, capsys):
    """Gold = the model's own entities: every prediction is right, so sharper confidences (T < 1)
    calibrate better. The saved T must lower ECE on that split, and tagging must use it."""
    docs = list(ner_nlp.pipe(spacy.tokens.Doc(ner_nlp.vocab, words=w) for w in sample_texts()))
    write_split(tmp_path / "data", "validation", docs)
    ner_nlp.to_disk(tmp_path / "m")
    assert run_calibrate([str(tmp_path / "m"), str(tmp_path / "data"), "--split", "validation", "--no-decision",
                          "--output", str(tmp_path / "cal")]) == 0
    capsys.readouterr()
    nlp = spacy.load(tmp_path / "cal")
    temperature = nlp.get_pipe("bilstm_tagger").cfg["temperature"]
    assert isinstance(temperature, float) and temperature < 1.0
    words = [[t.text for t in d] for d in docs]
    gold = [set(ents(d)) for d in docs]
    pairs = {}
    for name, model in (("raw", ner_nlp), ("calibrated", nlp)):
        tagged = list(model.pipe(spacy.tokens.Doc(model.vocab, words=w) for w in words))
        pairs[name] = [(e._.confidence, (e.start, e.end, e.label_) in g) for d, g in zip(tagged, gold) for e in d.ents]
        if name == "calibrated":  # the temperature is what tagging uses
            record = get_records(tagged[0])["bilstm_tagger"]
            assert record["temperature"] == temperature
            from bilstm_tagger.pipeline.confidence import spans_probability
            assert [e._.confidence for e in tagged[0].ents] == pytest.approx(
                list(spans_probability(record, ents(tagged[0]), temperature)))
    assert [ok for _, ok in pairs["raw"]] == [ok for _, ok in pairs["calibrated"]]  # same decisions
    assert hand_ece(*zip(*pairs["calibrated"])) < hand_ece(*zip(*pairs["raw"]))


def test_fit_decision_during_training_refits_at_evaluation_after_updates_only(ner_nlp, tmp_path):
    """With the option on, the evaluation that follows training updates refits the bias (the pipe saves
    it with model-best) and scores under it; an evaluation with no update since changes nothing."""
    from thinc.api import SGD

    liberal = with_bias(ner_nlp, 2.0, tmp_path / "liberal")
    gold_docs = list(liberal.pipe(spacy.tokens.Doc(liberal.vocab, words=w) for w in sample_texts()))
    ner_nlp.to_disk(tmp_path / "m")
    nlp = spacy.load(tmp_path / "m", config={"components": {"bilstm_tagger": {"fit_decision_during_training": True}}})
    pipe = nlp.get_pipe("bilstm_tagger")
    assert pipe.cfg["fit_decision_during_training"] is True
    dev = [Example(spacy.tokens.Doc(nlp.vocab, words=[t.text for t in d]), d) for d in gold_docs]
    before = nlp.evaluate(dev)["ents_f"]  # no update yet: no refit
    assert pipe.cfg["decision_bias"] is None
    nlp.update(dev[:8], sgd=SGD(0.0))  # a training step that leaves the weights as they are
    scores = nlp.evaluate(dev)
    bias = pipe.cfg["decision_bias"]
    assert isinstance(bias, float) and bias > 0.5
    retagged = list(nlp.pipe(eg.predicted.copy() for eg in dev))
    assert scores["ents_f"] == pytest.approx(score_seqeval([Example(d, eg.reference) for d, eg in zip(retagged, dev)])["ents_f"])
    assert scores["ents_f"] > before
    # Gold = the unbiased model's own output: a refit here would pull the bias back to none.
    plain_docs = list(ner_nlp.pipe(spacy.tokens.Doc(ner_nlp.vocab, words=w) for w in sample_texts()))
    other = [Example(spacy.tokens.Doc(nlp.vocab, words=[t.text for t in d]), d) for d in plain_docs]
    nlp.evaluate(other)  # no update since the last evaluation: no refit
    assert pipe.cfg["decision_bias"] == bias
    nlp.update(dev[:8], sgd=SGD(0.0))
    nlp.evaluate(other)  # after an update it refits, and the bias goes
    assert pipe.cfg["decision_bias"] is None


def test_fitter_counts_as_seqeval_does_row_by_row_with_unseen_gold_labels():
    """The fitter's P/R/F1 must equal the package's seqeval scorer on the same docs: rows are the
    reference's sentences (an entity crossing one is one chunk per row), and a gold label the model
    never predicts is a miss."""
    from spacy.tokens import Doc, Span
    from spacy.vocab import Vocab

    from bilstm_tagger.pipeline.decision_fit import DecisionFitter
    from bilstm_tagger.tags import tag_names

    tags = tag_names(["LOC", "PER"], "BILOU")
    vocab = Vocab()
    rng = np.random.default_rng(0)
    scores, gold, rows = [], [], []
    for n in (7, 12, 5, 9, 15, 4):
        em = rng.normal(size=(n, len(tags))).astype(np.float32)
        em[:, 0] += 1.0  # mostly O
        scores.append(em)
        gold.append([(1, 3, "PER"), (n - 1, n, "MISC")])  # MISC: a label the model does not know
        rows.append([(0, n // 2), (n // 2, n)])

    def argmax(batch):  # any decoder will do: the test is about counting
        return [x.argmax(1) for x in batch]

    fitter = DecisionFitter(scores, gold, rows, tags, ["LOC", "PER"], argmax)
    for bias in (None, 1.0, {"PER": 2.0}):
        vec = bias_vector(tags, bias)
        examples = []
        for em, g, r in zip(scores, gold, rows):
            n = len(em)
            starts = [t in {r0 for r0, _ in r} for t in range(n)]
            reference = Doc(vocab, words=[f"w{t}" for t in range(n)], sent_starts=starts)
            reference.ents = [Span(reference, s, e, label) for s, e, label in g]
            predicted = Doc(vocab, words=[f"w{t}" for t in range(n)])
            ids = (em if vec is None else em + vec).argmax(1)
            predicted.ents = [Span(predicted, s, e, label) for s, e, label in spans_from_tags([tags[i] for i in ids]).spans]
            examples.append(Example(predicted, reference))
        expected = score_seqeval(examples)
        got = fitter.score(bias)
        assert (got.p, got.r, got.f) == pytest.approx((expected["ents_p"], expected["ents_r"], expected["ents_f"]))
    assert any(e.end - e.start > 1 for eg in examples for e in eg.predicted.ents)  # something to split at a row end
