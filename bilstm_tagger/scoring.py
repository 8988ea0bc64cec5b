"""Moved to `bilstm_tagger.pipeline.scoring`; this module keeps release 0.1's import path working."""
from .pipeline.scoring import *  # noqa: F401,F403
