"""bilstm_tagger.inspection (rnn, calibration) against step-by-step recomputation and brute-force enumeration."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from bilstm_tagger.inspection.calibration import (
    crf_log_partition,
    crf_marginals,
    entity_calibration_pairs,
    expected_calibration_error,
    fit_temperature,
    gold_nll,
    reliability_table,
    softmax_marginals,
    span_marginals,
    viterbi_nbest,
)
from bilstm_tagger.inspection.rnn import DirectionTrace, RNNInternals, attention_weights, gate_saturation, rnn_internals
from bilstm_tagger.tags import spans_from_tags, tag_names, transition_constraints

ATOL = 1e-5


# ------------------------------------------------------------------ RNN: step-by-step reference


def _cell_params(rnn, layer, backward):
    suffix = f"_l{layer}" + ("_reverse" if backward else "")
    get = lambda name: getattr(rnn, name + suffix, None)  # noqa: E731
    return {k: get(k) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}


def _lstm_steps(p, xs):
    """One direction of one LSTM layer over one sequence, one token at a time.

    nn.LSTMCell where it applies (no projection); with proj_size, the same equations by hand
    plus h = W_hr (o * tanh c), since LSTMCell has no projection.
    """
    hidden = p["weight_hh"].shape[0] // 4
    h = xs.new_zeros(p["weight_hh"].shape[1])
    c = xs.new_zeros(hidden)
    cell = None
    if p["weight_hr"] is None:
        cell = nn.LSTMCell(xs.shape[1], hidden, bias=p["bias_ih"] is not None)
        with torch.no_grad():
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if p[k] is not None:
                    getattr(cell, k).copy_(p[k])
    rows = []
    for x in xs:
        pre = p["weight_ih"] @ x + p["weight_hh"] @ h
        if p["bias_ih"] is not None:
            pre = pre + p["bias_ih"] + p["bias_hh"]
        i, f, g, o = pre.chunk(4)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        if cell is not None:
            h, c = cell(x[None], (h[None], c[None]))
            h, c = h[0], c[0]
        else:
            c = f * c + i * g
            h = p["weight_hr"] @ (o * torch.tanh(c))
        rows.append({"input": i, "forget": f, "candidate": g, "output": o, "cell": c, "hidden": h})
    return rows


def _gru_steps(p, xs):
    hidden = p["weight_hh"].shape[0] // 3
    cell = nn.GRUCell(xs.shape[1], hidden, bias=p["bias_ih"] is not None)
    with torch.no_grad():
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if p[k] is not None:
                getattr(cell, k).copy_(p[k])
    h = xs.new_zeros(hidden)
    rows = []
    for x in xs:
        gi, gh = p["weight_ih"] @ x, p["weight_hh"] @ h
        if p["bias_ih"] is not None:
            gi, gh = gi + p["bias_ih"], gh + p["bias_hh"]
        r = torch.sigmoid(gi[:hidden] + gh[:hidden])
        z = torch.sigmoid(gi[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
        n = torch.tanh(gi[2 * hidden :] + r * gh[2 * hidden :])
        h = cell(x[None], h[None])[0]
        rows.append({"reset": r, "update": z, "candidate": n, "hidden": h})
    return rows


def reference_internals(rnn, xs):
    """{(layer, direction): [per-token dict]} for one unpadded sequence xs (T, n_in)."""
    steps = _lstm_steps if isinstance(rnn, nn.LSTM) else _gru_steps
    out, layer_in = {}, xs
    for layer in range(rnn.num_layers):
        outs = []
        for d, name in enumerate(["forward", "backward"][: 1 + rnn.bidirectional]):
            seq = layer_in.flip(0) if d else layer_in
            rows = steps(_cell_params(rnn, layer, d == 1), seq)
            out[layer, name] = rows[::-1] if d else rows
            outs.append(torch.stack([r["hidden"] for r in out[layer, name]]))
        layer_in = torch.cat(outs, dim=-1)
    return out


def random_rnn(kind, n_in, hidden, layers, bidirectional, proj=0, seed=0, scale=1.0, bias=True):
    torch.manual_seed(seed)
    if kind == "lstm":
        rnn = nn.LSTM(n_in, hidden, layers, bias=bias, batch_first=True, bidirectional=bidirectional, proj_size=proj)
    else:
        rnn = nn.GRU(n_in, hidden, layers, bias=bias, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():
        for p in rnn.parameters():
            p.mul_(scale)
    return rnn.eval()


RNN_CASES = [
    # kind, hidden, layers, bidirectional, proj, weight scale, bias
    ("lstm", 6, 1, True, 0, 1.0, True),
    ("lstm", 6, 2, True, 0, 3.0, True),  # large weights: saturated gates, forget gates near 0 and 1
    ("lstm", 7, 2, True, 3, 2.0, True),
    ("lstm", 5, 3, False, 2, 1.0, False),
    ("gru", 6, 1, True, 0, 1.0, True),
    ("gru", 5, 2, True, 0, 3.0, True),
    ("gru", 4, 2, False, 0, 1.0, False),
]


@pytest.mark.parametrize("kind, hidden, layers, bidi, proj, scale, bias", RNN_CASES)
def test_rnn_internals_match_step_by_step_cells(kind, hidden, layers, bidi, proj, scale, bias):
    n_in, lengths = 4, [7, 3, 1, 5]
    rnn = random_rnn(kind, n_in, hidden, layers, bidi, proj, seed=layers + hidden, scale=scale, bias=bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(lengths), max(lengths), n_in, generator=gen) * 2
    with torch.no_grad():
        got = rnn_internals(rnn, x, torch.tensor(lengths))
        expected_out = rnn(x[:1, : lengths[0]])[0][0]
        refs = [reference_internals(rnn, x[b, :n]) for b, n in enumerate(lengths)]
    assert len(got.traces) == layers * (2 if bidi else 1)
    torch.testing.assert_close(got.output[0, : lengths[0]], expected_out, atol=ATOL, rtol=0)
    for trace in got.traces:
        names = list(refs[0][trace.layer, trace.direction][0])
        for b, n in enumerate(lengths):
            for name in names:
                ref = torch.stack([row[name] for row in refs[b][trace.layer, trace.direction]])
                torch.testing.assert_close(trace[name][b, :n], ref, atol=ATOL, rtol=0, msg=lambda m: f"{trace.layer} {trace.direction} {name} seq {b}: {m}")
            assert float(trace[names[0]][b, n:].abs().sum()) == 0.0  # padding stays 0


def test_saturating_case_really_saturates():
    """The large-weight case above must exercise forget gates near both 0 and 1."""
    rnn = random_rnn("lstm", 4, 6, 2, True, scale=3.0, seed=8)
    x = torch.randn(4, 7, 4, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        forget = rnn_internals(rnn, x).trace(0)["forget"]
    assert float((forget < 0.05).float().mean()) > 0.05 and float((forget > 0.95).float().mean()) > 0.05


def test_lstm_hidden_is_output_gate_times_tanh_cell():
    rnn = random_rnn("lstm", 3, 5, 1, True, seed=2)
    with torch.no_grad():
        got = rnn_internals(rnn, torch.randn(6, 3))
    for trace in got.traces:
        torch.testing.assert_close(trace["hidden"], trace["output"] * torch.tanh(trace["cell"]), atol=ATOL, rtol=0)


def test_rnn_internals_accepts_packed_unbatched_and_time_first_input():
    rnn = random_rnn("lstm", 3, 5, 2, True, proj=2, seed=3)
    lengths = torch.tensor([4, 2])
    x = torch.randn(2, 4, 3)
    with torch.no_grad():
        padded = rnn_internals(rnn, x, lengths)
        packed = rnn_internals(rnn, pack_padded_sequence(x, lengths, batch_first=True))
        single = rnn_internals(rnn, x[1, :2])
        time_first = nn.LSTM(3, 5, 2, bidirectional=True, proj_size=2).eval()
        time_first.load_state_dict(rnn.state_dict())
        tf = rnn_internals(time_first, x.transpose(0, 1), lengths)
    for a, b, c in zip(padded.traces, packed.traces, tf.traces):
        for name in a.values:
            torch.testing.assert_close(a[name], b[name])
            torch.testing.assert_close(a[name], c[name])
            torch.testing.assert_close(a[name][1:, :2], single.trace(a.layer, a.direction)[name])


def test_gate_saturation_counts_real_tokens_only():
    forget = torch.tensor([[[0.05, 0.5], [0.95, 0.99]], [[0.0, 0.92], [0.3, 0.3]]])  # (2, 2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    values = {g: forget for g in ("input", "forget", "output")}
    internals = RNNInternals("lstm", torch.tensor([2, 1]), mask, [DirectionTrace(0, "forward", values)], forget)
    rows = gate_saturation(internals)
    assert [r["gate"] for r in rows] == ["input", "forget", "output"]
    # Real values: 0.05, 0.5, 0.95, 0.99, 0.0, 0.92 -> 2 below 0.1, 3 above 0.9.
    assert rows[1]["low"] == pytest.approx(2 / 6) and rows[1]["high"] == pytest.approx(3 / 6) and rows[1]["n"] == 6


# ------------------------------------------------------------------ attention


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_weights_per_head_match_manual_softmax(batch_first):
    torch.manual_seed(0)
    width, heads = 8, 2
    mha = nn.MultiheadAttention(width, heads, batch_first=batch_first, dropout=0.5)  # dropout must not apply
    x = torch.randn(2, 5, width)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        got = attention_weights(mha, x if batch_first else x.transpose(0, 1), padding)
        q, k, _ = (x @ mha.in_proj_weight.T + mha.in_proj_bias).chunk(3, dim=-1)
    assert mha.training  # restored
    d = width // heads
    for h in range(heads):
        scores = q[..., h * d : (h + 1) * d] @ k[..., h * d : (h + 1) * d].transpose(1, 2) / math.sqrt(d)
        expected = torch.softmax(scores.masked_fill(padding[:, None, :], float("-inf")), dim=-1)
        expected = expected.masked_fill(padding[:, :, None], 0.0)
        torch.testing.assert_close(got[:, h], expected, atol=ATOL, rtol=0)


# ------------------------------------------------------------------ CRF against brute force


def crf_case(tags, scheme, lengths, seed, impossible):
    """Random CRF scores with the scheme's forbidden moves set to `impossible`."""
    n = len(tags)
    gen = torch.Generator().manual_seed(seed)
    start, trans, end = torch.randn(n, generator=gen), torch.randn(n, n, generator=gen), torch.randn(n, generator=gen)
    if scheme:
        a_start, a_trans, a_end = (torch.from_numpy(m) for m in transition_constraints(tags, scheme))
        start, trans, end = start.masked_fill(~a_start, impossible), trans.masked_fill(~a_trans, impossible), end.masked_fill(~a_end, impossible)
    em = torch.randn(len(lengths), max(lengths), n, generator=gen) * 1.5
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return em.double(), mask, start.double(), trans.double(), end.double()


