"""Tests of bilstm_tagger.data."""
