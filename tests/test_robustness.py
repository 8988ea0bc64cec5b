"""Hostile input, huge docs, worker processes, determinism, and property-based checks."""
import json
import multiprocessing
import subprocess
import sys

import pytest
import spacy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc

from bilstm_tagger.pipeline.threads import configure_torch_threads

from .conftest import MEASUREMENTS, REPO, TINY_MODEL

HOSTILE_TEXTS = [
    "",
    "   \n\t  ",
    "!!! ... ??? ;;; ---",
    "Oslo",
    "👩‍👩‍👧‍👦 met 🇳🇴 fans in Bergen 🎉",
    "zero\u200dwidth\u200bjoiners\u2060here and Lisbon",
    "Cafe\u0301 cre\u0300me Zu\u0308rich",  # combining marks
    "مرحبا بكم في القاهرة مع شركة النيل",  # right-to-left
    "שלום ירושלים",
    "control\x07chars\x1b[31m and\x00NUL and \x7f",
    "x" * 10_000 + " Mara Lindqvist",
    "\u202eRTL override\u202c Oslo",
]


def check_well_formed(doc, labels):
    taken = set()
    for ent in doc.ents:
        assert 0 <= ent.start < ent.end <= len(doc)
        assert ent.label_ in labels
        assert not taken.intersection(range(ent.start, ent.end))
        taken.update(range(ent.start, ent.end))


def test_hostile_docs_never_crash_alone_or_in_mixed_batches(ner_nlp):
    labels = set(ner_nlp.get_pipe("bilstm_tagger").labels)
    alone = []
    for text in HOSTILE_TEXTS:
        doc = ner_nlp(text)
        check_well_formed(doc, labels)
        alone.append([(e.start, e.end, e.label_) for e in doc.ents])
    for batch_size in (1, 3, 100):
        batched = list(ner_nlp.pipe(HOSTILE_TEXTS * 2, batch_size=batch_size))
        assert [[(e.start, e.end, e.label_) for e in d.ents] for d in batched] == alone * 2


def test_lone_surrogates_are_refused_by_spacy_before_reaching_the_tagger(ner_nlp):
    # spaCy's tokenizer and string store cannot hash them; that is the whole pipeline's limit, not ours.
    with pytest.raises(UnicodeEncodeError):
        ner_nlp.make_doc("lone \ud800 surrogate")


def test_a_ten_thousand_character_token(ner_nlp):
    doc = Doc(ner_nlp.vocab, words=["a" * 10_000, "in", "Oslo"])
    check_well_formed(ner_nlp(doc), set(ner_nlp.get_pipe("bilstm_tagger").labels))


RSS_SCRIPT = r"""
import json, sys, spacy, torch
from spacy.tokens import Doc
torch.set_num_threads(1)

def peak_kb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so this child of a large
    # pytest process would report the parent's peak.
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))

nlp = spacy.load(sys.argv[1])
words = ("Mara Lindqvist said on Tuesday that Northwind Bank would cut 200 jobs in Lisbon .".split() * 7000)[:100_000]
doc = Doc(nlp.vocab, words=words)
before = peak_kb()
doc = nlp(doc)
peak = peak_kb()
labels = set(nlp.get_pipe("bilstm_tagger").labels)
ok = all(0 <= e.start < e.end <= len(doc) and e.label_ in labels for e in doc.ents)
print(json.dumps({"tokens": len(doc), "ents": len(doc.ents), "before_mb": before / 1024, "peak_mb": peak / 1024, "ok": ok}))
"""


def test_a_100k_token_doc_stays_under_1_gib(default_model_dir):
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(default_model_dir)], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    MEASUREMENTS.append(
        f"100,000-token doc, default architecture, 1 thread: peak RSS {result['peak_mb']:.0f} MB "
        f"(after loading {result['before_mb']:.0f} MB), {result['ents']} entities"
    )
    assert result["tokens"] == 100_000 and result["ok"]
    assert result["peak_mb"] < 1024, result