def all_paths(em_b, n, start, trans, end):
    """Every tag path of length n and its probability, by enumeration (numpy, float64)."""
    n_tags = em_b.shape[1]
    paths = np.array(list(itertools.product(range(n_tags), repeat=n)), dtype=np.int64)
    em_b, start, trans, end = (t.numpy() for t in (em_b, start, trans, end))
    score = start[paths[:, 0]] + end[paths[:, -1]] + em_b[np.arange(n), paths].sum(1)
    score = score + trans[paths[:, :-1], paths[:, 1:]].sum(1)
    finite = score[np.isfinite(score)]
    log_z = finite.max() + np.log(np.exp(finite - finite.max()).sum())
    return paths, score, np.exp(score - log_z), log_z


CRF_CASES = [
    # labels, scheme (None = unconstrained), lengths, "impossible" score
    (["X"], "BILOU", [5, 3, 1, 4], float("-inf")),  # 5 tags
    (["X"], "BILOU", [4, 5], -1e4),
    (["X", "Y"], "IOB2", [5, 2, 4], float("-inf")),  # 5 tags
    (["X", "Y", "Z"], "IOB2", [4, 1, 3], -1e4),  # 7 tags
    (["X", "Y"], None, [4, 2], 0.0),  # 5 tags (IOB2 names), no constraints
]


