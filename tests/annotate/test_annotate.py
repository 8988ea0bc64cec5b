"""`annotate`: inputs, output schema, bad rows, resumption after a real kill, --n-process, and the Ray engine."""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
from spacy.tokens import Doc

from bilstm_tagger.annotate import output_schema
from bilstm_tagger.cli.annotate import add_parser, run
from bilstm_tagger.annotate.core import KILL_HOOK_ENV

from ..conftest import REPO, SAMPLE, TINY_MODEL, conll_path, read_examples, train_pipeline


def annotate(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["annotate", *map(str, argv)]))


def rows_of(out: Path) -> list:
    files = sorted(glob.glob(str(out / "*.parquet")))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def close(rows: list) -> list:
    """The rows with each confidence as pytest.approx: runs with other batch sizes, thread counts or
    processes give the same entities, but their float sums may differ in the last bits."""
    return [
        {**r, "entities": [{**e, "confidence": e["confidence"] if e["confidence"] is None else pytest.approx(e["confidence"], abs=1e-5)} for e in r["entities"]]}
        for r in rows
    ]


def errors_of(out: Path) -> list:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf8").splitlines()]


def expected_entities(doc) -> list:
    return [(e.start_char, e.end_char, e.start, e.end, e.label_, e.text) for e in doc.ents]


