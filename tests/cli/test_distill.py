"""`distill TEACHER CONFIG --unlabeled DATASET --output DIR`: end to end on CoNLL slices and unlabeled news,
resumption of the teacher stage after a real kill, and clear errors before any tagging."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
from spacy.training import Example

from bilstm_tagger.annotate.core import KILL_HOOK_ENV
from bilstm_tagger.annotate.marginals import read_marginals, read_meta
from bilstm_tagger.cli import main

from ..conftest import MEASUREMENTS, REPO, TINY_MODEL, conll_path, read_examples, tiny_model, train_pipeline

NEWS = REPO.parent / "shared" / "datasets" / "news_unlabeled"

# The student: a tiny BiLSTM-CRF trained on 100 gold CoNLL sentences, model-best picked on 300
# validation sentences. Fixed steps and evaluation points, so the gold-only run and the distilled run
# differ only in their training rows.
STUDENT_CFG = """
[paths]
dataset = "{dataset}"
vectors = null
init_tok2vec = null

[system]
gpu_allocator = null
seed = 0

[nlp]
lang = "en"
pipeline = ["bilstm_tagger"]
batch_size = 256
tokenizer = {{"@tokenizers":"spacy.Tokenizer.v1"}}

[components]

[components.bilstm_tagger]
factory = "bilstm_tagger"
scheme = "BILOU"
torch_threads = 1
distill_weight = 1.0
distill_temperature = 1.0

[components.bilstm_tagger.model]
@architectures = "bilstm_tagger.BiLSTMTagger.v2"
hidden_size = 32
dropout = 0.1

[components.bilstm_tagger.model.embed]
@architectures = "bilstm_tagger.HashCharEmbed.v1"
rows = [2000, 500, 500, 200]
widths = [32, 8, 8, 8]
char_width = 16
char_embed = 8
word_dropout = 0.0

[corpora]

[corpora.train]
@readers = "bilstm_tagger.HFDataset.v1"
path = ${{paths.dataset}}
split = "train"
limit = 100

[corpora.dev]
@readers = "bilstm_tagger.HFDataset.v1"
path = ${{paths.dataset}}
split = "validation"
limit = 300

[training]
dev_corpus = "corpora.dev"
train_corpus = "corpora.train"
seed = ${{system.seed}}
gpu_allocator = ${{system.gpu_allocator}}
dropout = 0.1
accumulate_gradient = 1
max_epochs = 0
max_steps = 300
eval_frequency = 100
patience = 0
frozen_components = []
annotating_components = []
before_to_disk = null
before_update = null

[training.batcher]
@batchers = "spacy.batch_by_words.v1"
discard_oversize = false
tolerance = 0.2
size = 500

[training.logger]
@loggers = "spacy.ConsoleLogger.v3"
progress_bar = null
console_output = true
output_file = null

[training.optimizer]
@optimizers = "Adam.v1"
use_averages = false
learn_rate = 0.01

[training.score_weights]
ents_f = 1.0
ents_p = 0.0
ents_r = 0.0
ents_per_type = null

[initialize]
vectors = ${{paths.vectors}}
init_tok2vec = ${{paths.init_tok2vec}}
"""

QUICK = ["--training.max_steps", "2", "--training.eval_frequency", "1"]


@pytest.fixture(scope="module")
def student_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "student.cfg"
    path.write_text(STUDENT_CFG.format(dataset=conll_path()), encoding="utf8")
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A teacher that knows more than the student: the same kind of tagger, wider, on 2,000 gold sentences."""
    examples = read_examples(spacy.blank("en"), conll_path(), "train", limit=2000)
    nlp = train_pipeline({"model": tiny_model(hidden_size=64), "torch_threads": 1}, examples, steps=200)
    path = tmp_path_factory.mktemp("teacher") / "model"
    nlp.to_disk(path)
    return path


def test_scores(nlp, examples) -> float:
    return nlp.evaluate([Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples])["ents_f"]


test_scores.__test__ = False  # a helper, not a test


