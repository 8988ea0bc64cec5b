"""Training data and static vectors.

- readers.py: `bilstm_tagger.HFDataset.v1`, the Hugging Face dataset reader
- vectors.py: GloVe-style vectors turned into a pipeline for [initialize] vectors
- schedules.py: `bilstm_tagger.epoch_steps.v1` and `bilstm_tagger.epoch_decay.v1`, settings in epochs
"""
