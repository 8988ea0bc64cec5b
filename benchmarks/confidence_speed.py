"""Tagging speed as a ratio to spaCy's `ner` in the same process, to check that filing the scores
for `Span._.confidence` leaves inference speed unchanged (and what reading the confidences costs).

    python -m benchmarks.confidence_speed --dataset ../shared/datasets/conll2003

For another checkout (say the base commit), import the package from there and this file by path
(running it as `python benchmarks/confidence_speed.py` would let benchmarks/profile.py shadow the
standard library's `profile`):

    PYTHONPATH=<checkout> python -c "import runpy, sys; sys.argv = ['x', '--dataset', '../shared/datasets/conll2003']; runpy.run_path('benchmarks/confidence_speed.py', run_name='__main__')"

Same set-up as `benchmarks/threads.py`'s child: configs/ner.cfg (untrained weights tag as fast as
trained ones) and spaCy's `init config -p ner -o efficiency`, both initialized on 500 train
sentences, tag the test split with nlp.pipe (batch 256), interleaved, median of --repeats after a
warm-up round. Run it once with PYTHONPATH at the base commit and once at this branch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def measure(dataset: str, torch_threads: int, repeats: int) -> dict:
    import torch
    from spacy.tokens import Doc, Span

    import bilstm_tagger
    from benchmarks.threads import build_pipelines  # the same set-up as the thread benchmark

    ours, peer, words = build_pipelines(dataset, torch_threads)
    n_words = sum(map(len, words))
    has_confidence = Span.has_extension("confidence")
    runs = {"ours": [], "spacy_ner": [], "ours_reading_confidence": []}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for name, nlp in (("ours", ours), ("spacy_ner", peer), ("ours_reading_confidence", ours)):
            if name == "ours_reading_confidence" and not has_confidence:
                continue
            docs = [Doc(nlp.vocab, words=w) for w in words]
            start = time.perf_counter()
            for doc in nlp.pipe(docs, batch_size=256):
                if name == "ours_reading_confidence":
                    for ent in doc.ents:
                        ent._.confidence
            runs[name].append(n_words / (time.perf_counter() - start))
    result = {name: statistics.median(r[1:]) for name, r in runs.items() if r}
    result["ratio"] = result["ours"] / result["spacy_ner"]
    if "ours_reading_confidence" in result:
        result["ratio_reading_confidence"] = result["ours_reading_confidence"] / result["spacy_ner"]
    return {"package": bilstm_tagger.__file__, "torch_threads": torch.get_num_threads(), "words": n_words, **result}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.confidence_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.dataset, args.torch_threads, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
