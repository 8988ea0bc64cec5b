"""Real `spacy train`, a fresh-process load, `spacy evaluate` and our CLI, as a user runs them."""
import json
import os
import subprocess
import sys
from collections import Counter
from importlib.metadata import entry_points

import pytest
import spacy
from seqeval.metrics import f1_score
from spacy.training import Example
from spacy.util import registry

from bilstm_tagger.pipeline.scoring import tag_sequences

from ..conftest import REPO, SAMPLE, conll_path, read_examples

SMALL = [
    "--components.bilstm_tagger.model.hidden_size=64",
    "--components.bilstm_tagger.model.embed.rows=[5000,1000,1000,500]",
    "--components.bilstm_tagger.torch_threads=1",
    "--training.max_steps=300",
    "--training.eval_frequency=100",
    "--training.optimizer.learn_rate=0.005",
]


def run(*args, check=True):
    env = dict(os.environ)  # conftest turns the hub off when the data is local
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def conll_model(tmp_path_factory):
    """`spacy train configs/ner.cfg` on a 300-sentence slice of the local CoNLL-2003."""
    out = tmp_path_factory.mktemp("conll")
    proc = run(
        "-m", "spacy", "train", "configs/ner.cfg", "--output", str(out),
        f"--paths.dataset={conll_path()}", "--corpora.train.limit=300", "--corpora.dev.limit=200", *SMALL,
    )
    return out / "model-best", proc.stdout


def word_lookup_baseline(train, dev) -> float:
    """seqeval F1 on `dev` of tagging each word with its most frequent IOB2 tag in `train` ("O" if unseen)."""
    get_ents = lambda doc: list(doc.ents)  # noqa: E731
    train_tags, _ = tag_sequences(train, get_ents)
    dev_tags, _ = tag_sequences(dev, get_ents)
    assert len(train_tags) == len(train) and len(dev_tags) == len(dev)  # one sentence per row: words line up
    counts: dict = {}
    for eg, tags in zip(train, train_tags):
        for token, tag in zip(eg.reference, tags):
            counts.setdefault(token.text, Counter())[tag] += 1
    lookup = {word: c.most_common(1)[0][0] for word, c in counts.items()}
    guesses = [[lookup.get(token.text, "O") for token in eg.reference] for eg in dev]
    return f1_score(dev_tags, guesses)


def test_spacy_train_prints_seqeval_scores_and_beats_a_word_lookup_baseline(conll_model):
    model_dir, log = conll_model
    assert "ENTS_F" in log and "ENTS_P" in log
    nlp = spacy.load(model_dir)
    train = read_examples(nlp, conll_path(), "train", limit=300)  # the slice the model was trained on
    dev = read_examples(nlp, conll_path(), "validation", limit=200)
    baseline = word_lookup_baseline(train, dev)
    assert baseline > 0.1  # a real baseline: it finds the entities whose words it has seen
    scores = nlp.evaluate(dev)
    assert scores["ents_f"] > baseline + 0.05, (scores["ents_f"], baseline)


def test_saved_pipeline_loads_in_a_fresh_process_without_code(conll_model):
    model_dir, _ = conll_model
    script = (
        "import spacy; nlp = spacy.load(%r); "
        "doc = nlp('German Chancellor Angela Merkel met officials in Paris .'); "
        "print(nlp.pipe_names, len(doc))" % str(model_dir)
    )
    proc = run("-c", script)
    assert "['bilstm_tagger'] 9" in proc.stdout


def test_cli_convert_then_spacy_evaluate_prints_ner_scores(conll_model, tmp_path):
    model_dir, _ = conll_model
    proc = run("-m", "bilstm_tagger", "convert", str(conll_path()), str(tmp_path), "--splits", "validation", "--limit", "100")
    assert "validation: 100 docs" in proc.stdout
    out_json = tmp_path / "scores.json"
    proc = run("-m", "spacy", "evaluate", str(model_dir), str(tmp_path / "validation.spacy"), "--output", str(out_json))
    for key in ("NER P", "NER R", "NER F", "NER (per type)"):
        assert key in proc.stdout
    scores = json.loads(out_json.read_text())
    assert 0 < scores["ents_f"] <= 1 and set(scores["ents_per_type"]) <= {"PER", "ORG", "LOC", "MISC"}


