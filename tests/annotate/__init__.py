"""Tests of bilstm_tagger.annotate."""
