"""Tests of bilstm_tagger.ml."""
