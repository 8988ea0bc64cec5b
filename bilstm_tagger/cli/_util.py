"""What the command modules share: the parser class and help formatter, the --split help texts, the
dataset arguments and a progress bar. Light (argparse only), so --help stays instant."""
from __future__ import annotations

import argparse

# load_pipeline and find_tagger live in pipeline/loading.py (inspection/ uses them too).


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and shows every option's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; an option's default follows its help once, where it says
    something: not for required options, unset (None) or off (False) ones, nor where the help
    already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))  # the flag is the setting
        if action.required or unset or flag or "default" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


# Each command's --split default fits what it does; the help says why, since they differ
# (annotate's, train, is in annotate/__init__.py).
SPLIT_HELP = {
    "evaluate": "the split to tag and score; test because it is the held-out split whose score one reports",
    "calibrate": "the split to fit the decision and the temperature on; validation because fitting on test "
    "would tune to the split one reports",
    "explain": "split of --dataset; validation, as calibrate: the split models are tuned on, not the reported one",
}


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="Hugging Face hub id or local directory in hub layout")
    parser.add_argument("--name", default=None, help="dataset config name")
    parser.add_argument("--revision", default=None, help="dataset revision (hub datasets)")
    parser.add_argument("--tokens-column", default="tokens", help="column holding the token lists")
    parser.add_argument("--tags-column", default="ner_tags", help="column holding the tags (ClassLabel ids or strings)")
    parser.add_argument("--limit", type=int, default=0, help="read at most this many rows per split (0 = all)")
    parser.add_argument(
        "--group-sentences", type=int, default=1, metavar="N",
        help="join up to N consecutive rows into one Doc with sentence starts (document context; "
        "use what the model was trained with); scores stay per row",
    )


DATASET_OPTIONS = ("name", "revision", "tokens_column", "tags_column", "limit", "group_sentences")


def dataset_options(args: argparse.Namespace) -> dict:
    """The options `add_dataset_args` added (besides the dataset itself), as keyword arguments."""
    return {key: getattr(args, key) for key in DATASET_OPTIONS}


def progress(iterable, total: int, desc: str):
    """A progress bar on a terminal; nothing in logs and pipes."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="doc", disable=None, leave=False)

