"""`quantize MODEL OUT_DIR`: a reduced-precision copy of a trained pipeline (pipeline/quantize.py)."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    qp = subparsers.add_parser(
        "quantize", help="write a copy of a pipeline whose taggers tag in int8 or bf16",
        description="Write a copy of MODEL whose bilstm_tagger components tag in reduced precision. int8: dynamic "
        "int8 LSTM and linear layers of the encoder (a transformer embedder stays float32), the fastest here but batch-dependent; bf16: autocast, for CPUs with "
        "AVX512-BF16 or AMX. The copy loads with spacy.load; its meta.json records what was reduced.",
    )
    qp.add_argument("model", help="trained pipeline directory")
    qp.add_argument("out_dir", help="directory for the copy (replaced if it exists)")
    qp.add_argument("--precision", default="int8", choices=["int8", "bf16"], help="what the taggers compute in")
    qp.add_argument("--component", action="append", default=None, metavar="NAME",
                    help="only this tagger component (repeatable; default: all of the package's taggers)")
    qp.set_defaults(func=run)
    return qp


def run(args: argparse.Namespace) -> int:
    from ..pipeline.quantize import quantize_pipeline

    record, notes = quantize_pipeline(args.model, args.out_dir, args.precision, args.component)
    for name, info in record.items():
        print(f"{name}: {info['precision']} for {', '.join(info['reduced']) or 'no layer'}; "
              f"float32: {', '.join(info['float32']) or 'none'}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"-> {args.out_dir}")
    return 0
