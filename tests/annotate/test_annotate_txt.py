"""`annotate` on one .txt file: blank lines are not rows; the summary's words/s leaves out model loading."""
from __future__ import annotations

import argparse
import glob
import json
import time

import pyarrow.parquet as pq
import pytest
import spacy

from bilstm_tagger.cli.annotate import add_parser, run

from ..conftest import SAMPLE


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def txt_input(tmp_path_factory):
    """40 sample sentences, one per line, with empty, whitespace-only and CRLF blank lines between."""
    rows = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text(encoding="utf8").splitlines()[:40]]
    blanks = ["\n", "   \n", "\t\n", "\r\n"]
    path = tmp_path_factory.mktemp("txt") / "corpus.txt"
    with open(path, "w", encoding="utf8", newline="") as handle:
        for i, row in enumerate(rows):
            handle.write(" ".join(row["tokens"]) + "\n")
            if i % 3 == 0:
                handle.write(blanks[i % len(blanks)])
    return path


def annotate(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["annotate", *map(str, argv)]))


def test_blank_lines_are_not_rows(model_dir, txt_input, tmp_path):
    lines = txt_input.read_bytes().split(b"\n")[:-1]  # counted here, apart from the reader
    texts = {f"corpus.txt:{n}": line.decode().rstrip("\r") for n, line in enumerate(lines, start=1) if line.strip()}
    assert len(lines) - len(texts) == 14 and len(texts) == 40
    out = tmp_path / "out"
    assert annotate(model_dir, txt_input, out, "--keep-text", "--shard-size", 16) == 0
    rows = [r for f in sorted(glob.glob(str(out / "*.parquet"))) for r in pq.read_table(f).to_pylist()]
    assert {r["id"]: r["text"] for r in rows} == texts
    assert (out / "errors.jsonl").read_text() == ""


def test_words_per_second_leaves_out_loading(model_dir, txt_input, tmp_path, capsys):
    out = tmp_path / "out"
    started = time.time()
    assert annotate(model_dir, txt_input, out) == 0
    wall = time.time() - started
    nlp = spacy.load(model_dir)
    words = sum(len(nlp.make_doc(line)) for line in txt_input.read_text(encoding="utf8").splitlines() if line.strip())
    last = json.loads((out / "_annotate.json").read_text())["last_run"]
    assert last["words"] == words
    assert last["words_per_second"] == pytest.approx(words / last["tag_seconds"])
    # Loading and tagging are two disjoint parts of the run, each measured once.
    assert last["load_seconds"] > 0 and last["load_seconds"] + last["tag_seconds"] <= wall
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith(f"pipeline loaded in {last['load_seconds']:.1f}s; 40 docs ({words} words) tagged in {last['tag_seconds']:.1f}s")
