"""Tagging speed of trained pipelines as a ratio to spaCy's `ner`, measured in one process.

    python -m benchmarks.speed_models --dataset ../shared/datasets/conll2003 --threads 2 \
        bilstm_minilm_frozen bilstm_minilm_finetune bilstm_context

Loads each named system's model-best from benchmarks/models/<dataset>/, builds the peer as
benchmarks.threads does (configs/ner.cfg and spaCy's efficiency `ner`, initialized on 500 train
sentences: untrained weights tag as fast as trained ones), and tags the test split with nlp.pipe,
interleaved A B C ..., median of --repeats passes after a warm-up, with a frozen transformer's
feature cache emptied before each pass (new text never hits it). A system trained with document
context (group_sentences > 1 in its result file) tags the split grouped the same way.
--precision int8 bf16 adds each system (and configs/ner.cfg) tagging in that precision (as
`python -m bilstm_tagger quantize` writes it); --f1 scores every trained variant on the test split.
Writes benchmarks/results/<dataset>/speed_models.json.
"""
from __future__ import annotations

from . import pin_threads

import argparse
import json
import statistics
import sys
import time
from typing import Dict, List


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("systems", nargs="+", help="names under benchmarks/models/<dataset>/")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", nargs="*", default=[], choices=["int8", "bf16"],
                        help="also time each pipeline tagging in these precisions")
    parser.add_argument("--f1", action="store_true", help="score each trained system (and variant) on the test split")
    args = parser.parse_args(argv)
    pin_threads(args.threads)

    import spacy
    import torch

    from thinc.api import Model

    from bilstm_tagger.data.readers import create_hf_reader
    from bilstm_tagger.ml.transformer import clear_feature_caches

    from .runner import MODELS, RESULTS, _slug, environment, score_split
    from .threads import build_pipelines, load_ours

    torch.set_num_threads(args.threads)
    ours, peer, _ = build_pipelines(args.dataset, args.threads, precision="fp32")
    pipelines = {"bilstm (configs/ner.cfg) [fp32]": ours, "spacy_efficiency": peer}
    groups = {name: 1 for name in pipelines}
    for precision in args.precision:
        pipelines[f"bilstm (configs/ner.cfg) [{precision}]"] = build_pipelines(args.dataset, args.threads, 1, precision)[0]
        groups[f"bilstm (configs/ner.cfg) [{precision}]"] = 1
    trained = []
    for name in args.systems:
        result = RESULTS / _slug(args.dataset) / f"{name}.json"
        group = json.loads(result.read_text()).get("group_sentences", 1) if result.exists() else 1
        for precision in ["fp32"] + args.precision:
            variant = name if precision == "fp32" else f"{name} [{precision}]"
            # --threads over the saved torch_threads too: benchmarks.ner trains with 1 thread and saves it
            pipelines[variant] = load_ours(MODELS / _slug(args.dataset) / name / "model-best",
                                           {"precision": precision, "torch_threads": args.threads})
            groups[variant] = group
            trained.append(variant)
    blank = spacy.blank("en")
    texts = {g: [([t.text for t in eg.predicted], [t.is_sent_start for t in eg.predicted] if g > 1 else None)
                 for eg in create_hf_reader(args.dataset, split="test", group_sentences=g)(blank)]
             for g in set(groups.values())}
    n_words = sum(len(w) for w, _ in texts[1])

    def clear_caches(nlp) -> None:
        # A frozen transformer caches features by the doc's words; new text never hits that cache.
        for _, pipe in nlp.pipeline:
            if isinstance(getattr(pipe, "model", None), Model):
                clear_feature_caches(pipe.model)

    def docs(nlp, g: int):
        return [spacy.tokens.Doc(nlp.vocab, words=w, sent_starts=s) for w, s in texts[g]]

    for name, nlp in pipelines.items():  # warm-up (a frozen transformer's cache is per doc: fresh docs each pass)
        list(nlp.pipe(docs(nlp, groups[name])[:200], batch_size=args.batch_size))
    runs: Dict[str, List[float]] = {name: [] for name in pipelines}
    for _ in range(args.repeats):
        for name, nlp in pipelines.items():
            batch = docs(nlp, groups[name])
            clear_caches(nlp)
            start = time.perf_counter()
            for _ in nlp.pipe(batch, batch_size=args.batch_size):
                pass
            runs[name].append(n_words / (time.perf_counter() - start))
    peer_wps = statistics.median(runs["spacy_efficiency"])
    f1 = {name: score_split(pipelines[name], args.dataset, "test", groups[name])["ents_f"] for name in trained} if args.f1 else {}
    out = {
        "dataset": args.dataset, "split": "test", "words": n_words, "environment": environment(args.threads),
        "command": "python -m benchmarks.speed_models " + " ".join(sys.argv[1:] if argv is None else argv),
        "systems": {name: {"words_per_s_median": statistics.median(r), "runs": r, "group_sentences": groups[name],
                           "ratio_to_spacy_efficiency": statistics.median(r) / peer_wps, "test_f1": f1.get(name)}
                    for name, r in runs.items()},
    }
    path = RESULTS / _slug(args.dataset) / "speed_models.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for name, row in out["systems"].items():
        score = f"  test F1 {100 * row['test_f1']:.2f}" if row["test_f1"] is not None else ""
        print(f"{name:36s} {row['words_per_s_median']:10,.0f} words/s  {row['ratio_to_spacy_efficiency']:.2f}x spaCy{score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
