"""The private or semi-private APIs bilstm_tagger leans on, one test each, so that a dependency
upgrade that changes one fails here with the dependency, its version and the module that relies on
it named, rather than somewhere deep in training or tagging."""
from __future__ import annotations

import inspect
from importlib.metadata import version

import numpy
import pytest
import torch


def relies(dependency: str, what: str, where: str) -> str:
    return f"{dependency} {version(dependency)} changed {what}; {where} relies on it"


# ---- thinc: PyTorchShim internals (bilstm_tagger.ml.shim, ml.transformer) -------------------------


def test_thinc_pytorch_shim_keeps_the_module_in_model():
    from thinc.api import PyTorchShim

    module = torch.nn.Linear(2, 2)
    shim = PyTorchShim(module)
    assert getattr(shim, "_model", None) is module, relies("thinc", "PyTorchShim._model", "bilstm_tagger.ml.shim (get_module, set_module, is_built) and ml.transformer")


def test_thinc_pytorch_shim_signatures():
    from thinc.api import PyTorchShim

    init = inspect.signature(PyTorchShim.__init__).parameters
    assert {"serialize_model", "deserialize_model"} <= set(init), relies("thinc", "PyTorchShim.__init__'s serialize_model/deserialize_model", "bilstm_tagger.ml.shim.make_shim")
    assert list(inspect.signature(PyTorchShim.to_device).parameters) == ["self", "device_type", "device_id"], relies(
        "thinc", "PyTorchShim.to_device(device_type, device_id)", "bilstm_tagger.ml.shim.TorchShim.to_device"
    )
    assert list(inspect.signature(PyTorchShim.use_params).parameters) == ["self", "params"], relies(
        "thinc", "PyTorchShim.use_params(params)", "bilstm_tagger.ml.shim.TorchShim.use_params"
    )


def test_thinc_optimizer_keeps_torch_averages_under_shim_id_and_parameter_name():
    """TorchShim.use_params swaps in params[(shim.id, name)]: the key thinc's finish_update uses."""
    from thinc.api import Adam, PyTorchWrapper_v2

    model = PyTorchWrapper_v2(torch.nn.Linear(3, 2))
    model.initialize()
    optimizer = Adam(0.1, use_averages=True)
    X = model.ops.asarray2f(numpy.ones((4, 3), dtype="f"))
    Y, backprop = model.begin_update(X)
    backprop(model.ops.alloc2f(*Y.shape) + 1)
    model.finish_update(optimizer)
    shim = model.shims[0]
    expected = {(shim.id, "weight"), (shim.id, "bias")}
    assert expected <= set(optimizer.averages), relies("thinc", "the key Optimizer.averages holds a torch parameter under", "bilstm_tagger.ml.shim.TorchShim.use_params")


# ---- torch: nn.LSTM internals (bilstm_tagger.introspect) -----------------------------------------


def test_torch_lstm_flat_weights_names():
    lstm = torch.nn.LSTM(4, 3, bidirectional=True)
    names = getattr(lstm, "_flat_weights_names", None)
    assert names is not None and "weight_ih_l0" in names and "weight_hh_l0_reverse" in names, relies(
        "torch", "nn.LSTM._flat_weights_names", "bilstm_tagger.introspect (gate traces)"
    )


# ---- spaCy / confection: private CLI helpers and config-error printing ---------------------------


def test_spacy_parse_config_overrides():
    from spacy.cli._util import parse_config_overrides

    assert parse_config_overrides(["--training.max_steps", "10", "--paths.dataset=x"]) == {"training.max_steps": 10, "paths.dataset": "x"}, relies(
        "spacy", "spacy.cli._util.parse_config_overrides", "bilstm_tagger.cli.main (train's --section.key overrides)"
    )


def test_spacy_train_prints_a_config_validation_error_in_one_message(capsys):
    """`spacy train` resolves [corpora] inside show_validation_error, which rebuilds the error with
    from_error(): DatasetNotFoundError must survive that to print as one line, not a traceback."""
    from spacy.cli._util import show_validation_error

    from bilstm_tagger.data.readers import DatasetNotFoundError

    with pytest.raises(SystemExit) as exited:
        with show_validation_error(hint_fill=False):
            raise DatasetNotFoundError("no such folder: x/y")
    out = capsys.readouterr().out
    assert exited.value.code == 1 and "no such folder: x/y" in out, relies(
        "spacy", "show_validation_error / confection ConfigValidationError.from_error", "bilstm_tagger.data.readers.DatasetNotFoundError"
    )


# ---- spacy-curated-transformers: CuratedTransformer._create_backprops (bilstm_tagger.ml.listener) -


def test_curated_transformer_create_backprops():
    pytest.importorskip("spacy_curated_transformers", reason="the `curated` extra is not installed")
    from spacy_curated_transformers.pipeline.transformer import CuratedTransformer

    method = getattr(CuratedTransformer, "_create_backprops", None)
    params = list(inspect.signature(method).parameters) if method else []
    assert params == ["self", "docs", "losses", "sgd"], relies(
        "spacy-curated-transformers", "CuratedTransformer._create_backprops(docs, losses, *, sgd)", "bilstm_tagger.ml.listener.fix_curated_loss, which replaces it"
    )


# ---- Ray Data (bilstm_tagger.annotate.ray_engine) ------------------------------------------------


def test_ray_data_names_the_engine_uses():
    pytest.importorskip("ray.data", reason="the `ray` extra is not installed")
    import ray.data

    for name in ("read_parquet", "read_json", "read_binary_files", "from_huggingface", "ActorPoolStrategy", "DataContext"):
        assert hasattr(ray.data, name), relies("ray", f"ray.data.{name}", "bilstm_tagger.annotate.ray_engine")
    context = ray.data.DataContext.get_current()
    assert hasattr(context, "enable_progress_bars"), relies("ray", "DataContext.enable_progress_bars", "bilstm_tagger.annotate.ray_engine")
    assert "file_extensions" in inspect.signature(ray.data.read_binary_files).parameters, relies(
        "ray", "ray.data.read_binary_files(file_extensions=...)", "bilstm_tagger.annotate.ray_engine (.txt folders)"
    )
