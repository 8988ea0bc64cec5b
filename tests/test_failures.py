"""Bad models and bad training data fail early, with errors that name the file, split, column and row."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import spacy

from bilstm_tagger.checkpoints import save_pipeline
from bilstm_tagger.errors import ModelLoadError

from .conftest import REPO, SAMPLE
from .data.test_reader import GOOD, write_dataset

WEIGHTS = "bilstm_tagger/model"


@pytest.fixture
def saved(ner_nlp, tmp_path):
    path = tmp_path / "model"
    ner_nlp.to_disk(path)
    return path


def test_truncated_weights_name_the_file(saved):
    data = (saved / WEIGHTS).read_bytes()
    (saved / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=rf"{saved / WEIGHTS}: checksum mismatch .* truncated or corrupt"):
        spacy.load(saved)


def test_truncated_weights_without_checksum_still_name_the_file(saved):
    cfg_path = saved / "bilstm_tagger" / "cfg"
    cfg = json.loads(cfg_path.read_text())
    del cfg["weights_sha256"]
    cfg_path.write_text(json.dumps(cfg))
    data = (saved / WEIGHTS).read_bytes()
    (saved / WEIGHTS).write_bytes(data[:-100])
    with pytest.raises(ModelLoadError, match=rf"{saved / WEIGHTS}: weights are damaged .*truncated or corrupt"):
        spacy.load(saved)
    (saved / WEIGHTS).write_bytes(b"\x05\x00")
    with pytest.raises(ModelLoadError, match=rf"{saved / WEIGHTS}: weights are damaged .*truncated or corrupt"):
        spacy.load(saved)


def test_missing_weights_file(saved):
    (saved / WEIGHTS).unlink()
    with pytest.raises(ModelLoadError, match=rf"{saved / WEIGHTS}: file is missing"):
        spacy.load(saved)


def test_corrupt_cfg(saved):
    (saved / "bilstm_tagger" / "cfg").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cfg: not valid JSON"):
        spacy.load(saved)


def test_config_that_does_not_match_the_weights(saved):
    config = (saved / "config.cfg").read_text()
    (saved / "config.cfg").write_text(config.replace("hidden_size = 32", "hidden_size = 64"))
    with pytest.raises(ModelLoadError, match=r"do not match the component's config: hidden_size: saved 32, config 64"):
        spacy.load(saved)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PWNED_MARKER']}",))


def test_a_malicious_pickle_is_refused_and_never_run(saved, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED_MARKER", str(marker))
    import torch

    cfg_path = saved / "bilstm_tagger" / "cfg"
    cfg = json.loads(cfg_path.read_text())
    del cfg["weights_sha256"]
    cfg_path.write_text(json.dumps(cfg))
    for blob in (pickle.dumps(_Payload()), None):
        if blob is None:  # the same payload inside a torch.save() archive
            torch.save({"state": _Payload()}, saved / WEIGHTS)
        else:
            (saved / WEIGHTS).write_bytes(blob)
        with pytest.raises(ModelLoadError):
            spacy.load(saved)
        assert not marker.exists()


def test_bad_bytes_name_the_component(ner_nlp):
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("bilstm_tagger")
    data = ner_nlp.get_pipe("bilstm_tagger").to_bytes()
    with pytest.raises(ModelLoadError, match=r"^bilstm_tagger \(bytes\): weights are damaged"):
        nlp2.get_pipe("bilstm_tagger").from_bytes(data[: len(data) // 3])


_CRASH_SAVE = """
import itertools, json, os, shutil, signal, sys
from pathlib import Path

import torch
torch.set_num_threads(1)  # no thread pool before fork()
import spacy
from bilstm_tagger import checkpoints
from bilstm_tagger.util import atomic

mode, source, old, work = sys.argv[1:]
nlp = spacy.load(source)
real_exchange = atomic._exchange if mode == "renameat2" else (lambda a, b: False)


def save_and_die_after(k, log):
    # Count every filesystem step of the save (the temp dir's writes, the swap, the clean-up) and die by
    # SIGKILL right after the k-th: a kill between any two steps of the path this mode takes.
    count = itertools.count(1)

    def step(name, fn, only_if=lambda result: True):
        def wrapper(*args, **kwargs):
            result = fn(*args, **kwargs)
            if only_if(result):
                os.write(log, f"{name} {args[0]}\\n".encode())
                if next(count) == k:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    for name in ("rename", "replace", "unlink", "rmdir"):
        setattr(os, name, step(name, getattr(os, name)))
    atomic._exchange = step("exchange", real_exchange, only_if=bool)
    checkpoints.save_pipeline(nlp, Path(target))


