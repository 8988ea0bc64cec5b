"""The linear-chain CRF maths, in one place: log Z, marginals, span marginals, Viterbi, n-best,
path scores and temperature scaling.

The decoder's loss and decoding, entity confidences, n-best paths, calibration and inspection all
call these functions, as Flair's `viterbi.py` serves its loss, decoding and scores.

Conventions (torch functions):
- Sequences are batch-first and padded, with a boolean ``mask`` (batch, time) that is True on real
  tokens and a prefix of each row; every sequence has at least one token.
- Scores are ``emissions`` (batch, time, L), ``start`` (L), ``transitions`` (L, L) indexed
  [from, to] and ``end`` (L). A move the tag scheme forbids scores `IMPOSSIBLE` (finite, for
  training: -inf would turn gradients into NaN) or -inf (decoding).

A softmax decoder is the special case of zero start, transition and end scores over
log-softmaxed emissions: the tokens are then independent, so the same routines serve it.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..tags import check_scheme

# The score of a forbidden move where it must stay finite. exp(-1e4) is exactly 0.0 in float32 and
# float64, and the value survives msgpack and JSON. Anything at or below it counts as forbidden.
IMPOSSIBLE = -1e4

Scores = Tuple[Tensor, Tensor, Tensor, Tensor]  # emissions, start, transitions, end


# ---- forbidden moves and temperature --------------------------------------------------------


def forbidden_to_inf(x: Tensor) -> Tensor:
    """Scores at or below IMPOSSIBLE become -inf, so that no scaling makes them possible again."""
    return x.masked_fill(x <= IMPOSSIBLE, float("-inf"))


def forbidden_to_inf_np(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= IMPOSSIBLE, -np.inf, x)


def scale_scores(emissions: Tensor, start: Tensor, transitions: Tensor, end: Tensor, temperature: float) -> Scores:
    """Every path score divided by `temperature` (emissions, start, transitions and end alike);
    forbidden scores become -inf so they stay forbidden at any temperature."""
    return tuple(forbidden_to_inf(x) / temperature for x in (emissions, start, transitions, end))  # type: ignore[return-value]


# ---- partition function, marginals, path scores ---------------------------------------------


def _step(alpha: Tensor, transitions: Tensor, emission: Tensor) -> Tensor:
    return torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emission


def log_partition(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """log Z per sequence (batch,), by the forward algorithm; keeps one time step in memory."""
    alpha = start + emissions[:, 0]
    for t in range(1, emissions.shape[1]):
        alpha = torch.where(mask[:, t : t + 1], _step(alpha, transitions, emissions[:, t]), alpha)
    return torch.logsumexp(alpha + end, dim=1)


def forward_alphas(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor) -> Tensor:
    """alpha[b, t, j] = log-sum of all prefixes ending in tag j at t; carried through padding."""
    alpha = start + emissions[:, 0]
    alphas = [alpha]
    for t in range(1, emissions.shape[1]):
        alpha = torch.where(mask[:, t : t + 1], _step(alpha, transitions, emissions[:, t]), alpha)
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def backward_betas(emissions: Tensor, mask: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """beta[b, t, i] = log-sum of all suffixes after tag i at t (end score included)."""
    batch, length, n_tags = emissions.shape
    beta = end.expand(batch, n_tags)
    betas = [beta]
    for t in range(length - 2, -1, -1):
        step = torch.logsumexp(transitions + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
        # Where t+1 is padding, t is the last real token (or padding itself): only the end score follows.
        beta = torch.where(mask[:, t + 1 : t + 2], step, end.expand(batch, n_tags))
        betas.append(beta)
    return torch.stack(betas[::-1], dim=1)


def _last(alphas: Tensor, mask: Tensor) -> Tensor:
    last = (mask.sum(1) - 1).clamp(min=0)
    return alphas[torch.arange(alphas.shape[0], device=alphas.device), last]


def marginals(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """P(tag_t = j | x) by forward-backward, (batch, time, L); rows of padding are 0.
    Vectorised over batch and tags; the only loop is over time."""
    alphas = forward_alphas(emissions, mask, start, transitions)
    betas = backward_betas(emissions, mask, transitions, end)
    log_z = torch.logsumexp(_last(alphas, mask) + end, dim=1)
    probs = torch.exp(alphas + betas - log_z[:, None, None])
    return probs * mask.unsqueeze(-1).to(probs.dtype)


def log_marginals(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """log P(tag_t = j | x) by forward-backward in log space, (batch, time, L); rows of padding are 0.
    Differentiable by autograd; with finite (IMPOSSIBLE) forbidden scores every entry stays finite."""
    alphas = forward_alphas(emissions, mask, start, transitions)
    betas = backward_betas(emissions, mask, transitions, end)
    log_z = torch.logsumexp(_last(alphas, mask) + end, dim=1)
    return (alphas + betas - log_z[:, None, None]).masked_fill(~mask.unsqueeze(-1), 0.0)


def project_log_probs(log_probs: Tensor, projection: Optional[Tensor]) -> Tensor:
    """log of the probabilities summed into classes: out[..., c] = log sum_{j: projection[j, c]} p[..., j].

    `projection` (L, C) is boolean (each tag in at most one class), e.g. BILOU tags into IOB2 classes
    (B=B+U, I=I+L); None keeps the tags as they are."""
    if projection is None:
        return log_probs
    weights = torch.where(projection, torch.zeros((), dtype=log_probs.dtype, device=log_probs.device),
                          torch.full((), IMPOSSIBLE, dtype=log_probs.dtype, device=log_probs.device))
    return torch.logsumexp(log_probs.unsqueeze(-1) + weights, dim=-2)


def soft_cross_entropy(log_probs: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """-sum_t sum_c q[t, c] log p[t, c] per sequence (batch,), over the real tokens only."""
    terms = (targets * log_probs).sum(-1)
    return -torch.where(mask, terms, torch.zeros((), dtype=terms.dtype, device=terms.device)).sum(1)


def marginal_cross_entropy(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor, targets: Tensor,
                           projection: Optional[Tensor] = None, temperature: float = 1.0) -> Tensor:
    """Cross-entropy from target token marginals q (batch, time, C) to the CRF's own exact marginals p,
    -sum_t sum_c q[t, c] log p[t, c] per sequence (batch,), with every score divided by `temperature`
    and the CRF's tag marginals summed into the target's classes by `projection` (see project_log_probs).

    Forbidden moves must be finite (IMPOSSIBLE), not -inf, so that gradients stay finite. Its gradient
    is zero where p equals q: sum_c p[t, c] = 1 at every t whatever the scores."""
    scaled = [x / temperature for x in (emissions, start, transitions, end)]
    log_p = project_log_probs(log_marginals(scaled[0], mask, *scaled[1:]), projection)
    return soft_cross_entropy(log_p, targets, mask)


def path_scores(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor, paths: Tensor) -> Tensor:
    """Unnormalised score of one given path per sequence (batch,), by gathers (no loop over time).
    Padding is ignored with `where` rather than a multiply, so -inf scores cannot make NaN."""
    zero = emissions.new_zeros(())
    emit = emissions.gather(2, paths.unsqueeze(2)).squeeze(2)
    score = torch.where(mask, emit, zero).sum(1) + start[paths[:, 0]]
    score = score + torch.where(mask[:, 1:], transitions[paths[:, :-1], paths[:, 1:]], zero).sum(1)
    last = paths.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)
    return score + end[last]


# ---- decoding ------------------------------------------------------------------------------


def viterbi(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """The best tag path per sequence (batch, time), batched; padding repeats the last tag."""
    batch, length, n_tags = emissions.shape
    score = start + emissions[:, 0]
    backpointers = []
    identity = torch.arange(n_tags, device=emissions.device).expand(batch, n_tags)
    for t in range(1, length):
        best, best_prev = (score.unsqueeze(2) + transitions).max(dim=1)
        live = mask[:, t : t + 1]
        score = torch.where(live, best + emissions[:, t], score)
        # Past a sequence's end the pointer is the identity, so backtracking passes through.
        backpointers.append(torch.where(live, best_prev, identity))
    tags = torch.empty(batch, length, dtype=torch.long, device=emissions.device)
    last = (score + end).argmax(dim=1)
    tags[:, length - 1] = last
    for t in range(length - 1, 0, -1):
        last = backpointers[t - 1].gather(1, last.unsqueeze(1)).squeeze(1)
        tags[:, t - 1] = last
    return tags


def viterbi_nbest(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The k best tag paths per sequence, batched: (paths (batch, k, time), log_probs (batch, k)).

    Best first. Keeps the k best partial scores for every (tag, time); positions past a sequence's
    end repeat its last tag. If a sequence has fewer than k legal paths, the extra rows have
    log-probability -inf and arbitrary tags.
    """
    batch, length, n_tags = emissions.shape
    neg_inf = torch.tensor(float("-inf"), dtype=emissions.dtype, device=emissions.device)
    score = neg_inf.expand(batch, n_tags, k).clone()  # (batch, tag, rank)
    score[:, :, 0] = start + emissions[:, 0]
    # Past a sequence's end a pointer maps (tag, rank) to itself, so backtracking passes through.
    identity = torch.arange(n_tags * k, device=emissions.device).view(1, n_tags, k).expand(batch, n_tags, k)
    pointers = []
    for t in range(1, length):
        cand = score.unsqueeze(3) + transitions[None, :, None, :]  # (batch, prev, rank, next)
        best, where = cand.reshape(batch, n_tags * k, n_tags).topk(k, dim=1)  # (batch, k, next)
        best, where = best.transpose(1, 2) + emissions[:, t].unsqueeze(2), where.transpose(1, 2)
        live = mask[:, t].view(batch, 1, 1)
        score = torch.where(live, best, score)
        pointers.append(torch.where(live, where, identity))
    final, flat = (score + end[None, :, None]).reshape(batch, n_tags * k).topk(k, dim=1)
    paths = torch.empty(batch, k, length, dtype=torch.long, device=emissions.device)
    paths[:, :, length - 1] = flat // k
    for t in range(length - 1, 0, -1):
        flat = pointers[t - 1].reshape(batch, n_tags * k).gather(1, flat)
        paths[:, :, t - 1] = flat // k
    return paths, final - log_partition(emissions, mask, start, transitions, end)[:, None]