@pytest.mark.parametrize("labels, scheme, lengths, impossible", CRF_CASES)
def test_marginals_and_partition_equal_brute_force(labels, scheme, lengths, impossible):
    tags = tag_names(labels, scheme or "IOB2")
    em, mask, start, trans, end = crf_case(tags, scheme, lengths, seed=len(tags) + len(lengths), impossible=impossible)
    marg = crf_marginals(em, mask, start, trans, end)
    log_z = crf_log_partition(em, mask, start, trans, end)
    for b, n in enumerate(lengths):
        paths, _, prob, bf_log_z = all_paths(em[b, :n], n, start, trans, end)
        assert float(log_z[b]) == pytest.approx(bf_log_z, abs=1e-6)
        expected = np.stack([np.bincount(paths[:, t], weights=prob, minlength=len(tags)) for t in range(n)])
        np.testing.assert_allclose(marg[b, :n].numpy(), expected, atol=1e-6)
        assert float(marg[b, n:].abs().sum()) == 0.0


@pytest.mark.parametrize("labels, scheme, lengths, impossible", [c for c in CRF_CASES if c[1]])
def test_span_probabilities_equal_brute_force(labels, scheme, lengths, impossible):
    tags = tag_names(labels, scheme)
    em, mask, start, trans, end = crf_case(tags, scheme, lengths, seed=3 * len(tags), impossible=impossible)
    queries = [(b, s, e, label) for b, n in enumerate(lengths) for s in range(n) for e in range(s + 1, n + 1) for label in labels]
    got = span_marginals(em, mask, start, trans, end, queries, tags, scheme)
    expected = []
    for b, s, e, label in queries:
        n = lengths[b]
        paths, score, prob, _ = all_paths(em[b, :n], n, start, trans, end)
        legal = np.isfinite(score) & (score > -1e3)  # the paths the scheme allows
        has = np.array([(s, e, label) in spans_from_tags([tags[j] for j in p]).spans for p in paths])
        expected.append(prob[legal & has].sum())
    np.testing.assert_allclose(got.numpy(), np.array(expected), atol=1e-6)
    assert max(expected) > 0.2  # the case is not trivially all-zero


