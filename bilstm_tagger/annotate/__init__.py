"""`annotate MODEL INPUT OUTPUT_DIR`: tag a corpus with a saved pipeline, streaming, resumable, locally or on Ray.

`annotate(AnnotateOptions(model, input, output_dir, ...))` runs it; the command line
(`bilstm_tagger/cli/annotate.py`) maps its options onto `AnnotateOptions`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .core import AnnotateError, output_schema
from .inputs import INPUT_TYPES
from .options import ENGINES, FORMATS, AnnotateOptions

__all__ = ["annotate", "AnnotateOptions", "output_schema", "AnnotateError", "ENGINES", "FORMATS", "INPUT_TYPES"]


def settings_of(args: AnnotateOptions, source) -> dict:
    """Everything that decides which rows go into which shard, and what a row holds."""
    settings = {
        "model": str(Path(args.model).resolve()),
        "input": args.input if source.kind == "hf" and not Path(args.input).exists() else str(Path(args.input).resolve()),
        "input_type": source.kind,
        "source": source.fingerprint(),
        "column": [source.column.kind, source.column.name],
        "id_column": args.id_column,
        "format": args.format,
        "keep_text": args.keep_text,
        "shard_size": args.shard_size,
        "limit": args.limit,
    }
    if args.marginals:  # only when on, so that runs from before the option still resume
        settings["marginals"] = True
    if args.keep_tokens:
        settings["keep_tokens"] = True
    return settings


def annotate(args: AnnotateOptions) -> int:
    """Tag a corpus as `args` says; 0 on success, 1 on an unusable input/model/output, 2 on bad settings."""
    for option, minimum in (("batch_size", 1), ("shard_size", 1), ("n_process", 1), ("concurrency", 1), ("limit", 0)):
        if getattr(args, option) < minimum:
            print(f"error: --{option.replace('_', '-')} must be >= {minimum}", file=sys.stderr)
            return 2
    if (args.marginals or args.keep_tokens) and args.format != "parquet":
        print("error: --marginals and --keep-tokens write parquet shards (list and float16 columns); leave out --format or use --format parquet", file=sys.stderr)
        return 2
    if args.num_cpus_per_actor <= 0:
        print("error: --num-cpus-per-actor must be > 0", file=sys.stderr)
        return 2
    try:
        if not Path(args.model).is_dir():
            raise AnnotateError(f"{args.model}: no such model directory")
        if args.engine == "ray":
            from .ray_engine import run_ray

            return run_ray(args)
        from .inputs import open_source
        from .local import run_local

        source = open_source(
            args.input, args.input_type, args.split, args.name, args.revision, args.text_column, args.tokens_column, args.id_column
        )
        return run_local(args, source, settings_of(args, source))
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished shards are kept; rerun the same command to resume ({args.output_dir})", file=sys.stderr)
        return 130
    except (AnnotateError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
