"""Every error the package raises on purpose; each message names the thing at fault."""


class ModelLoadError(ValueError):
    """A saved model directory or byte string could not be loaded; the message names the file."""


class DatasetError(ValueError):
    """Training or evaluation data is unusable; the message names dataset, split, column and row."""


class WeightsError(ValueError):
    """Bytes that are not a complete, matching set of bilstm_tagger weights."""


class TagError(ValueError):
    """A tag that fits no scheme (unknown prefix or a missing label)."""


class ConfigError(ValueError):
    """Settings that cannot work together, caught before any data is loaded."""


class AnnotateError(ValueError):
    """A fatal problem with annotate's arguments, input or output directory (one `error:` line)."""
