"""Errors with messages that name the thing at fault."""


class ModelLoadError(ValueError):
    """A saved model directory or byte string could not be loaded; the message names the file."""


class DatasetError(ValueError):
    """Training or evaluation data is unusable; the message names dataset, split, column and row."""