def shard_rows(folder: Path) -> list:
    rows = []
    for f in sorted(glob.glob(str(folder / "part-*.parquet"))):
        table = pq.read_table(f)
        meta = read_meta(table.schema)
        probs = read_marginals(table.column("marginals"), len(meta["tags"]))
        rows += [(r["id"], r["tokens"], p) for r, p in zip(table.select(["id", "tokens"]).to_pylist(), probs)]
    return rows


def test_distilled_student_beats_the_gold_only_student(teacher_dir, student_cfg, tmp_path):
    if not (NEWS / "train.parquet").is_file():
        pytest.skip(f"the unlabeled news set is not at {NEWS}")
    assert main(["train", str(student_cfg), "--output", str(tmp_path / "gold")]) == 0
    argv = ["distill", str(teacher_dir), str(student_cfg), "--unlabeled", str(NEWS), "--output", str(tmp_path / "distil"),
            "--unlabeled-limit", "100"]
    assert main(argv) == 0
    out = tmp_path / "distil"
    assert (out / "model-best").is_dir() and (out / "model-last").is_dir()
    unlabeled, gold = shard_rows(out / "teacher" / "unlabeled"), shard_rows(out / "teacher" / "train")
    assert len(unlabeled) > 300 and len(gold) == 100  # 100 stories cut into sentences; the gold slice
    assert all(np.allclose(p.sum(1), 1.0, atol=1e-3) for _, _, p in unlabeled[:50])
    student = spacy.load(out / "model-best")
    assert student.pipe_names == ["bilstm_tagger"]  # no transformer, nothing of the teacher's
    test = read_examples(spacy.blank("en"), conll_path(), "test", limit=500)
    gold_f, distil_f = test_scores(spacy.load(tmp_path / "gold" / "model-best"), test), test_scores(student, test)
    teacher_f = test_scores(spacy.load(teacher_dir), test)
    MEASUREMENTS.append(f"distill e2e (CoNLL test[:500] ents_f): teacher {teacher_f:.3f}, gold-only student {gold_f:.3f}, distilled student {distil_f:.3f}")
    assert distil_f > gold_f + 0.1


