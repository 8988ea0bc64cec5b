"""thinc layers with torch inside, and the registered architectures built from them.

- embed.py: `bilstm_tagger.HashCharEmbed.v1` (hash tables, byte CNN, static vectors)
- transformer.py: `bilstm_tagger.TransformerEmbed.v1` (Hugging Face features) and `bilstm_tagger.ConcatEmbed.v1`
- listener.py: listener mode, features from a curated_transformer component in the pipeline
- encoder.py: the BiLSTM/GRU (+ self-attention) layer, emitting per-tag scores
- windows.py: how long docs are cut into overlapping windows and stitched back
- crf.py: the linear-chain CRF maths (log Z, marginals, span marginals, Viterbi, n-best, path scores)
- decoder.py: the CRF / softmax decoder layer, `decode` and `TaggerLoss`
- tagger.py: `bilstm_tagger.BiLSTMTagger.v2` (and v1), weight loading incl. release 0.1 files
- precision.py: fp32 / bf16 / int8 inference per layer (the component's `precision`)
- shim.py, weights.py: torch modules rebuilt from their spec; safetensors files
"""
from .decoder import TaggerLoss, decode, crf_allowed, crf_scores, set_transition_constraints
from .encoder import encoder_parts
from .precision import PRECISIONS, resolve_precision, set_precision
from .embed import build_hash_char_embed, check_vectors
from .transformer import build_concat_embed, build_transformer_embed
from .tagger import build_bilstm_tagger, build_bilstm_tagger_v2, emission_scores, is_initialized, load_tagger_bytes

__all__ = [
    "PRECISIONS",
    "TaggerLoss",
    "crf_allowed",
    "crf_scores",
    "decode",
    "build_bilstm_tagger",
    "build_bilstm_tagger_v2",
    "build_concat_embed",
    "build_hash_char_embed",
    "build_transformer_embed",
    "check_vectors",
    "emission_scores",
    "encoder_parts",
    "is_initialized",
    "load_tagger_bytes",
    "resolve_precision",
    "set_precision",
    "set_transition_constraints",
]
