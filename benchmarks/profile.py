"""Profile one system's training updates or inference on a dataset.

    python -m benchmarks.profile train --dataset ../shared/datasets/conll2003 [--steps 30] [--torch]
    python -m benchmarks.profile infer --dataset ../shared/datasets/conll2003 --model training/ner/model-best

Prints words/s and the top of a cProfile (or, with --torch, torch.profiler) table.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def word_batches(examples, words: int = 1000) -> list:
    """Examples in order, cut into batches of at least `words` words (a trailing partial batch is dropped)."""
    batches, batch, n = [], [], 0
    for eg in examples:
        batch.append(eg)
        n += len(eg)
        if n >= words:
            batches.append(batch)
            batch, n = [], 0
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["train", "infer"])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="configs/ner.cfg")
    parser.add_argument("--model", default=None, help="pipeline dir (infer)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--torch", action="store_true", help="torch.profiler instead of cProfile")
    args = parser.parse_args()

    import spacy
    import torch
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    from bilstm_tagger.data.readers import create_hf_reader

    torch.set_num_threads(args.threads)
    if args.what == "train":
        overrides = {"paths.dataset": args.dataset, "corpora.train.limit": 3000, "corpora.dev.limit": 10}
        nlp = init_nlp(load_config(args.config, overrides=overrides, interpolate=False))
        batches = word_batches(create_hf_reader(args.dataset, split="train", limit=3000)(nlp))
        nlp.update(batches[0])  # warm-up
        work = batches[1 : args.steps + 1]
        n_words = sum(len(eg) for b in work for eg in b)

        def run() -> None:
            for b in work:
                nlp.update(b, drop=0.5)
    else:
        nlp = spacy.load(args.model)
        docs = [eg.predicted for eg in create_hf_reader(args.dataset, split="test")(nlp)]
        n_words = sum(len(d) for d in docs)

        def run() -> None:
            list(nlp.pipe((d.copy() for d in docs), batch_size=256))

    start = time.perf_counter()
    run()
    print(f"{args.what}: {n_words / (time.perf_counter() - start):,.0f} words/s ({args.threads} thread(s), unprofiled)")
    if args.torch:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    else:
        profiler = cProfile.Profile()
        profiler.enable()
        run()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