def got_entities(row) -> list:
    return [(e["start_char"], e["end_char"], e["start_token"], e["end_token"], e["label"], e["text"]) for e in row["entities"]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    examples = read_examples(spacy.blank("en"), SAMPLE, "train")
    nlp = train_pipeline({"model": TINY_MODEL}, examples, steps=60)
    path = tmp_path_factory.mktemp("annotate") / "model"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def jsonl_input(tmp_path_factory):
    """The sample test split as text rows (ids kept), with bad rows of every kind mixed in."""
    rows = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text(encoding="utf8").splitlines()]
    path = tmp_path_factory.mktemp("input") / "corpus.jsonl"
    bad = [
        b'{"id": "bad-int", "text": 42}\n',
        b'{"id": "bad-empty", "text": "   "}\n',
        b'{"id": "bad-null", "text": null}\n',
        b'{"id": "bad-surrogate", "text": "a \\ud800 b"}\n',
        b'{"id": "bad-tokens", "tokens": ["a", 3]}\n',
        b'{"id": "bad-nofield", "body": "x"}\n',
        b'{"text": "not JSON\n',
        b'{"id": "x", "text": "caf\xe9 latin-1"}\n',
        b"\n",
        b"[1, 2]\n",
    ]
    with open(path, "wb") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps({"id": row["id"], "text": " ".join(row["tokens"])}).encode() + b"\n")
            if i % 15 == 3:
                handle.write(bad[(i // 15) % len(bad)])
    return path


def test_hf_split_entities_equal_nlp_pipe(model_dir, tmp_path):
    """The local CoNLL-2003 test split: every row is written once, with nlp.pipe's entities."""
    import datasets

    out = tmp_path / "out"
    assert annotate(model_dir, conll_path(), out, "--split", "test", "--shard-size", 1000, "--batch-size", 64) == 0
    split = datasets.load_dataset(str(conll_path()), split="test")
    nlp = spacy.load(model_dir)
    docs = nlp.pipe((Doc(nlp.vocab, words=tokens) for tokens in split["tokens"]), batch_size=128)
    docs = list(docs)
    expected = {str(i): expected_entities(doc) for i, doc in zip(split["id"], docs)}
    rows = rows_of(out)
    assert len(rows) == len(expected) == split.num_rows
    assert [r["id"] for r in rows] == [str(i) for i in split["id"]]  # input order, each id once
    assert {r["id"]: got_entities(r) for r in rows} == expected
    confidences = [e["confidence"] for r in rows for e in r["entities"]]
    assert confidences == pytest.approx([e._.confidence for doc in docs for e in doc.ents], abs=1e-5)
    assert sum(len(v) for v in expected.values()) > 500  # the model does find entities
    assert pq.read_schema(out / "part-000000.parquet") == output_schema(False)
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-00000{i}.parquet" for i in range(4)]
    assert json.loads((out / "_annotate.json").read_text())["complete"] is True
    assert errors_of(out) == []


def test_bad_rows_go_to_errors_and_the_run_goes_on(model_dir, jsonl_input, tmp_path):
    out = tmp_path / "out"
    assert annotate(model_dir, jsonl_input, out, "--shard-size", 40, "--keep-text") == 0
    errors = {e["id"]: e["reason"] for e in errors_of(out)}
    reasons = {
        "bad-int": "expected a string",
        "bad-empty": "empty text",
        "bad-null": "missing value",
        "bad-surrogate": "lone surrogate",
        "bad-tokens": "token 1 is int",
        "bad-nofield": "no 'text' or 'tokens' field",
    }
    for row_id, reason in reasons.items():
        assert reason in errors.pop(row_id)
    # The rest have ids derived from file and line: invalid JSON, invalid UTF-8, empty line, not an object.
    assert all(k.startswith("corpus.jsonl:") for k in errors), errors
    assert sorted(errors.values(), key=str) and {r.split()[0] for r in errors.values()} == {"invalid", "empty", "expected"}
    lines = jsonl_input.read_bytes().splitlines()
    assert len(errors) + len(reasons) + 150 == len(lines)
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(150)]
    nlp = spacy.load(model_dir)
    for row in rows[:40]:
        assert got_entities(row) == expected_entities(nlp(row["text"]))


def test_input_kinds_and_formats(model_dir, tmp_path):
    """Parquet without an id column (derived ids), a .txt folder (one doc per file), jsonl and docbin output."""
    texts = ["Grace Okafor flew to Lisbon .", "Corvo Energy agreed to buy Ardent Media .", ""]
    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet")
    assert annotate(model_dir, tmp_path / "in.parquet", tmp_path / "p") == 0
    assert [r["id"] for r in rows_of(tmp_path / "p")] == ["in.parquet:0", "in.parquet:1"]
    assert errors_of(tmp_path / "p") == [{"id": "in.parquet:2", "reason": "empty text"}]

    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(texts[0], encoding="utf8")
    (folder / "sub" / "b.txt").write_text(texts[1], encoding="utf8")
    (folder / "c.txt").write_bytes(b"Caf\xe9 in Lisbon")
    assert annotate(model_dir, folder, tmp_path / "t") == 0
    parquet_rows = rows_of(tmp_path / "t")
    assert [r["id"] for r in parquet_rows] == ["a.txt", "sub/b.txt"]
    assert errors_of(tmp_path / "t") == [{"id": "c.txt", "reason": "invalid UTF-8 at byte 3"}]

    assert annotate(model_dir, folder, tmp_path / "j", "--format", "jsonl") == 0
    jsonl_rows = [json.loads(line) for line in (tmp_path / "j" / "part-000000.jsonl").read_text().splitlines()]
    assert jsonl_rows == close(parquet_rows)
    assert all(e["confidence"] is not None and 0 < e["confidence"] <= 1 for r in parquet_rows for e in r["entities"])

    from spacy.tokens import DocBin

    assert annotate(model_dir, folder, tmp_path / "d", "--format", "docbin") == 0
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(tmp_path / "d" / "part-000000.spacy").get_docs(nlp.vocab))
    assert [d.user_data["id"] for d in docs] == ["a.txt", "sub/b.txt"]
    assert [got_entities({"entities": r["entities"]}) for r in parquet_rows] == [expected_entities(d) for d in docs]


def _rows_sharing_ids(path: Path) -> list:
    """The issue's two rows with id "x", then sample texts in pairs that share an id, and rows without one."""
    sample = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text(encoding="utf8").splitlines()][:40]
    rows = [{"id": "x", "text": "Ann Smith lives in Oslo ."}, {"id": "x", "text": "Bob Jones works for Acme Corp in Paris today ."}]
    rows += [{"id": f"pair-{i // 2}", "text": " ".join(r["tokens"])} for i, r in enumerate(sample[:30])]
    rows += [{"text": " ".join(r["tokens"])} for r in sample[30:]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf8")
    return rows


def test_rows_that_share_an_id_each_come_out_once_with_their_own_entities(model_dir, tmp_path):
    """Local engine: rows are kept apart by position; a shared id merges nothing."""
    rows = _rows_sharing_ids(tmp_path / "dups.jsonl")
    assert annotate(model_dir, tmp_path / "dups.jsonl", tmp_path / "out", "--shard-size", 16, "--batch-size", 8) == 0
    nlp = spacy.load(model_dir)
    expected = [expected_entities(nlp(r["text"])) for r in rows]
    # Within a shared id the rows' entities differ, so a merge would show.
    assert expected[0] != expected[1] and sum(a != b for a, b in zip(expected[2:32:2], expected[3:32:2])) > 5
    out = rows_of(tmp_path / "out")
    ids = [r.get("id", f"dups.jsonl:{line}") for line, r in enumerate(rows, start=1)]
    assert [r["id"] for r in out] == ids  # every row once, in input order, with its own id
    assert [got_entities(r) for r in out] == expected
    assert errors_of(tmp_path / "out") == []


def test_n_process_2_and_limit(model_dir, jsonl_input, tmp_path):
    assert annotate(model_dir, jsonl_input, tmp_path / "one", "--shard-size", 30, "--batch-size", 8) == 0
    assert annotate(model_dir, jsonl_input, tmp_path / "two", "--shard-size", 30, "--n-process", 2) == 0
    assert rows_of(tmp_path / "one") == close(rows_of(tmp_path / "two"))
    assert errors_of(tmp_path / "one") == errors_of(tmp_path / "two")
    assert annotate(model_dir, jsonl_input, tmp_path / "lim", "--shard-size", 30, "--limit", 25) == 0
    assert len(rows_of(tmp_path / "lim")) + len(errors_of(tmp_path / "lim")) == 25
    assert rows_of(tmp_path / "lim") == close(rows_of(tmp_path / "one")[: len(rows_of(tmp_path / "lim"))])


def test_rerun_with_other_settings_is_refused(model_dir, jsonl_input, tmp_path, capsys):
    assert annotate(model_dir, jsonl_input, tmp_path / "o", "--shard-size", 30, "--limit", 10) == 0
    assert annotate(model_dir, jsonl_input, tmp_path / "o", "--shard-size", 31, "--limit", 10) == 1
    assert "shard_size" in capsys.readouterr().err
    assert annotate(tmp_path / "missing", jsonl_input, tmp_path / "o2") == 1
    assert annotate(model_dir, jsonl_input, tmp_path / "o3", "--batch-size", 0) == 2


def _cli(model_dir, input_path, out, env_extra=None):
    script = (
        "import argparse, sys\n"
        "from bilstm_tagger.cli.annotate import add_parser, run\n"
        "p = argparse.ArgumentParser(); add_parser(p.add_subparsers(dest='c'))\n"
        "sys.exit(run(p.parse_args(['annotate'] + sys.argv[1:])))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **(env_extra or {}))
    argv = [sys.executable, "-c", script, str(model_dir), str(input_path), str(out), "--shard-size", "40", "--batch-size", "16"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_to_identical_output(model_dir, jsonl_input, tmp_path):
    """SIGKILL a real process halfway through its 2nd shard (temp file written, not renamed); rerun."""
    whole = tmp_path / "whole"
    assert _cli(model_dir, jsonl_input, whole).returncode == 0
    out = tmp_path / "resumed"
    killed = _cli(model_dir, jsonl_input, out, {KILL_HOOK_ENV: "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in out.glob("part-*")) == ["part-000000.parquet"]
    assert list(out.glob(".part-000001.parquet.tmp-*"))  # killed mid-write of shard 1
    assert not (out / "errors.jsonl").exists()
    resumed = _cli(model_dir, jsonl_input, out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 shard(s)" in resumed.stderr
    assert not list(out.glob(".*tmp-*"))
    names = sorted(p.name for p in whole.glob("part-*"))
    assert names == sorted(p.name for p in out.glob("part-*")) and len(names) == 4  # 160 input lines, 40 per shard
    for name in names:
        assert pq.read_table(out / name).to_pylist() == close(pq.read_table(whole / name).to_pylist())
    assert errors_of(out) == errors_of(whole) and len(errors_of(whole)) == 10
    ids = [r["id"] for r in rows_of(out)]
    assert len(ids) == len(set(ids)) == 150


# -- Ray engine: one local Ray instance for these tests (about a minute on 2 cores) ---------------
@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[test,ray]'")
    from bilstm_tagger.annotate.ray_engine import KILL_AFTER_BATCHES_ENV, KILL_ONCE_ENV

    marker = tmp_path_factory.mktemp("ray") / "kill-once"
    marker.write_text("disarmed")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
        runtime_env={"env_vars": {KILL_ONCE_ENV: str(marker), KILL_AFTER_BATCHES_ENV: "2", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}},
    )
    yield marker
    ray.shutdown()


@pytest.fixture(scope="module")
def parquet_input(tmp_path_factory):
    """Sample test split as tokens with ids, plus bad rows (null, empty list, an empty token)."""
    rows = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text(encoding="utf8").splitlines()]
    ids = [r["id"] for r in rows] + ["bad-null", "bad-empty", "bad-token"]
    tokens = [r["tokens"] for r in rows] + [None, [], ["a", ""]]
    path = tmp_path_factory.mktemp("pq") / "corpus.parquet"
    pq.write_table(pa.table({"id": ids, "tokens": tokens}), path)
    return path


def _by_id(rows):
    return sorted(rows, key=lambda r: r["id"])


def test_ray_engine_equals_local(model_dir, parquet_input, ray_session, tmp_path):
    assert annotate(model_dir, parquet_input, tmp_path / "local", "--shard-size", 50) == 0
    args = ("--engine", "ray", "--concurrency", 2, "--num-cpus-per-actor", 0.5, "--batch-size", 32)
    assert annotate(model_dir, parquet_input, tmp_path / "ray", *args) == 0
    local, distributed = rows_of(tmp_path / "local"), rows_of(tmp_path / "ray")
    assert len(local) == 150 and _by_id(distributed) == close(_by_id(local))
    files = glob.glob(str(tmp_path / "ray" / "*.parquet"))
    assert all(pq.read_schema(f) == output_schema(False) for f in files)
    assert _by_id(errors_of(tmp_path / "ray")) == _by_id(errors_of(tmp_path / "local"))
    assert {e["id"] for e in errors_of(tmp_path / "ray")} == {"bad-null", "bad-empty", "bad-token"}


def test_ray_actor_killed_mid_run_is_retried_without_loss_or_duplicates(model_dir, ray_session, tmp_path):
    """An actor dies (os._exit) after its 2nd batch is tagged and that batch's errors piece is written, before
    returning it: Ray retries the batch on a new actor. Every input row comes out exactly once, good rows
    with nlp's entities for that row alone, bad rows once in errors.jsonl."""
    marker = ray_session
    rows = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text(encoding="utf8").splitlines()]
    ids, tokens, bad = [], [], {}
    for i, row in enumerate(rows):  # a bad row every 4 rows, so each batch of 16 has bad rows to write
        ids.append(row["id"])
        tokens.append(row["tokens"])
        if i % 4 == 1:
            bad_id, value = f"bad-{i}", [None, [], ["a", ""]][i % 3]
            ids.append(bad_id)
            tokens.append(value)
            bad[bad_id] = value
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ids, "tokens": tokens}), path)

    marker.unlink()  # arm the hook
    out = tmp_path / "ray"
    args = ("--engine", "ray", "--concurrency", 2, "--num-cpus-per-actor", 0.5, "--batch-size", 16)
    assert annotate(model_dir, path, out, *args) == 0
    died = json.loads(marker.read_text())  # an actor did die, after doing this batch's work
    assert died["batch"] == 2 and died["tagged"] > 0 and died["errors"] > 0
    assert Path(died["errors_piece"]).parent == out / "_errors"
    assert set(died["ids"]) <= set(ids) and len(died["ids"]) == died["tagged"] + died["errors"]

    nlp = spacy.load(model_dir)
    expected = {}
    for row in rows:
        doc = nlp(Doc(nlp.vocab, words=row["tokens"]))
        expected[row["id"]] = (expected_entities(doc), [e._.confidence for e in doc.ents])
    assert sum(len(ents) for ents, _ in expected.values()) > 50  # the model does find entities
    got = rows_of(out)
    got_ids = [r["id"] for r in got]
    assert len(got_ids) == len(set(got_ids)) and set(got_ids) == set(expected)  # each good row once
    for row in got:
        ents, confidences = expected[row["id"]]
        assert got_entities(row) == ents, row["id"]
        assert [e["confidence"] for e in row["entities"]] == pytest.approx(confidences, abs=1e-5), row["id"]
    errors = errors_of(out)
    assert sorted(e["id"] for e in errors) == sorted(bad)  # each bad row once
    retried = set(died["ids"])
    assert sum(i in retried for i in got_ids) == died["tagged"] and sum(e["id"] in retried for e in errors) == died["errors"]


