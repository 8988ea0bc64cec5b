"""`python -m bilstm_tagger train CONFIG --section.key value`: a key the config does not have is one
error line naming the closest valid key, before any data is read or model built."""
from __future__ import annotations

from pathlib import Path

import pytest
from spacy.util import load_config

from bilstm_tagger.cli import main
from bilstm_tagger.cli.train import unknown_override

from ..conftest import REPO, SAMPLE

CONFIGS = sorted((REPO / "configs").glob("*.cfg"))


def _train(tmp_path: Path, *overrides: str) -> int:
    return main(["train", str(REPO / "configs" / "ner.cfg"), "--output", str(tmp_path / "out"), "--paths.dataset", str(SAMPLE), *overrides])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "--components.bilstm_tagger.model.hidden_sise",
            "--components.bilstm_tagger.model.hidden_sise: the config has no setting 'hidden_sise' in "
            "[components.bilstm_tagger.model]; did you mean --components.bilstm_tagger.model.hidden_size?",
        ),
        (  # a component setting, checked against the factory's arguments
            "--components.bilstm_tagger.scheem",
            "--components.bilstm_tagger.scheem: the config has no setting 'scheem' in "
            "[components.bilstm_tagger]; did you mean --components.bilstm_tagger.scheme?",
        ),
        (  # [training], checked against spaCy's schema
            "--training.max_stpes",
            "--training.max_stpes: the config has no setting 'max_stpes' in [training]; did you mean --training.max_steps?",
        ),
        (  # a section that is not there: the rest of the key is kept in the suggestion
            "--components.bilstm_tagger.modle.hidden_size",
            "--components.bilstm_tagger.modle.hidden_size: the config has no setting 'modle' in "
            "[components.bilstm_tagger]; did you mean --components.bilstm_tagger.model.hidden_size?",
        ),
    ],
)
def test_a_config_typo_is_one_line_with_the_closest_name(override, message, tmp_path, capsys):
    assert _train(tmp_path, override, "64") == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()  # refused before training set anything up


@pytest.mark.parametrize("config_path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_setting_a_config_has_is_a_valid_override(config_path):
    config = load_config(config_path, interpolate=False)
    keys = list(_leaf_keys(config))
    assert len(keys) > 50
    assert [k for k in keys if unknown_override(config, k)] == []


def test_settings_a_config_leaves_to_defaults_are_valid_overrides():
    """Arguments of the registered function, the component factory and spaCy's schema, not in the file."""
    config = load_config(REPO / "configs" / "ner.cfg", interpolate=False)
    for key in ("components.bilstm_tagger.model.nO", "components.bilstm_tagger.alternatives_k", "paths.anything", "training.score_weights.ents_per_type"):
        assert unknown_override(config, key) is None, key


def _leaf_keys(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
