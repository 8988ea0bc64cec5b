"""Every error the package raises on purpose; each message names the thing at fault.

All are `BilstmTaggerError`s, which are `ValueError`s, so callers that caught ValueError still catch them;
the command line prints them as one `error:` line, and lets anything else (a bug) raise with its traceback.
"""


class BilstmTaggerError(ValueError):
    """The base of the package's own errors."""


class ModelLoadError(BilstmTaggerError):
    """A saved model directory or byte string could not be loaded; the message names the file."""


class DatasetError(BilstmTaggerError):
    """Training or evaluation data is unusable; the message names dataset, split, column and row."""


class WeightsError(BilstmTaggerError):
    """Bytes that are not a complete, matching set of bilstm_tagger weights."""


class TagError(BilstmTaggerError):
    """A tag that fits no scheme (unknown prefix or a missing label)."""


class ConfigError(BilstmTaggerError):
    """Settings that cannot work together, caught before any data is loaded."""


class HubUnreachableError(ConfigError):
    """A transformer named by hub id is neither cached nor fetchable (the hub cannot be reached, or
    offline mode is on); the message names the id and the ways to load a model without the hub."""


class AnnotateError(BilstmTaggerError):
    """A fatal problem with annotate's arguments, input or output directory (one `error:` line)."""


class LabelError(BilstmTaggerError):
    """A label the component cannot take: not a non-empty string, or added after the model was built."""


class VectorsError(BilstmTaggerError):
    """A vectors source (GloVe text, *_emb.npy + *index.parquet) that cannot be read; the message names the file."""
