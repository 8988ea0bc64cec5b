"""Tests of bilstm_tagger.inspection."""
