"""Every subcommand's --help: no "(default: None)", no required option with a default, no default twice,
and the --split defaults that differ by command each say why."""
from __future__ import annotations

import argparse
import re
from typing import Dict, List

import pytest

from bilstm_tagger.cli import build_parser


def _subparsers() -> Dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


COMMANDS = _subparsers()


def _entries(help_text: str) -> Dict[str, str]:
    """The rendered help of each option or positional, keyed by its first name, lines joined."""
    entries: Dict[str, List[str]] = {}
    current = None
    for line in help_text.splitlines():
        start = re.match(r"^  (-{0,2}[\w-]+)", line)
        if start:
            current = start.group(1)
            entries[current] = [line]
        elif current and line.startswith("    "):
            entries[current].append(line)
        else:
            current = None
    return {name: " ".join(" ".join(lines).split()) for name, lines in entries.items()}


def test_every_command_is_covered():
    assert set(COMMANDS) == {"train", "evaluate", "convert", "vectors", "annotate", "explain", "calibrate", "quantize", "distill"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_each_default_once_and_none_for_required_or_unset_options(command):
    parser = COMMANDS[command]
    entries = _entries(parser.format_help())
    assert "(default: None)" not in " ".join(entries.values())
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        text = entries[action.option_strings[0]]
        assert text.count("(default:") <= 1, text
        if action.required:
            assert "(default:" not in text, text


@pytest.mark.parametrize(
    "command, split, reason",
    [("evaluate", "test", "held-out"), ("calibrate", "validation", "one reports"), ("explain", "validation", "tuned on"), ("annotate", "train", "one split")],
)
def test_each_split_default_states_its_reason(command, split, reason):
    text = _entries(COMMANDS[command].format_help())["--split"]
    assert text.endswith(f"(default: {split})") and reason in text, text
