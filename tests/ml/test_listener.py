"""Listener mode: bilstm_tagger reads its features from a curated_transformer component in the pipeline.

configs/ner_curated_listener.cfg is trained for real (`python -m spacy train`) on a tiny random BERT
the test writes: no hub, no downloads.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("spacy_curated_transformers")

import numpy as np
import spacy
import torch
from spacy.training import Example
from thinc.api import Adam

from bilstm_tagger.errors import ConfigError

from ..conftest import REPO, SAMPLE, read_examples
from .test_transformer import transformers, write_tiny_bert

CONFIG = REPO / "configs" / "ner_curated_listener.cfg"
HASH_WIDTH = 96 + 16 + 32 + 16 + 100  # the config's HashCharEmbed beside the listener
TEXTS = ["Hana Suzuki will visit Nairobi next week .", "", "a " * 40 + "Merkel .", "Sofia   Marchetti\nspoke ."]


def tiny_overrides(bert: Path) -> dict:
    """The config's settings for the tiny BERT (2 layers, 32 wide, 64 positions) and a tiny tagger."""
    vocab_size = len((bert / "vocab.txt").read_text().splitlines())
    trf = "components.transformer.model"
    return {
        "paths.transformer": str(bert),
        "paths.dataset": str(SAMPLE),
        f"{trf}.vocab_size": vocab_size,
        f"{trf}.hidden_width": 32,
        f"{trf}.intermediate_width": 64,
        f"{trf}.num_attention_heads": 2,
        f"{trf}.num_hidden_layers": 2,
        f"{trf}.max_position_embeddings": 64,
        f"{trf}.model_max_length": 64,
        f"{trf}.with_spans.window": 24,  # the 40-token text runs as several windows
        f"{trf}.with_spans.stride": 16,
        "components.bilstm_tagger.model.hidden_size": 16,
        "components.bilstm_tagger.model.dropout": 0.1,
        "components.bilstm_tagger.torch_threads": 1,
    }


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _encoder_state(nlp) -> dict:
    encoder = nlp.get_pipe("transformer").model.get_ref("transformer").shims[0]._model
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def _hf_state(bert: Path) -> dict:
    """The tiny BERT's weights under the curated encoder's names (what the encoder loader puts in)."""
    from curated_transformers.models.hf_util import convert_hf_pretrained_model_parameters

    return convert_hf_pretrained_model_parameters(transformers.AutoModel.from_pretrained(str(bert)))