@pytest.mark.parametrize(
    "ids, message",
    [
        (["a", "b", "a", "c"], "id 'a' occurs more than once in column 'id'"),
        (["a", None, "b", None], "2 row(s) have no 'id' value"),
        ([1, "1", "2", "3"], "id '1' occurs more than once in column 'id'"),  # the same id once written as a string
    ],
)
def test_ray_refuses_ids_that_do_not_tell_rows_apart_before_tagging(model_dir, ray_session, tmp_path, capsys, ids, message):
    """Ray gives no row positions: the id must tell rows apart, so a missing or repeated id stops the run
    before any tagging, with one error line naming it."""
    path = tmp_path / "in.jsonl"
    texts = ["Ann Smith lives in Oslo .", None, "Bob Jones works for Acme Corp in Paris today .", "Mara visited Lisbon ."]
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)), encoding="utf8")
    out = tmp_path / "ray"
    assert annotate(model_dir, path, out, "--engine", "ray", "--num-cpus-per-actor", 0.5, "--batch-size", 2) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]  # Ray logs INFO lines too
    assert len(errors) == 1 and message in errors[0]
    assert list(out.iterdir()) == []  # nothing tagged, nothing written


def test_ray_actor_uses_its_cpus_as_torch_threads(model_dir, ray_session, tmp_path):
    """threads per actor = its CPUs: the pipe's thread tuner must not move an actor to every core."""
    import ray

    from bilstm_tagger.annotate.ray_engine import RayAnnotator

    def probe(model: str, out: str):
        import torch

        annotator = RayAnnotator(model, "id", "tokens", "tokens", False, 64, 1, out, None)
        tagger = annotator.nlp.get_pipe("bilstm_tagger")
        rows = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text(encoding="utf8").splitlines()]
        batch = pa.table({"id": [r["id"] for r in rows], "tokens": [r["tokens"] for r in rows]})
        seen = []
        for start in range(0, 150, 50):  # batches big enough for the tuner to time each count
            annotator(batch.slice(start, 50))
            seen.append(torch.get_num_threads())
        return seen, tagger._tuner is None

    seen, untuned = ray.get(ray.remote(num_cpus=1)(probe).remote(str(model_dir), str(tmp_path)))
    assert seen == [1, 1, 1] and untuned