def test_cli_evaluate_prints_a_seqeval_report(conll_model, tmp_path):
    model_dir, _ = conll_model
    out = tmp_path / "eval.json"
    proc = run("-m", "bilstm_tagger", "evaluate", str(model_dir), str(conll_path()), "--split", "test", "--limit", "150", "--output", str(out))
    assert "precision" in proc.stdout and "micro avg" in proc.stdout and "words/s" in proc.stdout
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["docs"] == 150 and result["words_per_second"] > 0
    # The CLI's numbers are seqeval's own, computed here from the gold and predicted IOB2 tags.
    from seqeval.metrics import f1_score, precision_score, recall_score

    nlp = spacy.load(model_dir)
    y_true, y_pred = [], []
    for eg in read_examples(nlp, conll_path(), "test", limit=150):
        doc = nlp(eg.predicted)
        for seq, ents in ((y_true, eg.reference.ents), (y_pred, doc.ents)):
            tags = ["O"] * len(doc)
            for e in ents:
                tags[e.start : e.end] = [f"B-{e.label_}"] + [f"I-{e.label_}"] * (len(e) - 1)
            seq.append(tags)
    assert result["scores"]["ents_f"] == pytest.approx(f1_score(y_true, y_pred))
    assert result["scores"]["ents_p"] == pytest.approx(precision_score(y_true, y_pred))
    assert result["scores"]["ents_r"] == pytest.approx(recall_score(y_true, y_pred))


def test_cli_evaluate_strict_bilou_scores_well_formed_predictions_like_default_mode(conll_model, tmp_path):
    model_dir, _ = conll_model
    results = {}
    for mode in ([], ["--mode", "strict", "--scheme", "BILOU"]):
        out = tmp_path / f"eval{len(mode)}.json"
        proc = run("-m", "bilstm_tagger", "evaluate", str(model_dir), str(conll_path()), "--split", "test", "--limit", "150", "--output", str(out), *mode)
        micro = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("micro avg")][0]
        results[len(mode)] = (float(micro[4]), json.loads(out.read_text())["scores"]["ents_f"])
    # Spans decoded from tags are always well-formed, so strict BILOU and conlleval agree on them.
    assert results[0][1] > 0.2
    assert results[4][0] == pytest.approx(results[0][0], abs=1e-4)
    assert results[4][1] == pytest.approx(results[0][1])


def test_scorer_matches_a_hand_computed_case():
    from bilstm_tagger.pipeline.scoring import score_seqeval
    from spacy.tokens import Doc, Span

    nlp = spacy.blank("en")
    words = "Ann Lee met Bob in New York and Paris".split()
    gold, pred = Doc(nlp.vocab, words=words), Doc(nlp.vocab, words=words)
    gold.ents = [Span(gold, 0, 2, "PER"), Span(gold, 3, 4, "PER"), Span(gold, 5, 7, "LOC"), Span(gold, 8, 9, "LOC")]
    # Right: Bob, New York. Wrong label: Ann Lee as ORG. Wrong boundary: "York" alone. Missed: Paris.
    pred.ents = [Span(pred, 0, 2, "ORG"), Span(pred, 3, 4, "PER"), Span(pred, 5, 7, "LOC")]
    scores = score_seqeval([Example(pred, gold)])
    # 2 of 3 predicted are right, 2 of 4 gold are found: P = 2/3, R = 1/2, F = 2PR/(P+R) = 4/7.
    assert scores["ents_p"] == pytest.approx(2 / 3)
    assert scores["ents_r"] == pytest.approx(1 / 2)
    assert scores["ents_f"] == pytest.approx(4 / 7)
    assert scores["ents_per_type"]["PER"] == pytest.approx({"p": 1.0, "r": 0.5, "f": 2 / 3})
    assert scores["ents_per_type"]["ORG"] == {"p": 0.0, "r": 0.0, "f": 0.0}


def test_moving_the_window_cuts_leaves_the_entities_of_a_long_text_unchanged(conll_model):
    """6,000+ tokens of CoNLL test text as one doc with no sentence boundaries, tagged as is and
    behind 37, 101 and 173 filler tokens (which moves every window cut)."""
    from spacy.tokens import Doc

    model_dir, _ = conll_model
    nlp = spacy.load(model_dir)
    words = []
    for eg in read_examples(nlp, conll_path(), "test", limit=500):
        words.extend(t.text for t in eg.reference)
        if len(words) >= 6000:
            break
    base = {(e.start, e.end, e.label_) for e in nlp(Doc(nlp.vocab, words=words)).ents}
    assert len(base) > 300, len(base)
    for shift in (37, 101, 173):
        filler = ["the"] * (shift - 1) + ["."]
        doc = nlp(Doc(nlp.vocab, words=filler + words))
        moved = {(e.start - shift, e.end - shift, e.label_) for e in doc.ents if e.start >= shift}
        changed = len(base ^ moved) / len(base)
        assert changed < 0.01, (shift, changed, sorted(base ^ moved)[:10])


