"""`annotate --marginals`: per-token tag probabilities, float16, equal to what the pipe computes."""
from __future__ import annotations

import glob
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
import torch
from spacy.tokens import Doc

from bilstm_tagger.annotate.marginals import read_marginals, read_meta
from bilstm_tagger.cli import main
from bilstm_tagger.ml import crf
from bilstm_tagger.ml.decoder import crf_scores

from ..conftest import SAMPLE, TINY_MODEL, read_examples, tiny_model, train_pipeline


@pytest.fixture(scope="module", params=["crf", "softmax"])
def model_dir(request, tmp_path_factory):
    """A tiny tagger with a temperature and a decision bias, so both must reach the marginals."""
    examples = read_examples(spacy.blank("en"), SAMPLE, "train")
    model = TINY_MODEL if request.param == "crf" else tiny_model(crf=False)
    nlp = train_pipeline({"model": model, "torch_threads": 1}, examples, steps=40)
    pipe = nlp.get_pipe("bilstm_tagger")
    pipe.cfg["temperature"] = 1.7
    pipe.set_decision_bias(0.8)
    path = tmp_path_factory.mktemp("marginals") / "model"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def tokens_input(tmp_path_factory):
    rows = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text(encoding="utf8").splitlines()][:60]
    path = tmp_path_factory.mktemp("pq") / "corpus.parquet"
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "tokens": [r["tokens"] for r in rows]}), path)
    return path, rows


def expected_marginals(nlp, words) -> np.ndarray:
    """P(tag) per token recomputed from the pipe's own scores: bias added, every score / temperature."""
    pipe = nlp.get_pipe("bilstm_tagger")
    doc = Doc(nlp.vocab, words=words)
    scores = pipe.predict([doc]).scores[0].astype(np.float64)  # the decision bias is in them
    T = pipe.cfg["temperature"]
    em = torch.from_numpy(scores / T).unsqueeze(0)
    mask = torch.ones(em.shape[:2], dtype=torch.bool)
    scores_crf = crf_scores(pipe.model.get_ref("decoder"))
    if scores_crf is None:
        return torch.softmax(em, -1)[0].numpy()
    start, trans, end = (crf.forbidden_to_inf(torch.from_numpy(x.astype(np.float64))) / T for x in scores_crf)
    return crf.marginals(em, mask, start, trans, end)[0].numpy()


def test_marginals_sum_to_one_and_equal_the_pipes(model_dir, tokens_input, tmp_path):
    path, rows = tokens_input
    out = tmp_path / "out"
    assert main(["annotate", str(model_dir), str(path), str(out), "--marginals", "--shard-size", "25"]) == 0
    files = sorted(glob.glob(str(out / "*.parquet")))
    assert len(files) == 3
    nlp = spacy.load(model_dir)
    pipe = nlp.get_pipe("bilstm_tagger")
    got_rows = 0
    for f in files:
        table = pq.read_table(f)
        meta = read_meta(table.schema)
        assert meta["tags"] == pipe.tags and meta["scheme"] == "BILOU" and meta["dtype"] == "float16"
        assert table.schema.field("marginals").type.value_type.value_type == pa.float16()
        probs = read_marginals(table.column("marginals"), len(meta["tags"]))
        for row, p in zip(table.to_pylist(), probs):
            source = rows[got_rows]
            got_rows += 1
            assert row["id"] == source["id"] and row["tokens"] == source["tokens"]
            assert p.shape == (len(source["tokens"]), len(pipe.tags))
            np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-3)
            np.testing.assert_allclose(p, expected_marginals(nlp, source["tokens"]), atol=1e-3)
    assert got_rows == len(rows)


def test_marginals_need_parquet_and_a_tagger(model_dir, tokens_input, tmp_path, capsys):
    path, _ = tokens_input
    assert main(["annotate", str(model_dir), str(path), str(tmp_path / "a"), "--marginals", "--format", "jsonl"]) == 2
    assert "--marginals and --keep-tokens write parquet" in capsys.readouterr().err
    blank = tmp_path / "blank"
    spacy.blank("en").to_disk(blank)
    assert main(["annotate", str(blank), str(path), str(tmp_path / "b"), "--marginals"]) == 1
    assert "--marginals needs a bilstm_tagger span component" in capsys.readouterr().err