MP_SCRIPT = r"""
import multiprocessing as mp, json, sys, spacy
if __name__ == "__main__":
    mp.set_start_method(sys.argv[2], force=True)
    nlp = spacy.load(sys.argv[1])
    texts = json.loads(sys.argv[3])
    ents = lambda docs: [[(e.start, e.end, e.label_) for e in d.ents] for d in docs]
    one = ents(nlp.pipe(texts, batch_size=4))
    two = ents(nlp.pipe(texts, batch_size=4, n_process=2))
    print(json.dumps({"same": one == two, "n": sum(map(len, one))}))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_processes_give_the_same_output_as_one(ner_nlp, tmp_path, method):
    ner_nlp.to_disk(tmp_path / "m")
    texts = HOSTILE_TEXTS + ["Mara Lindqvist said on Tuesday that Northwind Bank would cut 200 jobs in Lisbon ."] * 20
    proc = subprocess.run(
        [sys.executable, "-c", MP_SCRIPT, str(tmp_path / "m"), method, json.dumps(texts)],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["same"] and result["n"] > 0


def _threads_in_child(requested):
    configure_torch_threads(requested)
    return torch.get_num_threads()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_processes_default_to_one_torch_thread(method):
    with multiprocessing.get_context(method).Pool(1) as pool:
        assert pool.apply(_threads_in_child, (0,)) == 1
        assert pool.apply(_threads_in_child, (2,)) == 2


def test_component_pickles_without_lambdas(ner_nlp):
    import pickle

    tagger = pickle.loads(pickle.dumps(ner_nlp.get_pipe("bilstm_tagger")))
    doc = ner_nlp.make_doc("Mara Lindqvist visited Lisbon .")
    assert [e.label_ for e in tagger(doc).ents] == [e.label_ for e in ner_nlp(doc.text).ents]


WORDS = st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(WORDS, min_size=1, max_size=6))
def test_any_tokens_give_well_formed_entities(ner_nlp, batch):
    labels = set(ner_nlp.get_pipe("bilstm_tagger").labels)
    docs = [Doc(ner_nlp.vocab, words=words) for words in batch]
    for doc in ner_nlp.pipe(docs, batch_size=4):
        check_well_formed(doc, labels)


DETERMINISM_SCRIPT = r"""
import json, sys, spacy, hashlib
from bilstm_tagger.cli import main
out = sys.argv[1]
main(["train", "configs/ner.cfg", "--output", out, "--paths.dataset", "corpora/sample_ner",
      "--corpora.train.limit", "120", "--corpora.dev.limit", "20", "--training.max_steps", "30",
      "--training.eval_frequency", "15", "--components.bilstm_tagger.model.hidden_size", "32",
      "--components.bilstm_tagger.torch_threads", "1"])
nlp = spacy.load(out + "/model-last")
doc = nlp("Mara Lindqvist said that Northwind Bank would cut 200 jobs in Lisbon .")
weights = open(out + "/model-last/bilstm_tagger/model", "rb").read()
print(json.dumps({"sha": hashlib.sha256(weights).hexdigest(), "ents": [(e.start, e.end, e.label_) for e in doc.ents]}))
"""


def test_same_seed_same_data_gives_bit_identical_weights_across_processes(tmp_path):
    runs = []
    for i in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", DETERMINISM_SCRIPT, str(tmp_path / f"run{i}")],
            capture_output=True, text=True, cwd=str(REPO), timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[0] == runs[1]


def test_thread_tuner_keeps_the_faster_count_and_checks_less_often_while_it_holds():
    from bilstm_tagger.pipeline.threads import ThreadTuner

    tuner = ThreadTuner([1, 2], explore_every=4, max_every=16)
    # Each count is tried first, then the faster per token is kept ...
    assert tuner.choose() == 1
    tuner.record(1, seconds=1.0, n_tokens=1000)
    assert tuner.choose() == 2
    tuner.record(2, seconds=3.0, n_tokens=1000)  # two threads fighting a busy core
    picks = []
    for call in range(1, 41):
        tuner.calls = call
        picks.append(tuner.choose())
        tuner.record(picks[-1], seconds=1.0 if picks[-1] == 1 else 3.0, n_tokens=1000)
    # ... retried at call 4, then after 8, 16 and 16 more calls (capped), since the load may change.
    assert [i + 1 for i, p in enumerate(picks) if p == 2] == [4, 12, 28]
    for _ in range(5):  # the other process went away: two threads are now faster
        tuner.record(2, seconds=0.5, n_tokens=1000)
    assert tuner.best() == 2


def test_the_pipe_runs_under_the_tuned_thread_count(sample_examples):
    from bilstm_tagger.pipeline.threads import available_cores

    if available_cores() < 2:
        pytest.skip("one core: nothing to tune")
    torch.set_num_threads(1)  # an earlier tuner may have left this; a new pipe must still tune
    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("bilstm_tagger", config={"model": TINY_MODEL})
    nlp.initialize(lambda: sample_examples["train"][:20])
    assert tagger._tuner is not None and tagger._tuner.choices == [1, available_cores()]
    text = "Mara Lindqvist said on Tuesday that Northwind Bank would cut 200 jobs in Lisbon ."
    list(nlp.pipe([text] * 19, batch_size=19))  # 285 tokens: too few to time
    assert tagger._tuner.cost == {}
    seen = []
    for _ in range(2):
        list(nlp.pipe([text] * 20, batch_size=20))  # 300 tokens: timed, one count after the other
        seen.append((torch.get_num_threads(), sorted(tagger._tuner.cost)))
    assert seen == [(1, [1]), (available_cores(), [1, available_cores()])]
