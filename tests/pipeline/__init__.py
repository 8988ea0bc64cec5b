"""Tests of bilstm_tagger.pipeline."""
