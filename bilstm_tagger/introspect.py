"""Deprecated: moved to `bilstm_tagger.inspection.rnn` and `bilstm_tagger.inspection.calibration`; this path warns and forwards (see util/deprecation.py)."""
from .util.deprecation import forward

__getattr__ = forward(__name__, "bilstm_tagger.inspection.rnn", "bilstm_tagger.inspection.calibration")