def test_teacher_stage_resumes_after_a_kill_with_nothing_lost_or_doubled(teacher_dir, student_cfg, tmp_path, capsys):
    """SIGKILL a real `distill` halfway through its 3rd teacher shard, rerun; the shards equal an
    uninterrupted run's, every sentence once. The rerun's teacher is the student's own kind of model
    (self-training works the same way), and --section.key overrides reach the training."""
    base = ["distill", str(teacher_dir), str(student_cfg), "--unlabeled", str(NEWS), "--unlabeled-limit", "30",
            "--shard-size", "60", "--no-teacher-train"]
    whole = tmp_path / "whole"
    assert main([*base, "--output", str(whole), *QUICK]) == 0
    out = tmp_path / "resumed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **{KILL_HOOK_ENV: "2"})
    script = "import sys\nfrom bilstm_tagger.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    killed = subprocess.run([sys.executable, "-c", script, *base, "--output", str(out), *QUICK], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    teacher_out = out / "teacher" / "unlabeled"
    assert sorted(p.name for p in teacher_out.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    assert not (out / "model-best").exists()
    (teacher_out / "part-000000.parquet").unlink()  # a lost shard is redone too
    assert main([*base, "--output", str(out), *QUICK]) == 0
    expected, got = shard_rows(whole / "teacher" / "unlabeled"), shard_rows(teacher_out)
    assert len(got) == len(expected) > 120 and len({r[0] for r in got}) == len(got)
    sentences = pq.read_table(out / "teacher" / "unlabeled-sentences.parquet").to_pylist()
    assert [(r["id"], r["tokens"]) for r in sentences] == [(i, t) for i, t, _ in got]
    for (i, t, p), (j, u, q) in zip(got, expected):
        assert (i, t) == (j, u) and np.allclose(p, q, atol=1e-3)
    assert (out / "model-best").is_dir()
    # another unlabeled slice into the same output is refused, not mixed in
    other = [a if a != "30" else "31" for a in base]
    assert main([*other, "--output", str(out), *QUICK]) == 1
    assert "other settings (limit differ)" in capsys.readouterr().err
    # self-training: the student's own earlier model as the teacher
    assert main(["distill", str(out / "model-best"), str(student_cfg), "--unlabeled", str(NEWS), "--unlabeled-limit", "5",
                 "--output", str(tmp_path / "self"), *QUICK]) == 0


def test_clear_errors_before_any_tagging(teacher_dir, student_cfg, tmp_path, capsys):
    examples = read_examples(spacy.blank("en"), conll_path(), "train", limit=50)
    # a teacher with a label the student's gold data lacks
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    nlp.get_pipe("bilstm_tagger").initialize(lambda: examples, nlp=nlp, labels=["LOC", "MISC", "ORG", "PER", "PRODUCT"])
    nlp.to_disk(tmp_path / "extra")
    # a teacher with no tagger at all
    spacy.blank("en").to_disk(tmp_path / "blank")
    # an unlabeled set with neither a text nor a tokens column
    (tmp_path / "body").mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "body": ["One story .", "Another ."]}), tmp_path / "body" / "train.parquet")
    cases = [
        (tmp_path / "extra", str(NEWS), [], "PRODUCT", 1),
        (tmp_path / "blank", str(NEWS), [], "needs a bilstm_tagger span component", 1),
        (tmp_path / "blank", str(NEWS), ["--hard-labels"], "needs a teacher component that sets doc.ents", 1),
        (teacher_dir, str(tmp_path / "body"), [], "no 'text' or 'tokens' column", 1),
        # overrides are checked (a usage error, 2) against the DistillCorpus reader distill trains with
        (teacher_dir, str(NEWS), ["--corpora.train.gold_repeat", "2"], "did you mean --corpora.train.gold_repeats?", 2),
        (teacher_dir, str(NEWS), ["--corpora.train.teacher", '["elsewhere"]'], "distill sets the teacher folders itself", 2),
        (teacher_dir, str(NEWS), ["--corpora.train.gold_repeats", "0"], "gold_repeats must be a whole number >= 1, got 0", 2),
    ]
    for teacher, unlabeled, extra, message, code in cases:
        out = tmp_path / f"out-{len(message)}"
        assert main(["distill", str(teacher), str(student_cfg), "--unlabeled", unlabeled, "--output", str(out), *extra]) == code
        err = capsys.readouterr().err
        assert message in err, err
        assert not (out / "teacher" / "unlabeled").exists()


def test_hard_labels_from_spacys_own_ner(student_cfg, tmp_path):
    """--hard-labels: a spaCy `ner` teacher's entities become silver gold for the student."""
    examples = read_examples(spacy.blank("en"), conll_path(), "train", limit=200)
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    optimizer = nlp.initialize(lambda: examples)
    for start in range(0, 200, 20):
        nlp.update(examples[start : start + 20], sgd=optimizer)
    nlp.to_disk(tmp_path / "ner")
    out = tmp_path / "out"
    argv = ["distill", str(tmp_path / "ner"), str(student_cfg), "--unlabeled", str(NEWS), "--unlabeled-limit", "5",
            "--output", str(out), "--hard-labels", *QUICK]
    assert main(argv) == 0
    table = pq.read_table(glob.glob(str(out / "teacher" / "unlabeled" / "part-*.parquet"))[0])
    assert read_meta(table.schema) is None and "tokens" in table.column_names
    assert not (out / "teacher" / "train").exists() and (out / "model-last").is_dir()
    from bilstm_tagger.data.distill import create_distill_reader

    reader = create_distill_reader(path=None, teacher=[str(out / "teacher" / "unlabeled")])
    egs = list(reader(spacy.blank("en")))
    assert len(egs) == table.num_rows
    silver = [(e["start_token"], e["end_token"], e["label"]) for row in table.to_pylist() for e in row["entities"]]
    assert [(e.start, e.end, e.label_) for eg in egs for e in eg.reference.ents] == silver
    assert all(t.ent_iob_ in ("B", "I", "O") for eg in egs for t in eg.reference)


