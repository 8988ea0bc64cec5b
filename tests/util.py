"""Helpers shared by the test modules (not tests themselves).

Nothing here needs an optional extra at import time: Pillow and matplotlib (the `report` extra) are
imported inside the helpers, and a test that reaches one without them is skipped with the reason.
"""
from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

REPORT_EXTRA = "the report tests need the report extra (matplotlib, Pillow): pip install -e '.[test,report]'"
HAS_REPORT_EXTRA = all(importlib.util.find_spec(name) is not None for name in ("matplotlib", "PIL"))
needs_report = pytest.mark.skipif(not HAS_REPORT_EXTRA, reason=REPORT_EXTRA)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get update && apt-get install -y chromium)"
)


def pil_image():
    """PIL.Image, or skip the test that needs it."""
    return pytest.importorskip("PIL.Image", reason=REPORT_EXTRA)


def decode_png(content: bytes) -> np.ndarray:
    return np.asarray(pil_image().open(io.BytesIO(content)).convert("RGB"), dtype=np.float64)


def assert_non_trivial(pixels: np.ndarray, min_side: int = 100) -> None:
    height, width, _ = pixels.shape
    assert height >= min_side and width >= min_side
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    background = (np.abs(pixels - pixels[0, 0]).sum(-1) > 30).mean()  # share unlike the corner pixel
    assert pixels.std() > 15 and colours > 20 and background > 0.03, (pixels.std(), colours, background)


def chromium(*args, tmp_path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, timeout=180, check=True)


class DomIndex(HTMLParser):
    """Entity marks (with their text), heatmap cells, forbidden cells, images and the body's attributes."""

    def __init__(self):
        super().__init__()
        self.marks, self.cells, self.forbidden, self.images, self.body, self.bold = [], [], 0, [], {}, 0
        self._mark, self._skip = None, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "body":
            self.body = a
        elif tag == "b" and not classes:
            self.bold += 1
        elif tag == "mark" and "ent" in classes:
            self._mark = dict(a, text="")
        elif tag == "span" and self._mark is not None:
            self._skip += 1
        elif tag == "td" and "cell" in classes:
            self.cells.append(a)
        elif tag == "td" and "forbidden" in classes:
            self.forbidden += 1
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag):
        if tag == "span" and self._skip:
            self._skip -= 1
        elif tag == "mark" and self._mark is not None:
            self.marks.append(self._mark)
            self._mark = None

    def handle_data(self, data):
        if self._mark is not None and not self._skip:
            self._mark["text"] += data
