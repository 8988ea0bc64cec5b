"""Command line: `python -m bilstm_tagger COMMAND ...` (also installed as `bilstm-tagger`).

Commands: train, evaluate, convert, vectors, annotate, explain, calibrate (each has
--help). Heavy imports (torch, spaCy, datasets) happen inside the commands, so --help
is instant.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Callable, Collection, Dict, Optional, Sequence

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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; an option's default follows its help once, where it says
    something: not for required options, unset (None) or off (False) ones, nor where the help
    already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))  # the flag is the setting
        if action.required or unset or flag or "default" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


# Each command's --split default fits what it does; the help says why, since they differ
# (annotate's, train, is in annotate/__init__.py).
SPLIT_HELP = {
    "evaluate": "the split to tag and score; test because it is the held-out split whose score one reports",
    "calibrate": "the split to fit the decision and the temperature on; validation because fitting on test "
    "would tune to the split one reports",
    "explain": "split of --dataset; validation, as calibrate: the split models are tuned on, not the reported one",
}


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


# Top-level sections spaCy validates against a schema (extra keys are refused, deep inside training).
_SCHEMAS = {"training": "ConfigSchemaTraining", "nlp": "ConfigSchemaNlp", "initialize": "ConfigSchemaInit"}


def unknown_override(config: Dict, key: str) -> Optional[str]:
    """Why the override `key` (section.sub.name) names no setting of `config`, with the closest valid
    name; None when it does, or when its section takes any name ([paths], [system], score weights).

    Checked before anything is built: confection or spaCy would otherwise refuse it only after
    loading the datasets, with a dump of the whole section.
    """
    *sections, leaf = key.split(".")
    node: Dict = config
    for depth, name in enumerate(sections):
        child = node.get(name)
        if not isinstance(child, dict):
            sections_here = [k for k, v in node.items() if isinstance(v, dict)]
            return _no_setting(key, sections[:depth], name, sections_here, key.split(".")[depth + 1 :])
        node = child
    if leaf in node:
        return None
    valid = _settings_of(node, sections)
    if valid is None or leaf in valid:
        return None
    return _no_setting(key, sections, leaf, set(valid) | set(node), [])


def _no_setting(key: str, where: Sequence[str], name: str, choices: Collection[str], rest: Sequence[str]) -> str:
    """One line: the unknown name, its section, and the key with the closest valid name in its place."""
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    hint = f"; did you mean --{'.'.join([*where, close[0], *rest])}?" if close else ""
    return f"--{key}: the config has no setting {name!r} in [{'.'.join(where) or 'top level'}]{hint}"


def _settings_of(section: Dict, path: Sequence[str]) -> Optional[Collection[str]]:
    """The names `section` accepts: its registered function's arguments, its component factory's
    settings, or spaCy's schema for [training]/[nlp]/[initialize]; None when any name may do."""
    try:
        for key, value in section.items():
            if key.startswith("@"):
                from spacy.util import registry

                return _arguments(registry.get(key[1:], value))
        if "factory" in section:
            return _factory_settings(section["factory"])
        if len(path) == 1 and path[0] in _SCHEMAS:
            from spacy import schemas

            schema = getattr(schemas, _SCHEMAS[path[0]])
            return list(getattr(schema, "model_fields", None) or schema.__fields__)
    except Exception:  # noqa: BLE001 - an unknown function or factory: spaCy will say so itself
        return None
    return None


def _arguments(func: Callable) -> Optional[Collection[str]]:
    parameters = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return [name for name in parameters if name not in ("nlp", "name")]


def _factory_settings(factory: str) -> Optional[Collection[str]]:
    from importlib.metadata import entry_points

    from spacy.language import Language
    from spacy.util import registry

    if not Language.has_factory(factory):
        for point in entry_points(group="spacy_factories", name=factory):
            point.load()  # importing the module registers the factory
    if not Language.has_factory(factory):
        return None
    meta = Language.get_factory_meta(factory)
    return set(meta.default_config or {}) | set(_arguments(registry.factories.get(factory)) or ())


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
    ev.add_argument("--split", default="test", help=SPLIT_HELP["evaluate"])
    ev.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch")
    ev.add_argument("--mode", choices=["default", "strict"], default=None, help="seqeval mode (default: the pipeline's scorer setting, conlleval-compatible unless set)")
    ev.add_argument("--scheme", choices=["IOB2", "BILOU"], default=None, help="scheme for --mode strict (default: the pipeline's scorer setting, else IOB2)")
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
    ex.add_argument("--split", default="validation", help=SPLIT_HELP["explain"])
    ex.add_argument("--n", type=int, default=20, help="how many docs of the split")
    ex.add_argument("--name", default=None, help="dataset config name")
    ex.add_argument("--revision", default=None, help="dataset revision (hub datasets)")
    ex.add_argument("--tokens-column", default="tokens", help="column holding the token lists")
    ex.add_argument("--tags-column", default="ner_tags", help="column holding the tags")
    ex.add_argument("--output", required=True, help="the HTML file to write")
    ex.add_argument("--png-dir", default=None, help="also write every figure as a PNG here")
    ex.add_argument("--top-k", type=int, default=3, help="neurons per criterion")
    ex.set_defaults(func=_lazy("inspection.explain"))

    ca = commands.add_parser(
        "calibrate",
        help="fit the entity decision bias and the confidence temperature on a split; save them with the model",
        description="Fits, on a split, an additive bias on entity scores that balances precision and recall "
        "(kept only when cross-validation on the split finds a significant F1 gain) and a temperature for "
        "span._.confidence (kept only when it lowers ECE). Prints P/R/F1 and ECE before and after; with --output "
        "saves both with the model.",
    )
    ca.add_argument("model", help="a pipeline directory, e.g. training/ner/model-best")
    _add_dataset_args(ca)
    ca.add_argument("--split", default="validation", help=SPLIT_HELP["calibrate"])
    ca.add_argument("--test-split", default=None, help="also report P/R/F1 and ECE before/after on this held-out split")
    ca.add_argument("--test-limit", type=int, default=0, help="read at most this many rows of --test-split (0 = all)")
    ca.add_argument("--json", default=None, help="also write the numbers (decision, P/R/F1, T, ECE) to this JSON file")
    ca.add_argument("--output", default=None, help="write the calibrated pipeline here (may be MODEL itself)")
    ca.add_argument("--bins", type=int, default=10, help="reliability bins")
    ca.add_argument("--no-decision", dest="fit_decision", action="store_false",
                    help="fit the temperature only; keep the model's decision bias as it is")
    ca.add_argument("--scalar-only", dest="per_label", action="store_false",
                    help="fit one bias for every label; never per-label biases")
    ca.add_argument("--alpha", type=float, default=0.05,
                    help="keep a fitted decision only when its held-out gain is significant at this level")
    ca.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch")
    ca.set_defaults(func=_lazy("inspection.calibrate"))
    return parser


def _lazy(module: str) -> Callable[[argparse.Namespace], int]:
    """The `run` of a command module, imported when the command runs (it imports torch)."""

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(f"{__package__}.{module}").run(args)

    return run


def _bad_override(config_path: str, overrides: Dict) -> Optional[str]:
    """The first override that names no setting of the config file (a missing file is train's to report)."""
    if not Path(config_path).is_file():
        return None
    from spacy.util import load_config

    config = load_config(config_path, interpolate=False)
    return next((problem for problem in (unknown_override(config, key) for key in overrides) if problem), None)


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
        problem = _bad_override(args.config, overrides)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
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