def test_a_folder_of_split_files_is_read_as_a_dataset_split(model_dir, tmp_path):
    """corpora/sample_ner holds train/validation/test.jsonl: --split picks one, as datasets does."""
    assert annotate(model_dir, SAMPLE, tmp_path / "out", "--split", "test") == 0
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 150 and all(r["id"].startswith("test-") for r in rows)


def test_ray_marginals_equal_local(model_dir, parquet_input, ray_session, tmp_path):
    """--marginals on Ray: the same tokens and float16 marginals as the local engine, tag names in each shard."""
    from bilstm_tagger.annotate.marginals import read_marginals, read_meta

    assert annotate(model_dir, parquet_input, tmp_path / "local", "--marginals") == 0
    args = ("--engine", "ray", "--concurrency", 1, "--num-cpus-per-actor", 1, "--batch-size", 64, "--marginals")
    assert annotate(model_dir, parquet_input, tmp_path / "ray", *args) == 0

    def by_id(out):
        found = {}
        for f in sorted(glob.glob(str(out / "*.parquet"))):
            table = pq.read_table(f)
            meta = read_meta(table.schema)
            assert meta is not None and meta["tags"][0] == "O"
            for row, p in zip(table.select(["id", "tokens"]).to_pylist(), read_marginals(table.column("marginals"), len(meta["tags"]))):
                found[row["id"]] = (row["tokens"], p)
        return found

    local, distributed = by_id(tmp_path / "local"), by_id(tmp_path / "ray")
    assert sorted(local) == sorted(distributed) and len(local) == 150
    for row_id, (tokens, p) in local.items():
        assert distributed[row_id][0] == tokens
        np.testing.assert_allclose(distributed[row_id][1], p, atol=1e-3)
