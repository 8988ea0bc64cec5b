"""Shared fixtures: real data paths and small pipelines trained on real data."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
CONLL = Path(os.environ.get("BILSTM_TAGGER_CONLL", REPO.parent / "shared" / "datasets" / "conll2003"))
CONLL_HUB_ID = "eriktks/conll2003"

if (CONLL / "data").is_dir():
    # Everything the tests read is on disk: datasets must never try the hub.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import spacy
from hypothesis import settings
from spacy.training import Example
from thinc.api import Adam

# CI runs the same generated cases every time; locally hypothesis explores.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

SAMPLE = REPO / "corpora" / "sample_ner"

# A model small enough to train in seconds; the sizes are what the tests vary.
TINY_EMBED = {
    "@architectures": "bilstm_tagger.HashCharEmbed.v1",
    "rows": [2000, 500, 500, 200],
    "widths": [32, 8, 8, 8],
    "char_width": 16,
    "char_embed": 8,
    "word_dropout": 0.0,
}
TINY_MODEL = {
    "@architectures": "bilstm_tagger.BiLSTMTagger.v2",
    "hidden_size": 32,
    "dropout": 0.1,
    "embed": TINY_EMBED,
}


def tiny_model(embed: Optional[dict] = None, **settings) -> dict:
    """TINY_MODEL with encoder settings and embed settings changed."""
    return {**TINY_MODEL, **settings, "embed": {**TINY_EMBED, **(embed or {})}}


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def conll_path() -> str:
    """The local CoNLL-2003 copy, else the hub id when the hub answers, else skip with how to get it."""
    if (CONLL / "data").is_dir():
        return str(CONLL)
    if _hub_reachable():
        return CONLL_HUB_ID
    pytest.skip(
        f"CoNLL-2003 is not at {CONLL} and the Hugging Face hub is unreachable (or offline mode is on): "
        f"set BILSTM_TAGGER_CONLL to a local copy in hub layout, or run online so datasets can fetch {CONLL_HUB_ID}"
    )


def read_examples(nlp, path: Path, split: str, limit: int = 0, **kwargs):
    from bilstm_tagger.data.readers import create_hf_reader

    return list(create_hf_reader(str(path), split=split, limit=limit, **kwargs)(nlp))


def train_pipeline(config: dict, examples, steps: int = 30, seed: int = 0, lang: str = "en", factory: str = "bilstm_tagger"):
    """A blank pipeline with one tagger component trained on `examples` by nlp.update."""
    spacy.util.fix_random_seed(seed)
    nlp = spacy.blank(lang)
    nlp.add_pipe(factory, config=config)
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)  # tiny models on tiny data: a high rate keeps the tests fast
    for step in range(steps):
        batch = examples[(step * 16) % len(examples) :][:16] or examples[:16]
        nlp.update(batch, sgd=optimizer, drop=0.1)
    return nlp


@pytest.fixture(scope="session")
def sample_examples():
    nlp = spacy.blank("en")
    return {split: read_examples(nlp, SAMPLE, split) for split in ("train", "validation", "test")}


@pytest.fixture(scope="session")
def ner_nlp(sample_examples):
    """A small CRF NER pipeline trained on the bundled sample corpus.

    One fixed torch thread: the tests compare outputs for exact equality, which a
    measured thread count (torch_threads = 0) does not promise.
    """
    return train_pipeline({"model": TINY_MODEL, "torch_threads": 1}, sample_examples["train"], steps=60)


def copy_examples(nlp, examples):
    return [Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples]


# Figures a test measured (peak memory, case counts), printed at the end of the run.
MEASUREMENTS: list = []


def pytest_terminal_summary(terminalreporter):
    if MEASUREMENTS:
        terminalreporter.section("bilstm_tagger measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny pipeline trained one step on the sample corpus and saved: enough to exercise commands."""
    nlp = train_pipeline({"model": TINY_MODEL}, read_examples(spacy.blank("en"), SAMPLE, "train"), steps=1)
    path = tmp_path_factory.mktemp("tiny") / "model"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory, sample_examples):
    """A pipeline with the default (full-size) architecture, trained for a few steps and saved."""
    nlp = train_pipeline({}, sample_examples["train"], steps=3)
    path = tmp_path_factory.mktemp("default") / "model"
    nlp.to_disk(path)
    return path
