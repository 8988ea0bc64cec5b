"""The spaCy component: training, annotation, batching, tasks and serialization."""
import numpy as np
import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from bilstm_tagger.ml import emission_scores
from bilstm_tagger.ml.windows import anchored_cuts, plan_chunks, plan_windows, window_starts

from ..conftest import TINY_MODEL, read_examples, tiny_model, train_pipeline

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


def words_of(nlp, examples):
    """Fresh docs with the examples' own tokens (re-tokenizing the text would split "2-1")."""
    return [Doc(nlp.vocab, words=[t.text for t in eg.reference], spaces=[bool(t.whitespace_) for t in eg.reference]) for eg in examples]


def gold_ents(examples):
    return [[(e.start, e.end, e.label_) for e in eg.reference.ents] for eg in examples]


def test_sample_model_learns(ner_nlp, sample_examples):
    scores = ner_nlp.evaluate(sample_examples["test"])
    assert scores["ents_f"] > 0.6, scores
    assert set(scores["ents_per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    assert ner_nlp.get_pipe("bilstm_tagger").labels == ("LOC", "MISC", "ORG", "PER")


def test_pipe_equals_call_at_any_batch_size(ner_nlp):
    one_by_one = [ents(ner_nlp(t)) for t in TEXTS]
    assert any(one_by_one), "the sample model should find some entity in these texts"
    for batch_size in (1, 2, 64):
        assert [ents(d) for d in ner_nlp.pipe(TEXTS, batch_size=batch_size)] == one_by_one
    assert list(ner_nlp.pipe([])) == []
    assert ents(ner_nlp("")) == []


@pytest.mark.parametrize("n", [1, 255, 256, 257, 500, 1000, 6001])
def test_long_docs_are_cut_into_overlapping_windows(n):
    window = 256
    plan = plan_windows([3, n, 0, 5], window)
    long_segments = [(s, e) for d, s, e in plan.segments if d == 1]
    if n <= window:
        assert long_segments == [(0, n)] and not plan.stitched
        return
    starts = window_starts(n, window, window // 4)
    assert long_segments == [(int(s), int(s) + window) for s in starts]
    assert starts[0] == 0 and starts[-1] == n - window
    stride = window - window // 4  # neighbours share window // 4 tokens; the last window ends at the doc's end
    assert (np.diff(starts)[:-1] == stride).all() and 0 < starts[-1] - starts[-2] <= stride
    assert len(starts) == -(-(n - window) // stride) + 1
    # Each doc token is read back from exactly one window row, in doc order ...
    offsets = np.array([0, 3, 3 + n, 3 + n, 8 + n])
    rows = plan.gather_index(offsets)
    take = plan.take()
    assert np.array_equal(rows[take], np.arange(8 + n))
    # ... the one where it sits at least window // 8 tokens from an edge (fewer only at the doc's ends).
    seg_of_row = np.repeat(np.arange(len(plan.segments)), [e - s for _, s, e in plan.segments])
    t = np.arange(n)
    owner_rows = take[3 : 3 + n]
    seg_start = np.array([s for _, s, _ in plan.segments])[seg_of_row[owner_rows]]
    distance = np.minimum(t - seg_start, seg_start + window - 1 - t)
    assert (distance >= np.minimum(window // 8, np.minimum(t, n - 1 - t))).all()


def covered_once(plan, lengths, take):
    """Every doc token is read back from exactly one score row, and that row holds this token."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = plan.gather_index(offsets)
    return len(take) == sum(lengths) and len(set(take.tolist())) == len(take) and np.array_equal(rows[take], np.arange(sum(lengths)))


def test_with_sentence_starts_long_docs_are_cut_at_sentence_boundaries():
    window = 16
    sentence_lengths = [5, 7, 3, 9, 40, 2, 16, 1, 17, 4]  # 40 and 17: longer than the window
    starts = np.cumsum([0] + sentence_lengths[:-1])
    n = sum(sentence_lengths)
    lengths = [4, n, 10]
    plan = plan_windows(lengths, window, sent_starts=[None, starts, None])
    runs = [(s, e) for d, s, e in plan.segments if d == 1]
    assert runs[:3] == [(0, 15), (15, 24), (24, 24 + window)]  # whole sentences, at most `window` tokens
    boundaries = set(starts.tolist()) | {n}
    for run in plan.overlapped:  # only the two long sentences fall back to overlapping windows
        assert {int(run.starts[0]), int(run.starts[-1]) + window} <= boundaries
    assert len(plan.overlapped) == 2
    whole = [(s, e) for s, e in runs if e - s < window or (s in boundaries and e in boundaries)]
    assert all(s in boundaries and e in boundaries for s, e in whole)
    assert all(e - s <= window for s, e in runs)
    assert covered_once(plan, lengths, plan.take())
    # Without sentence starts the same doc is read as overlapping windows.
    assert len(plan_windows(lengths, window).overlapped) == 1


@pytest.mark.parametrize("n", [257, 600, 6001])
def test_anchored_pieces_cover_every_token_once(n):
    rng = np.random.default_rng(n)
    lengths = [3, n, 5]
    plan = plan_windows(lengths, 256)
    take = plan.take()
    pieces, take2 = plan.anchored(take, rng.normal(size=len(take)))
    assert [(s, e) for _, s, e in pieces][0][0] == 0 and pieces[-1][2] == n
    assert all(128 <= e - s <= 256 for _, s, e in pieces[:-1]) and 0 < pieces[-1][2] - pieces[-1][1] <= 256
    full = plan_windows([3, n, 5], 256)
    full.segments = full.segments + pieces  # first-pass rows followed by the pieces' rows
    assert covered_once(full, lengths, take2)


def test_anchored_cuts_fall_before_the_surest_o_and_fall_in_step_wherever_the_stretch_starts():
    margin = np.zeros(1000)
    margin[[200, 201, 400, 401, 600, 601]] = 5.0  # cut before 201, 401 and 601 (both sides surely O)
    assert anchored_cuts(margin, 256)[:3] == [201, 401, 601]
    # Starting elsewhere, the cuts fall in step from the first shared word on.
    assert [c + 100 for c in anchored_cuts(margin[100:], 256)][1:3] == [401, 601]


def test_a_long_doc_with_sentence_starts_is_read_as_runs_of_whole_sentences(ner_nlp):
    words = TEXTS[0].split() * 40  # 40 sentences of 15 tokens: 600 tokens
    doc = Doc(ner_nlp.vocab, words=words, sent_starts=[i % 15 == 0 for i in range(600)])
    model = ner_nlp.get_pipe("bilstm_tagger").model
    scores = emission_scores(model, [doc])[0]
    for begin, end in [(0, 255), (255, 510), (510, 600)]:  # 17 whole sentences fit 256 tokens, 18 do not
        alone = emission_scores(model, [Doc(ner_nlp.vocab, words=words[begin:end])])[0]
        assert np.allclose(scores[begin:end], alone, atol=1e-5)


def test_inference_chunks_stay_under_the_token_bound():
    segments = [(i, 0, n) for i, n in enumerate([256, 3, 200, 17, 256, 90, 1, 256, 256])]
    chunks = list(plan_chunks(segments, 600))
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(segments)))
    for chunk in chunks:
        longest = max(segments[i][2] for i in chunk)
        assert len(chunk) * longest <= 600
    assert [len(c) for c in chunks][0] == 2  # two 256-token windows fit 600, three do not


def test_long_doc_predictions_match_short_docs_away_from_the_ends(ner_nlp):
    doc = ner_nlp(" ".join([TEXTS[0]] * 50))  # 750 tokens: three overlapping windows
    alone = ents(ner_nlp(TEXTS[0]))
    assert alone and len(doc) == 750
    per_copy = {i: [(s - 15 * i, e - 15 * i, l) for s, e, l in ents(doc) if 15 * i <= s and e <= 15 * (i + 1)] for i in range(50)}
    assert per_copy[0] == alone
    assert sum(per_copy[i] == alone for i in range(50)) >= 45, per_copy


def test_preset_entities_are_kept_and_ours_fill_the_rest(ner_nlp):
    free = ents(ner_nlp(TEXTS[0]))
    assert len(free) >= 2, free
    doc = ner_nlp.make_doc(TEXTS[0])
    doc.ents = [Span(doc, 0, 1, label="CUSTOM")]
    doc = ner_nlp.get_pipe("bilstm_tagger")(doc)
    assert ents(doc)[0] == (0, 1, "CUSTOM")
    assert ents(doc)[1:] == [e for e in free if e[0] >= 1]


def test_bytes_round_trip_gives_identical_predictions(ner_nlp):
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    nlp2.from_bytes(ner_nlp.to_bytes())
    a = ner_nlp.get_pipe("bilstm_tagger").predict([ner_nlp.make_doc(t) for t in TEXTS])
    b = nlp2.get_pipe("bilstm_tagger").predict([nlp2.make_doc(t) for t in TEXTS])
    assert any(x.any() for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_disk_round_trip_gives_identical_predictions(ner_nlp, tmp_path):
    ner_nlp.to_disk(tmp_path / "m")
    nlp2 = spacy.load(tmp_path / "m")
    assert [ents(d) for d in nlp2.pipe(TEXTS)] == [ents(d) for d in ner_nlp.pipe(TEXTS)]
    assert nlp2.get_pipe("bilstm_tagger").cfg["labels"] == ["LOC", "MISC", "ORG", "PER"]


def test_labels_cannot_be_added_after_initialize(ner_nlp):
    with pytest.raises(ValueError, match="cannot add label 'NEW'"):
        ner_nlp.get_pipe("bilstm_tagger").add_label("NEW")


def test_label_and_data_errors_are_the_packages_typed_errors(ner_nlp):
    """The command line prints these as one line; they stay ValueErrors for callers that catch those."""
    from bilstm_tagger.errors import BilstmTaggerError, DatasetError, LabelError

    pipe = ner_nlp.get_pipe("bilstm_tagger")
    with pytest.raises(LabelError, match="cannot add label 'NEW' to a model that is already built"):
        pipe.add_label("NEW")
    nlp = spacy.blank("en")
    fresh = nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    with pytest.raises(LabelError, match="labels must be non-empty strings, not ''"):
        fresh.add_label("")
    no_entities = [Example(nlp.make_doc("Nothing here ."), nlp.make_doc("Nothing here ."))]
    with pytest.raises(DatasetError, match="the training examples contain no") as caught:
        nlp.initialize(lambda: no_entities)
    assert isinstance(caught.value, BilstmTaggerError) and isinstance(caught.value, ValueError)


def test_bad_settings_fail_at_construction():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="target must be one of ents, spans, tag, pos, not 'chunks'"):
        nlp.add_pipe("bilstm_tagger", config={"target": "chunks"})
    with pytest.raises(ValueError, match="proj_size needs cell = 'lstm'"):
        nlp.add_pipe("bilstm_tagger", name="b", config={"model": tiny_model(cell="gru", proj_size=8)})
    with pytest.raises(ValueError, match="must divide the BiRNN output width"):
        nlp.add_pipe("bilstm_tagger", name="c", config={"model": tiny_model(attention_heads=5)})
    with pytest.raises(ValueError, match="max_chars \\(2\\) must be at least char_kernel \\(3\\)"):
        nlp.add_pipe("bilstm_tagger", name="d", config={"model": tiny_model(embed={"max_chars": 2})})


OVERFIT_SETTINGS = dict(dropout=0.0, hidden_size=48)


@pytest.mark.parametrize(
    "variant, embed",
    [
        ({}, {}),
        ({"attention_heads": 4, "attention_layers": 1}, {}),
        ({"cell": "gru", "num_layers": 2}, {}),
        ({"proj_size": 16, "num_layers": 2}, {}),
        ({"crf": False}, {}),
        ({}, {"char_width": 0}),
        ({}, {"attrs": ["NORM"], "rows": [1000], "widths": [32]}),
        ({"window": 4, "max_batch_tokens": 16}, {}),
    ],
)
def test_variants_overfit_then_round_trip(variant, embed, sample_examples, tmp_path):
    """spaCy's test_overfitting_IO: learn a few sentences exactly, then save, load and compare."""
    train = list(sample_examples["train"][:4])
    nlp = train_pipeline({"model": tiny_model(embed, **OVERFIT_SETTINGS, **variant)}, train, steps=80)
    losses = {}
    nlp.update(train, losses=losses, drop=0.0, sgd=None)
    assert losses["bilstm_tagger"] < 0.05, losses
    assert [ents(d) for d in nlp.pipe(words_of(nlp, train))] == gold_ents(train)
    nlp.to_disk(tmp_path / "m")
    nlp2 = spacy.load(tmp_path / "m")
    assert [ents(d) for d in nlp2.pipe(words_of(nlp2, train))] == gold_ents(train)
    docs = words_of(nlp, train)
    a = emission_scores(nlp.get_pipe("bilstm_tagger").model, docs)
    b = emission_scores(nlp2.get_pipe("bilstm_tagger").model, docs)
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def test_spans_factory_writes_its_span_group(sample_examples):
    train = []
    for eg in sample_examples["train"][:4]:
        reference = eg.reference.copy()
        reference.spans["found"] = list(reference.ents)
        reference.ents = []
        train.append(Example(eg.predicted.copy(), reference))
    config = {"model": tiny_model(**OVERFIT_SETTINGS), "spans_key": "found", "scheme": "IOB2"}
    nlp = train_pipeline(config, train, steps=80, factory="bilstm_spans")
    docs = list(nlp.pipe(words_of(nlp, train)))
    assert [[(s.start, s.end, s.label_) for s in d.spans["found"]] for d in docs] == [
        [(s.start, s.end, s.label_) for s in eg.reference.spans["found"]] for eg in train
    ]
    assert not any(d.ents for d in docs)
    scores = nlp.evaluate(train)
    assert scores["spans_found_f"] == 1.0 and "ents_f" not in scores
    assert "found" not in sample_examples["train"][0].reference.spans  # the shared fixture is untouched


def test_each_factory_ranks_checkpoints_by_its_own_scores():
    from spacy.language import Language

    weights = {name: Language.get_factory_meta(name).default_score_weights for name in ("bilstm_tagger", "bilstm_spans", "bilstm_tags", "bilstm_pos")}
    assert weights["bilstm_tagger"]["ents_f"] == 1.0
    assert weights["bilstm_spans"]["spans_sc_f"] == 1.0 and "ents_f" not in weights["bilstm_spans"]
    assert weights["bilstm_tags"] == {"tag_acc": 1.0}
    assert weights["bilstm_pos"] == {"pos_acc": 1.0}


def test_tag_factory_scores_accuracy():
    from ..conftest import conll_path

    nlp = spacy.blank("en")
    examples = read_examples(nlp, conll_path(), "train", limit=200, tags_column="pos_tags", target="tag")
    nlp = train_pipeline({"model": TINY_MODEL}, examples, steps=40, factory="bilstm_tags")
    scores = nlp.evaluate(examples[:50])
    assert scores["tag_acc"] > 0.5, scores
    assert nlp("The cat sat .")[1].tag_ in nlp.get_pipe("bilstm_tags").labels


def test_legacy_target_argument_still_works_but_warns(sample_examples):
    with pytest.warns(UserWarning, match="use factory 'bilstm_tags'"):
        nlp = spacy.blank("en")
        nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL, "target": "tag"})
    assert nlp.get_pipe("bilstm_tagger").target == "tag"


def test_missing_gold_entities_are_not_trained_as_O(sample_examples):
    eg = sample_examples["train"][0]
    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    nlp.initialize(lambda: sample_examples["train"][:50])
    ref = eg.reference.copy()
    ref.set_ents([], default="missing")
    assert (tagger.task.gold_ids(Example(eg.predicted, ref), tagger.tag_index) == -1).all()
    assert (tagger.task.gold_ids(eg, tagger.tag_index) >= 0).all()


@pytest.mark.parametrize("scheme", ["BILOU", "IOB2"])
def test_fast_gold_path_equals_the_aligned_path(sample_examples, scheme):
    from bilstm_tagger.pipeline.tasks import _biluo_to

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
        assert tagger.task._gold_ids_fast(eg.reference, tagger.tag_index).tolist() == slow


def test_component_imports_no_torch():
    import ast
    from pathlib import Path

    from bilstm_tagger.pipeline import component, tasks

    for module in (component, tasks):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "torch" not in imported
        assert "shims" not in Path(module.__file__).read_text()


def test_a_long_doc_runs_in_chunks_under_the_token_bound(sample_examples):
    from bilstm_tagger.ml.shim import get_module

    # One pass over overlapping windows (the anchored cut adds a second pass of fewer, shorter pieces).
    model = tiny_model(window=64, max_batch_tokens=256, window_cut="middle")
    nlp = train_pipeline({"model": model, "torch_threads": 1}, sample_examples["train"][:20], steps=2)
    encoder = get_module(nlp.get_pipe("bilstm_tagger").model.get_ref("encoder"))
    padded_sizes = []
    hook = encoder.register_forward_pre_hook(lambda module, args: padded_sizes.append(len(args[2]) * max(args[2])))
    try:
        doc = nlp(" ".join(["Mara Lindqvist visited Lisbon ."] * 1000))  # 5,000 tokens
    finally:
        hook.remove()
    assert len(doc) == 5000
    windows = len(window_starts(5000, 64, 16))
    assert len(padded_sizes) == -(-windows // (256 // 64)) and max(padded_sizes) <= 256


SPACY_TOK2VEC = {
    "@architectures": "spacy.Tok2Vec.v2",
    "embed": {
        "@architectures": "spacy.MultiHashEmbed.v2", "width": 64, "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
        "rows": [2000, 500, 500, 200], "include_static_vectors": False,
    },
    "encode": {"@architectures": "spacy.MaxoutWindowEncoder.v2", "width": 64, "depth": 2, "window_size": 1, "maxout_pieces": 3},
}


def test_spacy_tok2vec_in_the_embed_slot_overfits_and_round_trips(sample_examples, tmp_path):
    train = list(sample_examples["train"][:4])
    model = {**TINY_MODEL, **OVERFIT_SETTINGS, "embed": SPACY_TOK2VEC}
    nlp = train_pipeline({"model": model, "torch_threads": 1}, train, steps=80)
    assert [ents(d) for d in nlp.pipe(words_of(nlp, train))] == gold_ents(train)
    nlp.to_disk(tmp_path / "m")
    nlp2 = spacy.load(tmp_path / "m")
    assert [ents(d) for d in nlp2.pipe(words_of(nlp2, train))] == gold_ents(train)