def test_span_probability_of_an_unknown_label_is_zero():
    tags = tag_names(["X"], "BILOU")
    em, mask, start, trans, end = crf_case(tags, "BILOU", [3], seed=0, impossible=float("-inf"))
    assert float(span_marginals(em, mask, start, trans, end, [(0, 0, 2, "NOPE")], tags, "BILOU")[0]) == 0.0
    with pytest.raises(ValueError):
        span_marginals(em, mask, start, trans, end, [(0, 1, 4, "X")], tags, "BILOU")


@pytest.mark.parametrize("labels, scheme, lengths, k", [(["X"], "BILOU", [5, 1, 3], 6), (["X", "Y"], "IOB2", [4, 2], 5), (["X", "Y"], None, [3], 4)])
def test_nbest_equals_brute_force(labels, scheme, lengths, k):
    tags = tag_names(labels, scheme or "IOB2")
    em, mask, start, trans, end = crf_case(tags, scheme, lengths, seed=k, impossible=float("-inf"))
    paths, log_probs = viterbi_nbest(em, mask, start, trans, end, k)
    assert paths.shape == (len(lengths), k, max(lengths)) and log_probs.shape == (len(lengths), k)
    for b, n in enumerate(lengths):
        all_p, score, prob, _ = all_paths(em[b, :n], n, start, trans, end)
        order = np.argsort(-score, kind="stable")[:k]
        n_legal = int(np.isfinite(score).sum())
        for r in range(k):
            if r < n_legal:
                assert tuple(paths[b, r, :n].tolist()) == tuple(all_p[order[r]])
                assert float(log_probs[b, r]) == pytest.approx(math.log(prob[order[r]]), abs=1e-6)
                assert (paths[b, r, n:] == paths[b, r, n - 1]).all()  # padding repeats the last tag
            else:
                assert float(log_probs[b, r]) == float("-inf")
    # BILOU over one token has exactly two legal paths (O, U-X): the rest must be -inf.
    if scheme == "BILOU":
        assert torch.isinf(log_probs[1, 2:]).all()


