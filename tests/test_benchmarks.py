"""The benchmark commands end to end, on the bundled sample with seconds of budget (harness check only)."""
import json
import os
import subprocess
import sys

from .conftest import REPO, SAMPLE


def bench(tmp_path, *args):
    env = {**os.environ, "BILSTM_TAGGER_BENCH_DIR": str(tmp_path), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ner", *args], cwd=str(REPO), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_train_speed_and_table_on_the_sample(tmp_path):
    for system in ("bilstm", "spacy_efficiency"):
        out = bench(tmp_path, "train", "--system", system, "--dataset", str(SAMPLE), "--time-budget", "8s")
        assert f"{system}: dev F1" in out
    results = tmp_path / "results" / "sample_ner"
    first = json.loads((results / "bilstm.json").read_text())
    assert first["train"]["stopped_by"] == "time budget" and first["curve"]
    assert set(first["test"]) >= {"ents_p", "ents_r", "ents_f", "ents_per_type"}
    from bilstm_tagger.ml import resolve_precision

    assert first["precision"] == {"bilstm_tagger": resolve_precision("auto")}  # configs/ner.cfg, resolved here
    assert json.loads((results / "spacy_efficiency.json").read_text())["precision"] == {}
    bench(tmp_path, "speed", "--dataset", str(SAMPLE), "--repeats", "1", "--threads", "1")
    speed = json.loads((results / "speed.json").read_text())
    assert speed["systems"]["spacy_efficiency"]["inference_words_per_s_median"] > 0
    assert speed["systems"]["bilstm"]["peak_rss_mb"] > 0
    table = bench(tmp_path, "table")
    assert "| bilstm |" in table and "| spacy_efficiency | " in table and "1.00" in table


def test_a_distilled_system_trains_on_the_teacher_shards(tmp_path):
    """`--system bilstm_distilled --teacher DIR` reads DIR's unlabeled/ and train/ shards through
    DistillCorpus.v1 (the layout `distill` writes) and records where the soft labels came from."""
    bench(tmp_path, "train", "--system", "bilstm", "--dataset", str(SAMPLE), "--time-budget", "5s", "--no-test")
    teacher_model = tmp_path / "models" / "sample_ner" / "bilstm" / "model-best"
    teacher = tmp_path / "teacher"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    for split, part in (("validation", "unlabeled"), ("train", "train")):
        proc = subprocess.run(
            [sys.executable, "-m", "bilstm_tagger", "annotate", str(teacher_model), str(SAMPLE), str(teacher / part),
             "--split", split, "--tokens-column", "tokens", "--marginals"],
            cwd=str(REPO), env=env, capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    out = bench(tmp_path, "train", "--system", "bilstm_distilled", "--dataset", str(SAMPLE), "--time-budget", "5s",
                "--teacher", str(teacher), "--no-test")
    assert "bilstm_distilled: dev F1" in out
    result = json.loads((tmp_path / "results" / "sample_ner" / "dev_only" / "bilstm_distilled.json").read_text())
    unlabeled_words = sum(len(json.loads(l)["tokens"]) for l in (SAMPLE / "validation.jsonl").read_text().splitlines() if l.strip())
    assert result["teacher"]["unlabeled"]["words"] == unlabeled_words
    assert result["teacher"]["train"]["complete"] is True
    from spacy.util import load_config

    corpus = load_config(tmp_path / "models" / "sample_ner" / "bilstm_distilled" / "model-best" / "config.cfg")["corpora"]["train"]
    assert corpus["@readers"] == "bilstm_tagger.DistillCorpus.v1"
    assert corpus["teacher"] == [str(teacher / "unlabeled")] and corpus["teacher_gold"] == str(teacher / "train")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ner", "train", "--system", "bilstm_distilled", "--dataset", str(SAMPLE)],
                          cwd=str(REPO), env={**env, "BILSTM_TAGGER_BENCH_DIR": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode != 0 and "needs --teacher" in proc.stderr
    assert (tmp_path / "models" / "sample_ner" / "bilstm_distilled" / "model-best").is_dir()  # a refused run removes nothing
