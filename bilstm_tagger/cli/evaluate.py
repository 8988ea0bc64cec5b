"""`evaluate MODEL DATASET`: tag a dataset split and print seqeval's report and words/s.

`add_parser` and `run` are the command line; `evaluate` does the work from plain arguments.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

from ._util import SPLIT_HELP, add_dataset_args, dataset_options, progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    ev = subparsers.add_parser("evaluate", help="tag a dataset split and print seqeval's report and words/s")
    ev.add_argument("model", help="a pipeline directory, e.g. training/ner/model-best")
    add_dataset_args(ev)
    ev.add_argument("--split", default="test", help=SPLIT_HELP["evaluate"])
    ev.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch")
    ev.add_argument("--mode", choices=["default", "strict"], default=None, help="seqeval mode (default: the pipeline's scorer setting, conlleval-compatible unless set)")
    ev.add_argument("--scheme", choices=["IOB2", "BILOU"], default=None, help="scheme for --mode strict (default: the pipeline's scorer setting, else IOB2)")
    ev.add_argument("--output", default=None, help="also write the scores as JSON to this file")
    ev.set_defaults(func=run)
    return ev


def run(args: argparse.Namespace) -> int:
    return evaluate(args.model, args.dataset, args.split, **dataset_options(args), batch_size=args.batch_size,
                    mode=args.mode, scheme=args.scheme, output=args.output)


def evaluate(
    model: str, dataset: str, split: str = "test", *, name: Optional[str] = None, revision: Optional[str] = None,
    tokens_column: str = "tokens", tags_column: str = "ner_tags", limit: int = 0, group_sentences: int = 1,
    batch_size: int = 256, mode: Optional[str] = None, scheme: Optional[str] = None, output: Optional[str] = None,
) -> int:
    from spacy.training import Example

    from ..data.readers import HFDatasetReader
    from ..pipeline.loading import find_tagger, load_pipeline
    from ..pipeline.scoring import seqeval_report, tag_sequences
    from ..pipeline.tasks import SpanTask

    nlp = load_pipeline(model)
    _, tagger = find_tagger(nlp)
    task = tagger.task
    target, spans_key = task.name, task.spans_key
    reader = HFDatasetReader(
        dataset, split, name, tokens_column, tags_column, target, spans_key, limit, revision,
        group_sentences=group_sentences,
    )
    gold = list(reader(nlp))
    n_words = sum(len(eg.reference) for eg in gold)
    start = time.perf_counter()
    docs = list(progress(nlp.pipe((eg.predicted for eg in gold), batch_size=batch_size), len(gold), "tagging"))
    seconds = time.perf_counter() - start
    examples = [Example(doc, eg.reference) for doc, eg in zip(docs, gold)]
    # mode/scheme override the pipeline's scorer settings only when given.
    scores = tagger.score(examples, **{k: v for k, v in (("mode", mode), ("scheme", scheme)) if v})
    if isinstance(task, SpanTask):
        # Strict mode reads the tags in the scheme it is given, so build the sequences in that scheme.
        y_true, y_pred = tag_sequences(examples, task.spans, scheme or "IOB2")
        print(seqeval_report(y_true, y_pred, mode, scheme or "IOB2", as_dict=False))
    else:
        print(f"{target} accuracy: {scores[task.score_prefix]:.4f}")
    wps = n_words / seconds if seconds > 0 else float("inf")
    print(f"{len(gold)} docs, {n_words} words in {seconds:.2f}s: {wps:,.0f} words/s (batch size {batch_size})")
    if output:
        result = {
            "model": model,
            "dataset": dataset,
            "split": split,
            "docs": len(gold),
            "words": n_words,
            "seconds": seconds,
            "words_per_second": wps,
            "scores": scores,
        }
        Path(output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return 0
