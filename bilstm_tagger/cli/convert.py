"""`convert DATASET OUT_DIR`: write each split of a dataset as a .spacy DocBin.

`add_parser` and `run` are the command line; `convert` does the work from plain arguments.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ._util import add_dataset_args, dataset_options, progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    cv = subparsers.add_parser("convert", help="write each split of a dataset as a .spacy DocBin")
    add_dataset_args(cv)
    cv.add_argument("out_dir", help="directory for {split}.spacy")
    cv.add_argument("--splits", nargs="*", default=None, help="splits to convert (default: all)")
    cv.add_argument("--target", choices=["ents", "spans", "tag", "pos"], default="ents", help="where the tags go on each Doc")
    cv.add_argument("--spans-key", default="sc", help="doc.spans key for --target spans")
    cv.add_argument("--lang", default="en", help="language of the blank pipeline that builds the docs")
    cv.set_defaults(func=run)
    return cv


def run(args: argparse.Namespace) -> int:
    return convert(args.dataset, args.out_dir, args.splits, **dataset_options(args), target=args.target,
                   spans_key=args.spans_key, lang=args.lang)


def convert(
    dataset: str, out_dir: str, splits: Optional[Sequence[str]] = None, *, name: Optional[str] = None,
    revision: Optional[str] = None, tokens_column: str = "tokens", tags_column: str = "ner_tags", limit: int = 0,
    group_sentences: int = 1, target: str = "ents", spans_key: str = "sc", lang: str = "en",
) -> int:
    import spacy
    from spacy.tokens import DocBin

    from ..data.readers import HFDatasetReader, load_hf_dict

    splits = splits or list(load_hf_dict(dataset, name, revision))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nlp = spacy.blank(lang)
    for split in splits:
        reader = HFDatasetReader(
            dataset, split, name, tokens_column, tags_column, target, spans_key, limit, revision,
            group_sentences=group_sentences,
        )
        doc_bin = DocBin(store_user_data=True)
        for eg in progress(reader(nlp), len(reader), split):
            doc_bin.add(eg.reference)
        path = out / f"{split}.spacy"
        doc_bin.to_disk(path)
        print(f"{split}: {len(doc_bin)} docs -> {path}")
    return 0
