"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas.

Figures are made with `matplotlib.figure.Figure` and `FigureCanvasAgg` directly rather than
pyplot, so no global backend is switched and nothing is left open in the caller's process.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from .data import AttentionMap, GateSaturation, NeuronTrack, ReliabilityBin, ReportData, TransitionTable


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # an optional dependency: say how to get it
        raise ImportError("the report's figures need matplotlib: pip install 'bilstm_tagger[report]'") from err
    return Figure, FigureCanvasAgg


def _png(fig) -> bytes:
    _, canvas_cls = _matplotlib()
    canvas_cls(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Tokens may hold characters (emoji, rare scripts) that the default font lacks.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _new_figure(width: float, height: float):
    figure_cls, _ = _matplotlib()
    return figure_cls(figsize=(width, height))


def _short(tokens: Sequence[str], width: int = 12) -> List[str]:
    return [t if len(t) <= width else t[: width - 1] + "…" for t in tokens]


def reliability_png(bins: Sequence[ReliabilityBin], ece) -> bytes:
    fig = _new_figure(4.5, 4.5)
    ax = fig.add_subplot()
    filled = [b for b in bins if b.count]
    width = bins[0].upper - bins[0].lower if bins else 0.1
    ax.bar([b.lower for b in filled], [b.accuracy for b in filled], width=width, align="edge",
           color="#4c78a8", edgecolor="white", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="#888", label="perfect calibration")
    ax.plot([b.mean_confidence for b in filled], [b.accuracy for b in filled], "o", color="#e45756", label="bin mean confidence")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="entity confidence", ylabel="share of exact matches")
    ax.set_title("Reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def transitions_png(table: TransitionTable) -> bytes:
    n = len(table.tags)
    scores = np.array(table.scores, dtype=np.float64)
    allowed = np.array(table.allowed, dtype=bool)
    fig = _new_figure(1.2 + 0.45 * n, 1.0 + 0.45 * n)
    ax = fig.add_subplot()
    shown = np.ma.masked_where(~allowed, scores)
    limit = float(np.abs(scores[allowed]).max()) if allowed.any() else 1.0
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_facecolor("#d0d0d0")  # forbidden cells show the background, with an x
    for i, j in zip(*np.nonzero(~allowed)):
        ax.text(j, i, "×", ha="center", va="center", color="#555", fontsize=9)
    ax.set_xticks(range(n), table.tags, rotation=90, fontsize=8)
    ax.set_yticks(range(n), table.tags, fontsize=8)
    ax.set(xlabel="to", ylabel="from", title="CRF transitions (× = forbidden)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _png(fig)


def gate_saturation_png(rows: Sequence[GateSaturation]) -> bytes:
    names = [f"L{r.layer} {r.direction[:3]} {r.gate}" for r in rows]
    fig = _new_figure(6, 0.8 + 0.3 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    low = np.array([r.low for r in rows])
    high = np.array([r.high for r in rows])
    ax.barh(y, low, color="#4c78a8", label="< 0.1")
    ax.barh(y, high, left=low, color="#f58518", label="> 0.9")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="share of gate values", title="Gate saturation")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def attention_png(att: AttentionMap, tokens: Sequence[str]) -> bytes:
    n = len(tokens)
    size = min(2.5 + 0.3 * n, 14)
    fig = _new_figure(size, size)
    ax = fig.add_subplot()
    image = ax.imshow(np.array(att.weights, dtype=np.float64), cmap="viridis", vmin=0)
    if n <= 60:  # beyond that, labels overlap into a black bar
        ax.set_xticks(range(n), _short(tokens), rotation=90, fontsize=7)
        ax.set_yticks(range(n), _short(tokens), fontsize=7)
    ax.set(xlabel="key", ylabel="query", title=f"Attention: layer {att.layer}, head {att.head}")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _png(fig)


def neurons_png(tracks: Sequence[NeuronTrack], doc: int, tokens: Sequence[str]) -> bytes:
    # As in the HTML: each neuron's deviation from its mean over all the report's tokens,
    # divided by its largest deviation, so every row uses the whole colour range.
    rows = []
    for track in tracks:
        every = np.concatenate([np.asarray(v, dtype=np.float64) for v in track.values])
        spread = float(np.abs(every - every.mean()).max()) or 1.0
        rows.append((np.asarray(track.values[doc], dtype=np.float64) - every.mean()) / spread)
    values = np.array(rows)
    n = len(tokens)
    fig = _new_figure(min(2.5 + 0.35 * n, 24), 1.2 + 0.35 * len(tracks))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(n), _short(tokens), rotation=90, fontsize=7)
    ax.set_yticks(range(len(tracks)), [f"#{t.neuron} {t.criterion} r={t.correlation:+.2f}" for t in tracks], fontsize=7)
    ax.set_title(f"Selected neurons, doc {doc}")
    fig.colorbar(image, ax=ax, shrink=0.8, label="vs. neuron mean (scaled)")
    return _png(fig)


def render_figures(data: ReportData) -> Dict[str, bytes]:
    """Every figure the data allows, as {file name: PNG bytes}."""
    figures: Dict[str, bytes] = {}
    if data.reliability:
        figures["reliability.png"] = reliability_png(data.reliability, data.ece)
    if data.transitions is not None:
        figures["transitions.png"] = transitions_png(data.transitions)
    if data.gate_saturation:
        figures["gate_saturation.png"] = gate_saturation_png(data.gate_saturation)
    for att in data.attention:
        figures[f"attention_doc{att.doc}_layer{att.layer}_head{att.head}.png"] = attention_png(att, data.docs[att.doc].tokens)
    if data.neurons:
        for d, doc in enumerate(data.docs):
            if doc.tokens:
                figures[f"neurons_doc{d}.png"] = neurons_png(data.neurons, d, doc.tokens)
    return figures


def write_figures(data: ReportData, png_dir: Union[str, Path]) -> List[Path]:
    """Write `render_figures(data)` as PNG files into `png_dir` (created if needed)."""
    data.validate()
    out = Path(png_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in render_figures(data).items():
        path = out / name
        path.write_bytes(png)
        paths.append(path)
    return paths


