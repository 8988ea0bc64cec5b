"""Stage 1 of `distill`: check the teacher against the student, cut the unlabeled set into sentences,
and have the teacher tag it (and the gold training split) with the annotate machinery."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..errors import AnnotateError, DatasetError, LabelError
from ..tags import tag_names
from .options import DistillOptions

SENTENCES_FILE = "unlabeled-sentences.parquet"
SENTENCES_SETTINGS = "unlabeled-sentences.json"


@dataclass
class Teacher:
    """What the teacher predicts: its labels, and (soft labels) the tags and scheme of its marginals."""

    labels: List[str]
    tags: Optional[List[str]]
    scheme: Optional[str]


def load_teacher(path: str, hard_labels: bool) -> Teacher:
    """Load TEACHER and find what it tags with; AnnotateError when it has no (suitable) tagger."""
    if not Path(path).is_dir():
        raise AnnotateError(f"{path}: no such teacher pipeline directory")
    from ..annotate.core import load_pipeline
    from ..annotate.marginals import marginals_component, marginals_meta

    nlp = load_pipeline(path)
    if not hard_labels:
        meta = marginals_meta(nlp, marginals_component(nlp, path))
        return Teacher(meta["labels"], meta["tags"], meta["scheme"])
    setters = [name for name in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(name).assigns]
    if not setters:
        raise AnnotateError(f"{path}: --hard-labels needs a teacher component that sets doc.ents; this pipeline has: {', '.join(nlp.pipe_names) or 'no components'}")
    labels = sorted({label for name in setters for label in getattr(nlp.get_pipe(name), "labels", ())})
    return Teacher(labels, None, None)


def check_labels(teacher: Teacher, student_labels: List[str], student_scheme: str) -> None:
    """Refuse a teacher whose labels the student cannot learn, naming them (before any tagging)."""
    if teacher.tags is not None:
        from ..ml.distill import tag_mapping

        tag_mapping(teacher.tags, teacher.scheme, tag_names(student_labels, student_scheme), student_scheme)
        return
    missing = sorted(set(teacher.labels) - set(student_labels))
    if missing:
        raise LabelError(f"the teacher predicts label(s) {', '.join(missing)} that the student's gold data does not have "
                         f"(student labels: {', '.join(student_labels) or 'none'})")


def open_unlabeled(options: DistillOptions):
    """(dataset, kind, column) of the unlabeled set; DatasetError when it has no text or tokens column."""
    from ..annotate.inputs import load_hf

    dataset = load_hf(options.unlabeled, options.unlabeled_split, None, None)
    names = dataset.column_names
    for kind, column in (("text", options.text_column), ("tokens", options.tokens_column)):
        if column is not None:
            if column not in names:
                raise DatasetError(f"{options.unlabeled}: no column {column!r} (it has: {', '.join(names)})")
            return dataset, kind, column
    for kind in ("text", "tokens"):
        if kind in names:
            return dataset, kind, kind
    raise DatasetError(
        f"{options.unlabeled}: no 'text' or 'tokens' column to distil on (it has: {', '.join(names)}); "
        "name one with --text-column or --tokens-column"
    )


def story_sentences(dataset, kind: str, column: str, id_column: str, limit: int, lang: str) -> Iterator[List[Tuple[str, List[str]]]]:
    """Per unlabeled row, its sentences as (id, words): spaCy's tokenizer for `lang` and its rule-based
    sentencizer, the student's own side; ids are ROWID#K (K counts the row's sentences, empty ones too)."""
    import spacy
    from spacy.tokens import Doc

    nlp = spacy.blank(lang)
    sentencizer = nlp.add_pipe("sentencizer")
    if limit:
        dataset = dataset.select(range(min(limit, len(dataset))))
    has_id = id_column in dataset.column_names
    for index, row in enumerate(dataset):
        value = row[column]
        if not value:
            continue
        doc = nlp.make_doc(value) if kind == "text" else Doc(nlp.vocab, words=[w for w in value if w and w.strip()])
        doc = sentencizer(doc)
        row_id = str(row[id_column]) if has_id and row[id_column] is not None else f"{index}"
        story = [(f"{row_id}#{k}", [t.text for t in sent if not t.is_space]) for k, sent in enumerate(doc.sents)]
        yield [(sent_id, words) for sent_id, words in story if words]


def packed(story: List[Tuple[str, List[str]]], max_words: int) -> Iterator[Tuple[str, List[str]]]:
    """One story's consecutive sentences joined into rows of at most `max_words` words (a longer
    sentence stays whole), so the teacher and the student read some context; ids ROWID#K-L."""
    group: List[Tuple[str, List[str]]] = []
    size = 0  # words in `group`
    for sent_id, words in story + [("", [])]:  # the sentinel flushes the last group
        if group and (not words or size + len(words) > max_words):
            first, last = group[0][0], group[-1][0]
            yield (first if first == last else f"{first}-{last.rsplit('#', 1)[1]}"), [w for _, ws in group for w in ws]
            group, size = [], 0
        if words:
            group.append((sent_id, words))
            size += len(words)


