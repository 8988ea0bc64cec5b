"""The Ray Data engine: Ray's readers, an actor pool that loads the pipeline once per actor, parquet out.

`ray.init()` connects to the cluster named by RAY_ADDRESS, or starts a local instance. On a cluster,
MODEL must be readable at the same path on every node and OUTPUT_DIR must be a shared filesystem path
(the workers write the shards and the error pieces).

Failures: Ray Data retries a task whose actor died (the actor is restarted and reloads the pipeline);
the shards are written by Ray's parquet datasink after the map, so a retried batch is written once.
Bad rows are written by the actors as `_errors/ray-<digest>.jsonl`, named by a digest of the batch's
ids so that a retried batch overwrites its own piece; errors.jsonl is assembled from the pieces
(deduplicated by id) when the run ends. Unlike the local engine, a run stopped in the driver is not
resumed: rerun into a new OUTPUT_DIR.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from ..util.atomic import write_json_atomic, write_jsonl_atomic
from .core import STATS_DIR_ENV, AnnotateError, WorkerStats, check_value, load_pipeline, output_schema, tag, tagged_table
from .local import ERRORS_DIR, SETTINGS_FILE

# Test hook: the first actor to finish its N-th batch (N = KILL_AFTER_BATCHES_ENV, default 1) while the
# file KILL_ONCE_ENV names is missing creates it and dies (os._exit) with that batch tagged and its errors
# piece written, before returning it; the file records what the dead actor had done (JSON).
KILL_ONCE_ENV = "BILSTM_TAGGER_ANNOTATE_TEST_KILL_ACTOR_ONCE"
KILL_AFTER_BATCHES_ENV = "BILSTM_TAGGER_ANNOTATE_TEST_KILL_ACTOR_AFTER_BATCHES"


class RayAnnotator:
    """map_batches callable class: one pipeline per actor, pyarrow batches in and out."""

    def __init__(self, model: str, id_column: str, column: str, kind: Optional[str], keep_text: bool, batch_size: int, threads: int, out: str, txt_root: Optional[str], marginals: bool = False, keep_tokens: bool = False):
        from ..pipeline.threads import fix_process_threads

        # Threads = the actor's CPUs, fixed before the pipe loads so that its thread tuner keeps them.
        fix_process_threads(max(1, int(threads)))
        self.stats = WorkerStats("ray")
        self.nlp = load_pipeline(model, self.stats)
        self.id_column, self.column, self.kind = id_column, column, kind
        self.keep_text, self.batch_size = keep_text, batch_size
        self.errors_dir = Path(out) / ERRORS_DIR
        self.txt_root = txt_root
        self.marginals = None
        if marginals:
            from .marginals import marginals_component, marginals_meta

            self.marginals = marginals_meta(self.nlp, marginals_component(self.nlp, model))
        self.keep_tokens = keep_tokens
        self.schema = output_schema(keep_text, self.marginals, keep_tokens)
        self.batches = 0

    def __call__(self, batch):
        if self.txt_root is not None:  # read_binary_files: {bytes, path}
            ids = [Path(p).relative_to(self.txt_root).as_posix() for p in batch.column("path").to_pylist()]
            values = batch.column("bytes").to_pylist()
        else:
            ids = [None if v is None else str(v) for v in batch.column(self.id_column).to_pylist()]
            values = batch.column(self.column).to_pylist()
        started = time.perf_counter()
        items = [(row_id, check_value(value, self.kind)) for row_id, value in zip(ids, values)]
        tagged, errors = tag(self.nlp, items, self.batch_size)
        piece = None
        if errors:
            digest = hashlib.sha1("\n".join(map(str, ids)).encode("utf8")).hexdigest()[:20]
            self.errors_dir.mkdir(parents=True, exist_ok=True)
            piece = self.errors_dir / f"ray-{digest}.jsonl"
            write_jsonl_atomic(piece, errors)
        table = tagged_table(tagged, self.keep_text, self.marginals, self.keep_tokens)
        self.batches += 1
        self._maybe_die(ids, len(tagged), len(errors), piece)
        self.stats.add(len(tagged), sum(len(doc) for _, doc in tagged), time.perf_counter() - started)
        return table

    def _maybe_die(self, ids: list, n_tagged: int, n_errors: int, piece: Optional[Path]) -> None:
        """The test hook (KILL_ONCE_ENV): the work for this batch is done, only the return is left."""
        marker = os.environ.get(KILL_ONCE_ENV)
        if not marker or self.batches < int(os.environ.get(KILL_AFTER_BATCHES_ENV, "1")):
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        record = {"pid": os.getpid(), "batch": self.batches, "ids": ids, "tagged": n_tagged, "errors": n_errors, "errors_piece": None if piece is None else str(piece)}
        os.write(fd, json.dumps(record).encode("utf8"))
        os.fsync(fd)
        os.close(fd)
        os._exit(1)


def _hf_parquet_files(path: str, split: str, name: Optional[str]) -> Optional[List[str]]:
    """The parquet files behind a local hub-layout folder's split, for ray.data.read_parquet."""
    try:
        import datasets

        builder = datasets.load_dataset_builder(path, name)
        files = builder.config.data_files.get(split) if builder.config.data_files else None
    except Exception:  # noqa: BLE001 - fall back to from_huggingface
        return None
    if files and all(str(f).endswith(".parquet") and Path(str(f)).is_file() for f in files):
        return [str(f) for f in files]
    return None