def test_a_long_text_keeps_its_entities_when_the_filler_before_it_moves_every_window_cut(tmp_path):
    """The speed issue's probe (benchmarks/long_text.py) on its small model (ner.cfg, 2,000
    sentences, 400 steps): 6,000 tokens of test text, no sentence starts, behind 37, 101 and
    173 filler tokens with no period. Fewer than 1% of the entities may move; with the
    overlapping windows stitched at their middles 1.02% did."""
    from benchmarks.long_text import moved_share, probe_docs, probe_words, train_small

    model = train_small(conll_path(), tmp_path / "small", extra=["--components.bilstm_tagger.torch_threads=1"])
    nlp = spacy.load(model)
    assert nlp.get_pipe("bilstm_tagger").model.get_ref("encoder").attrs["window_cut"] == "anchored"
    tagged = [nlp(doc) for doc in probe_docs(nlp, probe_words(nlp, conll_path()))]
    assert len(tagged[0].ents) > 500, len(tagged[0].ents)
    share, per_shift = moved_share(tagged)
    assert share < 0.01, per_shift


def test_spans_config_keeps_the_checkpoint_with_the_best_dev_spans_f(tmp_path):
    out = tmp_path / "spans"
    proc = run(
        "-m", "spacy", "train", "configs/spans.cfg", "--output", str(out), f"--paths.dataset={SAMPLE}",
        "--components.bilstm_spans.model.hidden_size=32", "--components.bilstm_spans.torch_threads=1",
        "--training.max_steps=120", "--training.eval_frequency=20", "--training.optimizer.learn_rate=0.01",
    )
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    scores = [float(row[-1]) for row in rows]  # SCORE, the weighted spans_sc_f
    assert len(scores) >= 6 and max(scores) > 0.3 and len(set(scores)) > 2, proc.stdout
    best_step = int(rows[scores.index(max(scores))][1])
    nlp = spacy.load(out / "model-best")
    meta = json.loads((out / "model-best" / "meta.json").read_text())
    assert meta["performance"]["spans_sc_f"] == pytest.approx(max(scores), abs=0.006)
    assert best_step > 0, "model-best must be a trained checkpoint, not the first evaluation"
    dev = read_examples(nlp, SAMPLE, "validation", target="spans")
    assert nlp.evaluate(dev)["spans_sc_f"] == pytest.approx(max(scores), abs=0.006)


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "/no/such/model", "x"], "error: /no/such/model: no such model directory"),
        (["evaluate"], "error: the following arguments are required: model, dataset (see --help)"),
        (["evaluate", "m", "d", "--limit", "many"], "invalid int value: 'many'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_cli_bad_arguments_get_one_clear_line(args, message):
    proc = run("-m", "bilstm_tagger", *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_evaluate_names_a_missing_split(conll_model):
    model_dir, _ = conll_model
    proc = run("-m", "bilstm_tagger", "evaluate", str(model_dir), str(SAMPLE), "--split", "dev", check=False)
    assert proc.returncode == 1 and "has no split 'dev'; it has: train, validation, test" in proc.stderr


def test_every_command_has_help_that_lists_commands_and_defaults():
    import re

    top = run("-m", "bilstm_tagger", "--help").stdout
    for command in ("train", "evaluate", "convert", "vectors", "annotate", "explain", "calibrate"):
        assert re.search(rf"^    {command}\b", top, re.M), top
        sub = run("-m", "bilstm_tagger", command, "--help").stdout
        assert "usage:" in sub
    assert "(default: test)" in run("-m", "bilstm_tagger", "evaluate", "--help").stdout
    assert "--section.key value" in run("-m", "bilstm_tagger", "train", "--help").stdout


def test_help_does_not_import_torch_or_spacy():
    code = "import sys; from bilstm_tagger.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'spacy', 'datasets') if m in sys.modules))"
    assert run("-c", code).stdout.strip() == "[]"


def test_entry_points_resolve():
    groups = {
        "spacy_factories": (["bilstm_tagger", "bilstm_spans", "bilstm_tags", "bilstm_pos"], None),
        "spacy_architectures": (
            ["bilstm_tagger.BiLSTMTagger.v1", "bilstm_tagger.BiLSTMTagger.v2", "bilstm_tagger.HashCharEmbed.v1"],
            registry.architectures,
        ),
        "spacy_readers": (["bilstm_tagger.HFDataset.v1"], registry.readers),
        "spacy_scorers": (["bilstm_tagger.seqeval_scorer.v1"], registry.scorers),
    }
    for group, (names, reg) in groups.items():
        found = {ep.name: ep for ep in entry_points(group=group)}
        for name in names:
            assert name in found, (group, name)
            assert callable(found[name].load())
            if reg is not None:
                assert reg.get(name) is found[name].load()


def test_factories_resolve_in_a_fresh_process_through_entry_points_alone():
    code = (
        "import sys, spacy; nlp = spacy.blank('en');"
        "[nlp.add_pipe(f) for f in ('bilstm_tagger', 'bilstm_spans', 'bilstm_tags', 'bilstm_pos')];"
        "print(nlp.pipe_names, 'bilstm_tagger.pipeline' in sys.modules)"
    )
    proc = run("-c", code)
    assert proc.stdout.strip() == "['bilstm_tagger', 'bilstm_spans', 'bilstm_tags', 'bilstm_pos'] True"


@pytest.mark.parametrize("config_name", sorted(p.name for p in (REPO / "configs").glob("*.cfg")))
def test_every_config_initializes_and_trains_a_step(config_name, tmp_path):
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config, resolve_dot_names
    from thinc.api import fix_random_seed

    overrides = {
        "paths.dataset": str(conll_path()),
        "corpora.train.limit": 20,
        "corpora.dev.limit": 10,
    }
    config = load_config(REPO / "configs" / config_name, interpolate=False)
    if config["components"].get("transformer", {}).get("factory") == "curated_transformer":
        pytest.importorskip("spacy_curated_transformers")
        from ..ml.test_listener import tiny_overrides
        from ..ml.test_transformer import write_tiny_bert

        overrides.update({k: v for k, v in tiny_overrides(write_tiny_bert(tmp_path / "bert")).items() if k != "paths.dataset"})
    elif "transformer" in config["paths"]:  # no hub here: a tiny random BERT written on disk stands in
        from ..ml.test_transformer import write_tiny_bert

        overrides["paths.transformer"] = str(write_tiny_bert(tmp_path / "bert"))
        overrides["components.bilstm_tagger.model.embed.*.transformer.layers"] = [-2, -1]  # it has 2 layers
    ours = [name for name, c in config["components"].items() if c.get("factory", "").startswith("bilstm_")]
    assert len(ours) == 1
    overrides[f"components.{ours[0]}.model.hidden_size"] = 16
    config = load_config(REPO / "configs" / config_name, overrides=overrides, interpolate=False)
    fix_random_seed(0)
    nlp = init_nlp(config)
    train_corpus, dev_corpus = resolve_dot_names(nlp.config.interpolate(), ["corpora.train", "corpora.dev"])
    examples = list(train_corpus(nlp))
    losses = nlp.update(examples[:8])  # with the optimizer that init_nlp built from [training.optimizer]
    assert losses[ours[0]] > 0
    scores = nlp.evaluate(list(dev_corpus(nlp)))
    expected = {"pos.cfg": ["tag_acc"], "spans.cfg": ["spans_sc_f"], "ner_shared_tok2vec.cfg": ["ents_f", "tag_acc"]}
    assert all(key in scores for key in expected.get(config_name, ["ents_f"])), scores


def test_a_shared_tok2vec_pipeline_trains_saves_and_loads_in_a_fresh_process(tmp_path):
    out = tmp_path / "shared"
    run(
        "-m", "spacy", "train", "configs/ner_shared_tok2vec.cfg", "--output", str(out), f"--paths.dataset={conll_path()}",
        "--corpora.train.limit=200", "--corpora.dev.limit=50", "--training.max_steps=40", "--training.eval_frequency=20",
        "--components.bilstm_tagger.model.hidden_size=32", "--components.bilstm_tagger.torch_threads=1",
    )
    code = (
        "import json, spacy; nlp = spacy.load(%r); doc = nlp('EU rejects German call to boycott British lamb .');"
        "print(json.dumps([nlp.pipe_names, [t.tag_ for t in doc], [str(n.__class__.__name__) for n in nlp.get_pipe('bilstm_tagger').model.walk()]]))"
        % str(out / "model-last")
    )
    names, tags, nodes = json.loads(run("-c", code).stdout.strip().splitlines()[-1])
    assert names == ["tok2vec", "bilstm_tagger", "tagger"]
    assert len(tags) == 9 and all(tags)  # spaCy's tagger, fed by the same tok2vec, tagged every token
    assert "Tok2VecListener" in nodes  # our tagger reads the shared tok2vec through a listener
