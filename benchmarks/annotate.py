"""Benchmark `annotate`: ~1M tokens through a default-architecture NER model, in one run so the ratios compare.

    python -m benchmarks.annotate --model /tmp/annot_model/model-last --dataset ../shared/datasets/conll2003

Rows: 1 process; --n-process 2; Ray with 2 actors; spaCy's `ner` with nlp.pipe(n_process=2) as the peer.
Each row runs in a fresh subprocess; a poller records VmHWM (peak RSS) of every process in its tree
from /proc, so "per worker" means each process that tagged. Words/s is end to end (start-up included)
and, for our engines, also per worker over tagging time only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ANNOTATE = (
    "import argparse, sys\n"
    "from bilstm_tagger.cli.annotate import add_parser, run\n"
    "p = argparse.ArgumentParser(); add_parser(p.add_subparsers(dest='c'))\n"
    "sys.exit(run(p.parse_args(['annotate'] + sys.argv[1:])))\n"
)

SPACY_PEER = r"""
import json, sys, time
import datasets, spacy
from spacy.tokens import Doc
from spacy.training import Example
corpus, dataset = sys.argv[1], sys.argv[2]
train = datasets.load_dataset(dataset, split="train").select(range(2000))
names = train.features["ner_tags"].feature.names
nlp = spacy.blank("en")
nlp.add_pipe("ner")
examples = [Example(Doc(nlp.vocab, words=r["tokens"]), Doc(nlp.vocab, words=r["tokens"], ents=[names[t] for t in r["ner_tags"]])) for r in train]
nlp.initialize(lambda: examples)
import pyarrow.parquet as pq
tokens = pq.read_table(corpus, columns=["tokens"]).column("tokens").to_pylist()
start = time.perf_counter()
n_ents = words = 0
for doc in nlp.pipe((Doc(nlp.vocab, words=t) for t in tokens), batch_size=256, n_process=2):
    words += len(doc); n_ents += len(doc.ents)
print(json.dumps({"tag_seconds": time.perf_counter() - start, "words": words, "ents": n_ents}))
"""


def tree_of(root: int) -> list:
    children: dict = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def hwm(pid: int):
    try:
        with open(f"/proc/{pid}/status") as handle:
            status = handle.read()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]), cmd
    return None


def run_measured(argv, env) -> dict:
    """Run argv; poll the VmHWM of every process in its tree every 0.2 s."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict = {}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for pid in tree_of(proc.pid):
                got = hwm(pid)
                if got:
                    peaks[pid] = (max(got[0], peaks.get(pid, (0, ""))[0]), got[1])
            time.sleep(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    stdout, stderr = proc.communicate()
    stop.set()
    thread.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    big = sorted(((kb, cmd) for kb, cmd in peaks.values() if kb > 150_000), reverse=True)
    return {"wall_s": wall, "stdout": stdout, "stderr_tail": stderr[-400:], "peak_rss_mb": [[round(kb / 1024), cmd] for kb, cmd in big]}


def build_corpus(dataset: str, tokens: int, path: Path) -> int:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    train = datasets.load_dataset(dataset, split="train")
    ids, rows, total, rep = [], [], 0, 0
    while total < tokens:
        for row_id, toks in zip(train["id"], train["tokens"]):
            ids.append(f"{rep}-{row_id}")
            rows.append(toks)
            total += len(toks)
            if total >= tokens:
                break
        rep += 1
    pq.write_table(pa.table({"id": ids, "tokens": rows}), path, row_group_size=2000)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="default-architecture NER pipeline (e.g. a spacy train output)")
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "conll2003"))
    parser.add_argument("--tokens", type=int, default=1_000_000, help="corpus size: the train split repeated as needed")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "annotate" / "results.json"))
    parser.add_argument("--only", nargs="*", default=None, help="rows to run (local1 local2 ray2 spacy2)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="annotate-bench-"))
    corpus = work / "corpus.parquet"
    words = build_corpus(args.dataset, args.tokens, corpus)
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    common = [str(args.model), str(corpus)]
    rows = {
        "local1": ("annotate, 1 process (torch default threads)", [sys.executable, "-c", ANNOTATE, *common, str(work / "o1")]),
        "local2": ("annotate --n-process 2 (1 torch thread each)", [sys.executable, "-c", ANNOTATE, *common, str(work / "o2"), "--n-process", "2"]),
        "ray2": (
            "annotate --engine ray --concurrency 2 (1 CPU, 1 torch thread per actor)",
            [sys.executable, "-c", ANNOTATE, *common, str(work / "o3"), "--engine", "ray", "--concurrency", "2"],
        ),
        "spacy2": ("spaCy ner (blank en, initialized on 2,000 CoNLL sentences, untrained), nlp.pipe(n_process=2)", [sys.executable, "-c", SPACY_PEER, str(corpus), args.dataset]),
    }
    results = []
    for key, (label, argv) in rows.items():
        if args.only and key not in args.only:
            continue
        stats_dir = work / f"stats-{key}"
        run_env = dict(env, BILSTM_TAGGER_ANNOTATE_STATS_DIR=str(stats_dir))
        print(f"running {key}: {label}", file=sys.stderr, flush=True)
        measured = run_measured(argv, run_env)
        workers = [json.loads(p.read_text()) for p in sorted(stats_dir.glob("*.json"))] if stats_dir.is_dir() else []
        row = {"row": key, "what": label, "words": words, "wall_s": round(measured["wall_s"], 1), "words_per_s_end_to_end": round(words / measured["wall_s"])}
        if key == "spacy2":
            peer = json.loads(measured["stdout"].strip().splitlines()[-1])
            row["tag_s"] = round(peer["tag_seconds"], 1)
            row["words_per_s_tagging"] = round(peer["words"] / peer["tag_seconds"])
        row["workers"] = workers
        row["peak_rss_mb_by_process"] = measured["peak_rss_mb"]
        row["stderr_tail"] = measured["stderr_tail"]
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "stderr_tail"}), file=sys.stderr, flush=True)
    record = {
        "command": " ".join(["python -m benchmarks.annotate", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "hardware": f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), shared with other jobs, no GPU",
        "model": str(args.model),
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
