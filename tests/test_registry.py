"""Locks every name the package registers with spaCy/thinc and every entry point in setup.cfg.

A rename, a move or a lost decorator fails here, not in a user's config.
"""
import configparser
import importlib
import pkgutil
import warnings
from pathlib import Path

import pytest
from spacy.util import registry

import bilstm_tagger

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"

REGISTERED = {
    "architectures": {
        "bilstm_tagger.BiLSTMTagger.v1",
        "bilstm_tagger.BiLSTMTagger.v2",
        "bilstm_tagger.HashCharEmbed.v1",
        "bilstm_tagger.TransformerEmbed.v1",
        "bilstm_tagger.ConcatEmbed.v1",
    },
    "readers": {"bilstm_tagger.HFDataset.v1", "bilstm_tagger.DistillCorpus.v1"},
    "scorers": {"bilstm_tagger.seqeval_scorer.v1"},
    "misc": {"bilstm_tagger.epoch_steps.v1"},
    "schedules": {"bilstm_tagger.epoch_decay.v1"},
    "loggers": {"bilstm_tagger.CheckpointLogger.v1"},
    "factories": {"bilstm_tagger", "bilstm_spans", "bilstm_tags", "bilstm_pos"},
}

# setup.cfg entry point group -> the registry it feeds
GROUPS = {
    "spacy_factories": "factories",
    "spacy_architectures": "architectures",
    "spacy_readers": "readers",
    "spacy_scorers": "scorers",
    "spacy_misc": "misc",
    "thinc_schedules": "schedules",
    "spacy_loggers": "loggers",
}


def _import_every_module():
    """Import the whole package (new paths only), as registering happens at import time."""
    for info in pkgutil.walk_packages(bilstm_tagger.__path__, "bilstm_tagger."):
        if info.name.endswith("ray_engine"):
            continue  # needs ray; registers nothing
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # skip the old paths' shims
            try:
                importlib.import_module(info.name)
            except DeprecationWarning:
                continue


def _ours(namespace):
    names = getattr(registry, namespace).get_all()
    return {n for n in names if n.startswith("bilstm_")}


def _entry_points():
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    for group, lines in parser["options.entry_points"].items():
        for line in filter(None, (l.strip() for l in lines.splitlines())):
            name, target = (part.strip() for part in line.split("=", 1))
            yield group, name, target


@pytest.mark.parametrize("namespace", sorted(REGISTERED))
def test_registered_names_are_locked(namespace):
    _import_every_module()
    assert _ours(namespace) == REGISTERED[namespace]


@pytest.mark.parametrize("group,name,target", list(_entry_points()), ids=lambda v: v if isinstance(v, str) else None)
def test_entry_point_imports_and_is_the_registered_function(group, name, target):
    module_name, attr = target.split(":")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # an entry point must not go through an old path
        func = getattr(importlib.import_module(module_name), attr)
    assert callable(func)
    if group == "console_scripts":
        return
    assert group in GROUPS, f"setup.cfg has an entry point group the registry test does not know: {group}"
    namespace = GROUPS[group]
    assert name in REGISTERED[namespace]
    assert getattr(registry, namespace).get(name) is func


def test_every_registered_name_has_an_entry_point():
    declared = {(GROUPS[g], n) for g, n, _ in _entry_points() if g in GROUPS}
    missing = {(ns, n) for ns, names in REGISTERED.items() for n in names} - declared
    assert not missing
