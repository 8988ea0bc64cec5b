"""`annotate MODEL INPUT OUTPUT_DIR`: tag a corpus with a saved pipeline, streaming, resumable, locally or on Ray.

Wire into a CLI with `add_parser(subparsers)`; the parsed arguments go to `run(args)`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core import AnnotateError, output_schema
from .inputs import INPUT_TYPES

__all__ = ["add_parser", "run", "output_schema", "AnnotateError"]

FORMATS = ("parquet", "jsonl", "docbin")
ENGINES = ("local", "ray")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `annotate` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "annotate",
        help="tag a corpus (HF dataset, parquet, JSONL, .txt) into parquet/JSONL/DocBin shards; resumable; local or Ray",
        description=(
            "Tag a corpus with a saved pipeline and write the entities of each row to OUTPUT_DIR in shards. "
            "Rerunning the same command after a kill resumes where it stopped. Rows that cannot be tagged go "
            "to OUTPUT_DIR/errors.jsonl with their id and the reason."
        ),
    )  # the formatter comes from the parent's parser_class (the CLI's shows each default once)
    p.add_argument("model", help="a pipeline directory (e.g. training/ner/model-best)")
    p.add_argument(
        "input",
        help="a hub id or local HF dataset folder, a .parquet file or folder, a .jsonl file or folder, "
        "a folder of .txt files (one doc per file) or one .txt file (one doc per line)",
    )
    p.add_argument("output_dir", help="folder for the shards, errors.jsonl and _annotate.json")
    p.add_argument("--input-type", choices=INPUT_TYPES, default="auto", help="how to read INPUT; auto decides by extension and folder content")
    p.add_argument(
        "--split", default="train",
        help="split of a HF dataset; train because it is the one split a plain corpus loads as (annotate tags, it does not score)",
    )
    p.add_argument("--name", default=None, help="HF dataset config name")
    p.add_argument("--revision", default=None, help="HF dataset revision (hub datasets)")
    p.add_argument(
        "--text-column", default=None, help="column/field holding raw text; with neither this nor --tokens-column: 'text' if the input has it, else 'tokens'"
    )
    p.add_argument("--tokens-column", default=None, help="column/field holding a list of tokens (the doc text is the tokens joined by single spaces)")
    p.add_argument(
        "--id-column",
        default="id",
        help="column/field kept as the row id; rows without it get a derived id: FILE:LINE (JSONL, .txt lines), "
        "FILE:ROW (parquet), SPLIT:ROW (HF), the relative path (.txt folder)",
    )
    p.add_argument("--format", choices=FORMATS, default="parquet", help="output shard format")
    p.add_argument("--keep-text", action="store_true", default=False, help="also write each doc's text, which the char offsets index")
    p.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch (and per Ray map_batches call)")
    p.add_argument("--shard-size", type=int, default=5000, help="input rows per output shard (the unit of resumption)")
    p.add_argument("--limit", type=int, default=0, help="read at most this many input rows, bad ones included (0 = all)")
    p.add_argument("--engine", choices=ENGINES, default="local", help="local processes, or Ray Data (pip install 'bilstm_tagger[ray]')")
    p.add_argument("--n-process", type=int, default=1, help="local engine: worker processes (each loads the pipeline once, 1 torch thread)")
    p.add_argument("--concurrency", type=int, default=1, help="ray engine: actors in the pool (each loads the pipeline once)")
    p.add_argument("--num-cpus-per-actor", type=float, default=1, help="ray engine: CPUs reserved per actor = its torch threads")
    p.set_defaults(func=run)
    return p


def settings_of(args, source) -> dict:
    """Everything that decides which rows go into which shard, and what a row holds."""
    return {
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


def run(args: argparse.Namespace) -> int:
    """Run `annotate` with parsed arguments; 0 on success, 1 on an unusable input/model/output, 2 on bad arguments."""
    for option, minimum in (("batch_size", 1), ("shard_size", 1), ("n_process", 1), ("concurrency", 1), ("limit", 0)):
        if getattr(args, option) < minimum:
            print(f"error: --{option.replace('_', '-')} must be >= {minimum}", file=sys.stderr)
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