for k in itertools.count(1):
    target = Path(work) / str(k) / "model-best"
    shutil.copytree(old, target)
    log_path = Path(work) / str(k) / "steps.log"
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    pid = os.fork()
    if pid == 0:
        try:
            save_and_die_after(k, log)
        finally:
            os._exit(0)
    os.close(log)
    _, status = os.waitpid(pid, 0)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        print(json.dumps({"completed": k}))  # the save ran to the end before its k-th step: every step was covered
        break
    assert k < 500
"""


def _has_renameat2(tmp_path) -> bool:
    from bilstm_tagger.util.atomic import _exchange

    probe_a, probe_b = tmp_path / "probe_a", tmp_path / "probe_b"
    probe_a.mkdir(), probe_b.mkdir()
    return _exchange(probe_a, probe_b)


_TEXTS = [
    "Mara Lindqvist said that Northwind Bank would cut jobs in Lisbon .",
    "Grace Okafor won the Grand Prix title in Iceland .",
    "Corvo Energy agreed to buy Ardent Media for 1.2 billion dollars .",
]


def _ents(nlp):
    return [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(_TEXTS)]


def _tree(path):
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("mode", ["renameat2", "fallback"])
def test_a_kill_mid_save_leaves_a_whole_model(ner_nlp, tmp_path, mode):
    """Kill the save after each of its filesystem steps in turn; after the clean-up model-best is the old or the new model, whole."""
    from bilstm_tagger.checkpoints import remove_stale_temp_dirs

    if mode == "renameat2" and not _has_renameat2(tmp_path):
        pytest.skip("this system has no renameat2(RENAME_EXCHANGE)")
    old = tmp_path / "old" / "model-best"
    old.parent.mkdir()
    save_pipeline(ner_nlp, old)
    newer = REPO / "tests" / "data" / "legacy_0_1" / "ner_crf"  # another model: its weights differ
    work = tmp_path / "trials"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SAVE, mode, str(newer), str(old), str(work)],
        capture_output=True, text=True, cwd=str(REPO), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    completed = json.loads(proc.stdout.strip().splitlines()[-1])["completed"]
    new = work / str(completed) / "model-best"  # the save that was never killed
    assert sorted(p.name for p in new.parent.iterdir()) == ["model-best", "steps.log"]
    old_tree, new_tree = _tree(old), _tree(new)
    assert old_tree != new_tree
    steps = [line.split()[0] for line in (new.parent / "steps.log").read_text().splitlines()]
    assert completed == len(steps) + 1
    outcomes = {}
    for k in range(1, completed):
        target = work / str(k) / "model-best"
        remove_stale_temp_dirs(target.parent)  # what the next training run does first
        assert sorted(p.name for p in target.parent.iterdir()) == ["model-best", "steps.log"], (k, steps[k - 1])
        tree = _tree(target)
        whole = tree in (old_tree, new_tree)
        assert whole, f"killed after step {k} ({steps[k - 1]}): model-best is neither the old model nor the new one, whole"
        outcomes.setdefault("old" if tree == old_tree else "new", target)
    # Killed early the old model stays, killed late the new one is in place: both outcomes were reached.
    assert set(outcomes) == {"old", "new"}, outcomes
    assert _ents(spacy.load(outcomes["old"])) == _ents(ner_nlp)
    assert _ents(spacy.load(outcomes["new"])) == _ents(spacy.load(newer))
    # Each mode's kills landed inside its own swap: the atomic exchange, or the two renames of the fallback.
    if mode == "renameat2":
        assert steps.count("exchange") == 1 and "rename" not in steps, steps
    else:
        assert steps.count("rename") == 2 and "exchange" not in steps, steps


@pytest.mark.parametrize("exchange", [True, False])
def test_saving_again_replaces_the_model_and_leaves_nothing_behind(ner_nlp, tmp_path, exchange, monkeypatch):
    from bilstm_tagger.util import atomic

    if exchange and not _has_renameat2(tmp_path):
        pytest.skip("this system has no renameat2(RENAME_EXCHANGE)")
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "out" / "model-best"
    target.parent.mkdir()
    other = spacy.load(REPO / "tests" / "data" / "legacy_0_1" / "ner_crf")
    save_pipeline(other, target)
    save_pipeline(ner_nlp, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model-best"]
    assert _ents(spacy.load(target)) == _ents(ner_nlp)


def run_train(*args, **popen):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bilstm_tagger", "train", "configs/ner.cfg", *args],
        cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def test_sigterm_mid_training_leaves_a_loadable_model_best(tmp_path):
    out = tmp_path / "run"
    proc = run_train(
        "--output", str(out), "--paths.dataset", str(SAMPLE), "--training.max_steps", "100000",
        "--training.eval_frequency", "3", "--components.bilstm_tagger.model.hidden_size", "32",
        "--components.bilstm_tagger.torch_threads", "1",
    )
    deadline = time.time() + 240
    while not (out / "model-best").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(4)  # several more evaluations, each rewriting model-last and often model-best
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    nlp = spacy.load(out / "model-best")
    assert nlp.get_pipe("bilstm_tagger").labels == ("LOC", "MISC", "ORG", "PER")
    nlp("Mara Lindqvist visited Lisbon .")


def test_train_saves_the_averaged_weights_that_won_model_best(tmp_path):
    """use_averages = true: spaCy scores the averaged weights, so model-best must hold them, and scoring
    the saved model-best on the same dev docs must give the score its meta.json records."""
    from .conftest import read_examples

    out = tmp_path / "run"
    proc = run_train(
        "--output", str(out), "--paths.dataset", str(SAMPLE), "--training.max_steps", "80",
        "--training.eval_frequency", "40", "--corpora.dev.limit", "80",
        "--components.bilstm_tagger.model.hidden_size", "32",
        "--components.bilstm_tagger.model.embed.rows", "[2000, 500, 500, 200]",
        "--components.bilstm_tagger.torch_threads", "1",
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    nlp = spacy.load(out / "model-best")
    recorded = nlp.meta["performance"]["ents_f"]
    rescored = nlp.evaluate(read_examples(nlp, SAMPLE, "validation", limit=80))["ents_f"]
    assert 0 < recorded < 1
    assert rescored == pytest.approx(recorded, abs=1e-9)  # meta.json keeps 10 decimals


@pytest.mark.parametrize(
    "rows, args, message",
    [
        ({"train": GOOD + [(["a", "b"], ["O"])], "validation": GOOD}, [], r"split 'train', column 'ner_tags', row id r1: 2 tokens but 1 tags"),
        ({"train": GOOD, "validation": GOOD + [(["a"], ["Q-PER"])]}, [], r"split 'validation', column 'ner_tags', row id r1: tag 'Q-PER' fits no scheme"),
        ({"train": GOOD}, [], r"has no split 'validation'; it has: train"),
        ({"train": GOOD, "validation": GOOD}, ["--paths.tags_column", "tags"], r"has no tags column 'tags'"),
    ],
)
def test_bad_training_data_fails_before_any_training_step(tmp_path, rows, args, message):
    path = write_dataset(tmp_path / "data", rows)
    proc = run_train("--output", str(tmp_path / "out"), "--paths.dataset", path, *args)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert message.replace("\\", "") in stderr or __import__("re").search(message, stderr), stderr[-2000:]
    assert f"dataset '{path}'" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "out" / "model-last").exists()
    # It failed while building the corpora, before any update (spaCy prints this table header when training starts).
    assert "LOSS" not in stdout and "Initial learn rate" not in stdout


def test_the_command_line_prints_user_errors_in_one_line_and_lets_bugs_raise(tmp_path, capsys, monkeypatch):
    from bilstm_tagger import cli
    from bilstm_tagger.data import vectors

    glove = tmp_path / "bad.txt"
    glove.write_text("oslo 0.1 0.2\nlisbon 0.3\n", encoding="utf8")
    assert cli.main(["vectors", str(glove), str(tmp_path / "vec")]) == 1
    assert capsys.readouterr().err == f"error: {glove}, line 2: 1 values, expected 2\n"
    assert cli.main(["evaluate", str(tmp_path / "no-model"), str(SAMPLE)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'no-model'}: no such model directory\n"

    def buggy(*args, **kwargs):
        return {}["rows"]  # a KeyError from a bug, not from the user's input

    monkeypatch.setattr(vectors, "build_vectors_pipeline", buggy)
    with pytest.raises(KeyError, match="rows"):
        cli.main(["vectors", str(glove), str(tmp_path / "vec")])


def test_the_checkpoint_logger_is_declared_as_an_entry_point():
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    entries = dict(line.split(" = ") for line in config["options.entry_points"]["spacy_loggers"].strip().splitlines())
    module, name = entries["bilstm_tagger.CheckpointLogger.v1"].split(":")
    from bilstm_tagger import checkpoints

    assert module == checkpoints.__name__ and getattr(checkpoints, name) is spacy.registry.loggers.get("bilstm_tagger.CheckpointLogger.v1")


def test_spacy_finds_the_checkpoint_logger_without_the_cli():
    """Through the installed entry points only (a fresh process that never imports bilstm_tagger.cli).
    Passes once the package is installed from a setup.cfg that declares the entry point."""
    code = (
        "import sys, spacy; spacy.registry.loggers.get('bilstm_tagger.CheckpointLogger.v1'); "
        "print('bilstm_tagger.cli' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-1500:]
    assert result.stdout.strip() == "False"
