"""Deprecated: moved to `bilstm_tagger.pipeline.component`; this path warns and forwards (see util/deprecation.py)."""
from .util.deprecation import forward

__getattr__ = forward(__name__, "bilstm_tagger.pipeline.component")
