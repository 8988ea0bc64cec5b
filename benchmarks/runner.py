"""The work behind `python -m benchmarks.ner` (imported after thread settings are in place)."""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional

import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from spacy.training.initialize import init_nlp
from spacy.training.loop import train as spacy_train_loop
from spacy.util import registry

from bilstm_tagger.annotate.local import SETTINGS_FILE
from bilstm_tagger.data.readers import create_hf_reader
from bilstm_tagger.pipeline.scoring import score_seqeval

from .systems import REPO, SYSTEMS, load_system_config

# BILSTM_TAGGER_BENCH_DIR moves results, models and the README table elsewhere (the tests use it).
_ROOT = Path(os.environ.get("BILSTM_TAGGER_BENCH_DIR", REPO / "benchmarks"))
RESULTS = _ROOT / "results"
MODELS = _ROOT / "models"  # trained pipelines; git-ignored
README = _ROOT / "README.md"


class BudgetExhausted(Exception):
    pass


@registry.loggers("benchmarks.BudgetLogger.v1")
def budget_logger(budget_s: float, log_path: str):
    """spaCy's console logger, plus a JSON line per evaluation and a stop when the CPU budget is spent."""
    console = registry.loggers.get("spacy.ConsoleLogger.v3")(progress_bar=None)

    def setup(nlp, stdout=sys.stdout, stderr=sys.stderr):
        log_step, finalize = console(nlp, stdout, stderr)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = open(log_path, "w", encoding="utf8")

        def step(info: Optional[dict]) -> None:
            log_step(info)
            cpu = time.process_time() - cpu0
            if info is not None:
                record = {k: info[k] for k in ("epoch", "step", "score", "words")}
                record.update(cpu_s=cpu, wall_s=time.perf_counter() - wall0, losses=info["losses"])
                out.write(json.dumps(record, default=float) + "\n")
                out.flush()
            if cpu > budget_s:
                raise BudgetExhausted(f"CPU budget of {budget_s:.0f}s spent")

        def close() -> None:
            finalize()
            out.close()

        return step, close

    return setup


def _slug(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset).name if Path(dataset).exists() else dataset)


