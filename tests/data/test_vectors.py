"""Static vectors: the lookup attribute is the model's own setting, saved with it, and checked."""
import numpy as np
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example

from bilstm_tagger.data.vectors import build_vectors_pipeline
from bilstm_tagger.errors import ModelLoadError
from bilstm_tagger.ml.embed import resolve_vectors_attr, table_is_lowercased

from ..conftest import read_examples, SAMPLE, tiny_model, train_pipeline

WORDS = ["lisbon", "oslo", "mara", "bank", "the", "in", "visited", "."]


def glove_file(path, words, width=6, upper=False):
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf8") as f:
        for w in words:
            f.write(" ".join([w.title() if upper else w] + [f"{x:.4f}" for x in rng.normal(size=width)]) + "\n")
    return path


def test_a_lower_keyed_table_finds_capitalised_words_after_a_reload(tmp_path):
    build_vectors_pipeline(str(glove_file(tmp_path / "g.txt", WORDS)), str(tmp_path / "vec"), attr="LOWER")
    nlp = spacy.load(tmp_path / "vec")
    vectors = nlp.vocab.vectors
    # spaCy forgets the attribute of a default-mode table on reload ...
    assert vectors.attr == spacy.attrs.ORTH
    # ... so the model reads it off the keys, and looks "Lisbon" up as "lisbon".
    assert table_is_lowercased(vectors, nlp.vocab.strings)
    attr = resolve_vectors_attr(None, vectors, nlp.vocab.strings)
    assert attr == "LOWER"
    from spacy.attrs import IDS

    doc = nlp.make_doc("Lisbon OSLO Mara zzz")
    rows = vectors.find(keys=doc.to_array(IDS[attr]).astype(np.uint64))
    assert (rows[:3] >= 0).all() and rows[3] == -1
    assert (vectors.find(keys=doc.to_array(IDS["ORTH"]).astype(np.uint64))[:3] == -1).all()


def test_training_with_vectors_uses_them_and_refuses_a_cased_table(tmp_path):
    build_vectors_pipeline(str(glove_file(tmp_path / "g.txt", WORDS)), str(tmp_path / "vec"), attr="LOWER")
    nlp0 = spacy.load(tmp_path / "vec")
    examples = read_examples(nlp0, SAMPLE, "train", limit=40)
    config = {"model": tiny_model({"include_static_vectors": True})}
    spacy.util.fix_random_seed(0)
    nlp = spacy.load(tmp_path / "vec")
    nlp.add_pipe("bilstm_tagger", config=config)
    nlp.initialize(lambda: examples)
    embed = nlp.get_pipe("bilstm_tagger").model.get_ref("embed")
    assert embed.attrs["vectors_attr"] == "LOWER" and embed.attrs["spec"]["vectors_width"] == 6
    nlp.to_disk(tmp_path / "model")
    reloaded = spacy.load(tmp_path / "model")
    embed = reloaded.get_pipe("bilstm_tagger").model.get_ref("embed")
    assert embed.attrs["vectors_attr"] == "LOWER"
    # What the embedder really feeds the BiLSTM: "Lisbon" gets the row of "lisbon", an unknown word zeros.
    out = embed.predict([Doc(reloaded.vocab, words=["Lisbon", "zzz"])])[0]
    lisbon = reloaded.vocab.vectors[reloaded.vocab.strings["lisbon"]]
    assert np.allclose(out[0, -6:], lisbon) and np.abs(lisbon).sum() > 0
    assert (out[1, -6:] == 0).all()
    # The same model directory with a cased (ORTH-keyed) table of the same width is refused.
    build_vectors_pipeline(str(glove_file(tmp_path / "G.txt", WORDS, upper=True)), str(tmp_path / "cased"), attr="ORTH")
    cased = spacy.load(tmp_path / "cased")
    cased.vocab.to_disk(tmp_path / "model" / "vocab")
    with pytest.raises(ModelLoadError, match="looks static vectors up by LOWER, but this vectors table has keys with upper-case"):
        spacy.load(tmp_path / "model")


