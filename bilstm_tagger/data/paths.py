"""Telling a local dataset path from a Hugging Face hub id, so a mistyped path fails at once.

datasets.load_dataset takes any string that is not an existing folder for a hub id, so a typo in a
local path turns into half a minute of network retries and a "couldn't reach the hub" error.
Hub ids are `NAME` or `OWNER/NAME`: letters, digits, `-`, `_` and `.`, never starting with `.`.
So a string that does not exist here is a local path, not a hub id, when it:
- starts with `.`, `/` or `~`, or is absolute (`./x`, `../x`, `/x`, `~/x`, `C:\\x`);
- has a backslash, or more than one `/` (`corpora/sample/x`);
- ends in a data-file extension (`x.jsonl`, `owner/x.parquet`);
- is `DIR/NAME` where DIR is a folder here (`corpora/sample_nre` run from the repo root): the
  folder shadows the hub owner, as it does inside datasets.load_dataset.
This module imports nothing heavy: annotate's --help imports it.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Optional

# How datasets and huggingface_hub say that the hub could not be asked (no network, offline mode).
_UNREACHABLE = re.compile(r"Couldn't reach|OfflineModeIsEnabled|ConnectionError|offline mode", re.IGNORECASE)
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv", ".txt", ".arrow", ".spacy", ".gz", ".zip")


def looks_local(path: str) -> bool:
    """True when `path` cannot be a hub id (see the module docstring); says nothing of existence."""
    if path.startswith((".", "/", "~")) or "\\" in path or Path(path).is_absolute():
        return True
    if path.count("/") > 1 or path.lower().endswith(DATA_SUFFIXES):
        return True
    owner = path.split("/")[0]
    return "/" in path and Path(owner).is_dir()


def missing_local_path(path: str) -> Optional[str]:
    """'no such folder: PATH' (with the closest existing name) for a local-looking path that does
    not exist; None when it exists or may be a hub id."""
    expanded = Path(os.path.expanduser(path))
    if expanded.exists() or not looks_local(path):
        return None
    kind = "file" if path.lower().endswith(DATA_SUFFIXES) else "folder"
    return f"no such {kind}: {path}{_did_you_mean(expanded)}"


def _did_you_mean(path: Path) -> str:
    """' (did you mean X?)' for the closest name beside `path` (a typo in the last part)."""
    parent = path.parent
    if not parent.is_dir():
        return f" ({parent} does not exist either)"
    siblings = [p.name for p in parent.iterdir() if not p.name.startswith(".")]
    close = difflib.get_close_matches(path.name, siblings, n=1)
    return f" (did you mean {parent / close[0]}?)" if close else ""


def hub_unreachable(err: BaseException) -> bool:
    """Whether a load_dataset error means the hub could not be asked (rather than said no)."""
    return isinstance(err, ConnectionError) or bool(_UNREACHABLE.search(f"{type(err).__name__}: {err}"))


def unreachable_message(path: str) -> str:
    return (
        f"could not reach the Hugging Face hub for dataset {path!r} (no network, or HF_HUB_OFFLINE / "
        "HF_DATASETS_OFFLINE is set): give the dataset argument (--paths.dataset for spacy train) a local "
        "copy in hub layout instead, a folder with one file per split or a clone of the hub repo"
    )