def test_softmax_marginals():
    em = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    probs = softmax_marginals(em, mask)
    torch.testing.assert_close(probs[0], torch.softmax(em[0], -1))
    assert float(probs[1, 1:].abs().sum()) == 0.0 and float(probs[1, 0].sum()) == pytest.approx(1.0)


# ------------------------------------------------------------------ calibration


def test_reliability_and_ece_on_a_hand_computed_case():
    conf = [0.95, 0.85, 0.82, 0.3, 0.25, 0.05]
    correct = [True, True, False, False, True, False]
    table = reliability_table(conf, correct, n_bins=5)
    assert [b.count for b in table] == [1, 2, 0, 0, 3]
    assert table[4].accuracy == pytest.approx(2 / 3) and table[4].mean_confidence == pytest.approx(0.54 + 0.33333333333)
    assert math.isnan(table[2].accuracy)
    # bins: {0.05: wrong} |0 - 0.05|; {0.3, 0.25: one right} |0.5 - 0.275|; {0.95, 0.85, 0.82: two right} |2/3 - 0.873333|
    expected = 1 / 6 * 0.05 + 2 / 6 * 0.225 + 3 / 6 * (0.8733333333 - 2 / 3)
    assert expected == pytest.approx(0.1866667, abs=1e-6)
    assert expected_calibration_error(conf, correct, n_bins=5) == pytest.approx(expected, abs=1e-9)
    assert expected_calibration_error([1.0, 1.0], [True, True], n_bins=10) == 0.0  # 1.0 lands in the last bin
    assert expected_calibration_error([], [], n_bins=10) == 0.0


def test_entity_calibration_pairs_need_exact_matches():
    predicted = [[(0, 2, "PER", 0.9), (3, 4, "LOC", 0.6)], [(1, 3, "ORG", 0.7)]]
    gold = [[(0, 2, "PER"), (3, 5, "LOC")], [(1, 3, "MISC")]]
    conf, ok = entity_calibration_pairs(predicted, gold)
    np.testing.assert_allclose(conf, [0.9, 0.6, 0.7])
    assert ok.tolist() == [True, False, False]


def _sample_paths(em, mask, start, trans, end, rng):
    gold = torch.zeros(mask.shape, dtype=torch.long)
    for b, n in enumerate(mask.sum(1).tolist()):
        paths, _, prob, _ = all_paths(em[b, :n], n, start, trans, end)
        gold[b, :n] = torch.from_numpy(paths[rng.choice(len(paths), p=prob / prob.sum())])
    return gold


def test_fit_temperature_recovers_overconfidence():
    """Gold paths sampled from the true CRF; the model's scores are the true ones times 2.5."""
    tags = tag_names(["X"], "BILOU")
    lengths = [4, 3, 4, 2] * 75
    em, mask, start, trans, end = crf_case(tags, "BILOU", lengths, seed=5, impossible=float("-inf"))
    gold = _sample_paths(em, mask, start, trans, end, np.random.default_rng(0))
    sharp = [x * 2.5 for x in (em, start, trans, end)]
    temperature = fit_temperature(sharp[0], mask, *sharp[1:], gold)
    assert 2.0 < temperature < 3.1
    nll = lambda t: gold_nll(sharp[0], mask, *sharp[1:], gold, t)  # noqa: E731
    assert nll(temperature) <= min(nll(temperature * 1.05), nll(temperature / 1.05))
    assert nll(temperature) < nll(1.0) - 10
