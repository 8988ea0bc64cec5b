"""Where the encoder cuts docs: whole docs when they fit, else runs of whole sentences or overlapping windows.

A doc of up to `window` tokens is read whole (this is all training sees, since
spaCy trains on sentences). A longer doc is cut:

- at sentence boundaries when it has sentence starts (a senter or sentencizer ran
  before the tagger): each window is a run of whole sentences of up to `window`
  tokens, read exactly as training reads sentences; a sentence longer than the
  window is read like a doc without sentence starts;
- else into windows of `window` tokens that share `overlap` tokens with their
  neighbours, read in one batched pass and stitched at each overlap's middle
  ("middle": each token keeps the scores of the window where it sits farther from
  an edge). With the "anchored" cut (the default) those stitched scores only choose
  where to cut: the stretch is cut again into pieces of window // 2 to `window`
  tokens, each cut before the token the model is surest is "O" (tag 0) with an "O"
  before it too, so no entity spans a cut, and the pieces are read whole in a
  second pass, like sentences. A cut depends only on the previous cut and the
  first-pass scores after it (which hardly depend on where the windows fell), so
  text shifted behind other text falls into the same pieces and keeps its entities;
  the middle cut moves with the windows, and so does what the model sees near it.
  On the probe of benchmarks/long_text.py 1.6% of a small model's entities moved
  with the middle cut and 0.8% with anchored pieces; the second pass costs about a
  third of the words/s on long docs.

Either way every doc token is read back from exactly one score row, and the
stitched scores go through one Viterbi pass per doc.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

Segment = Tuple[int, int, int]  # (doc index, start token, end token)
CUTS = ("anchored", "middle")


@dataclass
class Overlapped:
    """A stretch of one doc read as overlapping windows: window i starts at doc token `starts[i]`
    and is segment `first + i`."""

    doc: int
    first: int
    starts: np.ndarray
    window: int


@dataclass
class Windows:
    segments: List[Segment]
    overlapped: List[Overlapped]
    lengths: Sequence[int]

    @property
    def stitched(self) -> bool:
        """False when every doc is one segment, so the rows are already in doc order."""
        return any(e - s < self.lengths[d] for d, s, e in self.segments)

    def gather_index(self, offsets: np.ndarray, chunk: Optional[Sequence[Segment]] = None) -> np.ndarray:
        """Flat doc-token rows that make up `chunk` (default: every segment), segment by segment."""
        chunk = self.segments if chunk is None else chunk
        return np.concatenate([np.arange(offsets[d] + s, offsets[d] + e) for d, s, e in chunk])

    def segment_rows(self) -> np.ndarray:
        """Row of each segment's first token in the segments' concatenated output (and the total at the end)."""
        return np.concatenate([[0], np.cumsum([e - s for _, s, e in self.segments])]).astype(np.int64)

    def take(self) -> np.ndarray:
        """Row of each doc token (docs concatenated in order) in the segments' concatenated output:
        its own segment's, or in an overlap the window on its side of the overlap's middle."""
        rows = self.segment_rows()
        offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        take = np.empty(offsets[-1], dtype=np.int64)
        for (d, s, e), row in zip(self.segments, rows):
            take[offsets[d] + s : offsets[d] + e] = np.arange(row, row + e - s)
        for run in self.overlapped:
            first = rows[run.first : run.first + len(run.starts)]
            cuts = middle_cuts(run.starts, run.window)
            begin, end = int(run.starts[0]), int(run.starts[-1]) + run.window
            t = np.arange(begin, end)
            owner = np.searchsorted(cuts, t, side="right")
            take[offsets[run.doc] + begin : offsets[run.doc] + end] = first[owner] + t - run.starts[owner]
        return take

    def anchored(self, take: np.ndarray, o_margin: np.ndarray) -> Tuple[List[Segment], np.ndarray]:
        """Second pass: each overlapped stretch cut again, at `anchored_cuts` of its stitched
        first-pass scores, into pieces read whole. `o_margin` is per doc token (docs concatenated).

        Returns the pieces and the row of each doc token in the first pass's output followed by
        the pieces' concatenated output.
        """
        offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        take = take.copy()
        row = int(self.segment_rows()[-1])
        pieces: List[Segment] = []
        for run in self.overlapped:
            begin, end = int(run.starts[0]) + offsets[run.doc], int(run.starts[-1]) + run.window + offsets[run.doc]
            bounds = [0, *anchored_cuts(o_margin[begin:end], run.window), end - begin]
            pieces.extend((run.doc, begin - offsets[run.doc] + a, begin - offsets[run.doc] + b) for a, b in zip(bounds[:-1], bounds[1:]))
            take[begin:end] = np.arange(row, row + end - begin)
            row += end - begin
        return pieces, take


def anchored_cuts(o_margin: np.ndarray, window: int) -> List[int]:
    """Cuts of a stretch into pieces of window // 2 to window tokens (the last may be shorter).

    Each cut goes before the token where the model is surest that the tokens on both sides
    are "O", so no entity spans it. A cut depends only on the previous one and the scores
    after it, not on where the stretch starts: text shifted behind other text falls into the
    same pieces once a cut lands at the same word, and the same piece read whole scores the same.
    """
    sure = np.minimum(o_margin[:-1], o_margin[1:])  # sure[t - 1]: for a cut before token t
    cuts: List[int] = []
    cut = 0
    while len(o_margin) - cut > window:
        lo = cut + max(window // 2, 1)
        cut = lo + int(np.argmax(sure[lo - 1 : cut + window]))
        cuts.append(cut)
    return cuts


def window_starts(n: int, window: int, overlap: int) -> np.ndarray:
    stride = window - overlap
    starts = list(range(0, n - window, stride)) + [n - window]
    return np.asarray(starts, dtype=np.int64)


def middle_cuts(starts: np.ndarray, window: int) -> np.ndarray:
    """The first token of each window after the first: the middle of its overlap with the previous one."""
    return (starts[1:] + starts[:-1] + window) // 2


def sentence_runs(n: int, sent_starts: np.ndarray, window: int) -> List[Tuple[int, int]]:
    """Greedy runs of whole sentences of up to `window` tokens; a longer sentence is a run of its own."""
    bounds = np.unique(np.concatenate([[0], sent_starts[(sent_starts > 0) & (sent_starts < n)], [n]]))
    runs: List[Tuple[int, int]] = []
    begin = 0
    for end, after in zip(bounds[1:-1], bounds[2:]):
        if after - begin > window:  # the next sentence does not fit: close the run before it
            runs.append((begin, int(end)))
            begin = int(end)
    runs.append((begin, n))
    return runs


def plan_windows(
    lengths: Sequence[int], window: int, overlap: Optional[int] = None,
    sent_starts: Optional[Sequence[Optional[np.ndarray]]] = None,
) -> Windows:
    """Segments for docs of `lengths`; `sent_starts[d]` (None: unknown) are doc d's sentence starts."""
    overlap = window // 4 if overlap is None else overlap
    segments: List[Segment] = []
    overlapped: List[Overlapped] = []
    for d, n in enumerate(lengths):
        starts = None if sent_starts is None else sent_starts[d]
        runs = [(0, n)] if n <= window or starts is None else sentence_runs(n, starts, window)
        for begin, end in runs:
            if 0 < end - begin <= window:
                segments.append((d, begin, end))
            elif end > begin:
                w_starts = begin + window_starts(end - begin, window, overlap)
                overlapped.append(Overlapped(d, len(segments), w_starts, window))
                segments.extend((d, int(s), int(s) + window) for s in w_starts)
    return Windows(segments, overlapped, list(lengths))


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
