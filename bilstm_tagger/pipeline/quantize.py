"""`quantize`: a copy of a trained pipeline whose bilstm_tagger components tag in reduced precision.

The copy's config sets each component's `precision` (see ml/precision.py) and its meta says what
was reduced; the weights are copied unchanged (float32), so `spacy.load` needs no extra step and
the copy keeps loading when torch changes its quantized formats.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from ..errors import ConfigError, ModelLoadError
from ..ml import PRECISIONS
from ..ml.precision import reduced_layers
from ..util.atomic import write_dir_atomic

META_KEY = "bilstm_tagger_precision"


def our_components(model_dir: str) -> Dict[str, str]:
    """{component name: factory} of the package's taggers in the saved pipeline's config."""
    from spacy.util import load_config

    from .tasks import TASKS

    path = Path(model_dir) / "config.cfg"
    if not path.is_file():
        raise ModelLoadError(f"{model_dir}: no config.cfg: not a saved spaCy pipeline")
    factories = {"bilstm_tagger"} | {task.factory for task in TASKS.values()}
    config = load_config(path, interpolate=False)
    return {name: block.get("factory") for name, block in config.get("components", {}).items()
            if block.get("factory") in factories}


def quantize_pipeline(model_dir: str, out_dir: str, precision: str, components: Optional[list] = None) -> dict:
    """Write `model_dir` to `out_dir` with `precision` for its taggers; returns what the meta records."""
    import spacy

    if precision not in PRECISIONS or precision == "fp32":
        raise ConfigError(f"precision must be one of {', '.join(p for p in PRECISIONS if p != 'fp32')}, not {precision!r}")
    if not Path(model_dir).is_dir():
        raise ModelLoadError(f"{model_dir}: no such model directory")
    if Path(out_dir).resolve() == Path(model_dir).resolve():
        raise ConfigError("the output directory must differ from the source pipeline")
    found = our_components(model_dir)
    names = components or list(found)
    missing = [n for n in names if n not in found]
    if not found or missing:
        raise ConfigError(f"no bilstm_tagger component named {', '.join(missing) or 'any'} in {model_dir} "
                          f"(it has: {', '.join(found) or 'none'})")
    overrides = {"components": {name: {"precision": precision} for name in names}}
    nlp = spacy.load(model_dir, config=overrides)
    record = {name: {"precision": precision, **reduced_layers(nlp.get_pipe(name).model, precision),
                     "weights": "float32 (reduced at load)", "source": str(model_dir)} for name in names}
    nlp.meta[META_KEY] = record
    write_dir_atomic(out_dir, nlp.to_disk)
    return record
