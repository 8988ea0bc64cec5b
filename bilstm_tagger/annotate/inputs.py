"""Local inputs, streamed: a Hugging Face dataset, parquet files, JSONL files, .txt files.

Every source yields (id, value) pairs in a fixed order, one at a time; value is what check_value
accepts or a Bad. The order is the same on every run over the same input, which is what lets a
rerun skip the shards it already wrote.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..data.paths import hub_unreachable, missing_local_path, unreachable_message
from .core import AnnotateError, Bad, Column, check_value, pick_value

INPUT_TYPES = ("auto", "hf", "parquet", "jsonl", "txt")
_READ_ROWS = 1024


@dataclass
class Source:
    kind: str  # hf | parquet | jsonl | txt (folder: one doc per file) | txt-lines (one file: one doc per line)
    path: str
    column: Column
    id_column: str
    files: List[Path] = field(default_factory=list)
    root: Optional[Path] = None
    split: Optional[str] = None
    name: Optional[str] = None
    revision: Optional[str] = None
    total: Optional[int] = None
    _dataset: object = None

    def fingerprint(self) -> dict:
        """What must not change between a run and its resumption."""
        if self.kind == "hf":
            return {"split": self.split, "name": self.name, "revision": self.revision, "rows": self.total}
        return {"files": [[_rel(f, self.root), f.stat().st_size] for f in self.files]}

    def records(self) -> Iterator[Tuple[str, object]]:
        reader = {
            "hf": self._hf,
            "parquet": self._parquet,
            "jsonl": self._jsonl,
            "txt": self._txt,
            "txt-lines": self._txt_lines,
        }[self.kind]
        return reader()

    # -- readers -------------------------------------------------------------------------------
    def _hf(self):
        dataset = self._dataset
        columns = [c for c in (self.id_column, self.column.name) if c in dataset.column_names]
        dataset = dataset.select_columns(columns)
        index = 0
        for batch in dataset.iter(batch_size=_READ_ROWS):
            ids = batch.get(self.id_column)
            for i, value in enumerate(batch[self.column.name]):
                row_id = _id(ids[i] if ids is not None else None, f"{self.split}:{index}")
                yield row_id, check_value(value, self.column.kind)
                index += 1

    def _parquet(self):
        import pyarrow.parquet as pq

        for path in self.files:
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            if self.column.name not in names:
                raise AnnotateError(f"{path}: no column {self.column.name!r} (it has: {', '.join(names)})")
            columns = [c for c in (self.id_column, self.column.name) if c in names]
            rel = _rel(path, self.root)
            index = 0
            for batch in parquet.iter_batches(batch_size=_READ_ROWS, columns=columns):
                ids = batch.column(self.id_column).to_pylist() if self.id_column in columns else None
                for i, value in enumerate(batch.column(self.column.name).to_pylist()):
                    yield _id(ids[i] if ids is not None else None, f"{rel}:{index}"), check_value(value, self.column.kind)
                    index += 1

    def _jsonl(self):
        for path in self.files:
            rel = _rel(path, self.root)
            with open(path, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    derived = f"{rel}:{number}"
                    if not raw.strip():
                        yield derived, Bad("empty line")
                        continue
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        yield derived, Bad(f"invalid UTF-8 at byte {err.start} of the line")
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        yield derived, Bad(f"invalid JSON: {err.msg} at column {err.colno}")
                        continue
                    row_id = _id(row.get(self.id_column) if isinstance(row, dict) else None, derived)
                    yield row_id, check_value(pick_value(row, self.column), self.column.kind)

    def _txt(self):
        for path in self.files:
            yield _rel(path, self.root), check_value(path.read_bytes(), "text")

    def _txt_lines(self):
        rel = _rel(self.files[0], self.root)
        with open(self.files[0], "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue  # a blank line separates docs; it is not a row (ids keep the file's line numbers)
                yield f"{rel}:{number}", check_value(raw.rstrip(b"\r\n"), "text")


def _id(value, derived: str) -> str:
    return derived if value is None else str(value)


def _rel(path: Path, root: Optional[Path]) -> str:
    if root is None:
        return path.name
    return path.relative_to(root).as_posix()


def _files(root: Path, suffixes: Tuple[str, ...]) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes) and not p.name.startswith("."))


_SPLIT_NAMES = ("train", "validation", "valid", "dev", "test")


def _split_name(file_name: str) -> bool:
    stem = file_name.split(".")[0]
    return stem in _SPLIT_NAMES or stem.split("-")[0] in _SPLIT_NAMES


def detect_type(path: str) -> str:
    p = Path(path)
    if p.is_file():
        if p.name.endswith(".parquet"):
            return "parquet"
        if p.name.endswith((".jsonl", ".json")):
            return "jsonl"
        if p.name.endswith(".txt"):
            return "txt"
        raise AnnotateError(f"{path}: unknown file type (expected .parquet, .jsonl or .txt; or pass --input-type)")
    if p.is_dir():
        top = [c for c in p.iterdir() if c.is_file()]
        if any(_split_name(c.name) for c in top if c.name.endswith((".parquet", ".jsonl", ".json", ".csv"))):
            return "hf"  # train.jsonl, test-00000-of-00001.parquet, ...: datasets reads these as splits
        if any(c.name.endswith(".parquet") for c in top):
            return "parquet"
        if any(c.name.endswith(".jsonl") for c in top):
            return "jsonl"
        if any(c.name.endswith(".txt") for c in top):
            return "txt"
        return "hf"  # hub layout (data/*.parquet, README.md), or a save_to_disk folder
    missing = missing_local_path(path)
    if missing:  # a mistyped path, not a hub id: fail now rather than after the hub's retries
        raise AnnotateError(missing)
    return "hf"  # not a local path: a hub id


def open_source(
    path: str,
    input_type: str = "auto",
    split: str = "train",
    name: Optional[str] = None,
    revision: Optional[str] = None,
    text_column: Optional[str] = None,
    tokens_column: Optional[str] = None,
    id_column: str = "id",
) -> Source:
    kind = detect_type(path) if input_type == "auto" else input_type
    if text_column and tokens_column:
        raise AnnotateError("give --text-column or --tokens-column, not both")
    column = Column("tokens", tokens_column) if tokens_column else Column("text", text_column) if text_column else Column(None, None)
    p = Path(path)
    if kind == "hf":
        return _open_hf(path, split, name, revision, column, id_column)
    if not p.exists():
        raise AnnotateError(f"{path}: no such file or directory")
    root = p if p.is_dir() else p.parent
    if kind == "parquet":
        files = [p] if p.is_file() else _files(p, (".parquet",))
        if not files:
            raise AnnotateError(f"{path}: no .parquet files")
        source = Source("parquet", path, _schema_column(column, _parquet_names(files[0]), str(files[0])), id_column, files, root)
        source.total = sum(_parquet_rows(f) for f in files)
        return source
    if kind == "jsonl":
        files = [p] if p.is_file() else _files(p, (".jsonl",))
        if not files:
            raise AnnotateError(f"{path}: no .jsonl files")
        return Source("jsonl", path, column, id_column, files, root)
    if kind == "txt":
        if column.kind == "tokens":
            raise AnnotateError("--tokens-column does not apply to .txt input")
        if p.is_file():
            return Source("txt-lines", path, Column("text", None), id_column, [p], root)
        files = _files(p, (".txt",))
        if not files:
            raise AnnotateError(f"{path}: no .txt files")
        return Source("txt", path, Column("text", None), id_column, files, root, total=len(files))
    raise AnnotateError(f"unknown input type {kind!r} (choose from {', '.join(INPUT_TYPES)})")


def _parquet_names(path: Path) -> List[str]:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).schema_arrow.names


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _schema_column(column: Column, names: List[str], where: str) -> Column:
    """Resolve the document column against a known schema (HF, parquet)."""
    if column.name is not None:
        if column.name not in names:
            raise AnnotateError(f"{where}: no column {column.name!r} (it has: {', '.join(names)})")
        return column
    for kind in ("text", "tokens"):
        if kind in names:
            return Column(kind, kind)
    raise AnnotateError(f"{where}: no 'text' or 'tokens' column; name one with --text-column or --tokens-column (it has: {', '.join(names)})")


def load_hf(path: str, split: str, name: Optional[str], revision: Optional[str]):
    """A memory-mapped datasets.Dataset: load_from_disk folders, local hub-layout folders, hub ids."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    missing = missing_local_path(path)
    if missing:
        raise AnnotateError(missing)
    import datasets

    p = Path(path)
    try:
        if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
            loaded = datasets.load_from_disk(path)
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise AnnotateError(f"{path}: no split {split!r} (it has: {', '.join(loaded)})")
                loaded = loaded[split]
            return loaded
        return datasets.load_dataset(path, name, split=split, revision=revision)
    except AnnotateError:
        raise
    except Exception as err:  # datasets raises its own types too (DatasetNotFoundError, ...)
        if hub_unreachable(err):
            raise AnnotateError(unreachable_message(path)) from err
        # Builtin types speak for themselves; datasets' own need their name to make sense.
        known = isinstance(err, (ValueError, KeyError, FileNotFoundError))
        raise AnnotateError(f"{path}: cannot load split {split!r}: {err if known else f'{type(err).__name__}: {err}'}") from err


def _open_hf(path, split, name, revision, column, id_column) -> Source:
    dataset = load_hf(path, split, name, revision)
    column = _schema_column(column, dataset.column_names, f"{path} [{split}]")
    return Source("hf", path, column, id_column, split=split, name=name, revision=revision, total=dataset.num_rows, _dataset=dataset)
