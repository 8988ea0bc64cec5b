"""The local engine: stream the input in shards, tag each shard, write it atomically; resume on rerun.

Layout of OUTPUT_DIR:
    _annotate.json          the run's settings (checked on resume) and, once finished, its totals
    part-000000.parquet     shard k holds the tagged rows of input rows [k*S, (k+1)*S), S = --shard-size
    _errors/part-000000.jsonl   the bad rows of shard k (only when it has some), committed before the shard
    errors.jsonl            every bad row, in input order, assembled when the run finishes

A shard exists under its final name only once complete (temp file + fsync + rename), so after a kill
the same command re-reads the input, skips shards that exist, and redoes the rest: no row is written
twice or lost. Shard k always covers the same input rows, whatever --n-process or --batch-size.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import deque
from itertools import islice
from pathlib import Path
from typing import List, Optional

from .core import (
    KILL_HOOK_ENV,
    AnnotateError,
    WorkerStats,
    doc_row,
    load_pipeline,
    tag,
    tagged_table,
)
from ..util.atomic import TMP_MARK, commit, tmp_name, write_json_atomic, write_jsonl_atomic

SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl", "docbin": ".spacy"}
SETTINGS_FILE = "_annotate.json"
ERRORS_DIR = "_errors"


def shard_path(out: Path, index: int, fmt: str) -> Path:
    return out / f"part-{index:06d}{SUFFIX[fmt]}"


# -- worker side (the main process when --n-process 1) -----------------------------------------
_WORKER: dict = {}


def init_worker(model: str, threads: int, marginals: bool = False, keep_tokens: bool = False) -> None:
    """Load the pipeline once per process. A failure is kept and raised by the first task: raising in a
    Pool initializer would make the pool restart the worker forever."""
    try:
        if threads > 0:
            from ..pipeline.threads import fix_process_threads

            fix_process_threads(threads)
        stats = WorkerStats("local")
        started = time.time()
        _WORKER.update(nlp=load_pipeline(model, stats), stats=stats, committed=0, error=None, marginals=None, keep_tokens=keep_tokens)
        if marginals:
            from .marginals import marginals_component, marginals_meta

            _WORKER["marginals"] = marginals_meta(_WORKER["nlp"], marginals_component(_WORKER["nlp"], model))
        # Wall-clock times (not perf_counter) so the driver can compare them across processes.
        _WORKER.update(load_seconds=time.time() - started, ready_at=time.time())
    except Exception as err:  # noqa: BLE001
        _WORKER.update(error=f"{model}: cannot load the pipeline: {type(err).__name__}: {err}")


def process_shard(task) -> dict:
    """Tag one shard and commit it (errors piece first, then the shard). Returns its counts."""
    index, items, out, fmt, keep_text, batch_size = task
    if _WORKER.get("error"):
        raise AnnotateError(_WORKER["error"])
    nlp, stats = _WORKER["nlp"], _WORKER["stats"]
    started = time.perf_counter()
    out = Path(out)
    tagged, errors = tag(nlp, items, batch_size)
    if errors:
        write_jsonl_atomic(out / ERRORS_DIR / f"part-{index:06d}.jsonl", errors)
    final = shard_path(out, index, fmt)
    tmp = tmp_name(final)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(tagged_table(tagged, keep_text, _WORKER.get("marginals"), _WORKER.get("keep_tokens", False)), tmp)
    elif fmt == "jsonl":
        with open(tmp, "w", encoding="utf8") as handle:
            for row_id, doc in tagged:
                handle.write(json.dumps(doc_row(row_id, doc, keep_text), ensure_ascii=False) + "\n")
    else:
        from spacy.tokens import DocBin

        doc_bin = DocBin(store_user_data=True)
        for row_id, doc in tagged:
            doc.user_data["id"] = row_id
            doc_bin.add(doc)
        doc_bin.to_disk(tmp)
    _maybe_kill()
    commit(tmp, final)
    _WORKER["committed"] += 1
    words = sum(len(doc) for _, doc in tagged)
    stats.add(len(tagged), words, time.perf_counter() - started)
    return {
        "index": index, "rows": len(tagged), "errors": len(errors), "words": words,
        "load_seconds": _WORKER["load_seconds"], "ready_at": _WORKER["ready_at"],
    }


def _maybe_kill() -> None:
    """Test hook (KILL_HOOK_ENV=N): die by SIGKILL with the N+1-th shard written but not yet renamed."""
    after = os.environ.get(KILL_HOOK_ENV)
    if after is not None and _WORKER["committed"] >= int(after):
        os.kill(os.getpid(), signal.SIGKILL)


# -- driver ------------------------------------------------------------------------------------
def prepare_output(out: Path, settings: dict, engine: str) -> dict:
    """Create OUTPUT_DIR or check that it holds an earlier run of the same job; returns the settings file."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SETTINGS_FILE
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf8"))
        if previous.get("settings") != settings:
            changed = sorted(k for k in set(settings) | set(previous.get("settings", {})) if settings.get(k) != previous.get("settings", {}).get(k))
            raise AnnotateError(
                f"{out} holds a run with other settings ({', '.join(changed)} differ); "
                "rerun with the same arguments to resume, or choose a new output directory"
            )
        return previous
    others = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if others:
        raise AnnotateError(f"{out} is not empty and holds no annotate run ({', '.join(sorted(others)[:3])}...); choose a new output directory")
    record = {"settings": settings, "engine": engine, "complete": False}
    write_json_atomic(path, record)
    return record