PREDICT = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
docs = list(nlp.pipe(json.loads(sys.argv[2])))
vecs = nlp.get_pipe("bilstm_tagger").model.get_ref("embed").predict(docs)
print(json.dumps({"ents": [[(e.start, e.end, e.label_) for e in d.ents] for d in docs], "vecs": [v.tolist() for v in vecs]}))
"""


def _tag(nlp, texts) -> dict:
    docs = list(nlp.pipe(texts))
    vecs = nlp.get_pipe("bilstm_tagger").model.get_ref("embed").predict(docs)
    return {"ents": [[[e.start, e.end, e.label_] for e in d.ents] for d in docs], "vecs": [v.tolist() for v in vecs]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """spacy train on the listener config: 4 steps on 32 sample sentences, evaluated every 2."""
    tmp = tmp_path_factory.mktemp("listener")
    bert = write_tiny_bert(tmp / "tiny-bert")
    out = tmp / "out"
    args = [sys.executable, "-m", "spacy", "train", str(CONFIG), "--output", str(out)]
    overrides = {
        **tiny_overrides(bert),
        "corpora.train.limit": 32,
        "corpora.dev.limit": 16,
        "training.max_steps": 4,
        "training.eval_frequency": 2,
        # a rate that moves the transformer visibly within 4 steps
        "training.optimizer.learn_rate.warmup_steps": 1,
        "training.optimizer.learn_rate.initial_rate": 0.001,
        "training.optimizer.learn_rate.total_steps": 100,
    }
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return bert, out, _hf_state(bert)


def test_training_reaches_the_shared_transformer(trained):
    _, out, start = trained
    nlp = spacy.load(out / "model-last")
    assert nlp.pipe_names == ["transformer", "bilstm_tagger"]
    assert nlp.get_pipe("transformer").listening_components == ["bilstm_tagger"]
    trained_state = _encoder_state(nlp)
    assert set(trained_state) == set(start)
    moved = {k: (trained_state[k] - start[k]).abs().max().item() for k in start}
    # The loader put the BERT's weights in, and the BiLSTM's gradients (the transformer has no loss
    # of its own) moved them a little: every tensor, embeddings and both layers.
    assert all(0 < m < 0.05 for m in moved.values()), moved


def test_reload_offline_without_the_model_dir(trained):
    bert, out, _ = trained
    best = out / "model-best"
    nlp = spacy.load(best)
    before = _tag(nlp, TEXTS)
    assert [len(v) for v in before["vecs"]] == [len(nlp.make_doc(t)) for t in TEXTS]
    assert len(before["vecs"][0][0]) == 32 + HASH_WIDTH
    assert all(any(row[:32]) for row in before["vecs"][0])  # transformer features, not the zeros of a doc without trf_data
    spaces = [t.i for t in nlp.make_doc(TEXTS[3]) if t.is_space]
    assert spaces and all(not any(before["vecs"][3][i][:32]) for i in spaces)  # no word pieces: zeros
    shutil.rmtree(bert)
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, str(best), json.dumps(TEXTS)], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads(proc.stdout.splitlines()[-1])
    assert after["ents"] == before["ents"]
    for a, b in zip(after["vecs"], before["vecs"]):
        np.testing.assert_allclose(*(np.asarray(v, dtype=np.float32).reshape(-1, 32 + HASH_WIDTH) for v in (a, b)), atol=1e-5)


def test_a_doc_the_transformer_did_not_see_is_an_error(trained):
    _, out, _ = trained
    nlp = spacy.load(out / "model-last")
    tagger = nlp.get_pipe("bilstm_tagger")
    with pytest.raises(ConfigError, match="trf_data"):
        tagger(nlp.make_doc("Hana Suzuki will visit Nairobi ."))
    with nlp.select_pipes(disable="transformer"), pytest.raises(ConfigError, match="'transformer' component"):
        nlp("Hana Suzuki will visit Nairobi .")
    with pytest.raises(ConfigError, match="trf_data"):  # inspect reads the embed layer directly
        tagger.inspect([nlp.make_doc("Merkel .")])
    doc = nlp.get_pipe("transformer")(nlp.make_doc("Hana Suzuki will visit Nairobi ."))
    with doc.retokenize() as retokenizer:
        retokenizer.merge(doc[0:2])
    with pytest.raises(ConfigError, match="retokenized"):
        tagger(doc)
    assert nlp("").ents == ()  # no tokens: nothing to check, nothing to tag
    examples = read_examples(nlp, SAMPLE, "train", limit=4)
    with pytest.raises(ConfigError, match="frozen_components"):  # what a frozen_components entry does
        nlp.update(examples, exclude=["transformer"], sgd=Adam(0.001))
    doc = nlp("Merkel resigned .")
    assert len(tagger.inspect([doc])[0].marginals) == 3


def test_the_listener_alone_in_the_embed_slot(tmp_path):
    """The listener straight in `embed` (no ConcatEmbed); a batch with an empty doc trains; the
    transformer's loss is a float (spacy-curated-transformers 0.3.x fails there under NumPy >= 2.4)."""
    bert = write_tiny_bert(tmp_path / "tiny-bert")
    config = spacy.util.load_config(CONFIG, overrides=tiny_overrides(bert))
    model = config["components"]["bilstm_tagger"]["model"]
    model["embed"] = dict(model["embed"]["*"]["transformer"])
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    examples = read_examples(nlp, SAMPLE, "train", limit=16)
    nlp.initialize(lambda: examples)
    embed = nlp.get_pipe("bilstm_tagger").model.get_ref("embed")
    assert embed.name == "last_transformer_layer_listener" and embed.get_dim("nO") == 32
    assert nlp.get_pipe("transformer").listening_components == ["bilstm_tagger"]
    before = _encoder_state(nlp)
    optimizer = Adam(0.001)
    batch = examples[:6] + [Example.from_dict(nlp.make_doc(""), {"entities": []})]
    for _ in range(3):  # the transformer applies a step's gradient at the next step's finish_update
        losses = {}
        nlp.update(batch, sgd=optimizer, losses=losses)
        assert isinstance(losses["transformer"], float) and losses["transformer"] > 0
    after = _encoder_state(nlp)
    assert all(not torch.equal(before[k], after[k]) for k in before)
    docs = list(nlp.pipe(["Hana Suzuki will visit Nairobi .", ""]))
    assert [v.shape for v in embed.predict(docs)] == [(6, 32), (0, 32)]


