"""The CRF against brute-force enumeration on small random cases."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_tagger.ml.decoder import CRFDecoder, SoftmaxDecoder
from bilstm_tagger.tags import is_legal_sequence, tag_names, transition_constraints


def random_crf(n_tags: int, seed: int) -> CRFDecoder:
    gen = torch.Generator().manual_seed(seed)
    crf = CRFDecoder(n_tags)
    with torch.no_grad():
        for p in (crf.transitions, crf.start, crf.end):
            p.copy_(torch.randn(p.shape, generator=gen))
    return crf


def path_score(crf: CRFDecoder, em: torch.Tensor, path) -> float:
    score = crf.start[path[0]] + em[0, path[0]] + crf.end[path[-1]]
    for t in range(1, len(path)):
        score = score + crf.transitions[path[t - 1], path[t]] + em[t, path[t]]
    return float(score.detach())


def legal_paths(n_tags: int, length: int, tags=None, scheme=None):
    for path in itertools.product(range(n_tags), repeat=length):
        if tags is None or is_legal_sequence([tags[i] for i in path], scheme):
            yield path


def batch(lengths, n_tags, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    em = torch.randn(len(lengths), max(lengths), n_tags, generator=gen)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return em, mask


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_and_partition_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_tags = int(rng.integers(2, 5))
    lengths = [int(x) for x in rng.integers(1, 5, size=3)]
    crf = random_crf(n_tags, seed)
    em, mask = batch(lengths, n_tags, seed)
    log_z = crf.log_partition(em, mask)
    best = crf.decode(em, mask)
    for b, n in enumerate(lengths):
        scores = {p: path_score(crf, em[b], p) for p in legal_paths(n_tags, n)}
        assert float(log_z[b].detach()) == pytest.approx(float(torch.logsumexp(torch.tensor(list(scores.values())), 0)), abs=1e-4)
        assert tuple(best[b, :n].tolist()) == max(scores, key=scores.get)


@pytest.mark.parametrize("scheme, seed", [("IOB2", 0), ("IOB2", 1), ("BILOU", 2), ("BILOU", 3)])
def test_constrained_partition_and_viterbi_equal_brute_force_over_legal_paths(scheme, seed):
    tags = tag_names(["X"], scheme)
    n_tags = len(tags)
    crf = random_crf(n_tags, seed)
    crf.set_constraints(*transition_constraints(tags, scheme))
    lengths = [4, 1, 3]
    em, mask = batch(lengths, n_tags, seed)
    log_z = crf.log_partition(em, mask)
    best = crf.decode(em, mask)
    for b, n in enumerate(lengths):
        scores = {p: path_score(crf, em[b], p) for p in legal_paths(n_tags, n, tags, scheme)}
        assert float(log_z[b].detach()) == pytest.approx(float(torch.logsumexp(torch.tensor(list(scores.values())), 0)), abs=1e-4)
        assert tuple(best[b, :n].tolist()) == max(scores, key=scores.get)


def test_loss_with_missing_gold_marginalises():
    crf = random_crf(3, 7)
    em, mask = batch([3], 3, 7)
    gold = torch.tensor([[1, -1, 2]])
    nll = crf.loss(em, mask, gold)
    paths = {p: path_score(crf, em[0], p) for p in legal_paths(3, 3)}
    agree = [s for p, s in paths.items() if p[0] == 1 and p[2] == 2]
    expected = torch.logsumexp(torch.tensor(list(paths.values())), 0) - torch.logsumexp(torch.tensor(agree), 0)
    assert float(nll.detach()) == pytest.approx(float(expected), abs=1e-4)


def test_loss_gradients_are_finite_under_constraints():
    tags = tag_names(["A", "B"], "BILOU")
    crf = random_crf(len(tags), 3)
    crf.set_constraints(*transition_constraints(tags, "BILOU"))
    em, mask = batch([5, 2, 1], len(tags), 3)
    em.requires_grad_()
    gold = torch.tensor([[1, 2, 3, 0, 4], [4, 0, -1, -1, -1], [0, -1, -1, -1, -1]])
    crf.loss(em, mask, gold).backward()
    assert torch.isfinite(em.grad).all() and torch.isfinite(crf.transitions.grad).all()
    assert float(em.grad[~mask].abs().sum()) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["IOB2", "BILOU"]),
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1.0, 10.0, 1000.0]),
)
def test_constrained_viterbi_never_emits_an_illegal_sequence(scheme, lengths, seed, scale):
    tags = tag_names(["PER", "ORG", "LOC"], scheme)
    crf = random_crf(len(tags), seed)
    crf.set_constraints(*transition_constraints(tags, scheme))
    em, mask = batch(lengths, len(tags), seed)
    best = crf.decode(em * scale, mask)
    for b, n in enumerate(lengths):
        assert is_legal_sequence([tags[i] for i in best[b, :n].tolist()], scheme)


def test_softmax_ignores_missing_and_padding():
    dec = SoftmaxDecoder(3)
    em, mask = batch([2, 1], 3, 0)
    gold = torch.tensor([[0, -1], [2, 1]])  # [1, 1] is padding
    expected = torch.nn.functional.cross_entropy(em[[0, 1], [0, 0]], torch.tensor([0, 2]), reduction="sum")
    assert float(dec.loss(em, mask, gold)) == pytest.approx(float(expected))


@pytest.mark.parametrize("scheme", [None, "BILOU"])
def test_loss_of_complete_gold_equals_brute_force(scheme):
    tags = tag_names(["X"], "BILOU")
    crf = random_crf(len(tags), 11)
    if scheme:
        crf.set_constraints(*transition_constraints(tags, scheme))
    em, mask = batch([3, 2, 1], len(tags), 11)
    gold = torch.tensor([[1, 3, 0], [4, 4, -1], [0, -1, -1]])  # row 2 has padding only
    gold[1, 2] = -1
    nll = crf.loss(em, mask, gold)
    expected = 0.0
    for b, n in enumerate([3, 2, 1]):
        paths = {p: path_score(crf, em[b], p) for p in legal_paths(len(tags), n, tags if scheme else None, scheme)}
        expected += float(torch.logsumexp(torch.tensor(list(paths.values())), 0)) - paths[tuple(gold[b, :n].tolist())]
    assert float(nll.detach()) == pytest.approx(expected, abs=1e-3)