def write_sentences(options: DistillOptions, lang: str, target: Path) -> int:
    """Cut the unlabeled rows into sentences once into `target` (parquet: id, tokens), atomically;
    a rerun finds the file and keeps it, so the teacher's shards line up with the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..util.atomic import commit, tmp_name, write_json_atomic

    settings = {"unlabeled": options.unlabeled, "split": options.unlabeled_split, "limit": options.unlabeled_limit,
                "text_column": options.text_column, "tokens_column": options.tokens_column, "id_column": options.id_column, "lang": lang}
    if options.pack_words:  # recorded only when set, so teacher folders written before the option still resume
        settings["pack_words"] = options.pack_words
    record = target.parent / SENTENCES_SETTINGS
    if target.is_file():
        previous = json.loads(record.read_text(encoding="utf8")) if record.is_file() else None
        if previous != settings:
            changed = sorted(k for k in settings if (previous or {}).get(k) != settings[k])
            raise AnnotateError(f"{target.parent} holds a teacher stage with other settings ({', '.join(changed)} differ); "
                                "rerun with the same arguments to resume, or choose a new --output")
        return pq.ParquetFile(target).metadata.num_rows
    dataset, kind, column = open_unlabeled(options)
    stories = story_sentences(dataset, kind, column, options.id_column, options.unlabeled_limit, lang)
    rows = [row for story in stories for row in (packed(story, options.pack_words) if options.pack_words else story)]
    if not rows:
        raise DatasetError(f"{options.unlabeled}: no sentences to tag")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(target)
    pq.write_table(pa.table({"id": [r[0] for r in rows], "tokens": [r[1] for r in rows]}), tmp)
    write_json_atomic(record, settings)
    commit(tmp, target)
    return len(rows)


def annotate_into(options: DistillOptions, input_path: str, out: Path, tokens_column: str, split: str = "train", limit: int = 0) -> None:
    """Tag `input_path` with the teacher into `out` (resumable on the local engine); raise when that fails."""
    from ..annotate import AnnotateOptions, annotate

    if options.engine == "ray" and out.is_dir() and any(out.iterdir()):
        record = out / "_annotate.json"
        if record.is_file() and json.loads(record.read_text(encoding="utf8")).get("complete"):
            print(f"teacher: {out} is complete; kept", file=sys.stderr)
            return
        raise AnnotateError(f"{out} holds an unfinished Ray run, which Ray cannot resume; delete it and rerun")
    args = AnnotateOptions(
        model=options.teacher, input=input_path, output_dir=str(out), split=split, tokens_column=tokens_column,
        marginals=not options.hard_labels, keep_tokens=options.hard_labels, shard_size=options.shard_size,
        batch_size=options.batch_size, limit=limit, engine=options.engine, n_process=options.n_process,
    )
    code = annotate(args)
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise AnnotateError(f"tagging {input_path} with the teacher failed (see above)")
