"""Moved to `bilstm_tagger.data.readers`; this module keeps release 0.1's import path working."""
from .data.readers import *  # noqa: F401,F403