def test_trainable_rows_move_in_training_and_the_tail_stays_pretrained(tmp_path):
    # WORDS[:4] are the table's first rows: with vectors_trainable=4 they learn, the rest stay fixed.
    build_vectors_pipeline(str(glove_file(tmp_path / "g.txt", WORDS)), str(tmp_path / "vec"), attr="LOWER")
    nlp0 = spacy.load(tmp_path / "vec")
    examples = read_examples(nlp0, SAMPLE, "train", limit=40)
    settings = {"include_static_vectors": True, "vectors_trainable": 4, "vectors_norm": True, "vectors_dropout": 0.1}
    nlp = spacy.load(tmp_path / "vec")
    nlp.add_pipe("bilstm_tagger", config={"model": tiny_model(settings)})
    optimizer = nlp.initialize(lambda: examples)
    embed = nlp.get_pipe("bilstm_tagger").model.get_ref("embed")
    assert embed.attrs["spec"]["vectors_trainable"] == 4
    probe = [Doc(nlp.vocab, words=["Lisbon", "the", "zzz"])]  # row 0 (trainable), row 4 (fixed), none
    unit = lambda w: nlp.vocab.vectors[nlp.vocab.strings[w]] / np.linalg.norm(nlp.vocab.vectors[nlp.vocab.strings[w]])
    before = embed.predict(probe)[0][:, -6:].copy()
    assert np.allclose(before[0], unit("lisbon"), atol=1e-6) and np.allclose(before[1], unit("the"), atol=1e-6)
    words = ["Lisbon", "visited", "the", "bank"]
    train_docs = [Example(Doc(nlp.vocab, words=words), Doc(nlp.vocab, words=words, ents=["B-LOC", "O", "O", "O"]))]
    for _ in range(5):
        nlp.update(train_docs, sgd=optimizer)
    after = embed.predict(probe)[0][:, -6:]
    assert not np.allclose(after[0], before[0])  # a trainable row moved
    assert np.allclose(after[1], before[1], atol=1e-6) and (after[2] == 0).all()  # the tail and unknown words did not
    nlp.to_disk(tmp_path / "model")
    nlp2 = spacy.load(tmp_path / "model")
    reloaded = nlp2.get_pipe("bilstm_tagger").model.get_ref("embed")
    assert np.allclose(reloaded.predict([Doc(nlp2.vocab, words=["Lisbon", "the", "zzz"])])[0][:, -6:], after, atol=1e-6)


def _vectors_pipeline(seed):
    """A trained tagger over a float64 table: spaCy keeps that dtype, so the torch side holds a copy."""
    from spacy.vectors import Vectors

    rng = np.random.default_rng(seed)
    nlp = spacy.blank("en")
    nlp.vocab.vectors = Vectors(data=rng.normal(size=(len(WORDS), 6)), keys=[nlp.vocab.strings.add(w) for w in WORDS])
    assert nlp.vocab.vectors.data.dtype == np.float64
    nlp.add_pipe("bilstm_tagger", config={"model": tiny_model({"include_static_vectors": True}), "torch_threads": 1})
    examples = read_examples(nlp, SAMPLE, "train", limit=20)
    nlp.initialize(lambda: examples)
    return nlp


def _vector_part(nlp, words):
    embed = nlp.get_pipe("bilstm_tagger").model.get_ref("embed")
    return embed.predict([Doc(nlp.vocab, words=words)])[0][:, -6:]


def test_two_pipelines_each_see_their_own_vectors():
    """The converted-table cache must never hand one pipeline another's vectors: not while both are
    loaded, and not when a new table lands at the address (id) of a freed one."""
    import gc

    words = ["lisbon", "oslo", "zzz"]
    a, b = _vectors_pipeline(1), _vectors_pipeline(2)
    for nlp in (a, b, b, a):  # both loaded, used in turn; a last
        own = np.stack([nlp.vocab.vectors[nlp.vocab.strings[w]] for w in words[:2]])
        assert np.allclose(_vector_part(nlp, words)[:2], own) and (_vector_part(nlp, words)[2] == 0).all()
    # Pipeline a swaps in a new table of the same shape after the old one is freed; CPython often puts the
    # new array where the old one was, so id() alone would mistake it for the table already converted.
    old_id = id(a.vocab.vectors.data)
    values = np.random.default_rng(3).normal(size=(len(WORDS), 6))
    a.vocab.vectors.data = np.zeros((1, 1))
    gc.collect()
    candidates = []
    while len(candidates) < 10000 and (not candidates or id(candidates[-1]) != old_id):
        candidates.append(values.copy())
    a.vocab.vectors.data = candidates.pop()  # at the old address, unless something still holds the old table
    del candidates
    assert np.allclose(_vector_part(a, words)[:2], values[[WORDS.index(w) for w in words[:2]]])
