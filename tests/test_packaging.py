"""setup.cfg: every package directory ships, every dependency is capped below its next major
version, what the code imports is declared, and pytest shows skip reasons."""
from __future__ import annotations

import configparser
import re

from packaging.requirements import Requirement
from setuptools.config.setupcfg import read_configuration

import bilstm_tagger

from .conftest import REPO

SETUP_CFG = REPO / "setup.cfg"


def _requirements():
    options = read_configuration(SETUP_CFG)["options"]
    extras = options["extras_require"]
    return [Requirement(r) for r in options["install_requires"]], {name: [Requirement(r) for r in reqs] for name, reqs in extras.items()}


def test_version_is_0_3_0():
    assert bilstm_tagger.__version__ == "0.3.0"
    assert read_configuration(SETUP_CFG)["metadata"]["version"] == "0.3.0"


def test_every_package_directory_is_shipped(monkeypatch):
    monkeypatch.chdir(REPO)  # setuptools finds packages relative to the working directory
    packages = set(read_configuration(SETUP_CFG)["options"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "bilstm_tagger").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk - packages == set()


def test_every_dependency_is_capped_below_its_next_major():
    runtime, extras = _requirements()
    for requirement in [*runtime, *(r for reqs in extras.values() for r in reqs)]:
        assert any(spec.operator in ("<", "==", "~=") for spec in requirement.specifier), f"{requirement} has no upper bound"


def test_what_the_code_imports_is_declared():
    runtime, extras = _requirements()
    names = {r.name.lower() for r in runtime}
    assert {"numpy", "pyarrow", "torch", "spacy", "datasets", "seqeval", "safetensors", "tqdm"} <= names
    assert "pillow" in {r.name.lower() for r in extras["test"]} and "pillow" in {r.name.lower() for r in extras["report"]}


def test_pytest_shows_skip_reasons():
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    assert re.search(r"(^|\s)-rs\b", config["tool:pytest"]["addopts"])
