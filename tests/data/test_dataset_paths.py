"""A mistyped local dataset path fails at once with "no such folder", in every command that reads
datasets; a hub id still goes to the hub, and an unreachable hub says how to use a local copy."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from bilstm_tagger.cli.annotate import add_parser, run as run_annotate
from bilstm_tagger.cli import main
from bilstm_tagger.data.paths import looks_local
from bilstm_tagger.data.readers import create_hf_reader
from bilstm_tagger.errors import DatasetError

from ..conftest import REPO

TYPO = "corpora/sample_nre"  # corpora/sample_ner with two letters swapped
SUGGESTION = "did you mean corpora/sample_ner?"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.mark.parametrize(
    "path, local",
    [
        ("eriktks/conll2003", False),  # OWNER/NAME
        ("conll2003", False),  # NAME
        ("owner/data.v2", False),  # hub names may hold dots
        ("./conll2003", True),
        ("../shared/datasets/conll2003", True),
        ("/data/conll2003", True),
        ("~/conll2003", True),
        ("data/ner/conll2003", True),  # more than one separator
        ("data\\conll2003", True),
        ("train.jsonl", True),  # a data file
        ("owner/train.parquet", True),
        ("corpora/anything", True),  # corpora/ is a folder here, so this is a path into it
    ],
)
def test_the_local_path_rule(path, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpora").mkdir()
    assert looks_local(path) is local


def test_the_reader_refuses_a_missing_local_folder_at_once(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(DatasetError) as caught:
        create_hf_reader(TYPO)
    assert str(caught.value) == f"no such folder: {TYPO} ({SUGGESTION})"


def test_evaluate_and_annotate_say_no_such_folder(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["evaluate", str(model_dir), TYPO]) == 1
    assert capsys.readouterr().err == f"error: no such folder: {TYPO} ({SUGGESTION})\n"
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    assert run_annotate(parser.parse_args(["annotate", str(model_dir), TYPO, str(tmp_path / "out")])) == 1
    assert capsys.readouterr().err == f"error: no such folder: {TYPO} ({SUGGESTION})\n"
    assert run_annotate(parser.parse_args(["annotate", str(model_dir), "corpora/typo.jsonl", str(tmp_path / "o2")])) == 1
    assert capsys.readouterr().err == "error: no such file: corpora/typo.jsonl\n"


def _run(argv, env_extra=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **(env_extra or {}))
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_spacy_train_prints_the_missing_folder_in_a_few_lines():
    """spaCy resolves the reader inside its config validation: one ✘ message, no traceback (61 lines before)."""
    done = _run(["-m", "spacy", "train", "configs/ner.cfg", "--paths.dataset", TYPO], OFFLINE)
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert f"no such folder: {TYPO}" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) <= 8, output


def test_an_unreachable_hub_says_so_and_names_the_local_alternative():
    """A hub id is not taken for a local path: it goes to the hub, which offline mode makes unreachable."""
    script = (
        "from bilstm_tagger.data.readers import load_hf_dict\n"
        "from bilstm_tagger.annotate.inputs import load_hf\n"
        "for load in (lambda p: load_hf_dict(p), lambda p: load_hf(p, 'train', None, None)):\n"
        "    try:\n"
        "        load('bilstm-tagger-tests/no-such-dataset')\n"
        "    except ValueError as err:\n"
        "        print(err)\n"
    )
    done = _run(["-c", script], OFFLINE)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr
    for line in lines:
        assert "could not reach the Hugging Face hub for dataset 'bilstm-tagger-tests/no-such-dataset'" in line
        assert "local copy" in line