def remove_temp_files(out: Path) -> None:
    for directory in (out, out / ERRORS_DIR):
        if directory.is_dir():
            for p in directory.iterdir():
                if p.name.startswith(".") and TMP_MARK in p.name:
                    p.unlink()


def _shards(records, shard_size: int, limit: int):
    """(index, list of (id, value)) per shard, reading the input once, lazily."""
    if limit:
        records = islice(records, limit)
    index = 0
    while True:
        chunk = list(islice(records, shard_size))
        if not chunk:
            return
        yield index, chunk
        index += 1


def run_local(args, source, settings: dict) -> int:
    out = Path(args.output_dir)
    prepare_output(out, settings, "local")
    remove_temp_files(out)
    fmt, n_process = args.format, args.n_process
    total_rows = min(source.total, args.limit) if source.total is not None and args.limit else source.total
    done = _existing(out, fmt)
    if done:
        print(f"resuming: {len(done)} shard(s) already in {out}", file=sys.stderr)
    progress = _progress(total_rows, args)
    counts = {"rows": 0, "errors": 0, "words": 0, "shards_written": 0, "shards": 0}
    # words/s counts tagging only: from the first pipeline ready to the end; loading is reported apart.
    loading = {"load_seconds": 0.0, "ready_at": float("inf")}

    def account(result: Optional[dict], n_items: int):
        counts["shards"] += 1
        if result is not None:
            counts["shards_written"] += 1
            for key in ("rows", "errors", "words"):
                counts[key] += result[key]
            loading["load_seconds"] = max(loading["load_seconds"], result["load_seconds"])
            loading["ready_at"] = min(loading["ready_at"], result["ready_at"])
        progress.update(n_items)

    def tasks():
        for index, items in _shards(source.records(), args.shard_size, args.limit):
            if index in done:
                account(None, len(items))
                continue
            yield (index, items, str(out), fmt, args.keep_text, args.batch_size), len(items)

    try:
        if n_process == 1:
            init_worker(args.model, 0, args.marginals, args.keep_tokens)
            for task, n in tasks():
                account(process_shard(task), n)
        else:
            _run_pool(args.model, n_process, tasks(), account, args.marginals, args.keep_tokens)
    finally:
        progress.close()
    seconds = max(time.time() - loading["ready_at"], 0.0)  # 0 when every shard was already there
    n_errors = _assemble_errors(out, counts["shards"])
    record = json.loads((out / SETTINGS_FILE).read_text(encoding="utf8"))
    wps = counts["words"] / seconds if seconds > 0 else 0.0
    record.update(
        complete=True, shards=counts["shards"], errors=n_errors,
        last_run={"words": counts["words"], "load_seconds": loading["load_seconds"], "tag_seconds": seconds, "words_per_second": wps},
    )
    write_json_atomic(out / SETTINGS_FILE, record)
    print(
        f"pipeline loaded in {loading['load_seconds']:.1f}s; "
        f"{counts['rows']} docs ({counts['words']} words) tagged in {seconds:.1f}s ({wps:,.0f} words/s) into "
        f"{counts['shards_written']} new shard(s), {counts['shards']} in all; {n_errors} bad row(s) in {out / 'errors.jsonl'}",
        file=sys.stderr,
    )
    return 0


def _existing(out: Path, fmt: str) -> set:
    suffix = SUFFIX[fmt]
    return {int(p.name[5:11]) for p in out.glob(f"part-*{suffix}") if p.name[5:11].isdigit()}


def _run_pool(model: str, n_process: int, tasks, account, marginals: bool = False, keep_tokens: bool = False) -> None:
    """N spawned workers, each loading the pipeline once; at most 2N shards in flight (bounded memory)."""
    import multiprocessing

    # fork on Linux, as spaCy's nlp.pipe(n_process) does: spawn and forkserver re-import the __main__
    # module in each worker, and `python -m bilstm_tagger` runs main() unguarded at import. The parent
    # has imported torch but never run a torch op here, so no OpenMP pool is inherited.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    pool = context.Pool(n_process, initializer=init_worker, initargs=(model, 1, marginals, keep_tokens))
    pending: deque = deque()
    try:
        for task, n in tasks:
            while len(pending) >= 2 * n_process:
                result, size = pending.popleft()
                account(result.get(), size)
            pending.append((pool.apply_async(process_shard, (task,)), n))
        while pending:
            result, size = pending.popleft()
            account(result.get(), size)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _assemble_errors(out: Path, n_shards: int) -> int:
    pieces: List[Path] = sorted((out / ERRORS_DIR).glob("part-*.jsonl")) if (out / ERRORS_DIR).is_dir() else []
    count = 0

    def rows():
        nonlocal count
        for piece in pieces:
            with open(piece, encoding="utf8") as handle:
                for line in handle:
                    count += 1
                    yield json.loads(line)

    write_jsonl_atomic(out / "errors.jsonl", rows())
    return count


def _progress(total: Optional[int], args):
    from tqdm import tqdm

    return tqdm(total=total, desc="annotate", unit="doc", disable=None, leave=False, smoothing=0.1)
