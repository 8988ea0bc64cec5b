"""bilstm_tagger: a BiLSTM(-CRF) sequence tagger for spaCy, trained from Hugging Face datasets.

Layout: `ml/` holds the thinc layers with torch inside, the CRF maths and the
registered architectures; `pipeline/` the spaCy pipe, its tasks, scorer and
confidences; `data/` the dataset reader, the static-vectors builder and the
epoch schedules; `inspection/` what a trained tagger computes (RNN traces,
calibration, `calibrate`, `explain` and the HTML report); `util/` atomic
writes and fixes for other packages' versions; `tags.py` the tag schemes;
`cli/` the command line (one module per command). Nothing below `inspection/` imports it.

Names are imported on first use, so `python -m bilstm_tagger --help` answers
without loading torch or spaCy. spaCy finds the factories, architectures,
reader and scorer through the package's entry points.
"""
import importlib
from typing import Any

__version__ = "0.3.0"

_EXPORTS = {
    "BiLSTMTagger": "pipeline.component",
    "make_bilstm_tagger": "pipeline.component",
    "make_bilstm_spans": "pipeline.component",
    "make_bilstm_tags": "pipeline.component",
    "make_bilstm_pos": "pipeline.component",
    "build_bilstm_tagger": "ml.tagger",
    "build_bilstm_tagger_v2": "ml.tagger",
    "build_hash_char_embed": "ml.embed",
    "create_hf_reader": "data.readers",
    "make_seqeval_scorer": "pipeline.scoring",
    "score_seqeval": "pipeline.scoring",
    "ConfigError": "errors",
    "DatasetError": "errors",
    "ModelLoadError": "errors",
    "TagError": "errors",
    "WeightsError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'bilstm_tagger' has no attribute {name!r}")
