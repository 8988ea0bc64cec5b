"""Distillation choices on validation: what the student learns from, at a fixed number of steps.

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 python -m benchmarks.distill_ablations \\
        --teacher TEACHER_DIR --dataset ../shared/datasets/conll2003 \\
        --unlabeled ../shared/datasets/news_unlabeled --out /tmp/ablations [--stories 1500] [--steps 2000]

Every student is `configs/ner.cfg` (one torch thread) trained for --steps steps on the gold train split
plus one kind of teacher rows over the same --stories unlabeled news stories (cut into sentences):

- gold: no teacher rows (the baseline);
- soft: TEACHER's exact token marginals on the unlabeled sentences and on the gold rows (`distill`'s default);
- hard: TEACHER's entities on the unlabeled sentences as silver gold (`distill --hard-labels`);
- soft_w05: soft with `distill_weight` 0.5;
- soft_t2: soft with `distill_temperature` 2 (the student's scores halved in the distillation term);
- soft_25pct: soft on the first quarter of the unlabeled sentences;
- packed: soft on rows of consecutive sentences packed up to 64 words (`--pack-words 64`);
- self: the gold-only student's own marginals (self-training);
- ensemble: the mean of TEACHER's and the gold-only student's marginals.

Each student's model-best is chosen on validation, and validation F1 (`spacy train`'s ENTS_F of
model-best) is all that is reported: these choose settings, the test split is not read.
Results go to --out/ablations.json and, with --record, benchmarks/results/distill/ablations.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
RUNS = ("gold", "soft", "hard", "soft_w05", "soft_t2", "soft_25pct", "packed", "self", "ensemble")


def bilstm(*args: str, log: Path) -> float:
    """Run `python -m bilstm_tagger ARGS`, output to `log`; its user+system CPU seconds (it fails loudly)."""
    before = os.times()
    with open(log, "w", encoding="utf8") as out:
        code = subprocess.call([sys.executable, "-m", "bilstm_tagger", *args], cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT)
    after = os.times()
    if code != 0:
        raise SystemExit(f"python -m bilstm_tagger {' '.join(args[:2])} ... failed; see {log}")
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def teacher_stage(teacher: str, out: Path, args, extra: List[str], log: Path) -> float:
    return bilstm("distill", teacher, "configs/ner.cfg", "--unlabeled", args.unlabeled, "--unlabeled-limit", str(args.stories),
                  "--output", str(out), "--paths.dataset", args.dataset, "--teacher-only", *extra, log=log)


def student(name: str, args, corpus: Dict[str, object], extra: List[str]) -> dict:
    """Train configs/ner.cfg on gold + the given teacher rows for --steps steps; its best validation F1.
    The config is what `distill` would train (its DistillCorpus.v1 section), written beside the run."""
    from bilstm_tagger.distill.student import distill_config, load_student

    student_cfg = load_student(str(REPO / "configs" / "ner.cfg"), {"paths.dataset": args.dataset})
    teacher_gold = corpus.get("teacher_gold")
    config = distill_config(student_cfg, [Path(p) for p in corpus.get("teacher", [])], Path(teacher_gold) if teacher_gold else None)
    config["corpora"]["train"]["teacher_limit"] = int(corpus.get("teacher_limit", 0))
    path = Path(args.out) / f"{name}.cfg"
    config.to_disk(path)
    out = Path(args.out) / name
    overrides = ["--training.max_steps", str(args.steps), "--components.bilstm_tagger.torch_threads", "1"]
    cpu = bilstm("train", str(path), "--output", str(out), *overrides, *extra, log=Path(args.out) / f"{name}.log")
    meta = json.loads((out / "model-best" / "meta.json").read_text(encoding="utf8"))
    return {"dev_ents_f": meta["performance"]["ents_f"], "train_cpu_s": round(cpu, 1), "overrides": extra, "corpus": corpus}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the teacher pipeline (a bilstm_tagger pipeline with marginals)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--unlabeled", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stories", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=RUNS)
    parser.add_argument("--record", action="store_true", help="also write benchmarks/results/distill/ablations.json")
    args = parser.parse_args(argv)
    if args.record and set(args.runs) != set(RUNS):
        parser.error("--record writes the full ablation table: run every run, or keep --out's ablations.json")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: Dict[str, dict] = {}
    soft = out / "soft_teacher" / "teacher"
    teacher_cpu = teacher_stage(args.teacher, out / "soft_teacher", args, [], out / "soft_teacher.log")
    sentences = json.loads((soft / "unlabeled" / "_annotate.json").read_text())["last_run"]
    soft_corpus = {"teacher": [str(soft / "unlabeled")], "teacher_gold": str(soft / "train")}
    for name in args.runs:
        start = time.time()
        if name == "gold":
            results[name] = student(name, args, {}, [])
        elif name == "soft":
            results[name] = student(name, args, soft_corpus, [])
        elif name == "hard":
            teacher_stage(args.teacher, out / "hard_teacher", args, ["--hard-labels"], out / "hard_teacher.log")
            results[name] = student(name, args, {"teacher": [str(out / "hard_teacher" / "teacher" / "unlabeled")]}, [])
        elif name == "soft_w05":
            results[name] = student(name, args, soft_corpus, ["--components.bilstm_tagger.distill_weight", "0.5"])
        elif name == "soft_t2":
            results[name] = student(name, args, soft_corpus, ["--components.bilstm_tagger.distill_temperature", "2.0"])
        elif name == "soft_25pct":
            import pyarrow.parquet as pq

            n = sum(pq.ParquetFile(p).metadata.num_rows for p in sorted((soft / "unlabeled").glob("part-*.parquet")))
            results[name] = student(name, args, {**soft_corpus, "teacher_limit": n // 4}, [])
        elif name == "packed":
            teacher_stage(args.teacher, out / "packed_teacher", args, ["--pack-words", "64", "--no-teacher-train"], out / "packed_teacher.log")
            results[name] = student(name, args, {"teacher": [str(out / "packed_teacher" / "teacher" / "unlabeled")],
                                                 "teacher_gold": str(soft / "train")}, [])
        elif name == "self":
            if "gold" not in results:
                raise SystemExit("the self run needs the gold run first (its model is the teacher)")
            teacher_stage(str(out / "gold" / "model-best"), out / "self_teacher", args, [], out / "self_teacher.log")
            self_dir = out / "self_teacher" / "teacher"
            results[name] = student(name, args, {"teacher": [str(self_dir / "unlabeled")], "teacher_gold": str(self_dir / "train")}, [])
        elif name == "ensemble":
            from bilstm_tagger.distill.ensemble import average_shards

            self_dir = out / "self_teacher" / "teacher"
            if not self_dir.is_dir():
                raise SystemExit("the ensemble run needs the self run first (the gold-only student is its second member)")
            for part in ("unlabeled", "train"):
                average_shards([soft / part, self_dir / part], out / "ensemble_teacher" / part)
            ens = out / "ensemble_teacher"
            results[name] = student(name, args, {"teacher": [str(ens / "unlabeled")], "teacher_gold": str(ens / "train")}, [])
        results[name]["wall_s"] = round(time.time() - start, 1)
        print(f"{name}: validation F1 {results[name]['dev_ents_f']:.4f}", flush=True)
    report = {
        "command": "python -m benchmarks.distill_ablations " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"), "teacher": args.teacher, "stories": args.stories, "steps": args.steps,
        "unlabeled_sentences_words": sentences.get("words"), "teacher_stage_cpu_s": round(teacher_cpu, 1), "runs": results,
    }
    (out / "ablations.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.record:
        target = REPO / "benchmarks" / "results" / "distill" / "ablations.json"
        target.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
