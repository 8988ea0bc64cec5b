"""`quantize`: a copy of a trained pipeline whose bilstm_tagger components tag in reduced precision.

The copy's config sets each component's `precision` (see ml/precision.py) and its meta says what
was reduced; the weights are copied unchanged (float32), so `spacy.load` needs no extra step and
the copy keeps loading when torch changes its quantized formats.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import ConfigError, ModelLoadError
from ..ml import PRECISIONS
from ..ml.precision import cpu_supports_bf16, reduced_layers
from ..ml.transformer import transformer_layers
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


def quantize_pipeline(model_dir: str, out_dir: str, precision: str,
                      components: Optional[list] = None) -> Tuple[dict, List[str]]:
    """Write `model_dir` to `out_dir` with `precision` for its taggers. Returns what the meta records,
    and notes on why the copy may tag slower than its source on this CPU (see `speed_notes`)."""
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
    return record, speed_notes(nlp, names, precision)


def speed_notes(nlp, names: List[str], precision: str) -> List[str]:
    """In words for the user, the two cases where a reduced copy will likely tag slower than another
    precision on this CPU (benchmarks/README.md, Speed); the copy is still written."""
    notes = []
    native_bf16 = cpu_supports_bf16()
    if precision == "bf16" and not native_bf16:
        notes.append("this CPU has no native bfloat16 (AVX512-BF16 or AMX), so torch emulates it: the copy will "
                     "likely tag slower here than float32 (what \"auto\" picks on this CPU). bf16 pays on CPUs "
                     "that have it; here, try --precision int8.")
    if precision == "int8" and native_bf16 and any(transformer_layers(nlp.get_pipe(name).model) for name in names):
        notes.append("int8 leaves the transformer embedder, most of the compute, in float32, while this CPU tags it "
                     "in bfloat16 under the default precision \"auto\": on an AVX512-BF16 CPU the int8 copy of a "
                     "MiniLM pipeline tagged 0.77x the words/s of its bf16 default. Use --precision bf16 instead.")
    return notes