def _encoder_grads(nlp, examples, exclude=()) -> dict:
    """The transformer's parameter gradients from one nlp.update without an optimizer (dropout 0)."""
    encoder = nlp.get_pipe("transformer").model.get_ref("transformer").shims[0]._model
    encoder.zero_grad(set_to_none=True)
    spacy.util.fix_random_seed(0)  # the parser cuts its oracle histories at random points
    losses = {}
    batch = [Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples]
    nlp.update(batch, sgd=None, drop=0.0, losses=losses, exclude=list(exclude))
    assert losses["transformer"] > 0
    return {k: p.grad.detach().clone() for k, p in encoder.named_parameters() if p.grad is not None}


def test_two_components_share_one_transformer(tmp_path):
    """spaCy's own `ner` listens too: the transformer's gradient is the sum of both listeners' gradients."""
    bert = write_tiny_bert(tmp_path / "tiny-bert")
    config = spacy.util.load_config(CONFIG, overrides=tiny_overrides(bert))
    config["nlp"]["pipeline"] = ["transformer", "bilstm_tagger", "ner"]
    listener = dict(config["components"]["bilstm_tagger"]["model"]["embed"]["*"]["transformer"])
    config["components"]["ner"] = {
        "factory": "ner",
        "model": {"@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "extra_state_tokens": False,
                  "hidden_width": 16, "maxout_pieces": 2, "use_upper": True, "tok2vec": listener},
    }
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    examples = read_examples(nlp, SAMPLE, "train", limit=16)
    nlp.initialize(lambda: examples)
    trf = nlp.get_pipe("transformer")
    assert trf.listening_components == ["bilstm_tagger", "ner"]
    optimizer = Adam(0.001)
    for _ in range(2):  # the parser's output layer starts at zero: it sends the transformer no gradient before a step
        nlp.update(examples[:8], sgd=optimizer)
    batch = examples[8:16]
    joint = _encoder_grads(nlp, batch)

    def alone(keep: str) -> dict:
        """The transformer's gradient when only `keep` listens (the other is unhooked and not updated)."""
        other = "ner" if keep == "bilstm_tagger" else "bilstm_tagger"
        unhooked = list(trf.listener_map[other])
        for model in unhooked:
            trf.remove_listener(model, other)
        try:
            assert trf.listening_components == [keep]
            return _encoder_grads(nlp, batch, exclude=[other])
        finally:
            for model in unhooked:
                trf.add_listener(model, other)

    tagger_only, ner_only = alone("bilstm_tagger"), alone("ner")
    assert set(joint) == set(tagger_only) == set(ner_only) and len(joint) > 10
    for name in joint:
        a, b, both = tagger_only[name], ner_only[name], joint[name]
        scale = max(a.abs().max().item(), b.abs().max().item())
        assert scale > 0, name
        torch.testing.assert_close(both, a + b, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")
    # Each listener's share is a real part of the sum: dropping either one would not pass the check above.
    flat = {key: torch.cat([g[k].flatten() for k in sorted(g)]) for key, g in (("a", tagger_only), ("b", ner_only))}
    assert flat["a"].norm() > 1e-3 * flat["b"].norm() and flat["b"].norm() > 1e-3 * flat["a"].norm()
    # And a real step with an optimizer still updates everything and tags.
    before = _encoder_state(nlp)
    losses = {}
    nlp.update(examples[:8], sgd=optimizer, losses=losses)
    assert set(losses) == {"transformer", "bilstm_tagger", "ner"}
    assert all(not torch.equal(before[k], v) for k, v in _encoder_state(nlp).items())
    assert nlp("Hana Suzuki will visit Nairobi .")._.trf_data is not None


def test_a_frozen_transformer_keeps_its_weights(tmp_path):
    bert = write_tiny_bert(tmp_path / "tiny-bert")
    config = spacy.util.load_config(CONFIG, overrides={**tiny_overrides(bert), "components.transformer.frozen": True})
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    examples = read_examples(nlp, SAMPLE, "train", limit=8)
    nlp.initialize(lambda: examples)
    before = _encoder_state(nlp)
    optimizer = Adam(0.001)
    for _ in range(2):
        losses = {}
        nlp.update(examples, sgd=optimizer, losses=losses)
        assert isinstance(losses["transformer"], float) and losses["bilstm_tagger"] > 0
    assert all(torch.equal(before[k], v) for k, v in _encoder_state(nlp).items())
