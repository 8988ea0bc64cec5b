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
from .test_reader import GOOD, write_dataset

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
import os, signal, sys
from pathlib import Path
import spacy
from bilstm_tagger import checkpoints
from bilstm_tagger.pipeline import component

mode, source, target = sys.argv[1:]
nlp = spacy.load(source)
if mode != "renameat2":
    checkpoints._exchange = lambda a, b: False  # force the two-rename fallback
if mode == "between-renames":
    real_rename = os.rename
    def rename_then_die(a, b):
        real_rename(a, b)
        if Path(b).name.startswith(".model-best.tmp-old-"):
            os.kill(os.getpid(), signal.SIGKILL)  # the old model is aside, the new one not yet in place
    os.rename = rename_then_die
else:
    def half_then_die(path, data):
        if Path(path).name == "model":  # the weights file: write half of it, then die
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    component._atomic_write = half_then_die
checkpoints.save_pipeline(nlp, Path(target))
"""


@pytest.mark.parametrize("mode", ["renameat2", "fallback", "between-renames"])
def test_a_kill_mid_save_leaves_the_previous_model(ner_nlp, tmp_path, mode):
    from bilstm_tagger.checkpoints import _exchange, remove_stale_temp_dirs

    if mode == "renameat2":
        probe_a, probe_b = tmp_path / "a", tmp_path / "b"
        probe_a.mkdir(), probe_b.mkdir()
        if not _exchange(probe_a, probe_b):
            pytest.skip("this system has no renameat2(RENAME_EXCHANGE)")
    target = tmp_path / "out" / "model-best"
    target.parent.mkdir()
    save_pipeline(ner_nlp, target)
    before = (target / WEIGHTS).read_bytes()
    newer = REPO / "tests" / "data" / "legacy_0_1" / "ner_crf"  # another model: its weights differ
    proc = subprocess.run([sys.executable, "-c", _CRASH_SAVE, mode, str(newer), str(target)], capture_output=True, text=True, cwd=str(REPO))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = sorted(p.name for p in target.parent.iterdir() if p.name != "model-best")
    assert leftovers, "the killed save should have left its temp dir behind"
    remove_stale_temp_dirs(target.parent)  # what the next training run does first
    assert sorted(p.name for p in target.parent.iterdir()) == ["model-best"]
    assert (target / WEIGHTS).read_bytes() == before
    assert spacy.load(target)("Mara Lindqvist visited Lisbon .") is not None


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
    start = time.time()
    proc = run_train("--output", str(tmp_path / "out"), "--paths.dataset", path, *args)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert message.replace("\\", "") in stderr or __import__("re").search(message, stderr), stderr[-2000:]
    assert f"dataset '{path}'" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "out" / "model-last").exists()
    assert time.time() - start < 60