def environment(threads: int) -> dict:
    cpu = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "")
    except OSError:
        pass
    import datasets
    import thinc

    return {
        "date": date.today().isoformat(),
        "cpu": cpu or platform.processor(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spacy": spacy.__version__,
        "thinc": thinc.__version__,
        "datasets": datasets.__version__,
    }


def gold_examples(nlp, dataset: str, split: str, limit: int = 0, group: int = 1) -> List[Example]:
    return list(create_hf_reader(dataset, split=split, limit=limit, group_sentences=group)(nlp))


def score_split(nlp, dataset: str, split: str, group: int = 1) -> dict:
    """seqeval scores of `nlp` on a split: the same call for every system (per row, however grouped)."""
    gold = gold_examples(nlp, dataset, split, group=group)
    docs = list(nlp.pipe((eg.predicted for eg in gold), batch_size=256))
    return score_seqeval([Example(d, eg.reference) for d, eg in zip(docs, gold)], target="ents")


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def train(
    system_name: str, dataset: str, budget_s: float, threads: int, vectors: Optional[str],
    name: Optional[str] = None, sets: Optional[Dict[str, object]] = None, test: bool = True, group: Optional[int] = None,
    teacher: Optional[str] = None,
) -> None:
    """Train one system (plus `sets` overrides, saved as `name`) and score it on validation (and test)."""
    system = SYSTEMS[system_name]
    name = name or system.name
    group = group or system.group_sentences
    torch.set_num_threads(threads)
    if system.teacher and not teacher:
        raise SystemExit(f"system {system.name} needs --teacher: the teacher/ folder of a `python -m bilstm_tagger distill` run")
    if system.teacher and group != 1:
        raise SystemExit(f"{system.name}: distilled systems read one gold row per Doc (--group-sentences 1)")
    config = load_system_config(system, dataset, vectors, threads, sets, teacher)  # refuses bad settings before anything is removed
    out_dir = MODELS / _slug(dataset) / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for corpus in ("train", "dev"):
        if config["corpora"][corpus]["@readers"] == "bilstm_tagger.HFDataset.v1":
            config["corpora"][corpus]["group_sentences"] = group
    config["training"]["logger"] = {"@loggers": "benchmarks.BudgetLogger.v1", "budget_s": budget_s, "log_path": str(out_dir / "log.jsonl")}
    spacy.util.fix_random_seed(0)
    nlp = init_nlp(config)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stopped_by = "patience or max_steps"
    try:
        spacy_train_loop(nlp, out_dir, stdout=sys.stdout, stderr=sys.stderr)
    except BudgetExhausted:
        stopped_by = "time budget"
    train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    records = [json.loads(l) for l in (out_dir / "log.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: r["score"])
    best_nlp = spacy.load(out_dir / "model-best")
    result = {
        "system": name,
        "base_system": system.name,
        "overrides": sets or {},
        "description": system.description,
        "ours": system.ours,
        "dataset": dataset,
        "budget_cpu_s": budget_s,
        "environment": environment(threads),
        "train": {
            "stopped_by": stopped_by,
            "cpu_s": train_cpu,
            "wall_s": train_wall,
            "steps": records[-1]["step"],
            "words": records[-1]["words"],
            "words_per_cpu_s": records[-1]["words"] / records[-1]["cpu_s"] if records[-1]["cpu_s"] else None,
            "best_step": best["step"],
            "best_dev_score": best["score"],
            "time_to_best_cpu_s": best["cpu_s"],
            "time_to_best_wall_s": best["wall_s"],
        },
        "group_sentences": group,
        "teacher": teacher_source(teacher) if system.teacher else None,
        # What dev and test were tagged in ("auto" resolves per CPU), for our components.
        "precision": {name: pipe.precision for name, pipe in best_nlp.pipeline if hasattr(pipe, "set_precision")},
        "dev": score_split(best_nlp, dataset, "validation", group),
        # Variants chosen on validation skip test (--no-test): test is scored once per final configuration.
        "test": score_split(best_nlp, dataset, "test", group) if test else None,
        "curve": [{k: r[k] for k in ("step", "cpu_s", "wall_s", "score")} for r in records],
        "model_size_bytes": _dir_size(out_dir / "model-best"),
        "command": "python -m benchmarks.ner " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("ner.py") else
        f"python -m benchmarks.ner train --system {system.name} --dataset {dataset} --time-budget {budget_s:.0f}s --threads {threads}",
    }
    path = RESULTS / _slug(dataset) / ("" if test else "dev_only") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    test_f = f", test F1 {result['test']['ents_f']:.4f}" if test else ""
    print(f"{name}: dev F1 {result['dev']['ents_f']:.4f}{test_f} -> {path}")


def teacher_source(teacher: str) -> dict:
    """Where a distilled system's soft labels came from: per shard folder, the teacher pipeline(s), the
    rows and words in the shards (counted, as a resumed annotate run reports only what it redid) and the
    teacher's words/s where its last run tagged the whole folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    record: dict = {"folder": teacher}
    for part in ("unlabeled", "train"):
        folder = Path(teacher) / part
        if not folder.is_dir():
            continue
        tokens = [pq.read_table(p, columns=["tokens"]).column("tokens") for p in sorted(folder.glob("*.parquet"))]
        words = sum(int(pc.sum(pc.list_value_length(t)).as_py() or 0) for t in tokens)
        record_file = folder / SETTINGS_FILE
        info = json.loads(record_file.read_text(encoding="utf8")) if record_file.is_file() else {}
        run = info.get("last_run", {})
        record[part] = {
            "model": info.get("settings", {}).get("model"), "ensemble": info.get("ensemble"), "complete": info.get("complete"),
            "rows": sum(len(t) for t in tokens), "words": words,
            "words_per_s": run.get("words_per_second") if run.get("words") == words else None,
        }
    return record


def peak_rss(model: str, dataset: str, threads: int, batch_size: int) -> None:
    """Run in a fresh process: RSS after loading, and peak RSS after tagging the test split."""
    torch.set_num_threads(threads)
    nlp = spacy.load(model)
    docs = [eg.predicted for eg in gold_examples(nlp, dataset, "test")]
    loaded = _high_water_mark_kb()
    for _ in nlp.pipe(docs, batch_size=batch_size):
        pass
    peak = _high_water_mark_kb()
    print(json.dumps({"rss_after_load_mb": loaded / 1024, "peak_rss_mb": peak / 1024}))


def _high_water_mark_kb() -> int:
    """Peak RSS of this process image. (ru_maxrss would do, but Linux carries it across fork + exec,
    so a child of a large process would report its parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _measure_rss(dataset: str, names: List[str], threads: int, batch_size: int) -> Dict[str, dict]:
    rss = {}
    for name in names:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.ner", "rss", str(MODELS / _slug(dataset) / name / "model-best"), dataset,
             "--threads", str(threads), "--batch-size", str(batch_size)],
            capture_output=True, text=True, cwd=str(REPO), check=True,
        )
        rss[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rss


def memory(dataset: str, systems: Optional[List[str]], threads: int, batch_size: int) -> None:
    """Re-measure peak RSS (fresh process per system) into an existing speed.json."""
    path = RESULTS / _slug(dataset) / "speed.json"
    result = json.loads(path.read_text())
    names = systems or list(result["systems"])
    for name, values in _measure_rss(dataset, names, threads, batch_size).items():
        result["systems"][name].update(values)
        print(f"{name:24s} peak {values['peak_rss_mb']:.0f} MB (after loading {values['rss_after_load_mb']:.0f} MB)")
    result["memory_command"] = f"python -m benchmarks.ner memory --dataset {dataset} --threads {threads} --batch-size {batch_size}"
    path.write_text(json.dumps(result, indent=2) + "\n")


def _fresh_docs(nlp, words: List[List[str]]) -> List[Doc]:
    return [Doc(nlp.vocab, words=w) for w in words]


def _training_setup(system_name: str, dataset: str, threads: int, steps: int = 20):
    """A freshly initialized pipeline from the system's config and ~1,000-word batches of `train`."""
    system = SYSTEMS[system_name]
    config = load_system_config(system, dataset, _vectors_of(dataset, system_name), threads)
    config["corpora"]["train"]["limit"] = 2000
    config["corpora"]["dev"]["limit"] = 10
    spacy.util.fix_random_seed(0)
    nlp = init_nlp(config)
    batches, batch, n = [], [], 0
    for eg in gold_examples(nlp, dataset, "train", limit=2000):
        batch.append(eg)
        n += len(eg)
        if n >= 1000:
            batches.append(batch)
            batch, n = [], 0
    return nlp, batches[:steps]


def _train_words_per_s(nlp, batches) -> float:
    """Words/s of nlp.update over the batches."""
    n_words = sum(len(eg) for b in batches for eg in b)
    start = time.perf_counter()
    for b in batches:
        nlp.update(b, drop=0.1)
    return n_words / (time.perf_counter() - start)


def _vectors_of(dataset: str, system_name: str) -> Optional[str]:
    result = json.loads((RESULTS / _slug(dataset) / f"{system_name}.json").read_text())
    match = re.search(r"--vectors (\S+)", result["command"])
    return match.group(1) if match else None


def speed(dataset: str, systems: Optional[List[str]], threads: int, batch_size: int, repeats: int) -> None:
    torch.set_num_threads(threads)
    folder = RESULTS / _slug(dataset)
    names = systems or sorted(p.stem for p in folder.glob("*.json") if p.stem in SYSTEMS)
    pipelines = {name: spacy.load(MODELS / _slug(dataset) / name / "model-best") for name in names}
    words = [[t.text for t in eg.predicted] for eg in gold_examples(spacy.blank("en"), dataset, "test")]
    n_words = sum(map(len, words))
    timings: Dict[str, List[float]] = {name: [] for name in names}
    for nlp in pipelines.values():  # warm-up
        list(nlp.pipe(_fresh_docs(nlp, words[:500]), batch_size=batch_size))
    for _ in range(repeats):  # A B C A B C ...: drifts in machine load hit every system alike
        for name, nlp in pipelines.items():
            docs = _fresh_docs(nlp, words)
            start = time.perf_counter()
            for _ in nlp.pipe(docs, batch_size=batch_size):
                pass
            timings[name].append(n_words / (time.perf_counter() - start))
    train_wps: Dict[str, List[float]] = {name: [] for name in names}
    setups = {name: _training_setup(name, dataset, threads) for name in names}
    for _ in range(3):  # interleaved, as above
        for name in names:
            train_wps[name].append(_train_words_per_s(*setups[name]))
    del setups
    rss = _measure_rss(dataset, names, threads, batch_size)
    result = {
        "dataset": dataset,
        "split": "test",
        "words": n_words,
        "batch_size": batch_size,
        "repeats": repeats,
        "environment": environment(threads),
        "command": f"python -m benchmarks.ner speed --dataset {dataset} --threads {threads} --batch-size {batch_size} --repeats {repeats}",
        "systems": {
            name: {
                "inference_words_per_s_median": statistics.median(timings[name]),
                "inference_words_per_s_runs": timings[name],
                "train_words_per_s_median": statistics.median(train_wps[name]),
                **rss[name],
            }
            for name in names
        },
    }
    (folder / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in names:
        s = result["systems"][name]
        print(f"{name:24s} {s['inference_words_per_s_median']:10,.0f} words/s  train {s['train_words_per_s_median']:8,.0f} words/s  peak {s['peak_rss_mb']:.0f} MB")


def _fmt(x: Optional[float], pct: bool = True) -> str:
    return "—" if x is None else (f"{100 * x:.1f}" if pct else f"{x:,.0f}")


def _same_budget_note(results: Dict[str, dict]) -> List[str]:
    """Ablations may run on a shorter budget: compare them with the base run's dev curve at that budget."""
    base = results.get("bilstm")
    if not base or "curve" not in base:
        return []
    notes = []
    for budget in sorted({r["budget_cpu_s"] for n, r in results.items() if n.startswith("ablate_")}):
        seen = [p["score"] for p in base["curve"] if p["cpu_s"] <= budget]
        if seen:
            notes.append(
                f"\nFor the ablations' {budget / 60:.0f}-minute budget: `bilstm`'s best dev F1 within its first "
                f"{budget / 60:.0f} CPU minutes (same run, from its evaluation log) was {100 * max(seen):.1f}."
            )
    return notes


def table() -> None:
    lines = []
    for folder in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        results = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem in SYSTEMS}
        if not results:
            continue
        speed_file = folder / "speed.json"
        speeds = json.loads(speed_file.read_text())["systems"] if speed_file.exists() else {}
        peer = speeds.get("spacy_efficiency", {})
        env = next(iter(results.values()))["environment"]
        lines += [
            f"### {folder.name}",
            "",
            f"{env['cpu']}; training on {env['threads']} thread(s); torch {env['torch']}, spaCy {env['spacy']}, "
            f"thinc {env['thinc']}, datasets {env['datasets']}.",
            "",
            "| system | CPU min used / budget (stopped by) | dev F1 | test F1 | test P | test R | time to best dev (CPU min) | steps | "
            "infer words/s | × spaCy eff. | train words/s | × spaCy eff. | peak RSS (MB) | size (MB) | date |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results.items():
            s = speeds.get(name, {})
            infer, train_wps = s.get("inference_words_per_s_median"), s.get("train_words_per_s_median")
            ratio = lambda a, key: "—" if a is None or not peer.get(key) else f"{a / peer[key]:.2f}"  # noqa: E731
            lines.append(
                f"| {name} | {r['train']['cpu_s'] / 60:.0f} / {r['budget_cpu_s'] / 60:.0f} ({r['train']['stopped_by']}) | {_fmt(r['dev']['ents_f'])} | {_fmt(r['test']['ents_f'])} | "
                f"{_fmt(r['test']['ents_p'])} | {_fmt(r['test']['ents_r'])} | {r['train']['time_to_best_cpu_s'] / 60:.1f} | "
                f"{r['train']['steps']} | {_fmt(infer, False)} | {ratio(infer, 'inference_words_per_s_median')} | "
                f"{_fmt(train_wps, False)} | {ratio(train_wps, 'train_words_per_s_median')} | "
                f"{_fmt(s.get('peak_rss_mb'), False)} | {r['model_size_bytes'] / 2**20:.1f} | {r['environment']['date']} |"
            )
        lines += _same_budget_note(results)
        lines += ["", "Per-type test F1:", "", "| system | " + " | ".join(sorted(next(iter(results.values()))["test"]["ents_per_type"])) + " |"]
        types = sorted(next(iter(results.values()))["test"]["ents_per_type"])
        lines.append("|---" * (len(types) + 1) + "|")
        for name, r in results.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(r["test"]["ents_per_type"].get(t, {}).get("f")) for t in types) + " |")
        lines.append("")
    text = README.read_text() if README.exists() else "<!-- results:start -->\n<!-- results:end -->\n"
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    body = "\n".join(lines)
    README.write_text(text[: text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end) :])
    print(body)
