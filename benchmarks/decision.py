"""What the fitted decision bias does on held-out data, with and without the guard.

    python -m benchmarks.decision MODEL [MODEL ...] --dataset ../shared/datasets/conll2003 --fit-limit 500

For each pipeline: tag `validation` (its first --fit-limit rows: a small new domain's dev set) and
`test` once, then score test under
- no bias (the model as trained),
- the decision `calibrate` keeps (the guarded fit: kept only when cross-validation on the fit rows
  finds a significant gain),
- the unguarded arg-max scalar and per-label biases on the fit rows (what a plain search would pick).
Writes one JSON per model to benchmarks/results/decision/ and prints a table.

--lowercase scores a shifted domain instead: every token of validation and test lowercased (as in
much social-media text), written once as a hub-layout copy under benchmarks/models/ (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import spacy

from bilstm_tagger.data.readers import HFDatasetReader
from bilstm_tagger.inspection.calibrate import find_tagger, split_fitter, tag_split
from bilstm_tagger.pipeline.decision import describe_bias
from bilstm_tagger.pipeline.decision_fit import fit_decision

RESULTS = Path(__file__).resolve().parent / "results" / "decision"


def tagged(nlp, dataset: str, split: str, limit: int):
    name, pipe = find_tagger(nlp)
    reader = HFDatasetReader(dataset, split, None, "tokens", "ner_tags", "ents", "sc", limit, None)
    return tag_split(nlp, list(reader(nlp)))


def lowercased_copy(dataset: str) -> str:
    """A hub-layout copy of the dataset's validation and test splits with every token lowercased."""
    from datasets import load_dataset

    out = Path(__file__).resolve().parent / "models" / f"{Path(dataset).name}_lowercase"
    if not (out / "data").is_dir():
        splits = load_dataset(dataset)
        for split in ("validation", "test"):
            lowered = splits[split].map(lambda row: {"tokens": [t.lower() for t in row["tokens"]]})
            lowered.to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    return str(out)


def measure(model: str, dataset: str, fit_limit: int) -> dict:
    nlp = spacy.load(model)
    _, pipe = find_tagger(nlp)
    pipe.cfg["decision_bias"], pipe.cfg["temperature"] = None, None
    start = time.process_time()
    fit_rows, test_rows = tagged(nlp, dataset, "validation", fit_limit), tagged(nlp, dataset, "test", 0)
    fit_fitter, test_fitter = split_fitter(fit_rows, pipe), split_fitter(test_rows, pipe)
    fit = fit_decision(fit_fitter, None)
    candidates = {
        "none": None,
        "calibrate (guarded)": fit.bias,
        "arg-max scalar (unguarded)": fit.scalar,
        "arg-max per-label (unguarded)": fit.label_bias if fit.label_bias is not None else fit_fitter.fit_per_label(fit.scalar),
    }
    rows = {name: {"bias": bias, "fit": vars(fit_fitter.score(bias)), "test": vars(test_fitter.score(bias))}
            for name, bias in candidates.items()}
    return {"model": model, "dataset": dataset, "fit_split": f"validation[:{fit_limit}]" if fit_limit else "validation",
            "kept": fit.kind, "scalar_heldout_gain": fit.scalar_test.mean, "scalar_p_value": fit.scalar_test.p_value,
            "cpu_s": time.process_time() - start, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="pipeline directories (model-best of benchmarks.ner train)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--fit-limit", type=int, default=500, help="fit on the first N validation rows (0 = all)")
    parser.add_argument("--lowercase", action="store_true", help="score on lowercased validation and test (a shifted domain)")
    args = parser.parse_args(argv)
    dataset = lowercased_copy(args.dataset) if args.lowercase else args.dataset
    RESULTS.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        result = measure(model, dataset, args.fit_limit)
        name = Path(model).parent.name if Path(model).name.startswith("model-") else Path(model).name
        (RESULTS / f"{name}_fit{args.fit_limit}{'_lowercase' if args.lowercase else ''}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n{name}: fit on {result['fit_split']}, held-out gain {100 * result['scalar_heldout_gain']:+.2f} F1 "
              f"(p = {result['scalar_p_value']:.3f}) -> {result['kept']}")
        print(f"  {'decision':30s} {'bias':28s} {'fit F1':>7s} {'test P':>7s} {'test R':>7s} {'test F1':>7s}")
        for label, row in result["rows"].items():
            t = row["test"]
            print(f"  {label:30s} {describe_bias(row['bias']):28s} {100 * row['fit']['f']:7.2f} {100 * t['p']:7.2f} "
                  f"{100 * t['r']:7.2f} {100 * t['f']:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
