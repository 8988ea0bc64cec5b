"""An HTML report (and PNG figures) of what a tagger does, from plain data.

    from bilstm_tagger.inspection.report import ReportData, ReportDoc, Entity, build_report
    build_report(ReportData("demo", [ReportDoc(["Ada", "Lovelace"], [Entity(0, 2, "PER", 0.97)])]), "r.html")

The figures need matplotlib (`pip install 'bilstm_tagger[report]'`); it is imported only when
figures are drawn.
"""
from .data import AttentionMap, Entity, GateSaturation, NeuronTrack, ReliabilityBin, ReportData, ReportDoc, TransitionTable
from .figures import render_figures, write_figures
from .html import build_report, render_html
from .neurons import NeuronSelection, neuron_tracks, select_neurons, token_indicators

__all__ = [
    "AttentionMap",
    "Entity",
    "GateSaturation",
    "NeuronSelection",
    "NeuronTrack",
    "ReliabilityBin",
    "ReportData",
    "ReportDoc",
    "TransitionTable",
    "build_report",
    "neuron_tracks",
    "render_figures",
    "render_html",
    "select_neurons",
    "token_indicators",
    "write_figures",
]