def _read(args):
    """(dataset, id column, document column, kind, txt_root) with Ray's readers."""
    import ray.data

    from .inputs import _files, _schema_column, detect_type, load_hf
    from .core import Column

    kind = detect_type(args.input) if args.input_type == "auto" else args.input_type
    column = Column("tokens", args.tokens_column) if args.tokens_column else Column("text", args.text_column) if args.text_column else Column(None, None)
    p = Path(args.input)
    if kind == "txt":
        if not p.is_dir():
            raise AnnotateError("--engine ray reads .txt input as a folder of files (one doc per file); use the local engine for one .txt file")
        root = str(p.resolve())
        return ray.data.read_binary_files(root, include_paths=True, file_extensions=["txt"]), None, None, "text", root
    if kind == "parquet":
        files = [str(p)] if p.is_file() else [str(f) for f in _files(p, (".parquet",))]
        ds = ray.data.read_parquet(files)
    elif kind == "jsonl":
        files = [str(p)] if p.is_file() else [str(f) for f in _files(p, (".jsonl",))]
        ds = ray.data.read_json(files, lines=True)
    else:
        files = _hf_parquet_files(args.input, args.split, args.name)
        ds = ray.data.read_parquet(files) if files else ray.data.from_huggingface(load_hf(args.input, args.split, args.name, args.revision))
    names = ds.schema().names
    column = _schema_column(column, names, args.input)
    if args.id_column not in names:
        raise AnnotateError(
            f"{args.input}: no id column {args.id_column!r} (it has: {', '.join(names)}); --engine ray needs one, "
            "since Ray's readers give no row positions to derive ids from (the local engine derives them)"
        )
    return ds.select_columns([args.id_column, column.name]), args.id_column, column.name, column.kind, None


def check_ids(ds, id_column: str, where: str) -> None:
    """Refuse, before any tagging, a row without an id or an id that repeats.

    Ray's readers give no row positions, so the id is all that tells rows apart: the error pieces are
    named and deduplicated by id. Ids are compared as written (str), so 1 and "1" are one id. One pass
    over the id column, holding every id in the driver's memory.
    """
    seen: set = set()
    missing = 0
    for batch in ds.select_columns([id_column]).iter_batches(batch_size=65536, batch_format="pyarrow"):
        for value in batch.column(id_column).to_pylist():
            if value is None:
                missing += 1
                continue
            row_id = str(value)
            if row_id in seen:
                raise AnnotateError(
                    f"{where}: id {row_id!r} occurs more than once in column {id_column!r}; --engine ray needs a "
                    "unique id per row (the local engine keeps rows apart by position)"
                )
            seen.add(row_id)
    if missing:
        raise AnnotateError(
            f"{where}: {missing} row(s) have no {id_column!r} value; --engine ray needs a unique id per row "
            "(the local engine derives missing ids from row positions)"
        )


