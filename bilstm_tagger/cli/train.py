"""`train CONFIG --output DIR [--section.key value ...]`: spaCy's training loop with crash-safe checkpoints.

`add_parser` and `run` are the command line; `train` does the work from plain arguments, and
`unknown_override` checks a --section.key override against the config before anything is built.
"""
from __future__ import annotations

import argparse
import difflib
import inspect
from pathlib import Path
from typing import Callable, Collection, Dict, Optional, Sequence

_TRAIN_EPILOG = """\
Any other --section.key value pair overrides the config, as with `spacy train`:
  --paths.dataset ../shared/datasets/conll2003      the dataset (hub id or local dir)
  --training.max_steps 2000                         stop after 2,000 updates
  --components.bilstm_tagger.model.hidden_size 128  a smaller BiLSTM
Values are read as JSON where they parse (numbers, true/false, null, lists).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    tr = subparsers.add_parser(
        "train",
        help="spacy train with crash-safe checkpoints; --section.key value pairs override the config",
        description="Train with spaCy's own loop; model-best and model-last are saved atomically, so a kill never leaves a half-written model.",
        epilog=_TRAIN_EPILOG,
    )
    tr.add_argument("config", help="a config file, e.g. configs/ner.cfg")
    tr.add_argument("--output", required=True, help="directory for model-best and model-last")
    # main() passes the parsed --section.key overrides, after check_overrides finds nothing wrong.
    tr.set_defaults(func=run, takes_overrides=True, check_overrides=check_overrides)
    return tr


def run(args: argparse.Namespace, overrides: Dict) -> int:
    return train(args.config, args.output, overrides)


def train(config_path: str, output: str, overrides: Optional[Dict] = None) -> int:
    """spaCy's training loop with crash-safe checkpoints (see bilstm_tagger.checkpoints)."""
    from spacy.util import load_config

    return train_config(load_config(config_path, overrides=overrides or {}, interpolate=False), output)


def train_config(config, output: str) -> int:
    """`train` on a loaded (uninterpolated) config: spaCy's loop, model-best and model-last saved atomically."""
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train as train_loop

    from .. import checkpoints  # noqa: F401  (registers the logger)

    config["training"]["logger"] = {
        "@loggers": "bilstm_tagger.CheckpointLogger.v1",
        "output_path": str(output),
        "logger": config["training"]["logger"],
    }
    nlp = init_nlp(config)
    train_loop(nlp, None)
    print(f"saved {output}/model-best and {output}/model-last")
    return 0


def check_overrides(args: argparse.Namespace, overrides: Dict) -> Optional[str]:
    return _bad_override(args.config, overrides)


def _bad_override(config_path: str, overrides: Dict) -> Optional[str]:
    """The first override that names no setting of the config file (a missing file is train's to report)."""
    if not Path(config_path).is_file():
        return None
    from spacy.util import load_config

    return first_unknown_override(load_config(config_path, interpolate=False), overrides)


def first_unknown_override(config: Dict, overrides: Dict) -> Optional[str]:
    """Why the first of `overrides` that names no setting of `config` is refused; None if none is."""
    return next((problem for problem in (unknown_override(config, key) for key in overrides) if problem), None)


# Top-level sections spaCy validates against a schema (extra keys are refused, deep inside training).
_SCHEMAS = {"training": "ConfigSchemaTraining", "nlp": "ConfigSchemaNlp", "initialize": "ConfigSchemaInit"}


def unknown_override(config: Dict, key: str) -> Optional[str]:
    """Why the override `key` (section.sub.name) names no setting of `config`, with the closest valid
    name; None when it does, or when its section takes any name ([paths], [system], score weights).

    Checked before anything is built: confection or spaCy would otherwise refuse it only after
    loading the datasets, with a dump of the whole section.
    """
    *sections, leaf = key.split(".")
    node: Dict = config
    for depth, name in enumerate(sections):
        child = node.get(name)
        if not isinstance(child, dict):
            sections_here = [k for k, v in node.items() if isinstance(v, dict)]
            return _no_setting(key, sections[:depth], name, sections_here, key.split(".")[depth + 1 :])
        node = child
    if leaf in node:
        return None
    valid = _settings_of(node, sections)
    if valid is None or leaf in valid:
        return None
    return _no_setting(key, sections, leaf, set(valid) | set(node), [])


def _no_setting(key: str, where: Sequence[str], name: str, choices: Collection[str], rest: Sequence[str]) -> str:
    """One line: the unknown name, its section, and the key with the closest valid name in its place."""
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    hint = f"; did you mean --{'.'.join([*where, close[0], *rest])}?" if close else ""
    return f"--{key}: the config has no setting {name!r} in [{'.'.join(where) or 'top level'}]{hint}"


def _settings_of(section: Dict, path: Sequence[str]) -> Optional[Collection[str]]:
    """The names `section` accepts: its registered function's arguments, its component factory's
    settings, or spaCy's schema for [training]/[nlp]/[initialize]; None when any name may do."""
    try:
        for key, value in section.items():
            if key.startswith("@"):
                from spacy.util import registry

                return _arguments(registry.get(key[1:], value))
        if "factory" in section:
            return _factory_settings(section["factory"])
        if len(path) == 1 and path[0] in _SCHEMAS:
            from spacy import schemas

            schema = getattr(schemas, _SCHEMAS[path[0]])
            return list(getattr(schema, "model_fields", None) or schema.__fields__)
    except Exception:  # noqa: BLE001 - an unknown function or factory: spaCy will say so itself
        return None
    return None


def _arguments(func: Callable) -> Optional[Collection[str]]:
    parameters = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return [name for name in parameters if name not in ("nlp", "name")]


def _factory_settings(factory: str) -> Optional[Collection[str]]:
    from importlib.metadata import entry_points

    from spacy.language import Language
    from spacy.util import registry

    if not Language.has_factory(factory):
        for point in entry_points(group="spacy_factories", name=factory):
            point.load()  # importing the module registers the factory
    if not Language.has_factory(factory):
        return None
    meta = Language.get_factory_meta(factory)
    return set(meta.default_config or {}) | set(_arguments(registry.factories.get(factory)) or ())
