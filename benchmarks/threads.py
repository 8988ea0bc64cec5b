"""Thread policies on an idle and on a busy machine: words/s of our tagger vs spaCy's `ner`.

    python -m benchmarks.threads --dataset ../shared/datasets/conll2003

Each policy runs in a fresh process (OpenMP reads its wait policy when torch
loads), which builds two pipelines with the same tokens: configs/ner.cfg
(untrained weights tag exactly as fast as trained ones) and spaCy's
`init config -p ner -o efficiency`, both initialized on 500 train sentences.
They tag the test split with nlp.pipe, interleaved A B A B, median of 3.
"Busy" runs one CPU-bound process on the side for the whole measurement.
The ratio (ours / spaCy, same process, same moment) is what to compare.

Trained pipelines instead (both tagging with the policy's settings put over their saved config):

    python -m benchmarks.threads --dataset ../shared/datasets/conll2003 \
        --model benchmarks/models/conll2003/bilstm_speed/model-best \
        --peer-model benchmarks/models/conll2003/spacy_speed/model-best

writes results/threads_trained_<model name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Union

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "threads.json"

# name -> (torch_threads setting of the component, extra environment, precision)
POLICIES = {
    "1 thread, fp32": (1, {}, "fp32"),
    "2 threads, fp32": (2, {}, "fp32"),
    "2 threads, fp32, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}, "fp32"),
    "torch_threads = 0, fp32": (0, {}, "fp32"),
    "torch_threads = 0, int8": (0, {}, "int8"),
    "default config (torch_threads = 0, precision auto)": (0, {}, "auto"),
}


def build_pipelines(dataset: str, torch_threads: int, limit: int = 0, precision: Optional[str] = None):
    """configs/ner.cfg (tagging in `precision`; None: the config's own) and spaCy's efficiency `ner`,
    both initialized on 500 train sentences, and the test split's words (the first `limit`
    sentences; 0 = all)."""
    from spacy.cli.init_config import init_config
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    overrides = {"paths.dataset": dataset, "corpora.train.limit": 500, "corpora.dev.limit": 10,
                 "components.bilstm_tagger.torch_threads": torch_threads}
    if precision is not None:
        overrides["components.bilstm_tagger.precision"] = precision
    ours = init_nlp(load_config(REPO / "configs" / "ner.cfg", overrides=overrides, interpolate=False))
    config = init_config(lang="en", pipeline=["ner"], optimize="efficiency", gpu=False, pretraining=False, silent=True)
    config["corpora"]["train"] = config["corpora"]["dev"] = {
        "@readers": "bilstm_tagger.HFDataset.v1", "path": dataset, "split": "train", "limit": 500,
    }
    peer = init_nlp(config)
    return ours, peer, read_test_words(dataset, limit)


def read_test_words(dataset: str, limit: int = 0) -> List[List[str]]:
    """The words of the test split's first `limit` sentences (0 = all)."""
    import spacy

    from bilstm_tagger.data.readers import create_hf_reader

    return [[t.text for t in eg.reference] for eg in create_hf_reader(dataset, split="test", limit=limit)(spacy.blank("en"))]


def load_ours(model: Union[str, Path], settings: dict):
    """A saved pipeline with `settings` (e.g. torch_threads, precision) put over every tagger of ours in it."""
    import spacy

    from bilstm_tagger.pipeline.quantize import our_components

    return spacy.load(model, config={"components": {name: settings for name in our_components(model)}})


def load_trained(model: str, peer_model: str, dataset: str, torch_threads: int, limit: int, precision: str):
    """Our trained pipeline with the policy's thread count and precision over its saved settings,
    a trained spaCy pipeline as it was saved, and the test split's words."""
    import spacy

    ours = load_ours(model, {"torch_threads": torch_threads, "precision": precision})
    return ours, spacy.load(peer_model), read_test_words(dataset, limit)


def child(dataset: str, torch_threads: int, repeats: int, limit: int = 0, precision: str = "fp32",
          model: Optional[str] = None, peer_model: Optional[str] = None) -> dict:
    import spacy

    if model:
        ours, peer, words = load_trained(model, peer_model, dataset, torch_threads, limit, precision)
    else:
        ours, peer, words = build_pipelines(dataset, torch_threads, limit, precision)
    n_words = sum(map(len, words))
    wps = {"ours": [], "spacy_ner": []}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for name, nlp in (("ours", ours), ("spacy_ner", peer)):
            docs = [spacy.tokens.Doc(nlp.vocab, words=w) for w in words]
            start = time.perf_counter()
            for _ in nlp.pipe(docs, batch_size=256):
                pass
            wps[name].append(n_words / (time.perf_counter() - start))
    import torch

    return {name: statistics.median(runs[1:]) for name, runs in wps.items()} | {"torch_threads_in_use": torch.get_num_threads()}


def _spin() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="tag only the first N test sentences (0 = all)")
    parser.add_argument("--policies", nargs="*", default=list(POLICIES), choices=list(POLICIES), metavar="POLICY",
                        help="which policies to run (default: all)")
    parser.add_argument("--model", default=None, help="a trained pipeline of ours instead of untrained configs/ner.cfg (needs --peer-model)")
    parser.add_argument("--peer-model", default=None, help="a trained spaCy `ner` pipeline to compare --model with")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if bool(args.model) != bool(args.peer_model):
        parser.error("--model and --peer-model go together")
    if args.child is not None:
        print(json.dumps(child(args.dataset, args.child, args.repeats, args.limit, args.child_precision, args.model, args.peer_model)))
        return 0
    trained = ["--model", args.model, "--peer-model", args.peer_model] if args.model else []
    rows = []
    for load in ("idle", "one core busy"):
        for name in args.policies:
            threads, env, precision = POLICIES[name]
            spinner = _spin() if load != "idle" else None
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.threads", "--dataset", args.dataset, "--repeats", str(args.repeats), "--limit", str(args.limit), "--child", str(threads), "--child-precision", precision, *trained],
                    capture_output=True, text=True, cwd=str(REPO),
                    env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **env},
                )
            finally:
                if spinner:
                    spinner.kill()
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            row = {"load": load, "policy": name, **result, "ratio": result["ours"] / result["spacy_ner"]}
            rows.append(row)
            print(f"{load:14s} {name:38s} ours {row['ours']:8,.0f}  spaCy ner {row['spacy_ner']:8,.0f} words/s  ratio {row['ratio']:.2f}", flush=True)
    if args.limit:
        return 0  # a smoke run: nothing to record
    path = RESULTS.with_name(f"threads_trained_{Path(args.model).resolve().parent.name}.json") if args.model else RESULTS
    path.write_text(json.dumps({"command": "python -m benchmarks.threads " + " ".join(sys.argv[1:] if argv is None else argv), "cpus": os.cpu_count(),
                                "date": time.strftime("%Y-%m-%d"), "model": args.model, "peer_model": args.peer_model, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
