"""The decoder layer: per-token emission scores -> tag ids, and the training loss.

The torch modules (softmax, linear-chain CRF) work on padded emissions
``(batch, time, n_tags)`` with a boolean ``mask`` (batch, time) that is True
on real tokens; every sequence has at least one token. Gold tags use -1 for
"missing": those positions constrain nothing (the CRF marginalises over them,
softmax ignores them).

As a thinc layer the decoder passes the scores on unchanged, in training and at inference alike:
it holds the decoder's parameters, `TaggerLoss` turns scores into the loss and `decode` turns them
into tag ids (the pipe calls it, after applying its decision bias).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from thinc.api import Model, torch2xp, xp2torch
from thinc.loss import Loss
from thinc.types import Floats2d, Ints1d
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from . import crf
from .shim import get_module, make_shim, module_device, set_module, torch_module
from .windows import plan_chunks



@torch_module
class SoftmaxDecoder(nn.Module):
    def __init__(self, n_tags: int) -> None:
        super().__init__()
        self.n_tags = n_tags
        self.spec = {"n_tags": n_tags}

    def set_constraints(self, start: np.ndarray, trans: np.ndarray, end: np.ndarray) -> None:
        """Softmax decoding is per token; ill-formed sequences are repaired downstream."""

    def loss(self, emissions: torch.Tensor, mask: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        """Summed token cross-entropy over the known gold positions."""
        known = mask & (gold >= 0)
        return F.cross_entropy(emissions[known], gold[known], reduction="sum")

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return emissions.argmax(-1)


@torch_module
class CRFDecoder(nn.Module):
    """Linear-chain CRF with start/end scores and optional hard transition constraints."""

    def __init__(self, n_tags: int) -> None:
        super().__init__()
        self.n_tags = n_tags
        self.spec = {"n_tags": n_tags}
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))
        self.start = nn.Parameter(torch.zeros(n_tags))
        self.end = nn.Parameter(torch.zeros(n_tags))
        # Constraints are derived from the tag names, so they are not saved with the weights.
        self.register_buffer("allowed_start", torch.ones(n_tags, dtype=torch.bool), persistent=False)
        self.register_buffer("allowed_trans", torch.ones(n_tags, n_tags, dtype=torch.bool), persistent=False)
        self.register_buffer("allowed_end", torch.ones(n_tags, dtype=torch.bool), persistent=False)

    def set_constraints(self, start: np.ndarray, trans: np.ndarray, end: np.ndarray) -> None:
        if trans.shape != (self.n_tags, self.n_tags):
            raise ValueError(f"constraint matrix {trans.shape} does not fit {self.n_tags} tags")
        self.allowed_start.copy_(torch.from_numpy(np.asarray(start, dtype=bool)))
        self.allowed_trans.copy_(torch.from_numpy(np.asarray(trans, dtype=bool)))
        self.allowed_end.copy_(torch.from_numpy(np.asarray(end, dtype=bool)))

    def _scores(self, impossible: float):
        return (
            self.start.masked_fill(~self.allowed_start, impossible),
            self.transitions.masked_fill(~self.allowed_trans, impossible),
            self.end.masked_fill(~self.allowed_end, impossible),
        )

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z per sequence by the forward algorithm, vectorised over batch and tags."""
        return crf.log_partition(emissions, mask, *self._scores(crf.IMPOSSIBLE))

    def path_score(self, emissions: torch.Tensor, mask: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Score of one given tag path per sequence, by gathers (no loop over time)."""
        return crf.path_scores(emissions, mask, *self._scores(crf.IMPOSSIBLE), tags)

    def loss(self, emissions: torch.Tensor, mask: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        """Summed negative log-likelihood of the gold tags.

        A fully annotated sequence scores its gold path directly. Where gold tags
        are missing, the gold score is itself a partition function, over the paths
        that agree with every known tag, so partially annotated sequences train too.
        """
        known = (gold >= 0) | ~mask
        complete = known.all(dim=1)
        log_z = self.log_partition(emissions, mask)
        log_gold = torch.zeros_like(log_z)
        if complete.any():
            rows = complete.nonzero().squeeze(1)
            log_gold = log_gold.index_put((rows,), self.path_score(emissions[rows], mask[rows], gold[rows].clamp(min=0)))
        if not complete.all():
            rows = (~complete).nonzero().squeeze(1)
            agrees = F.one_hot(gold[rows].clamp(min=0), self.n_tags).bool() | ~known[rows].unsqueeze(-1)
            partial = self.log_partition(emissions[rows].masked_fill(~agrees, crf.IMPOSSIBLE), mask[rows])
            log_gold = log_gold.index_put((rows,), partial)
        return (log_z - log_gold).sum()

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Batched Viterbi. Illegal moves score -inf, so no illegal path can come out."""
        return crf.viterbi(emissions, mask, *self._scores(float("-inf")))


def make_decoder(crf: bool, n_tags: int) -> nn.Module:
    return CRFDecoder(n_tags) if crf else SoftmaxDecoder(n_tags)


# ---- the thinc layer --------------------------------------------------------------------------


def _padded(scores: Sequence[Floats2d], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Non-empty score arrays as one (batch, time, n_tags) tensor and its mask."""
    lengths = torch.tensor([len(s) for s in scores])
    rows = [xp2torch(s, device=device) for s in scores]
    padded = nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = torch.arange(padded.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    return padded, mask.to(device)


def decode(model: Model, scores: List[Floats2d]) -> List[Ints1d]:
    """Best tag ids per doc (Viterbi for the CRF, argmax for softmax), in length-sorted bounded chunks."""
    module = get_module(model)
    device = module_device(module)
    result = [np.zeros(len(s), dtype=np.int64) for s in scores]
    docs = [(i, 0, len(s)) for i, s in enumerate(scores) if len(s)]
    with torch.inference_mode():
        for chunk in plan_chunks(docs, model.attrs["max_batch_tokens"]):
            ids = [docs[c][0] for c in chunk]
            emissions, mask = _padded([scores[i] for i in ids], device)
            best = module.decode(emissions, mask).cpu().numpy()
            for row, i in enumerate(ids):
                result[i] = best[row, : len(scores[i])]
    return result


def decoder_forward(model: Model, scores: List[Floats2d], is_train: bool):
    """The scores pass through unchanged: the loss (`TaggerLoss`) and `decode` read them."""
    return scores, lambda d_scores: d_scores


def decoder_init(model: Model, X=None, Y=None) -> Model:
    n_tags = model.get_dim("nO")
    if n_tags is None:
        raise ConfigError("bilstm_tagger: the number of tags (nO) is unknown; initialize the component with examples")
    set_module(model, make_decoder(model.attrs["crf"], n_tags))
    return model


def build_decoder(crf: bool, max_batch_tokens: int, nO: Optional[int] = None) -> Model[List[Floats2d], List[Floats2d]]:
    return Model(
        "crf_decoder" if crf else "softmax_decoder",
        decoder_forward,
        init=decoder_init,
        dims={"nO": nO},
        attrs={"crf": crf, "max_batch_tokens": max_batch_tokens},
        shims=[make_shim()],
    )


def set_transition_constraints(model: Model, start: np.ndarray, trans: np.ndarray, end: np.ndarray) -> None:
    """Allowed first tags, tag bigrams and last tags (derived from the tag names, so never saved)."""
    get_module(model).set_constraints(start, trans, end)


def crf_scores(model: Model, impossible: Optional[float] = crf.IMPOSSIBLE) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The CRF's learned (start, transitions[from, to], end) scores as float32 numpy arrays, with
    every move the tag scheme forbids set to `impossible` (-1e4 by default: finite, so it survives
    msgpack and JSON, and exp(-1e4) is 0); `impossible=None` gives the raw learned scores.
    None for a softmax decoder, which has no transition scores."""
    module = get_module(model)
    if not isinstance(module, CRFDecoder):
        return None
    with torch.no_grad():
        scores = module._scores(impossible) if impossible is not None else (module.start, module.transitions, module.end)
        return tuple(x.detach().float().cpu().numpy().copy() for x in scores)  # type: ignore[return-value]


def crf_allowed(model: Model) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Which first tags, moves [from, to] and last tags the scheme allows (bool arrays); None for softmax."""
    module = get_module(model)
    if not isinstance(module, CRFDecoder):
        return None
    return tuple(x.detach().cpu().numpy().copy() for x in (module.allowed_start, module.allowed_trans, module.allowed_end))  # type: ignore[return-value]


class TaggerLoss(Loss):
    """Per-token loss of the decoder (CRF negative log-likelihood or softmax cross-entropy), plus the
    distillation term where docs carry teacher marginals.

    Called like thinc's losses: `d_scores, loss = TaggerLoss(decoder)(scores, truths)`,
    with truths as numpy tag ids per doc, -1 where the gold tag is missing. `teachers` (optional, one
    per doc) holds None or (class targets (n_tokens, C), ml.distill.TagMapping): such a doc adds
    `distill_weight` x the cross-entropy from the targets to the model's own marginals (scores divided
    by `distill_temperature`; see ml/distill.py). A doc without any known gold tag gets only that term.
    Both terms are summed over tokens and divided by the batch's token count. The CRF's own parameters
    get their gradients here; `finish_update` applies them.
    """

    def __init__(self, decoder: Model, distill_weight: float = 1.0, distill_temperature: float = 1.0) -> None:
        self.decoder = decoder
        self.distill_weight, self.distill_temperature = float(distill_weight), float(distill_temperature)

    def __call__(self, guesses: List[Floats2d], truths: List[Ints1d], teachers: Optional[list] = None) -> Tuple[List[Floats2d], float]:
        return self._compute(guesses, truths, teachers)

    def get_grad(self, guesses: List[Floats2d], truths: List[Ints1d]) -> List[Floats2d]:
        return self._compute(guesses, truths)[0]

    def get_loss(self, guesses: List[Floats2d], truths: List[Ints1d]) -> float:
        return self._compute(guesses, truths)[1]

    def _compute(self, guesses: List[Floats2d], truths: List[Ints1d], teachers: Optional[list] = None) -> Tuple[List[Floats2d], float]:
        ops = self.decoder.ops
        d_guesses = [ops.alloc2f(*g.shape) for g in guesses]
        live = [i for i, g in enumerate(guesses) if len(g)]
        if not live:
            return d_guesses, 0.0
        for i in live:
            if len(truths[i]) != len(guesses[i]):
                raise ValueError(f"bilstm_tagger: doc {i} has {len(guesses[i])} scores but {len(truths[i])} gold tags")
        module = get_module(self.decoder)
        device = module_device(module)
        module.train(True)
        emissions, mask = _padded([guesses[i] for i in live], device)
        emissions.requires_grad_()
        gold = torch.full(mask.shape, -1, dtype=torch.long)
        for row, i in enumerate(live):
            gold[row, : len(truths[i])] = torch.from_numpy(np.asarray(truths[i], dtype=np.int64))
        gold = gold.to(device)
        n_tokens = max(int(mask.sum()), 1)
        has_gold = ((gold >= 0) & mask).any(1)
        loss = emissions.new_zeros(())
        if bool(has_gold.all()):
            loss = module.loss(emissions, mask, gold)
        elif bool(has_gold.any()):
            loss = module.loss(emissions[has_gold], mask[has_gold], gold[has_gold])
        if teachers is not None and self.distill_weight:
            loss = loss + self.distill_weight * self._distill(module, emissions, mask, [teachers[i] for i in live], device)
        loss = loss / n_tokens
        if not loss.requires_grad:
            return d_guesses, float(loss.item())
        loss.backward()
        for row, i in enumerate(live):
            d_guesses[i] = torch2xp(emissions.grad[row, : len(guesses[i])], ops=ops)
        return d_guesses, float(loss.item())

    def _distill(self, module: nn.Module, emissions: torch.Tensor, mask: torch.Tensor, teachers: list, device) -> torch.Tensor:
        """The summed distillation term of the rows that have teacher targets, one batch per tag mapping."""
        from .distill import distill_loss

        total = emissions.new_zeros(())
        groups: dict = {}
        for row, teacher in enumerate(teachers):
            if teacher is not None:
                groups.setdefault(id(teacher[1]), []).append(row)
        for rows in groups.values():
            mapping = teachers[rows[0]][1]
            targets = emissions.new_zeros(len(rows), emissions.shape[1], len(mapping.classes))
            for k, row in enumerate(rows):
                q = teachers[row][0]
                if len(q) != int(mask[row].sum()):
                    raise ValueError(f"bilstm_tagger: a doc of {int(mask[row].sum())} tokens has teacher marginals for {len(q)} tokens")
                targets[k, : len(q)] = torch.from_numpy(np.asarray(q, dtype=np.float32)).to(device)
            projection = None if mapping.student is None else torch.from_numpy(mapping.student).to(device)
            index = torch.tensor(rows, device=device)
            total = total + distill_loss(module, emissions[index], mask[index], targets, projection, self.distill_temperature)
        return total
