"""`python -m bilstm_tagger annotate MODEL INPUT OUTPUT_DIR`: the parser, mapped onto `annotate.annotate()`."""
from __future__ import annotations

import argparse
from dataclasses import fields


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `annotate` subcommand to an argparse subparsers object; returns its parser."""
    from ..annotate.inputs import INPUT_TYPES
    from ..annotate.options import ENGINES, FORMATS

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
    p.add_argument(
        "--marginals", action="store_true", default=False,
        help="also write each row's tokens and, per token, the tagger's probability of every tag (float16; CRF: exact "
        "forward-backward marginals under the saved temperature and decision bias); tag names in the shard metadata",
    )
    p.add_argument("--keep-tokens", action="store_true", default=False, help="also write each doc's words (`tokens`), which the token offsets index")
    p.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch (and per Ray map_batches call)")
    p.add_argument("--shard-size", type=int, default=5000, help="input rows per output shard (the unit of resumption)")
    p.add_argument("--limit", type=int, default=0, help="read at most this many input rows, bad ones included (0 = all)")
    p.add_argument("--engine", choices=ENGINES, default="local", help="local processes, or Ray Data (pip install 'bilstm_tagger[ray]')")
    p.add_argument("--n-process", type=int, default=1, help="local engine: worker processes (each loads the pipeline once, 1 torch thread)")
    p.add_argument("--concurrency", type=int, default=1, help="ray engine: actors in the pool (each loads the pipeline once)")
    p.add_argument("--num-cpus-per-actor", type=float, default=1, help="ray engine: CPUs reserved per actor = its torch threads")
    p.set_defaults(func=run)
    return p



def run(args: argparse.Namespace) -> int:
    from ..annotate import AnnotateOptions, annotate

    return annotate(AnnotateOptions(**{f.name: getattr(args, f.name) for f in fields(AnnotateOptions)}))
