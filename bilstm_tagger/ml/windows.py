"""Where the encoder cuts docs: whole docs when they fit, overlapping windows when they don't.

A long doc is covered by windows of `window` tokens that share `window // 4`
tokens with their neighbours. Each token keeps the scores of the one window in
which it sits farthest from an edge, so every token is scored with at least
`window // 8` tokens of context on both sides (fewer only at the doc's own
ends), and the stitched scores go through one Viterbi pass per doc: no entity
is split by a cut, and moving the cuts hardly moves a prediction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

Segment = Tuple[int, int, int]  # (doc index, start token, end token)


@dataclass
class Windows:
    segments: List[Segment]
    # Row of each doc token (docs concatenated in order) in the segments' concatenated output;
    # None when every doc is one segment, so the rows are already in doc order.
    take: Optional[np.ndarray]

    def gather_index(self, offsets: np.ndarray, chunk: Optional[Sequence[Segment]] = None) -> np.ndarray:
        """Flat doc-token rows that make up `chunk` (default: every segment), segment by segment."""
        chunk = self.segments if chunk is None else chunk
        return np.concatenate([np.arange(offsets[d] + s, offsets[d] + e) for d, s, e in chunk])


def window_starts(n: int, window: int) -> np.ndarray:
    stride = window - window // 4
    starts = list(range(0, n - window, stride)) + [n - window]
    return np.asarray(starts, dtype=np.int64)


def owners(n: int, starts: np.ndarray, window: int) -> np.ndarray:
    """For each token, the window where it sits farthest from an edge: cut each overlap at its middle."""
    middles = (starts[1:] + starts[:-1] + window) // 2
    return np.searchsorted(middles, np.arange(n), side="right")


def plan_windows(lengths: Sequence[int], window: int) -> Windows:
    segments: List[Segment] = []
    takes: List[np.ndarray] = []
    row = 0
    for d, n in enumerate(lengths):
        if n == 0:
            continue
        if n <= window:
            segments.append((d, 0, n))
            takes.append(np.arange(row, row + n))
            row += n
            continue
        starts = window_starts(n, window)
        owner = owners(n, starts, window)
        takes.append(row + owner * window + np.arange(n) - starts[owner])
        segments.extend((d, int(s), int(s) + window) for s in starts)
        row += window * len(starts)
    stitched = any(e - s < lengths[d] for d, s, e in segments)
    take = np.concatenate(takes) if stitched else None
    return Windows(segments, take)


def plan_chunks(segments: Sequence[Segment], max_tokens: int) -> Iterator[List[int]]:
    """Indices of length-sorted groups of segments whose padded size (rows x longest) stays under max_tokens."""
    order = sorted(range(len(segments)), key=lambda i: segments[i][2] - segments[i][1], reverse=True)
    chunk: List[int] = []
    longest = 0
    for i in order:
        size = segments[i][2] - segments[i][1]
        longest = longest or size
        if chunk and (len(chunk) + 1) * longest > max_tokens:
            yield chunk
            chunk, longest = [], size
        chunk.append(i)
    if chunk:
        yield chunk