def run_ray(args) -> int:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise AnnotateError(f"--engine ray needs Ray Data: pip install 'bilstm_tagger[ray]' ({err})") from err
    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()):
        raise AnnotateError(f"{out} is not empty; --engine ray writes into a new or empty directory (it does not resume)")
    out.mkdir(parents=True, exist_ok=True)
    started_ray = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in (STATS_DIR_ENV, KILL_ONCE_ENV, KILL_AFTER_BATCHES_ENV, "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if k in os.environ}
        # A local instance gets one logical CPU beyond the actors' share: Ray Data's listing, read and
        # write tasks each ask for 1 CPU and would wait forever behind actors holding every CPU.
        wanted = args.concurrency * args.num_cpus_per_actor + 1
        local_cpus = None if os.environ.get("RAY_ADDRESS") else max(os.cpu_count() or 1, int(-(-wanted // 1)))
        ray.init(num_cpus=local_cpus, runtime_env={"env_vars": env} if env else None, include_dashboard=False, log_to_driver=False)
        started_ray = True
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if args.concurrency * args.num_cpus_per_actor >= cpus:
            raise AnnotateError(
                f"--concurrency {args.concurrency} x --num-cpus-per-actor {args.num_cpus_per_actor} leaves none of the cluster's "
                f"{cpus:g} CPUs for Ray Data's read and write tasks, which would wait forever; use fewer or smaller actors"
            )
        ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
        model = str(Path(args.model).resolve())
        start = time.perf_counter()
        ds, id_column, column, kind, txt_root = _read(args)
        if args.limit:
            ds = ds.limit(args.limit)
        if id_column is not None:
            check_ids(ds, id_column, args.input)
        # Blocks of one batch each, so that every actor gets work even when the input is one file.
        ds = ds.repartition(target_num_rows_per_block=args.batch_size)
        write_json_atomic(out / SETTINGS_FILE, {"engine": "ray", "complete": False, "settings": vars_of(args)})
        tagged = ds.map_batches(
            RayAnnotator,
            fn_constructor_kwargs=dict(
                model=model, id_column=id_column, column=column, kind=kind, keep_text=args.keep_text,
                batch_size=args.batch_size, threads=args.num_cpus_per_actor, out=str(out.resolve()), txt_root=txt_root,
                marginals=args.marginals, keep_tokens=args.keep_tokens,
            ),
            batch_size=args.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=args.concurrency),
            num_cpus=args.num_cpus_per_actor,
        )
        tagged.write_parquet(str(out.resolve()), min_rows_per_file=args.shard_size)
        seconds = time.perf_counter() - start
        n_errors = _assemble_errors(out)
        rows = _count_rows(out)
        write_json_atomic(out / SETTINGS_FILE, {"engine": "ray", "complete": True, "errors": n_errors, "rows": rows, "settings": vars_of(args)})
        print(f"{rows} docs tagged by Ray in {seconds:.1f}s into {out}; {n_errors} bad row(s) in {out / 'errors.jsonl'}", file=sys.stderr)
        return 0
    finally:
        if started_ray:
            ray.shutdown()


def vars_of(args) -> dict:
    keys = ("model", "input", "split", "name", "text_column", "tokens_column", "id_column", "keep_text", "marginals", "keep_tokens", "limit", "concurrency", "num_cpus_per_actor", "batch_size")
    return {k: getattr(args, k) for k in keys}


def _assemble_errors(out: Path) -> int:
    seen, rows = set(), []
    directory = out / ERRORS_DIR
    for piece in sorted(directory.glob("ray-*.jsonl")) if directory.is_dir() else []:
        for line in piece.read_text(encoding="utf8").splitlines():
            row = json.loads(line)
            if row["id"] not in seen:
                seen.add(row["id"])
                rows.append(row)
    rows.sort(key=lambda r: r["id"])
    write_jsonl_atomic(out / "errors.jsonl", rows)
    return len(rows)


def _count_rows(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in out.glob("*.parquet"))
