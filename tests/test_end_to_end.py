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

from bilstm_tagger.scoring import tag_sequences

from .conftest import REPO, SAMPLE, conll_path, read_examples

SMALL = [
    "--components.bilstm_tagger.model.hidden_size=64",
    "--components.bilstm_tagger.model.embed_rows=[5000,1000,1000,500]",
    "--components.bilstm_tagger.torch_threads=1",
    "--training.max_steps=300",
    "--training.eval_frequency=100",
    "--training.optimizer.learn_rate=0.005",
]


def run(*args, check=True):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=str(REPO))
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


def test_spacy_train_prints_seqeval_scores_and_beats_majority_tag(conll_model):
    model_dir, log = conll_model
    assert "ENTS_F" in log and "ENTS_P" in log
    nlp = spacy.load(model_dir)
    dev = read_examples(nlp, conll_path(), "validation", limit=200)
    y_true, _ = tag_sequences(dev)
    tag_counts = Counter(tag for seq in y_true for tag in seq)
    majority = tag_counts.most_common(1)[0][0]
    baseline = f1_score(y_true, [[majority] * len(seq) for seq in y_true])
    scores = nlp.evaluate(dev)
    assert majority == "O" and baseline == 0.0
    assert scores["ents_f"] > baseline + 0.2, scores


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
    # The CLI's numbers are the component scorer's numbers on the same docs.
    nlp = spacy.load(model_dir)
    examples = [Example(nlp(eg.predicted), eg.reference) for eg in read_examples(nlp, conll_path(), "test", limit=150)]
    assert result["scores"]["ents_f"] == pytest.approx(nlp.get_pipe("bilstm_tagger").score(examples)["ents_f"])


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


def test_every_command_has_help():
    for command in ([], ["evaluate"], ["convert"]):
        assert "usage:" in run("-m", "bilstm_tagger", *command, "--help").stdout


def test_entry_points_resolve():
    groups = {
        "spacy_factories": ("bilstm_tagger", None),
        "spacy_architectures": ("bilstm_tagger.BiLSTMTagger.v1", registry.architectures),
        "spacy_readers": ("bilstm_tagger.HFDataset.v1", registry.readers),
        "spacy_scorers": ("bilstm_tagger.seqeval_scorer.v1", registry.scorers),
    }
    for group, (name, reg) in groups.items():
        found = {ep.name: ep for ep in entry_points(group=group)}
        assert name in found, group
        assert callable(found[name].load())
        if reg is not None:
            assert reg.get(name) is found[name].load()
    assert "bilstm_tagger" in spacy.blank("en").factory_names


@pytest.mark.parametrize("config_name", ["ner.cfg", "ner_attention.cfg", "pos.cfg"])
def test_every_config_initializes_and_trains_a_step(config_name):
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config, resolve_dot_names
    from thinc.api import fix_random_seed

    overrides = {
        "paths.dataset": str(conll_path()),
        "corpora.train.limit": 20,
        "corpora.dev.limit": 10,
        "components.bilstm_tagger.model.hidden_size": 16,
    }
    config = load_config(REPO / "configs" / config_name, overrides=overrides, interpolate=False)
    fix_random_seed(0)
    nlp = init_nlp(config)
    train_corpus, dev_corpus = resolve_dot_names(nlp.config.interpolate(), ["corpora.train", "corpora.dev"])
    examples = list(train_corpus(nlp))
    losses = nlp.update(examples[:8])  # with the optimizer that init_nlp built from [training.optimizer]
    assert losses["bilstm_tagger"] > 0
    scores = nlp.evaluate(list(dev_corpus(nlp)))
    assert ("tag_acc" if config_name == "pos.cfg" else "ents_f") in scores
