"""Moved to `bilstm_tagger.pipeline.component`; this module keeps release 0.1's import path working."""
from .pipeline.component import *  # noqa: F401,F403
