"""Moved to `bilstm_tagger.ml`; this module keeps release 0.1's import path working."""
from .ml import *  # noqa: F401,F403