# ---- span probabilities ---------------------------------------------------------------------


def chunk_tags(length: int, label: str, scheme: str) -> List[str]:
    """The tags of exactly one chunk of `length` tokens: U-X or B-X I-X.. L-X (BILOU), B-X I-X.. (IOB2)."""
    if check_scheme(scheme) == "BILOU":
        if length == 1:
            return [f"U-{label}"]
        return [f"B-{label}"] + [f"I-{label}"] * (length - 2) + [f"L-{label}"]
    return [f"B-{label}"] + [f"I-{label}"] * (length - 1)


def span_allowed(spans: Sequence[Tuple[int, int, int, str]], lengths: Sequence[int], tags: Sequence[str], scheme: str,
                 T: int) -> np.ndarray:
    """allowed[n, t, j]: which tags the paths of "span n is exactly one chunk" may take at t.

    `spans` holds (sequence, start, end, label). In IOB2 an I-X right after the chunk would extend
    it, so it is excluded there; in BILOU, L-X/U-X already close the chunk. An unknown label keeps
    no path, so its probability is 0.
    """
    index = {tag: j for j, tag in enumerate(tags)}
    allowed = np.ones((len(spans), T, len(tags)), dtype=bool)
    for n, (b, s, e, label) in enumerate(spans):
        if not 0 <= s < e <= int(lengths[b]):
            raise ValueError(f"span ({s}, {e}) does not fit sequence {b} of length {int(lengths[b])}")
        for t, tag in enumerate(chunk_tags(e - s, label, scheme), start=s):
            allowed[n, t] = False
            if tag in index:
                allowed[n, t, index[tag]] = True
        if scheme == "IOB2" and e < int(lengths[b]) and f"I-{label}" in index:
            allowed[n, e, index[f"I-{label}"]] = False
    return allowed


