"""Tests of bilstm_tagger.cli."""
