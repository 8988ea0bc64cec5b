"""Command line: `python -m bilstm_tagger COMMAND ...` (also installed as `bilstm-tagger`).

Commands: train, evaluate, convert, vectors, annotate, explain, calibrate (each has
--help). Heavy imports (torch, spaCy, datasets) happen inside the commands, so --help
is instant.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import BilstmTaggerError, ModelLoadError

# What a user can fix (the package's own errors, files, spaCy's config checks): one `error:` line.
# Anything else is a bug and keeps its traceback.
_FAILURES: tuple = (BilstmTaggerError, OSError)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and shows every option's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; descriptions keep their line breaks."""


_TRAIN_EPILOG = """\
Any other --section.key value pair overrides the config, as with `spacy train`:
  --paths.dataset ../shared/datasets/conll2003      the dataset (hub id or local dir)
  --training.max_steps 2000                         stop after 2,000 updates
  --components.bilstm_tagger.model.hidden_size 128  a smaller BiLSTM
Values are read as JSON where they parse (numbers, true/false, null, lists).
"""


def _progress(iterable, total: int, desc: str):
    """A progress bar on a terminal; nothing in logs and pipes."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="doc", disable=None, leave=False)


def _find_component(nlp):
    from .pipeline.component import BiLSTMTagger

    for name, pipe in nlp.pipeline:
        if isinstance(pipe, BiLSTMTagger):
            return name, pipe
    raise ModelLoadError(f"the pipeline has no bilstm_tagger component (it has: {', '.join(nlp.pipe_names) or 'none'})")


def _load_pipeline(path: str):
    import spacy

    if not Path(path).is_dir():
        raise ModelLoadError(f"{path}: no such model directory")
    return spacy.load(path)


def evaluate(args: argparse.Namespace) -> int:
    from spacy.training import Example

    from .data.readers import HFDatasetReader
    from .pipeline.scoring import seqeval_report, tag_sequences
    from .pipeline.tasks import SpanTask

    nlp = _load_pipeline(args.model)
    _, tagger = _find_component(nlp)
    task = tagger.task
    target, spans_key = task.name, task.spans_key
    reader = HFDatasetReader(
        args.dataset, args.split, args.name, args.tokens_column, args.tags_column, target, spans_key, args.limit, args.revision,
        group_sentences=args.group_sentences,
    )
    gold = list(reader(nlp))
    n_words = sum(len(eg.reference) for eg in gold)
    start = time.perf_counter()
    docs = list(_progress(nlp.pipe((eg.predicted for eg in gold), batch_size=args.batch_size), len(gold), "tagging"))
    seconds = time.perf_counter() - start
    examples = [Example(doc, eg.reference) for doc, eg in zip(docs, gold)]
    # --mode/--scheme override the pipeline's scorer settings only when given.
    scores = tagger.score(examples, **{k: v for k, v in (("mode", args.mode), ("scheme", args.scheme)) if v})
    if isinstance(task, SpanTask):
        # Strict mode reads the tags in the scheme it is given, so build the sequences in that scheme.
        y_true, y_pred = tag_sequences(examples, task.spans, args.scheme or "IOB2")
        print(seqeval_report(y_true, y_pred, args.mode, args.scheme or "IOB2", as_dict=False))
    else:
        print(f"{target} accuracy: {scores[task.score_prefix]:.4f}")
    wps = n_words / seconds if seconds > 0 else float("inf")
    print(f"{len(gold)} docs, {n_words} words in {seconds:.2f}s: {wps:,.0f} words/s (batch size {args.batch_size})")
    if args.output:
        result = {
            "model": args.model,
            "dataset": args.dataset,
            "split": args.split,
            "docs": len(gold),
            "words": n_words,
            "seconds": seconds,
            "words_per_second": wps,
            "scores": scores,
        }
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return 0


def convert(args: argparse.Namespace) -> int:
    import spacy
    from spacy.tokens import DocBin

    from .data.readers import HFDatasetReader, load_hf_dict

    splits = args.splits or list(load_hf_dict(args.dataset, args.name, args.revision))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nlp = spacy.blank(args.lang)
    for split in splits:
        reader = HFDatasetReader(
            args.dataset, split, args.name, args.tokens_column, args.tags_column, args.target, args.spans_key, args.limit, args.revision,
            group_sentences=args.group_sentences,
        )
        doc_bin = DocBin(store_user_data=True)
        for eg in _progress(reader(nlp), len(reader), split):
            doc_bin.add(eg.reference)
        path = out_dir / f"{split}.spacy"
        doc_bin.to_disk(path)
        print(f"{split}: {len(doc_bin)} docs -> {path}")
    return 0


def train(args: argparse.Namespace, overrides: dict) -> int:
    """spaCy's training loop with crash-safe checkpoints (see bilstm_tagger.checkpoints)."""
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train as train_loop
    from spacy.util import load_config

    from . import checkpoints  # noqa: F401  (registers the logger)

    config = load_config(args.config, overrides=overrides, interpolate=False)
    config["training"]["logger"] = {
        "@loggers": "bilstm_tagger.CheckpointLogger.v1",
        "output_path": str(args.output),
        "logger": config["training"]["logger"],
    }
    nlp = init_nlp(config)
    train_loop(nlp, None)
    print(f"saved {args.output}/model-best and {args.output}/model-last")
    return 0


