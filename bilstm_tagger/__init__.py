"""bilstm_tagger: a BiLSTM(-CRF) sequence tagger for spaCy, trained from Hugging Face datasets."""
from .component import BiLSTMTagger, make_bilstm_tagger
from .errors import DatasetError, ModelLoadError
from .model import build_bilstm_tagger
from .readers import create_hf_reader
from .scoring import make_seqeval_scorer, score_seqeval

__version__ = "0.1.0"

__all__ = [
    "BiLSTMTagger",
    "DatasetError",
    "ModelLoadError",
    "build_bilstm_tagger",
    "create_hf_reader",
    "make_bilstm_tagger",
    "make_seqeval_scorer",
    "score_seqeval",
]
