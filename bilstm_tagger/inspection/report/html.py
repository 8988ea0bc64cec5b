"""One self-contained HTML file from a ReportData: inline CSS and JS, figures as data: URIs.

Everything a reader or a DOM test needs is plain markup with data attributes: entities are
``<mark class="ent" data-label data-start data-end data-confidence>``, heatmap cells are
``<td class="cell" data-doc data-neuron data-criterion data-token data-value>``, forbidden CRF
moves are ``<td class="forbidden">``. The script only adds hover read-outs, then sets
``<body data-ready="1">`` so a browser test can tell it ran.
"""
from __future__ import annotations

import base64
import colorsys
import hashlib
import math
from html import escape
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from .data import Entity, GateSaturation, NeuronTrack, ReportData, ReportDoc, TransitionTable
from .figures import render_figures

# displaCy's colours for the CoNLL types; other labels get a stable colour from their name.
_LABEL_COLOURS = {"PER": "#aa9cfc", "PERSON": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "GPE": "#feca74", "MISC": "#c887fb"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;background:#fff;max-width:1400px}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse}td,th{padding:2px 6px;font-size:13px}
.meta td{border-bottom:1px solid #eee}.doc{line-height:2.6;font-size:17px;margin:10px 0 18px;padding:8px 12px;border:1px solid #eee;border-radius:6px}
.ent{padding:3px 6px;margin:0 2px;border-radius:6px;line-height:1}
.ent-label{font-size:0.62em;font-weight:bold;text-transform:uppercase;margin-left:6px;vertical-align:middle}
.ent-conf{font-size:0.62em;margin-left:4px;vertical-align:middle;background:rgba(255,255,255,.7);border-radius:3px;padding:0 3px}
.heat{margin:8px 0 20px;overflow-x:auto}.heat th{font-weight:normal;font-size:12px;white-space:nowrap}
.heat th.tok{writing-mode:vertical-rl;transform:rotate(180deg);max-height:9em;overflow:hidden}
.cell{width:22px;height:20px;border:1px solid #fff}.cell:hover,.cell.hl{outline:2px solid #222}
.bar{display:inline-block;height:12px}.low{background:#4c78a8}.high{background:#f58518}
.trans td{width:34px;height:22px;text-align:center;font-size:11px;border:1px solid #fff}
.trans td.forbidden{background:#d0d0d0;color:#555}
figure{margin:10px 0 24px}figure img{max-width:100%;border:1px solid #eee}
#readout{position:fixed;right:12px;top:12px;background:#222;color:#fff;padding:4px 8px;border-radius:4px;font-size:12px;display:none}
.note{color:#666;font-size:13px}
"""

_JS = """
(function(){
  var box=document.getElementById('readout');
  function show(t){box.textContent=t;box.style.display='block';}
  document.querySelectorAll('.cell').forEach(function(c){
    c.addEventListener('mouseenter',function(){
      show('neuron '+c.dataset.neuron+' ('+c.dataset.criterion+') at "'+c.dataset.tokenText+'": '+c.dataset.value);
      document.querySelectorAll('.cell[data-neuron="'+c.dataset.neuron+'"][data-doc="'+c.dataset.doc+'"]').forEach(function(o){o.classList.add('hl');});
    });
    c.addEventListener('mouseleave',function(){
      box.style.display='none';
      document.querySelectorAll('.cell.hl').forEach(function(o){o.classList.remove('hl');});
    });
  });
  document.querySelectorAll('.ent').forEach(function(e){
    e.addEventListener('mouseenter',function(){show(e.dataset.label+' ['+e.dataset.start+', '+e.dataset.end+') confidence '+(e.dataset.confidence||'n/a'));});
    e.addEventListener('mouseleave',function(){box.style.display='none';});
  });
  document.body.dataset.ready='1';
})();
"""


def label_colour(label: str) -> str:
    if label in _LABEL_COLOURS:
        return _LABEL_COLOURS[label]
    hue = int(hashlib.sha1(label.encode("utf-8")).hexdigest()[:4], 16) / 0xFFFF
    r, g, b = colorsys.hls_to_rgb(hue, 0.8, 0.7)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def format_confidence(confidence: float) -> str:
    """How confidences are printed everywhere in the report (and what a DOM test looks for)."""
    return f"{confidence:.3f}"


def _entity_html(tokens: Sequence[str], ent: Entity) -> str:
    text = escape(" ".join(tokens[ent.start : ent.end]))
    conf = ""
    attrs = f'data-label="{escape(ent.label)}" data-start="{ent.start}" data-end="{ent.end}"'
    if ent.confidence is not None:
        attrs += f' data-confidence="{format_confidence(ent.confidence)}"'
        conf = f'<span class="ent-conf">{format_confidence(ent.confidence)}</span>'
    return (f'<mark class="ent" {attrs} style="background:{label_colour(ent.label)}">{text}'
            f'<span class="ent-label">{escape(ent.label)}</span>{conf}</mark>')


def doc_html(doc: ReportDoc, index: int) -> str:
    """The doc's text with its entities marked, displaCy-style."""
    by_start = {ent.start: ent for ent in doc.entities}
    parts: List[str] = []
    i = 0
    while i < len(doc.tokens):
        ent = by_start.get(i)
        if ent is not None:
            parts.append(_entity_html(doc.tokens, ent))
            i = ent.end
        else:
            parts.append(escape(doc.tokens[i]))
            i += 1
    return f'<div class="doc" data-doc="{index}">{" ".join(parts)}</div>'


def _heat_colour(value: float, limit: float) -> str:
    """Diverging white-centred colour: red for positive, blue for negative."""
    a = max(-1.0, min(1.0, value / limit)) if limit > 0 else 0.0
    fade = int(round(255 * (1 - abs(a))))
    return f"rgb(255,{fade},{fade})" if a >= 0 else f"rgb({fade},{fade},255)"


def _mean(values: Sequence[Sequence[float]]) -> float:
    flat = [v for row in values for v in row]
    return sum(flat) / len(flat) if flat else 0.0


def neuron_table_html(tracks: Sequence[NeuronTrack], doc: int, tokens: Sequence[str]) -> str:
    head = "".join(f'<th class="tok" title="{escape(t)}">{escape(t)}</th>' for t in tokens)
    rows = []
    for track in tracks:
        values = track.values[doc]
        # Colour shows the deviation from the neuron's mean over all the report's tokens, so a
        # neuron that is negative everywhere still shows where it rises; data-value stays raw.
        centre = _mean(track.values)
        limit = max((abs(v - centre) for doc_values in track.values for v in doc_values), default=0.0)
        cells = "".join(
            f'<td class="cell" data-doc="{doc}" data-neuron="{track.neuron}" data-criterion="{escape(track.criterion)}" '
            f'data-token="{t}" data-token-text="{escape(tokens[t])}" data-value="{v:.4f}" '
            f'style="background:{_heat_colour(v - centre, limit)}" title="{escape(tokens[t])}: {v:.4f}"></td>'
            for t, v in enumerate(values)
        )
        label = f"#{track.neuron} {escape(track.criterion)} <span class=note>r={track.correlation:+.3f}</span>"
        rows.append(f'<tr data-neuron="{track.neuron}"><th style="text-align:right">{label}</th>{cells}</tr>')
    return f'<div class="heat"><table data-doc="{doc}"><tr><th></th>{head}</tr>{"".join(rows)}</table></div>'


def saturation_html(rows: Sequence[GateSaturation]) -> str:
    body = "".join(
        f'<tr data-layer="{r.layer}" data-direction="{escape(r.direction)}" data-gate="{escape(r.gate)}">'
        f"<td>{r.layer}</td><td>{escape(r.direction)}</td><td>{escape(r.gate)}</td>"
        f'<td>{100 * r.low:.1f}%</td><td>{100 * r.high:.1f}%</td>'
        f'<td><span class="bar low" style="width:{200 * r.low:.0f}px"></span><span class="bar high" style="width:{200 * r.high:.0f}px"></span></td></tr>'
        for r in rows
    )
    return ('<table class="saturation"><tr><th>layer</th><th>direction</th><th>gate</th>'
            f"<th>&lt; 0.1</th><th>&gt; 0.9</th><th></th></tr>{body}</table>")


def transitions_html(table: TransitionTable) -> str:
    finite = [abs(v) for row, ok in zip(table.scores, table.allowed) for v, a in zip(row, ok) if a and math.isfinite(v)]
    limit = max(finite, default=1.0)
    head = "".join(f"<th>{escape(t)}</th>" for t in table.tags)
    rows = []
    for i, tag in enumerate(table.tags):
        cells = []
        for j, (v, ok) in enumerate(zip(table.scores[i], table.allowed[i])):
            where = f'data-from="{escape(tag)}" data-to="{escape(table.tags[j])}"'
            if ok:
                cells.append(f'<td {where} data-score="{v:.3f}" style="background:{_heat_colour(v, limit)}">{v:.1f}</td>')
            else:
                cells.append(f'<td class="forbidden" {where} title="forbidden by the tag scheme">×</td>')
        rows.append(f"<tr><th>{escape(tag)}</th>{''.join(cells)}</tr>")
    return f'<table class="trans"><tr><th>from \\ to</th>{head}</tr>{"".join(rows)}</table>'


def reliability_html(data: ReportData) -> str:
    rows = "".join(
        f"<tr><td>{b.lower:.1f}–{b.upper:.1f}</td><td>{b.count}</td>"
        f"<td>{'' if not b.count else f'{b.mean_confidence:.3f}'}</td><td>{'' if not b.count else f'{b.accuracy:.3f}'}</td></tr>"
        for b in data.reliability
    )
    ece = f'<p>Expected calibration error: <b class="ece">{data.ece:.4f}</b></p>' if data.ece is not None else ""
    return f'{ece}<table class="reliability"><tr><th>confidence</th><th>entities</th><th>mean confidence</th><th>exact matches</th></tr>{rows}</table>'


def _img(figures: Dict[str, bytes], name: str, alt: str) -> str:
    if name not in figures:
        return ""
    data = base64.b64encode(figures[name]).decode("ascii")
    return f'<figure data-figure="{escape(name)}"><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _sections(data: ReportData, figures: Dict[str, bytes]) -> List[str]:
    out = ["<h2>Entities</h2>", '<p class="note">Each entity shows the probability of exactly that span.</p>']
    out += [doc_html(doc, d) for d, doc in enumerate(data.docs)]
    if data.neurons:
        out.append('<h2>Neurons</h2><p class="note">Neurons most correlated (Pearson r) with being inside an '
                   "entity, starting one, and each entity type. Red: above the neuron's mean over these docs, blue: below, "
                   "scaled per neuron; hover a cell for its value.</p>")
        for d, doc in enumerate(data.docs):
            out.append(neuron_table_html(data.neurons, d, doc.tokens))
    if data.gate_saturation:
        out += ["<h2>Gate saturation</h2>", saturation_html(data.gate_saturation), _img(figures, "gate_saturation.png", "gate saturation")]
    if data.attention:
        out.append("<h2>Attention</h2>")
        out += [_img(figures, f"attention_doc{a.doc}_layer{a.layer}_head{a.head}.png", f"attention doc {a.doc} layer {a.layer} head {a.head}")
                for a in data.attention]
    if data.transitions is not None:
        out += ["<h2>CRF transitions</h2>", transitions_html(data.transitions), _img(figures, "transitions.png", "CRF transitions")]
    if data.reliability:
        out += ["<h2>Calibration</h2>", reliability_html(data), _img(figures, "reliability.png", "reliability diagram")]
    return out


def render_html(data: ReportData, figures: Optional[Dict[str, bytes]] = None) -> str:
    data.validate()
    figures = render_figures(data) if figures is None else figures
    meta = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>" for k, v in data.meta.items())
    body = "\n".join([f"<h1>{escape(data.title)}</h1>", f'<table class="meta">{meta}</table>' if meta else "", *_sections(data, figures)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(data.title)}</title><style>{_CSS}</style></head>"
            f'<body><div id="readout"></div>\n{body}\n<script>{_JS}</script></body></html>\n')


def build_report(data: ReportData, path: Union[str, Path], png_dir: Optional[Union[str, Path]] = None) -> Path:
    """Write the report as one self-contained HTML file at `path`; with `png_dir`, the same
    figures also go there as PNG files. Returns the HTML file's path."""
    figures = render_figures(data)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, figures), encoding="utf-8")
    if png_dir is not None:
        png = Path(png_dir)
        png.mkdir(parents=True, exist_ok=True)
        for name, content in figures.items():
            (png / name).write_bytes(content)
    return out
