"""The distillation term: cross-entropy from teacher token marginals to the student's exact marginals."""
import numpy as np
import pytest
import torch

from bilstm_tagger.errors import LabelError
from bilstm_tagger.ml import crf
from bilstm_tagger.ml.decoder import SoftmaxDecoder, TaggerLoss, build_decoder
from bilstm_tagger.ml.distill import distill_loss, tag_mapping
from bilstm_tagger.ml.shim import get_module
from bilstm_tagger.tags import tag_names, transition_constraints

BILOU = tag_names(["LOC", "PER"], "BILOU")
IOB2 = tag_names(["LOC", "PER"], "IOB2")


def scores(n_tags, lengths, seed, dtype=torch.float64, constrained_tags=None):
    gen = torch.Generator().manual_seed(seed)
    em = torch.randn(len(lengths), max(lengths), n_tags, generator=gen, dtype=dtype)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    start, trans, end = (torch.randn(shape, generator=gen, dtype=dtype) for shape in ((n_tags,), (n_tags, n_tags), (n_tags,)))
    if constrained_tags is not None:
        allowed = [torch.from_numpy(a) for a in transition_constraints(constrained_tags, "BILOU")]
        start, trans, end = (x.masked_fill(~a, crf.IMPOSSIBLE) for x, a in zip((start, trans, end), allowed))
    return em, mask, start, trans, end


def entropy(q, mask):
    return -(torch.where(mask, (q * torch.log(q.clamp_min(1e-300))).sum(-1), torch.zeros((), dtype=q.dtype))).sum(1)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_and_gradient_are_zero_where_student_and_teacher_agree(temperature):
    em, mask, start, trans, end = scores(len(BILOU), [5, 3, 1], seed=0, constrained_tags=BILOU)
    params = [x.clone().requires_grad_() for x in (em, start, trans, end)]
    with torch.no_grad():
        q = crf.marginals(*(x / temperature for x in (em,)), mask, *(x / temperature for x in (start, trans, end)))
    ce = crf.marginal_cross_entropy(params[0], mask, *params[1:], q, temperature=temperature)
    kl = ce - entropy(q, mask)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-9)
    ce.sum().backward()
    for p in params:
        assert torch.allclose(p.grad, torch.zeros_like(p.grad), atol=1e-9)


def test_kl_is_positive_with_a_nonzero_gradient_where_they_disagree():
    em, mask, start, trans, end = scores(len(BILOU), [4, 2], seed=1, constrained_tags=BILOU)
    em = em.requires_grad_()
    with torch.no_grad():
        q = crf.marginals(em + torch.randn(em.shape, dtype=em.dtype), mask, start, trans, end)
    ce = crf.marginal_cross_entropy(em, mask, start, trans, end, q)
    assert (ce - entropy(q, mask) > 1e-4).all()
    ce.sum().backward()
    assert em.grad.abs().max() > 1e-3


@pytest.mark.parametrize("projected", [False, True])
def test_gradient_matches_finite_differences(projected):
    """gradcheck in float64, with padding, a temperature, and BILOU marginals summed into IOB2 classes."""
    em, mask, start, trans, end = scores(len(BILOU), [4, 2, 3], seed=2, constrained_tags=BILOU)
    projection = torch.from_numpy(tag_mapping(IOB2, "IOB2", BILOU, "BILOU").student) if projected else None
    n_classes = len(IOB2) if projected else len(BILOU)
    gen = torch.Generator().manual_seed(3)
    q = torch.softmax(torch.randn(3, 4, n_classes, generator=gen, dtype=torch.float64), -1)

    def f(em, start, trans, end):
        return crf.marginal_cross_entropy(em, mask, start, trans, end, q, projection, temperature=1.7)

    inputs = tuple(x.clone().requires_grad_() for x in (em, start, trans, end))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_softmax_student_soft_cross_entropy():
    module = SoftmaxDecoder(len(BILOU))
    em, mask, *_ = scores(len(BILOU), [3, 2], seed=4)
    em = em.requires_grad_()
    q = torch.softmax(em.detach() / 2.0, -1) * mask.unsqueeze(-1)
    loss = distill_loss(module, em, mask, q, None, temperature=2.0)
    assert loss.item() == pytest.approx(entropy(q, mask).sum().item(), abs=1e-9)  # CE = H(q) at agreement
    loss.backward()
    assert em.grad.abs().max() < 1e-9
    assert torch.autograd.gradcheck(lambda e: distill_loss(module, e, mask, q.roll(1, -1), None, 2.0), (em.detach().clone().requires_grad_(),))


def test_iob2_teacher_against_bilou_student_sums_b_u_and_i_l():
    mapping = tag_mapping(IOB2, "IOB2", BILOU, "BILOU")
    assert mapping.classes == tuple(IOB2)
    student = mapping.student
    for j, tag in enumerate(BILOU):
        cls = mapping.classes[int(student[j].argmax())]
        expected = "O" if tag == "O" else ("B-" if tag[0] in "BU" else "I-") + tag[2:]
        assert student[j].sum() == 1 and cls == expected
    # a BILOU teacher for an IOB2 student is summed the same way, on the teacher's side
    back = tag_mapping(BILOU, "BILOU", IOB2, "IOB2")
    q = np.eye(len(BILOU), dtype=np.float32)
    assert back.targets(q)[BILOU.index("U-PER"), IOB2.index("B-PER")] == 1.0
    assert back.targets(q)[BILOU.index("L-LOC"), IOB2.index("I-LOC")] == 1.0
    # same scheme, other order: the teacher's columns are permuted onto the student's tags
    same = tag_mapping(list(reversed(BILOU)), "BILOU", BILOU, "BILOU")
    assert same.student is None and np.array_equal(same.targets(np.eye(len(BILOU))[::-1]), np.eye(len(BILOU)))


def test_a_teacher_label_the_student_lacks_is_refused_by_name():
    with pytest.raises(LabelError, match="MISC"):
        tag_mapping(tag_names(["LOC", "MISC", "PER"], "IOB2"), "IOB2", BILOU, "BILOU")


def test_tagger_loss_teacher_only_rows_get_only_the_distillation_term():
    decoder = build_decoder(True, 4096, nO=len(BILOU))
    decoder.initialize()
    module = get_module(decoder)
    module.set_constraints(*transition_constraints(BILOU, "BILOU"))
    rng = np.random.default_rng(0)
    guesses = [rng.normal(size=(n, len(BILOU))).astype("float32") for n in (4, 3)]
    mapping = tag_mapping(IOB2, "IOB2", BILOU, "BILOU")
    q = rng.dirichlet(np.ones(len(IOB2)), size=3).astype("float32")
    truths = [np.array([0, 1, 3, 0]), np.full(3, -1)]
    teachers = [None, (q, mapping)]
    _, both = TaggerLoss(decoder, distill_weight=0.5)(guesses, truths, teachers)
    _, gold_only = TaggerLoss(decoder)(guesses, truths)
    em = torch.from_numpy(guesses[1]).unsqueeze(0)
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        term = distill_loss(module, em, mask, torch.from_numpy(q).unsqueeze(0), torch.from_numpy(mapping.student)).item()
    assert both == pytest.approx(gold_only + 0.5 * term / 7, rel=1e-5)
    d_only, teacher_only = TaggerLoss(decoder)(guesses[1:], truths[1:], teachers[1:])
    assert teacher_only == pytest.approx(term / 3, rel=1e-5) and np.abs(d_only[0]).max() > 0
