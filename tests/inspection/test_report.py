"""The HTML report, opened in a real headless Chromium, and its matplotlib PNGs.

Chromium comes from Debian: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
The browser tests skip only when no chromium binary is installed.
"""
import base64
import hashlib
import io
import re
from dataclasses import asdict

import numpy as np
import pytest

from ..util import REPORT_EXTRA, DomIndex, assert_non_trivial, chromium, decode_png, needs_chromium, pil_image

pytest.importorskip("matplotlib", reason=REPORT_EXTRA)  # every test here draws or embeds the figures
pytest.importorskip("PIL", reason=REPORT_EXTRA)

import torch  # noqa: E402
from torch import nn

from bilstm_tagger.inspection.calibration import expected_calibration_error, reliability_table, span_marginals
from bilstm_tagger.inspection.report import (
    AttentionMap,
    Entity,
    GateSaturation,
    ReportData,
    ReportDoc,
    TransitionTable,
    build_report,
    neuron_tracks,
    render_figures,
    select_neurons,
    write_figures,
)
from bilstm_tagger.inspection.rnn import attention_weights, gate_saturation, rnn_internals
from bilstm_tagger.tags import tag_names, tags_from_spans, transition_constraints


LABELS = ["PER", "ORG", "LOC"]
DOCS = [
    ("Mara Lindqvist joined Northwind Bank in Lisbon .".split(), [(0, 2, "PER"), (3, 5, "ORG"), (6, 7, "LOC")]),
    (["Émile", "<b>", "&", "Zoë", "🙂", "visited", "Paris", "and", "Oslo"], [(0, 1, "PER"), (6, 7, "LOC"), (8, 9, "LOC")]),
]


def _embed(tokens, width=8):
    """A fixed pseudo-random vector per token text, so the report is reproducible."""
    rows = [np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)).normal(size=width) for t in tokens]
    return torch.tensor(np.array(rows), dtype=torch.float32)