def vectors(args: argparse.Namespace) -> int:
    from .data.vectors import build_vectors_pipeline

    rows, width = build_vectors_pipeline(args.source, args.out_dir, args.lang, args.attr, args.limit)
    print(f"{rows} vectors of width {width}, keyed by {args.attr} -> {args.out_dir}")
    print(f"use them with: --paths.vectors {args.out_dir} --components.bilstm_tagger.model.embed.include_static_vectors true")
    return 0


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="Hugging Face hub id or local directory in hub layout")
    parser.add_argument("--name", default=None, help="dataset config name")
    parser.add_argument("--revision", default=None, help="dataset revision (hub datasets)")
    parser.add_argument("--tokens-column", default="tokens", help="column holding the token lists")
    parser.add_argument("--tags-column", default="ner_tags", help="column holding the tags (ClassLabel ids or strings)")
    parser.add_argument("--limit", type=int, default=0, help="read at most this many rows per split (0 = all)")
    parser.add_argument(
        "--group-sentences", type=int, default=1, metavar="N",
        help="join up to N consecutive rows into one Doc with sentence starts (document context; "
        "use what the model was trained with); scores stay per row",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bilstm_tagger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    tr = commands.add_parser(
        "train",
        help="spacy train with crash-safe checkpoints; --section.key value pairs override the config",
        description="Train with spaCy's own loop; model-best and model-last are saved atomically, so a kill never leaves a half-written model.",
        epilog=_TRAIN_EPILOG,
    )
    tr.add_argument("config", help="a config file, e.g. configs/ner.cfg")
    tr.add_argument("--output", required=True, help="directory for model-best and model-last")
    tr.set_defaults(func=train, takes_overrides=True)

    ev = commands.add_parser("evaluate", help="tag a dataset split and print seqeval's report and words/s")
    ev.add_argument("model", help="a pipeline directory, e.g. training/ner/model-best")
    _add_dataset_args(ev)
    ev.add_argument("--split", default="test", help="the split to tag and score")
    ev.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch")
    ev.add_argument("--mode", choices=["default", "strict"], default=None, help="seqeval mode (default: conlleval-compatible)")
    ev.add_argument("--scheme", choices=["IOB2", "BILOU"], default=None, help="scheme for --mode strict")
    ev.add_argument("--output", default=None, help="also write the scores as JSON to this file")
    ev.set_defaults(func=evaluate)

    cv = commands.add_parser("convert", help="write each split of a dataset as a .spacy DocBin")
    _add_dataset_args(cv)
    cv.add_argument("out_dir", help="directory for {split}.spacy")
    cv.add_argument("--splits", nargs="*", default=None, help="splits to convert (default: all)")
    cv.add_argument("--target", choices=["ents", "spans", "tag", "pos"], default="ents", help="where the tags go on each Doc")
    cv.add_argument("--spans-key", default="sc", help="doc.spans key for --target spans")
    cv.add_argument("--lang", default="en", help="language of the blank pipeline that builds the docs")
    cv.set_defaults(func=convert)

    vc = commands.add_parser("vectors", help="turn GloVe-style vectors into a pipeline for [initialize] vectors")
    vc.add_argument("source", help="GloVe text file (.txt/.gz), a dir with *_emb.npy + *index.parquet, or pkg:NAME")
    vc.add_argument("out_dir", help="directory for the blank pipeline that holds the vectors")
    vc.add_argument("--lang", default="en", help="language of that pipeline")
    vc.add_argument("--attr", default="LOWER", choices=["ORTH", "LOWER", "NORM"], help="token attribute the vectors are keyed by")
    vc.add_argument("--limit", type=int, default=0, help="keep the first N rows only (0 = all)")
    vc.set_defaults(func=vectors)

    from .annotate import add_parser as add_annotate

    add_annotate(commands)

    ex = commands.add_parser(
        "explain",
        help="write an HTML report of what the model does on some text or dataset docs",
        description="One self-contained HTML file (and PNGs): entities with their confidence, the neurons that "
        "track entities, gate saturation, attention per head, the CRF's transitions, the reliability diagram.",
    )
    ex.add_argument("model", help="a pipeline directory, e.g. training/ner/model-best")
    source = ex.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to explain (repeatable)")
    source.add_argument("--dataset", help="Hugging Face hub id or local directory in hub layout")
    ex.add_argument("--split", default="validation", help="split of --dataset")
    ex.add_argument("--n", type=int, default=20, help="how many docs of the split")
    ex.add_argument("--name", default=None, help="dataset config name")
    ex.add_argument("--revision", default=None, help="dataset revision (hub datasets)")
    ex.add_argument("--tokens-column", default="tokens", help="column holding the token lists")
    ex.add_argument("--tags-column", default="ner_tags", help="column holding the tags")
    ex.add_argument("--output", required=True, help="the HTML file to write")
    ex.add_argument("--png-dir", default=None, help="also write every figure as a PNG here")
    ex.add_argument("--top-k", type=int, default=3, help="neurons per criterion")
    ex.set_defaults(func=_lazy("explain"))

    ca = commands.add_parser(
        "calibrate",
        help="measure entity-confidence calibration (ECE) on a split, fit a temperature, save it with the model",
        description="Reliability table and ECE of span._.confidence on a split; fits a temperature there and "
        "saves it with the model (predictions do not change, confidences do).",
    )
    ca.add_argument("model", help="a pipeline directory, e.g. training/ner/model-best")
    _add_dataset_args(ca)
    ca.add_argument("--split", default="validation", help="the split to measure and fit the temperature on")
    ca.add_argument("--test-split", default=None, help="also report ECE before/after on this held-out split")
    ca.add_argument("--output", default=None, help="write the calibrated pipeline here (may be MODEL itself)")
    ca.add_argument("--bins", type=int, default=10, help="reliability bins")
    ca.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch")
    ca.set_defaults(func=_lazy("calibrate"))
    return parser


def _lazy(module: str) -> Callable[[argparse.Namespace], int]:
    """The `run` of a command module, imported when the command runs (it imports torch)."""

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(f"{__package__}.{module}").run(args)

    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    overrides = {}
    if extra:
        if not getattr(args, "takes_overrides", False):
            build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
        from spacy.cli._util import parse_config_overrides

        try:
            overrides = parse_config_overrides(extra)
        except SystemExit:
            print(f"error: config overrides must look like --section.key value, not {' '.join(extra)}", file=sys.stderr)
            return 2
    if getattr(args, "limit", 0) < 0 or getattr(args, "batch_size", 1) < 1:
        print("error: --limit must be >= 0 and --batch-size >= 1", file=sys.stderr)
        return 2
    from thinc.api import ConfigValidationError

    try:
        return args.func(args, overrides) if getattr(args, "takes_overrides", False) else args.func(args)
    except (*_FAILURES, ConfigValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