def test_teacher_only_stops_after_stage_one_and_a_rerun_trains_on_the_same_shards(teacher_dir, student_cfg, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["distill", str(teacher_dir), str(student_cfg), "--unlabeled", str(NEWS), "--unlabeled-limit", "5", "--output", str(out)]
    assert main([*base, "--teacher-only", *QUICK]) == 0
    assert "--teacher-only, so no student" in capsys.readouterr().err
    assert not (out / "model-best").exists()
    shards = sorted((out / "teacher").glob("*/part-*.parquet"))
    assert {p.parent.name for p in shards} == {"unlabeled", "train"}
    before = {p: p.stat().st_mtime_ns for p in shards}
    sentences = pq.read_table(out / "teacher" / "unlabeled-sentences.parquet").num_rows
    assert len(shard_rows(out / "teacher" / "unlabeled")) == sentences > 5
    # stage 2 now, on the shards stage 1 left; DistillCorpus's own settings pass as overrides
    assert main([*base, *QUICK, "--corpora.train.gold_repeats", "2", "--corpora.train.teacher_hard", "true"]) == 0
    assert (out / "model-best").is_dir()
    corpus = spacy.util.load_config(out / "model-best" / "config.cfg", interpolate=False)["corpora"]["train"]
    assert (corpus["@readers"], corpus["gold_repeats"], corpus["teacher_hard"]) == ("bilstm_tagger.DistillCorpus.v1", 2, True)
    assert {p: p.stat().st_mtime_ns for p in sorted((out / "teacher").glob("*/part-*.parquet"))} == before


def test_pack_words_joins_whole_sentences_of_one_story_and_loses_no_word(teacher_dir, student_cfg, tmp_path):
    base = ["distill", str(teacher_dir), str(student_cfg), "--unlabeled", str(NEWS), "--unlabeled-limit", "8",
            "--no-teacher-train", "--teacher-only"]
    assert main([*base, "--output", str(tmp_path / "sent")]) == 0
    assert main([*base, "--output", str(tmp_path / "packed"), "--pack-words", "40"]) == 0
    sents = pq.read_table(tmp_path / "sent" / "teacher" / "unlabeled-sentences.parquet").to_pylist()
    packs = pq.read_table(tmp_path / "packed" / "teacher" / "unlabeled-sentences.parquet").to_pylist()
    at = 0
    for row in packs:  # each pack is the next run of whole sentences of one story, in order
        members = [sents[at]]
        while sum(len(m["tokens"]) for m in members) < len(row["tokens"]):
            members.append(sents[at + len(members)])
        at += len(members)
        assert row["tokens"] == [w for m in members for w in m["tokens"]]
        assert len({m["id"].rsplit("#", 1)[0] for m in members}) == 1
        last_k = members[-1]["id"].rsplit("#", 1)[1]
        assert row["id"] == (members[0]["id"] if len(members) == 1 else f"{members[0]['id']}-{last_k}")
        assert len(row["tokens"]) <= 40 or len(members) == 1
    assert at == len(sents) > len(packs)  # every sentence exactly once, fewer rows
    assert len(shard_rows(tmp_path / "packed" / "teacher" / "unlabeled")) == len(packs)


def test_an_ensemble_teacher_gives_the_mean_of_its_members_marginals(teacher_dir, student_cfg, tmp_path, capsys):
    examples = read_examples(spacy.blank("en"), conll_path(), "train", limit=500)
    second = tmp_path / "second"
    train_pipeline({"model": tiny_model(hidden_size=32), "torch_threads": 1}, examples, steps=60, seed=1).to_disk(second)
    out = tmp_path / "out"
    base = ["distill", str(teacher_dir), str(student_cfg), "--unlabeled", str(NEWS), "--unlabeled-limit", "6", "--shard-size", "15"]
    assert main([*base, "--output", str(out), "--teacher-only"]) == 0  # one teacher's shards first: the ensemble must replace them
    assert main([*base, "--ensemble", str(second), "--output", str(out), *QUICK]) == 0
    assert (out / "model-best").is_dir()
    for part in ("unlabeled", "train"):
        members = [shard_rows(out / "teacher" / "members" / k / part) for k in ("0", "1")]
        mean = shard_rows(out / "teacher" / part)
        assert len(mean) == len(members[0]) == len(members[1]) > 30  # several shards of 15
        for (i, t, p), (j, u, q), (k, v, r) in zip(mean, *members):
            assert i == j == k and t == u == v
            assert np.allclose(p, (q + r) / 2, atol=1e-3) and np.allclose(p.sum(1), 1.0, atol=1e-3)
        assert not np.allclose(members[0][0][2], members[1][0][2], atol=1e-2)  # the members do differ
    # the members must predict the same tags, and hard labels have no marginals to average
    iob = tmp_path / "iob"
    train_pipeline({"model": tiny_model(hidden_size=32), "torch_threads": 1, "scheme": "IOB2"}, examples, steps=5).to_disk(iob)
    for extra, message in ((["--ensemble", str(iob)], "ensemble teachers must predict the same tags"),
                           (["--ensemble", str(second), "--hard-labels"], "does not combine with --hard-labels")):
        assert main([*base, *extra, "--output", str(tmp_path / f"bad{len(message)}"), *QUICK]) == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"bad{len(message)}" / "teacher" / "members").exists()


