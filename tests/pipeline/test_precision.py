"""Reduced precision: `quantize` writes a pipeline that spacy.load tags in int8 or bf16, close to its source."""
from __future__ import annotations

import json

import numpy as np
import pytest
import spacy
from thinc.api import Adam
from torch import nn

from bilstm_tagger.cli import main
from bilstm_tagger.errors import ConfigError
from bilstm_tagger.ml.shim import get_module
from bilstm_tagger.pipeline.quantize import META_KEY, quantize_pipeline
from tests.conftest import SAMPLE, read_examples


@pytest.fixture(scope="module")
def source_dir(ner_nlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("precision") / "source"
    ner_nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def test_docs(ner_nlp):
    return [eg.predicted for eg in read_examples(ner_nlp, SAMPLE, "test")]


def _scores(nlp, docs):
    pipe = nlp.get_pipe("bilstm_tagger")
    return np.concatenate(pipe.predict([d.copy() for d in docs]).scores)


def _ents(nlp, docs):
    return [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(d.copy() for d in docs)]


@pytest.mark.parametrize("precision, tolerance", [("int8", 0.05), ("bf16", 0.05)])
def test_quantize_writes_a_pipeline_that_loads_and_tags_close_to_its_source(source_dir, tmp_path, test_docs, precision, tolerance):
    out = tmp_path / precision
    assert main(["quantize", str(source_dir), str(out), "--precision", precision]) == 0
    source, reduced = spacy.load(source_dir), spacy.load(out)
    pipe = reduced.get_pipe("bilstm_tagger")
    assert pipe.precision == precision
    meta = json.loads((out / "meta.json").read_text())[META_KEY]["bilstm_tagger"]
    assert meta["precision"] == precision and "LSTM" in meta["reduced"] and "Linear" in meta["reduced"]
    expected, got = _scores(source, test_docs), _scores(reduced, test_docs)
    # Reduced, not identical: the scores move, by a small fraction of their spread.
    spread = float(expected.max() - expected.min())
    error = float(np.abs(got - expected).max())
    assert 0 < error < tolerance * spread
    assert np.mean(got.argmax(1) == expected.argmax(1)) > 0.97
    # The config decides at load: an fp32 override tags exactly as the source.
    override = spacy.load(out, config={"components": {"bilstm_tagger": {"precision": "fp32"}}})
    np.testing.assert_array_equal(_scores(override, test_docs), expected)
    assert _ents(override, test_docs) == _ents(source, test_docs)


def test_quantize_says_when_bf16_is_emulated(source_dir, tmp_path, capsys, monkeypatch):
    from bilstm_tagger.pipeline import quantize

    for native in (True, False):
        monkeypatch.setattr(quantize, "cpu_supports_bf16", lambda: native)
        assert main(["quantize", str(source_dir), str(tmp_path / f"bf16_{native}"), "--precision", "bf16"]) == 0
        err = capsys.readouterr().err
        assert ("no native bfloat16" in err) is (not native)
        assert "transformer" not in err  # no transformer here: the int8 note never applies
    _, notes = quantize_pipeline(str(source_dir), str(tmp_path / "int8"), "int8")
    assert notes == []


def test_int8_runs_quantized_layers_and_rebuilds_them_when_the_weights_change(source_dir, sample_examples, test_docs):
    nlp = spacy.load(source_dir, config={"components": {"bilstm_tagger": {"precision": "int8"}}})
    encoder = nlp.get_pipe("bilstm_tagger").model.get_ref("encoder")
    before = _scores(nlp, test_docs)
    copy = encoder.shims[0].inference_copy
    assert not any(type(m) in (nn.LSTM, nn.Linear) for m in copy.modules())  # all replaced, none left in float32
    assert {type(m).__name__ for m in copy.modules() if "quantized" in type(m).__module__} >= {"LSTM", "Linear"}
    assert copy is not get_module(encoder)
    # Training runs the float32 module; the next tagging quantizes the new weights.
    nlp.update(sample_examples["train"][:16], sgd=Adam(0.01))
    assert encoder.shims[0].inference_copy is None
    after = _scores(nlp, test_docs)
    assert encoder.shims[0].inference_copy is not copy
    assert not np.array_equal(before, after)


def test_quantize_refuses_what_it_cannot_do(source_dir, tmp_path):
    with pytest.raises(ConfigError, match="must differ"):
        quantize_pipeline(str(source_dir), str(source_dir), "int8")
    with pytest.raises(ConfigError, match="precision must be one of"):
        quantize_pipeline(str(source_dir), str(tmp_path / "x"), "fp16")
    with pytest.raises(ConfigError, match="no bilstm_tagger component named ner"):
        quantize_pipeline(str(source_dir), str(tmp_path / "x"), "int8", ["ner"])
    blank = tmp_path / "blank"
    spacy.blank("en").to_disk(blank)
    assert main(["quantize", str(blank), str(tmp_path / "y")]) == 1
    with pytest.raises(ConfigError, match="precision must be one of"):
        spacy.load(source_dir, config={"components": {"bilstm_tagger": {"precision": "half"}}})


def test_an_int8_pipeline_tags_alike_in_spawned_workers(source_dir, test_docs):
    import multiprocessing

    nlp = spacy.load(source_dir, config={"components": {"bilstm_tagger": {"precision": "int8"}}})
    texts = [doc.text for doc in test_docs[:40]]
    one = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=8)]
    assert nlp.get_pipe("bilstm_tagger").model.get_ref("encoder").shims[0].inference_copy is not None
    original = multiprocessing.get_start_method()
    multiprocessing.set_start_method("spawn", force=True)  # what macOS and Windows use: the pipe is pickled
    try:
        two = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=8, n_process=2)]
    finally:
        multiprocessing.set_start_method(original, force=True)
    assert two == one