def span_marginals(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor,
                   spans: Sequence[Tuple[int, int, int, str]], tags: Sequence[str], scheme: str) -> Tensor:
    """Probability that tokens [s, e) of sequence b form exactly one chunk labelled X, (n_spans,).

    Computed as Z_constrained / Z, with one batched forward pass over all spans at once. It
    assumes the scheme's constraints are in the scores, as the CRF decoder's always are.
    """
    if not spans:
        return emissions.new_zeros(0)
    rows = torch.tensor([b for b, *_ in spans], dtype=torch.long, device=emissions.device)
    lengths = mask.sum(1).cpu().tolist()
    allowed = torch.from_numpy(span_allowed(spans, lengths, tags, scheme, emissions.shape[1])).to(emissions.device)
    constrained = emissions[rows].masked_fill(~allowed, float("-inf"))
    log_zc = log_partition(constrained, mask[rows], start, transitions, end)
    log_z = log_partition(emissions, mask, start, transitions, end)[rows]
    return torch.exp(log_zc - log_z)


# ---- numpy fast path for one sequence --------------------------------------------------------
# A getter computes confidences for one doc at a time; for a sentence, numpy's per-call cost is
# many times below torch's. The maths is `span_marginals` above (tests hold the two equal).


def _logsumexp_np(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # a row with no legal path: log(0) = -inf
        return np.log(np.exp(x - top).sum(axis=axis)) + top.squeeze(axis)


def span_marginals_np(emissions: np.ndarray, start: np.ndarray, transitions: np.ndarray, end: np.ndarray,
                      spans: Sequence[Tuple[int, int, str]], tags: Sequence[str], scheme: str) -> np.ndarray:
    """`span_marginals` for one sequence (T, L) in float64 numpy, spans as (start, end, label);
    forbidden scores must already be -inf."""
    T = len(emissions)
    allowed = np.ones((len(spans) + 1, *emissions.shape), dtype=bool)
    allowed[1:] = span_allowed([(0, s, e, label) for s, e, label in spans], [T], tags, scheme, T)
    ems = np.where(allowed, emissions[None], -np.inf)
    alpha = start[None] + ems[:, 0]
    for t in range(1, T):
        alpha = _logsumexp_np(alpha[:, :, None] + transitions[None], axis=1) + ems[:, t]
    log_z = _logsumexp_np(alpha + end[None], axis=1)
    return np.exp(log_z[1:] - log_z[0]).clip(0.0, 1.0)