@pytest.fixture(scope="module")
def report_data() -> ReportData:
    """Report data computed by bilstm_tagger.inspection from a small random BiLSTM, attention and CRF."""
    torch.manual_seed(0)
    rnn = nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True).eval()
    mha = nn.MultiheadAttention(12, 2, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.mul_(6)  # sharper than at init, so the attention maps are not flat
    tags = tag_names(LABELS, "BILOU")
    allowed = [torch.from_numpy(m) for m in transition_constraints(tags, "BILOU")]
    start, trans, end = torch.randn(len(tags)), torch.randn(len(tags), len(tags)), torch.randn(len(tags))
    scores = [s.masked_fill(~a, float("-inf")) for s, a in zip((start, trans, end), allowed)]

    docs, hidden, token_tags, attention, saturation = [], [], [], [], []
    for d, (tokens, spans) in enumerate(DOCS):
        with torch.no_grad():
            internals = rnn_internals(rnn, _embed(tokens))
            out = internals.output[0]
            weights = attention_weights(mha, out)
            emissions = torch.randn(1, len(tokens), len(tags)) * 2
            conf = span_marginals(emissions, torch.ones(1, len(tokens), dtype=torch.bool), *scores,
                                  [(0, s, e, label) for s, e, label in spans], tags, "BILOU")
        docs.append(ReportDoc(tokens, [Entity(s, e, label, float(c)) for (s, e, label), c in zip(spans, conf)]))
        hidden.append(out)
        token_tags += tags_from_spans(spans, len(tokens), "BILOU")
        attention += [AttentionMap(d, 0, h, weights[0, h].tolist()) for h in range(weights.shape[1])]
        if d == 0:
            saturation = [GateSaturation(r["layer"], r["direction"], r["gate"], r["low"], r["high"]) for r in gate_saturation(internals)]
    hidden = torch.cat(hidden)
    tracks = neuron_tracks(hidden, [len(t) for t, _ in DOCS], select_neurons(hidden, token_tags, top_k=2), "layer 1 output")
    rng = np.random.default_rng(0)
    confidences = rng.uniform(0.3, 1.0, size=200)
    correct = rng.uniform(size=200) < confidences ** 2  # overconfident on purpose
    return ReportData(
        title="Test report <&>",
        docs=docs,
        neurons=tracks,
        gate_saturation=saturation,
        attention=attention,
        transitions=TransitionTable(tags, trans.tolist(), allowed[1].tolist(), start.tolist(), end.tolist(),
                                    allowed[0].tolist(), allowed[2].tolist()),
        reliability=reliability_table(confidences, correct, n_bins=10),
        ece=expected_calibration_error(confidences, correct, n_bins=10),
        meta={"model": "random weights", "scheme": "BILOU"},
    )


# ------------------------------------------------------------------ no browser needed


def test_select_neurons_finds_planted_neurons():
    rng = np.random.default_rng(1)
    tags = (["B-PER", "I-PER", "L-PER", "O", "U-LOC", "O", "B-LOC", "L-LOC", "O", "O"] * 30)
    n = len(tags)
    hidden = rng.normal(size=(n, 12)) * 0.5
    inside = np.array([t != "O" for t in tags], dtype=float)
    start = np.array([t[0] in "BU" for t in tags], dtype=float)
    per = np.array([t.endswith("PER") for t in tags], dtype=float)
    hidden[:, 3] += 2 * inside
    hidden[:, 5] += 3 * start
    hidden[:, 7] -= 3 * per  # negative correlation counts by its size
    picked = {(s.criterion, i): s for i, s in enumerate(select_neurons(hidden, tags, top_k=1))}
    by_criterion = {c: s for (c, _), s in picked.items()}
    assert set(by_criterion) == {"inside", "start", "type:PER", "type:LOC"}
    assert by_criterion["inside"].neuron == 3 and by_criterion["start"].neuron == 5 and by_criterion["type:PER"].neuron == 7
    assert by_criterion["type:PER"].correlation < -0.8
    assert by_criterion["inside"].correlation == pytest.approx(np.corrcoef(hidden[:, 3], inside)[0, 1])
    # A criterion that never varies (no entity at all) is left out, not reported as r = NaN.
    assert select_neurons(hidden[:5], ["O"] * 5, top_k=2) == []


def test_validate_names_what_does_not_fit():
    bad = ReportData("x", [ReportDoc(["a", "b"], [Entity(1, 3, "PER", 0.5)])])
    with pytest.raises(ValueError, match="outside"):
        bad.validate()
    bad = ReportData("x", [ReportDoc(["a", "b"])], attention=[AttentionMap(0, 0, 0, [[1.0]])])
    with pytest.raises(ValueError, match="attention"):
        bad.validate()


def test_report_is_self_contained_and_escaped(report_data, tmp_path):
    path = build_report(report_data, tmp_path / "report.html", png_dir=tmp_path / "png")
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", html, re.I)
    assert "<b>" not in html.replace("<b class=", "") and "&lt;b&gt;" in html
    assert "Test report &lt;&amp;&gt;" in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["png", "report.html"]
    asdict(report_data)  # the structure is plain data


def test_matplotlib_pngs_are_non_trivial(report_data, tmp_path):
    paths = write_figures(report_data, tmp_path)
    names = sorted(p.name for p in paths)
    expected = {"reliability.png", "transitions.png", "gate_saturation.png", "neurons_doc0.png", "neurons_doc1.png"}
    assert expected <= set(names)
    assert sum(n.startswith("attention_") for n in names) == len(report_data.attention) == 4
    for path in paths:
        content = path.read_bytes()
        assert content[:8] == b"\x89PNG\r\n\x1a\n"
        assert_non_trivial(decode_png(content))


def test_decoder_check_rejects_a_blank_png():
    """The non-triviality check must be able to fail."""
    blank = io.BytesIO()
    pil_image().new("RGB", (300, 200), "white").save(blank, format="PNG")
    with pytest.raises(AssertionError):
        assert_non_trivial(decode_png(blank.getvalue()))


# ------------------------------------------------------------------ in Chromium


@needs_chromium
def test_report_in_chromium_dom(report_data, tmp_path):
    path = build_report(report_data, tmp_path / "report.html")
    dom = chromium("--dump-dom", path.as_uri(), tmp_path=tmp_path).stdout.decode("utf-8")
    index = DomIndex()
    index.feed(dom)
    assert index.body.get("data-ready") == "1"  # the inline script ran without error
    assert index.bold == 0  # the "<b>" token stayed text
    expected = [
        (" ".join(doc.tokens[e.start : e.end]), e.label, str(e.start), str(e.end), f"{e.confidence:.3f}")
        for doc in report_data.docs for e in doc.entities
    ]
    got = [(m["text"].strip(), m["data-label"], m["data-start"], m["data-end"], m["data-confidence"]) for m in index.marks]
    assert got == expected
    for _, _, _, _, conf in expected:  # the confidence is also printed, not only an attribute
        assert f'class="ent-conf">{conf}<' in dom
    n_tokens = sum(len(doc.tokens) for doc in report_data.docs)
    assert len(index.cells) == len(report_data.neurons) * n_tokens
    for cell in index.cells[:: max(1, len(index.cells) // 25)]:
        track = next(t for t in report_data.neurons if str(t.neuron) == cell["data-neuron"] and t.criterion == cell["data-criterion"])
        value = track.values[int(cell["data-doc"])][int(cell["data-token"])]
        assert float(cell["data-value"]) == pytest.approx(value, abs=1e-4)
    assert index.forbidden == sum(not ok for row in report_data.transitions.allowed for ok in row) > 0
    figures = render_figures(report_data)
    embedded = [base64.b64decode(img["src"].split(",", 1)[1]) for img in index.images]
    assert len(embedded) == len(figures) - 2  # per-doc neuron PNGs are files only; the HTML has live cells
    for content in embedded:
        assert_non_trivial(decode_png(content))


@needs_chromium
def test_report_screenshot_is_not_blank(report_data, tmp_path):
    path = build_report(report_data, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,1600", path.as_uri(), tmp_path=tmp_path)
    pixels = decode_png(shot.read_bytes())
    assert pixels.shape[:2] == (1600, 1280)
    assert_non_trivial(pixels)
    # The entity marks are drawn: displaCy's PER colour (#aa9cfc) is on screen.
    per = (np.abs(pixels - np.array([0xAA, 0x9C, 0xFC])).sum(-1) < 12).sum()
    assert per > 200


@needs_chromium
def test_blank_page_screenshot_fails_the_check(tmp_path):
    """Guard: the screenshot check must reject a blank page rendered by the same browser."""
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body style='background:#fff'></body></html>")
    shot = tmp_path / "blank.png"
    chromium(f"--screenshot={shot}", "--window-size=640,480", page.as_uri(), tmp_path=tmp_path)
    with pytest.raises(AssertionError):
        assert_non_trivial(decode_png(shot.read_bytes()))