def test_ensemble_mean_maps_tags_by_name_and_names_a_bad_member(tmp_path):
    """The mean follows the first member's tag order whatever order another member stores; an unreadable
    member shard or an unfinished member run is refused by name."""
    from bilstm_tagger.annotate.marginals import marginals_array, with_marginals
    from bilstm_tagger.distill.ensemble import average_shards
    from bilstm_tagger.errors import AnnotateError

    tags = ["O", "B-PER", "L-PER"]
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    q = np.array([[0.1, 0.3, 0.6], [0.5, 0.25, 0.25]], dtype=np.float32)  # in the order of `perm` below
    perm = ["L-PER", "O", "B-PER"]
    for k, (order, probs) in enumerate(((tags, p), (perm, q))):
        meta = {"tags": order, "scheme": "BILOU", "labels": ["PER"], "temperature": 1.0}
        entity = pa.struct([("start_token", pa.int32()), ("end_token", pa.int32()), ("label", pa.string())])
        schema = with_marginals(pa.schema([("id", pa.string()), ("entities", pa.list_(entity))]), meta)
        table = pa.table({"id": ["a"], "entities": [[]], "tokens": [["Ann", "Lee"]], "marginals": marginals_array([probs], 3)}, schema=schema)
        (tmp_path / str(k)).mkdir()
        pq.write_table(table, tmp_path / str(k) / "part-000000.parquet")
        (tmp_path / str(k) / "_annotate.json").write_text('{"complete": true, "engine": "local"}')
    assert average_shards([tmp_path / "0", tmp_path / "1"], tmp_path / "mean") == 1
    (_, tokens, mean), = shard_rows(tmp_path / "mean")
    expected = (p + q[:, [perm.index(t) for t in tags]]) / 2
    assert tokens == ["Ann", "Lee"] and np.allclose(mean, expected, atol=1e-3)
    (tmp_path / "1" / "_annotate.json").write_text('{"complete": false, "engine": "local"}')
    with pytest.raises(AnnotateError, match="not complete"):
        average_shards([tmp_path / "0", tmp_path / "1"], tmp_path / "mean")
    (tmp_path / "1" / "_annotate.json").write_text('{"complete": true, "engine": "local"}')
    (tmp_path / "1" / "part-000000.parquet").write_bytes(b"not parquet")
    with pytest.raises(AnnotateError, match="part-000000.parquet: unreadable shard"):
        average_shards([tmp_path / "0", tmp_path / "1"], tmp_path / "mean")
