"""Long raw text: how many entities move when the window cuts move, and what each way of cutting costs.

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 python -m benchmarks.long_text \\
        --dataset /work/shared/datasets/conll2003 [--model DIR] [--repeats 3]

The probe: 6,000 tokens of consecutive CoNLL-2003 test sentences, concatenated into
one Doc with no sentence starts, are tagged as they are and behind 37, 101 and 173
filler tokens ("and so on , then" repeated, no period), which moves every window cut.
An entity moves when its (start, end, label), shifted back by the filler, is not in
both taggings; the share moved counts the symmetric differences of the three shifts
against three times the unshifted tagging's entities. Each way of cutting (window
overlap x cut rule, and whole sentences from a sentencizer) is timed on the same docs
in the same run, interleaved, best of --repeats.

Without --model it trains the small model of the speed issue first (about a minute):
`python -m spacy train configs/ner.cfg --paths.dataset DATASET --corpora.train.limit 2000
--corpora.dev.limit 500 --training.max_steps 400`. Results go to
benchmarks/results/long_text.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
SHIFTS = (37, 101, 173)
FILLER = ["and", "so", "on", ",", "then"]
# name -> (window overlap as a fraction of the window, cut rule); None: whole sentences (sentencizer).
OPTIONS: Dict[str, Tuple[float, str]] = {
    "overlap 1/4, middle cut (before)": (0.25, "middle"),
    "overlap 1/2, middle cut": (0.5, "middle"),
    "anchored pieces (two passes, first with overlap 1/4; default)": (0.25, "anchored"),
}
SENTENCES = "sentencizer: whole sentences"


def train_small(dataset: str, out: Path, limit: int = 2000, steps: int = 400, extra: Sequence[str] = ()) -> Path:
    """`spacy train configs/ner.cfg` on the first `limit` training sentences for `steps` steps."""
    cmd = [
        sys.executable, "-m", "spacy", "train", "configs/ner.cfg", "--output", str(out),
        "--paths.dataset", dataset, "--corpora.train.limit", str(limit), "--corpora.dev.limit", "500",
        "--training.max_steps", str(steps), *extra,
    ]
    subprocess.run(cmd, cwd=str(REPO), check=True, capture_output=True, text=True)
    return out / "model-last"


def probe_words(nlp, dataset: str, n: int = 6000) -> List[str]:
    """The first `n` tokens of consecutive test sentences, as one stretch of text."""
    from bilstm_tagger.data.readers import create_hf_reader

    words: List[str] = []
    for eg in create_hf_reader(dataset, split="test")(nlp):
        words.extend(t.text for t in eg.reference)
        if len(words) >= n:
            return words[:n]
    return words


def filler(shift: int) -> List[str]:
    return (FILLER * (shift // len(FILLER) + 1))[:shift]


def probe_docs(nlp, words: List[str]):
    from spacy.tokens import Doc

    return [Doc(nlp.vocab, words=filler(shift) + words) for shift in (0, *SHIFTS)]


def moved_share(tagged: Sequence) -> Tuple[float, List[float]]:
    """Share of entities that move, over all shifts, and per shift; `tagged` are the probe docs, tagged."""
    base = {(e.start, e.end, e.label_) for e in tagged[0].ents}
    per_shift = []
    for shift, doc in zip(SHIFTS, tagged[1:]):
        moved = {(e.start - shift, e.end - shift, e.label_) for e in doc.ents if e.start >= shift}
        per_shift.append(len(base ^ moved) / max(len(base), 1))
    return sum(per_shift) / len(per_shift), per_shift


def set_option(nlp, overlap: float, cut: str) -> None:
    encoder = nlp.get_pipe("bilstm_tagger").model.get_ref("encoder")
    encoder.attrs["window_overlap"] = int(encoder.attrs["window"] * overlap)
    encoder.attrs["window_cut"] = cut


def tag(nlp, docs) -> Tuple[list, float]:
    """The docs tagged (copies: the originals stay untagged) and the seconds it took."""
    from spacy.tokens import Doc

    copies = [Doc(nlp.vocab, words=[t.text for t in d]) for d in docs]
    if "sentencizer" in nlp.pipe_names:
        copies = [nlp.get_pipe("sentencizer")(d) for d in copies]
    start = time.perf_counter()
    tagged = [nlp.get_pipe("bilstm_tagger")(d) for d in copies]
    return tagged, time.perf_counter() - start


def run_probe(nlp, words: List[str], repeats: int = 1, options: Dict[str, Tuple[float, str]] = OPTIONS) -> Dict[str, dict]:
    """% moved and words/s for each option (and whole sentences), timings interleaved across options."""
    docs = probe_docs(nlp, words)
    n_words = sum(len(d) for d in docs)
    names = [*options, SENTENCES]
    results: Dict[str, dict] = {name: {"seconds": []} for name in names}
    for _ in range(repeats):
        for name in names:
            if name == SENTENCES:
                set_option(nlp, 0.25, "anchored")  # the default, for sentences longer than the window
                nlp.add_pipe("sentencizer", first=True)
            else:
                set_option(nlp, *options[name])
            tagged, seconds = tag(nlp, docs)
            if name == SENTENCES:
                nlp.remove_pipe("sentencizer")
            share, per_shift = moved_share(tagged)
            results[name].update(moved_pct=100 * share, per_shift_pct=[100 * p for p in per_shift], entities=len(tagged[0].ents))
            results[name]["seconds"].append(seconds)
    for result in results.values():
        result["words_per_s"] = n_words / min(result.pop("seconds"))
    return results


def table(results: Dict[str, dict]) -> str:
    lines = ["| option | entities moved | words/s |", "|---|---|---|"]
    lines += [f"| {name} | {r['moved_pct']:.2f}% | {r['words_per_s']:,.0f} |" for name, r in results.items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "conll2003"))
    parser.add_argument("--model", help="a trained pipeline directory (default: train the small model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "long_text.json"))
    args = parser.parse_args(argv)
    import spacy
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = args.model or str(train_small(args.dataset, Path(tmp) / "small"))
        train_s = None if args.model else time.perf_counter() - start
        nlp = spacy.load(model)
    nlp.get_pipe("bilstm_tagger").model.get_ref("encoder")  # fail early on another architecture
    results = run_probe(nlp, probe_words(nlp, args.dataset), args.repeats)
    print(table(results))
    record = {
        "model": args.model or "small: configs/ner.cfg, 2000 training sentences, 400 steps",
        "train_seconds": train_s,
        "probe": {"tokens": 6000, "shifts": list(SHIFTS), "filler": " ".join(FILLER)},
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
