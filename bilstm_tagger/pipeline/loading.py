"""Loading a saved pipeline and finding its bilstm_tagger component: one copy, used by the command line
and by `inspection/` (calibrate, explain). spaCy is imported on first use."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple

from ..errors import ConfigError, ModelLoadError


def load_pipeline(path: str):
    """The pipeline saved in directory `path`; ModelLoadError when there is no such directory."""
    import spacy

    if not Path(path).is_dir():
        raise ModelLoadError(f"{path}: no such model directory")
    return spacy.load(path)


def find_tagger(nlp) -> Tuple[str, Any]:
    """The name and pipe of the first bilstm_tagger component of `nlp`; ConfigError when it has none."""
    from .component import BiLSTMTagger

    for name, pipe in nlp.pipeline:
        if isinstance(pipe, BiLSTMTagger):
            return name, pipe
    raise ConfigError(f"the pipeline has no bilstm_tagger component (it has: {', '.join(nlp.pipe_names) or 'none'})")
