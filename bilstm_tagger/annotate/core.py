"""What both engines share: checking an input value, tagging a batch, the output row schema (atomic writes: util/atomic.py)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from ..errors import AnnotateError  # noqa: F401  (the annotate modules import it from here)
from ..util.atomic import atomic_write

# Set by tests only: kill this process (SIGKILL) just before the temp file of the N+1-th shard it
# writes is renamed into place, i.e. after N shards are committed and halfway through the next.
KILL_HOOK_ENV = "BILSTM_TAGGER_ANNOTATE_TEST_KILL_AFTER"
# Set by the benchmark: each worker process writes its load time and peak RSS here as JSON.
STATS_DIR_ENV = "BILSTM_TAGGER_ANNOTATE_STATS_DIR"

ENTITY_TYPE = pa.struct(
    [
        ("start_char", pa.int32()),
        ("end_char", pa.int32()),
        ("start_token", pa.int32()),
        ("end_token", pa.int32()),
        ("label", pa.string()),
        ("text", pa.string()),
        ("confidence", pa.float32()),
    ]
)


def output_schema(keep_text: bool, marginals: Optional[dict] = None, keep_tokens: bool = False) -> pa.Schema:
    """The shard schema; with `keep_tokens` also each doc's words (`tokens`); with `marginals` (the
    metadata of `annotate --marginals`) the tokens and their tag probabilities (see annotate/marginals.py)."""
    fields = [("id", pa.string())]
    if keep_text:
        fields.append(("text", pa.string()))
    fields += [("n_tokens", pa.int32()), ("entities", pa.list_(ENTITY_TYPE))]
    if keep_tokens and marginals is None:
        fields.append(("tokens", pa.list_(pa.string())))
    schema = pa.schema(fields)
    if marginals is not None:
        from .marginals import with_marginals

        schema = with_marginals(schema, marginals)
    return schema


@dataclass(frozen=True)
class Bad:
    """An input row that cannot be tagged, and why."""

    reason: str


@dataclass(frozen=True)
class Column:
    """Which field holds the document: kind is "text" or "tokens"; name None = pick per row."""

    kind: Optional[str]
    name: Optional[str]


def pick_value(row: Any, column: Column) -> Any:
    """The document value of a parsed JSON object, or Bad."""
    if not isinstance(row, dict):
        return Bad(f"expected a JSON object, got {type(row).__name__}")
    if column.name is not None:
        if column.name not in row:
            return Bad(f"no {column.name!r} field")
        return row[column.name]
    for name in ("text", "tokens"):
        if name in row:
            return row[name]
    return Bad("no 'text' or 'tokens' field")


def check_value(value: Any, kind: Optional[str]) -> Any:
    """A str (text) or a list of str (tokens) ready for tagging, or Bad with the reason.

    kind None accepts either (JSONL rows without --text-column/--tokens-column).
    """
    if isinstance(value, Bad):
        return value
    if value is None:
        return Bad("missing value (null)")
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            return Bad(f"invalid UTF-8 at byte {err.start}")
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays from Ray batches
        value = value.tolist()
    if isinstance(value, str) and kind in (None, "text"):
        if not value.strip():
            return Bad("empty text")
        if not _encodable(value):
            return Bad("text is not valid Unicode (lone surrogate)")
        return value
    if isinstance(value, (list, tuple)) and kind in (None, "tokens"):
        if not value:
            return Bad("no tokens")
        for i, token in enumerate(value):
            if not isinstance(token, str):
                return Bad(f"token {i} is {type(token).__name__}, not str")
            if not token or not token.strip():
                return Bad(f"token {i} is empty or whitespace")
            if not _encodable(token):
                return Bad(f"token {i} is not valid Unicode (lone surrogate)")
        return list(value)
    expected = {"text": "a string", "tokens": "a list of strings", None: "a string or a list of strings"}[kind]
    return Bad(f"expected {expected}, got {type(value).__name__}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def entity_rows(doc) -> List[dict]:
    from spacy.tokens import Span

    has_confidence = Span.has_extension("confidence")
    rows = []
    for ent in doc.ents:
        confidence = getattr(ent._, "confidence", None) if has_confidence else None
        rows.append(
            {
                "start_char": ent.start_char,
                "end_char": ent.end_char,
                "start_token": ent.start,
                "end_token": ent.end,
                "label": ent.label_,
                "text": ent.text,
                # float32, the parquet column's type, so every output format holds the same value
                "confidence": None if confidence is None else float(np.float32(confidence)),
            }
        )
    return rows


def doc_row(row_id: str, doc, keep_text: bool) -> dict:
    row = {"id": row_id}
    if keep_text:
        row["text"] = doc.text
    row["n_tokens"] = len(doc)
    row["entities"] = entity_rows(doc)
    return row


def tag(nlp, items: Sequence[Tuple[str, Any]], batch_size: int) -> Tuple[list, list]:
    """Tag (id, value) pairs. Returns ([(id, doc)] in input order, [error rows]).

    Rows are kept apart by position, not id: ids need not be unique, and two rows with one id each
    come out once, with their own doc. Values are checked first (check_value); a batch that raises
    anyway is retried doc by doc, so one bad document costs its own row only.
    """
    from spacy.tokens import Doc

    def make(value):
        return nlp.make_doc(value) if isinstance(value, str) else Doc(nlp.vocab, words=value)

    errors, good = [], []  # good: (position, id, value)
    for position, (row_id, value) in enumerate(items):
        if isinstance(value, Bad):
            errors.append({"id": row_id, "reason": value.reason})
        else:
            good.append((position, row_id, value))
    docs: dict = {}  # position -> Doc
    failed: dict = {}  # position -> reason
    for start in range(0, len(good), batch_size):
        chunk = good[start : start + batch_size]
        try:
            made = [make(value) for _, _, value in chunk]
            for (position, _, _), doc in zip(chunk, nlp.pipe(made, batch_size=batch_size)):
                docs[position] = doc
        except Exception:  # noqa: BLE001 - find the culprit(s) one by one
            for position, _, value in chunk:
                try:
                    docs[position] = next(iter(nlp.pipe([make(value)])))
                except Exception as err:  # noqa: BLE001
                    failed[position] = f"tagging failed: {type(err).__name__}: {err}"
    tagged = []
    for position, row_id, _ in good:
        if position in failed:
            errors.append({"id": row_id, "reason": failed[position]})
        else:
            tagged.append((row_id, docs[position]))
    return tagged, errors


def rows_table(rows: Iterable[dict], keep_text: bool) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=output_schema(keep_text))


def tagged_table(tagged: Sequence[Tuple[str, Any]], keep_text: bool, marginals: Optional[dict] = None, keep_tokens: bool = False) -> pa.Table:
    """The shard table of (id, doc) pairs; with `keep_tokens` also each doc's words, with `marginals`
    metadata the words and their tag marginals."""
    table = rows_table((doc_row(i, d, keep_text) for i, d in tagged), keep_text)
    if marginals is None and not keep_tokens:
        return table
    tokens = pa.array([[t.text for t in doc] for _, doc in tagged], type=pa.list_(pa.string()))
    table = table.append_column("tokens", tokens)
    if marginals is None:
        return table
    from .marginals import doc_marginals, marginals_array

    n_tags = len(marginals["tags"])
    probs = marginals_array([doc_marginals(doc, marginals["component"], n_tags) for _, doc in tagged], n_tags)
    return table.append_column("marginals", probs).cast(output_schema(keep_text, marginals))


def peak_rss_kb() -> Optional[int]:
    """VmHWM of this process from /proc (Linux), in kB."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def process_age_seconds() -> Optional[float]:
    """Seconds since this process was created (from /proc/self/stat and /proc/uptime)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class WorkerStats:
    """Per-process figures for the benchmark: start-up breakdown, docs, words, peak RSS (VmHWM)."""

    def __init__(self, engine: str):
        self.dir = os.environ.get(STATS_DIR_ENV)
        self.data = {"engine": engine, "pid": os.getpid(), "age_at_init_s": process_age_seconds(), "docs": 0, "words": 0, "busy_s": 0.0}
        self.t0 = time.perf_counter()

    def loaded(self, import_s: float, load_s: float) -> None:
        self.data.update(import_s=import_s, load_s=load_s)
        self.save()

    def add(self, docs: int, words: int, seconds: float = 0.0) -> None:
        self.data["docs"] += docs
        self.data["words"] += words
        self.data["busy_s"] += seconds
        self.save()

    def save(self) -> None:
        if not self.dir:
            return
        self.data["peak_rss_kb"] = peak_rss_kb()
        path = Path(self.dir) / f"{self.data['engine']}-{os.getpid()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(self.data).encode("utf8"), durable=False)  # rewritten per batch: no fsync


def load_pipeline(model: str, stats: Optional[WorkerStats] = None):
    t0 = time.perf_counter()
    import spacy

    import bilstm_tagger.pipeline.component  # noqa: F401  (registers the factories even without the entry points)

    t1 = time.perf_counter()
    nlp = spacy.load(model)
    if stats is not None:
        stats.loaded(t1 - t0, time.perf_counter() - t1)
    return nlp
