"""Every old import path still works, gives the new module's objects and warns naming the new path."""
import importlib
import sys
import warnings

import pytest

# old module -> (new modules, a name it forwards, the module that name lives in)
MOVED = {
    "bilstm_tagger.component": (["bilstm_tagger.pipeline.component"], "BiLSTMTagger", "bilstm_tagger.pipeline.component"),
    "bilstm_tagger.model": (["bilstm_tagger.ml"], "build_bilstm_tagger_v2", "bilstm_tagger.ml"),
    "bilstm_tagger.readers": (["bilstm_tagger.data.readers"], "create_hf_reader", "bilstm_tagger.data.readers"),
    "bilstm_tagger.scoring": (["bilstm_tagger.pipeline.scoring"], "score_seqeval", "bilstm_tagger.pipeline.scoring"),
    "bilstm_tagger.schedules": (["bilstm_tagger.data.schedules"], "epoch_steps", "bilstm_tagger.data.schedules"),
    "bilstm_tagger.confidence": (["bilstm_tagger.pipeline.confidence"], "make_record", "bilstm_tagger.pipeline.confidence"),
    "bilstm_tagger.introspect": (
        ["bilstm_tagger.inspection.rnn", "bilstm_tagger.inspection.calibration"], "fit_temperature", "bilstm_tagger.inspection.calibration"
    ),
    "bilstm_tagger.inspect_pipe": (["bilstm_tagger.inspection.inspect"], "inspect_docs", "bilstm_tagger.inspection.inspect"),
    "bilstm_tagger.calibrate": (["bilstm_tagger.inspection.calibrate"], "calibrate", "bilstm_tagger.inspection.calibrate"),
    "bilstm_tagger.explain": (["bilstm_tagger.inspection.explain"], "explain", "bilstm_tagger.inspection.explain"),
    "bilstm_tagger.report": (["bilstm_tagger.inspection.report"], "build_report", "bilstm_tagger.inspection.report.html"),
    "bilstm_tagger.report.data": (["bilstm_tagger.inspection.report.data"], "ReportData", "bilstm_tagger.inspection.report.data"),
    "bilstm_tagger.report.figures": (["bilstm_tagger.inspection.report.figures"], "render_figures", "bilstm_tagger.inspection.report.figures"),
    "bilstm_tagger.report.html": (["bilstm_tagger.inspection.report.html"], "build_report", "bilstm_tagger.inspection.report.html"),
    "bilstm_tagger.report.neurons": (["bilstm_tagger.inspection.report.neurons"], "NeuronSelection", "bilstm_tagger.inspection.report.neurons"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_import_path_warns_and_forwards(old):
    new, name, home = MOVED[old]
    for module in [m for m in sys.modules if m == old or m.startswith(old + ".")]:
        del sys.modules[module]  # import it afresh, so the import itself warns
    with pytest.warns(DeprecationWarning) as caught:
        shim = importlib.import_module(old)
        value = getattr(shim, name)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(old in m and all(n in m for n in new) for m in messages), messages
    assert any(f"{old}.{name}" in m and new_name_in(m, name) for m in messages), messages
    assert all(w.filename == __file__ for w in caught if f"{old}.{name}" in str(w.message)), "the warning points at the caller"
    assert value is getattr(importlib.import_module(home), name)
    assert name in shim.__all__


def new_name_in(message: str, name: str) -> bool:
    return f".{name} instead" in message and "bilstm_tagger." in message.split("import from ")[1]


def test_from_import_warns_every_time():
    importlib.import_module("bilstm_tagger.component")  # already imported: no import-time warning now
    for _ in range(2):
        with pytest.warns(DeprecationWarning, match=r"bilstm_tagger\.pipeline\.component\.BiLSTMTagger"):
            from bilstm_tagger.component import BiLSTMTagger  # noqa: F401


def test_unknown_names_still_raise_attribute_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        shim = importlib.import_module("bilstm_tagger.introspect")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        shim.nope
