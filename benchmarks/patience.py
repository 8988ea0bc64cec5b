"""Which patience picks better checkpoints? Replays spaCy's stopping rule on recorded dev curves.

    python -m benchmarks.patience benchmarks/results/conll2003/slice1k_bilstm.json ...

Each result file (from `python -m benchmarks.ner train`, ideally run with a patience too long to
trigger, e.g. `--set training.patience.epochs=1000 --set training.patience.min_steps=100000`)
holds the dev score at every evaluation. For each patience rule this replays what `spacy train`
would have done: stop at the first evaluation where `step - best_step >= patience` (spaCy's
`train_while_improving`), keep model-best = the best dev score so far. It prints the step and
CPU time at the stop, the dev F1 of the checkpoint kept, and how far that is below the best dev
F1 of the whole recorded run. The dev F1 is on the split used for the choice (spaCy's own
choice), so compare the rules with each other, not with test scores.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

# Patience rules: (name, epochs, min_steps), as bilstm_tagger.epoch_steps.v1 sizes them.
RULES: List[Tuple[str, float, int]] = [
    ("10 epochs, min 500 steps (default)", 10.0, 500),
    ("10 epochs, min 1000 steps", 10.0, 1000),
    ("20 epochs, min 1000 steps", 20.0, 1000),
    ("20 epochs, min 2000 steps", 20.0, 2000),
]


def replay(curve: List[Dict[str, float]], patience: int) -> Dict[str, float]:
    """spaCy's stopping rule on a recorded curve of {step, cpu_s, score}."""
    best = curve[0]
    for point in curve:
        if point["score"] > best["score"]:
            best = point
        if point["step"] - best["step"] >= patience:
            return {"stop_step": point["step"], "stop_cpu_s": point["cpu_s"], "best_step": best["step"], "dev_f": best["score"], "stopped": True}
    last = curve[-1]
    return {"stop_step": last["step"], "stop_cpu_s": last["cpu_s"], "best_step": best["step"], "dev_f": best["score"], "stopped": False}


def steps_per_epoch(result: dict, batch_words: int) -> float:
    """Update steps per pass over the training data, as bilstm_tagger.epoch_steps.v1 counts them."""
    from bilstm_tagger.data.schedules import epoch_steps

    limit = int((result.get("overrides") or {}).get("corpora.train.limit") or 0)
    return epoch_steps(result["dataset"], limit=limit, batch_words=batch_words, epochs=1.0, min_steps=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.patience", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="result JSON files from benchmarks.ner train")
    parser.add_argument("--batch-words", type=int, default=1000, help="the batcher's final size ([training.batcher.size] stop)")
    args = parser.parse_args(argv)
    for path in args.results:
        result = json.loads(Path(path).read_text())
        curve = [c for c in result["curve"] if c["step"] > 0]
        epoch = steps_per_epoch(result, args.batch_words)
        overall = max(c["score"] for c in curve)
        print(f"\n{result['system']}: {len(curve)} evaluations up to step {curve[-1]['step']} "
              f"({curve[-1]['cpu_s'] / 60:.1f} CPU-min), {epoch:.0f} steps per epoch, best dev F1 {100 * overall:.2f}")
        print(f"  {'rule':36s} {'patience':>8s} {'stop step':>9s} {'CPU-min':>8s} {'kept step':>9s} {'dev F1':>7s} {'below best':>10s}")
        for name, epochs, min_steps in RULES:
            patience = max(min_steps, round(epochs * epoch))
            r = replay(curve, patience)
            stop = f"{r['stop_step']}" if r["stopped"] else f"{r['stop_step']}*"
            print(f"  {name:36s} {patience:8d} {stop:>9s} {r['stop_cpu_s'] / 60:8.1f} {r['best_step']:9d} "
                  f"{100 * r['dev_f']:7.2f} {100 * (overall - r['dev_f']):10.2f}")
    print("\n* the recorded run ended (time budget) before this rule would have stopped it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
