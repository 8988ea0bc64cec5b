"""Stage 2 of `distill`: the student's config, its labels, and training on gold + teacher rows."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..data.distill import SETTING_RULES
from ..errors import ConfigError

GOLD_READER = "bilstm_tagger.HFDataset.v1"
DISTILL_READER = "bilstm_tagger.DistillCorpus.v1"
# The settings of [corpora.train] that DistillCorpus.v1 takes over from HFDataset.v1.
CORPUS_KEYS = ("path", "split", "name", "tokens_column", "tags_column", "target", "spans_key", "limit", "revision")
# DistillCorpus.v1's own settings, kept when an override puts them on CONFIG's train corpus
# (e.g. `--corpora.train.gold_repeats 2`).
DISTILL_KEYS = tuple(SETTING_RULES)


@dataclass
class Student:
    """CONFIG with the overrides applied, and what stage 1 needs to know of it."""

    config: Any  # confection Config, uninterpolated (what `train` runs)
    component: str
    lang: str
    scheme: str
    corpus_path: List[str]  # e.g. ["corpora", "train"]
    corpus: Dict[str, Any]  # the gold train corpus settings, interpolated

    @property
    def labels(self) -> List[str]:
        return gold_labels(self.corpus)


def load_student(config_path: str, overrides: Optional[Dict] = None) -> Student:
    """Read CONFIG (with overrides) and find its bilstm_tagger span component and gold train corpus."""
    from spacy.util import load_config

    config = load_config(config_path, overrides=overrides or {}, interpolate=False)
    check_no_transformer(config)
    resolved = config.interpolate()
    taggers = [name for name in resolved["nlp"]["pipeline"] if resolved["components"].get(name, {}).get("factory") in ("bilstm_tagger", "bilstm_spans")]
    if not taggers:
        raise ConfigError(f"{config_path}: the student pipeline has no bilstm_tagger (or bilstm_spans) component to distil into")
    component = resolved["components"][taggers[0]]
    corpus_path = str(resolved["training"]["train_corpus"]).split(".")
    corpus = resolved
    for key in corpus_path:
        corpus = corpus[key]
    if corpus.get("@readers") not in (GOLD_READER, DISTILL_READER):
        raise ConfigError(
            f"{config_path}: [{'.'.join(corpus_path)}] uses reader {corpus.get('@readers')!r}; distill reads the gold rows "
            f"with {GOLD_READER} and adds the teacher rows to them"
        )
    if int(corpus.get("group_sentences", 1)) != 1:
        raise ConfigError(f"{config_path}: distill reads one gold row per Doc; set [{'.'.join(corpus_path)}] group_sentences = 1")
    settings = {k: corpus[k] for k in CORPUS_KEYS if k in corpus}
    return Student(config, taggers[0], resolved["nlp"]["lang"], component.get("scheme", "BILOU"), corpus_path, settings)


def check_no_transformer(config) -> None:
    """The student must stay a plain BiLSTM(-CRF): refuse transformer components and embedders."""
    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("@architectures", "factory") and isinstance(value, str) and "transformer" in value.lower():
                    raise ConfigError(f"the student config uses {value!r} at [{where}]; distill trains a student without a transformer")
                walk(value, f"{where}.{key}" if where else key)

    walk(config.get("components", {}), "components")


def gold_labels(corpus: Dict[str, Any]) -> List[str]:
    """The labels in the gold training rows (what the student learns, unless [initialize] says otherwise)."""
    from ..data.readers import HFDatasetReader

    settings = {k: corpus.get(k) for k in CORPUS_KEYS}
    reader = HFDatasetReader(
        settings["path"], settings["split"] or "train", settings["name"], settings["tokens_column"] or "tokens",
        settings["tags_column"] or "ner_tags", settings["target"] or "ents", settings["spans_key"] or "sc",
        int(settings["limit"] or 0), settings["revision"],
    )
    return sorted(label for label in reader._scan(reader.dataset, reader.where).labels if label)


def distill_config(student: Student, teacher: List[Path], teacher_gold: Optional[Path]):
    """The student's config with its train corpus reading gold + teacher rows (DistillCorpus.v1)."""
    config = copy.deepcopy(student.config)
    section = config
    for key in student.corpus_path:
        section = section[key]
    kept = {k: v for k, v in section.items() if k in CORPUS_KEYS}  # unresolved: ${paths.dataset} stays a reference
    own = {k: v for k, v in section.items() if k in DISTILL_KEYS}
    section.clear()
    section.update({"@readers": DISTILL_READER, **kept, "teacher": [str(p) for p in teacher],
                    "teacher_gold": None if teacher_gold is None else str(teacher_gold), "teacher_limit": 0, **own})
    return config


def train_student(config, output: str) -> int:
    """spaCy's training loop (via `python -m bilstm_tagger train`'s crash-safe saving) on the distil config."""
    from ..cli.train import train_config

    return train_config(config, output)
