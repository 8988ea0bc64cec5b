"""Where tagging time goes, stage by stage, and how close the LSTM gets to this CPU's GEMM rate.

    python -m benchmarks.speed_profile --dataset ../shared/datasets/conll2003 --threads 1 [--model DIR] [--precision int8]

Builds configs/ner.cfg and spaCy's efficiency `ner` as benchmarks.threads does (or loads --model) and
times, on the test split in batches of 256 (median of --repeats passes):
- the whole `nlp.pipe` of both pipelines (the ratio every speed claim here uses);
- our stages one by one: featurize (numpy), the embedder's forward (featurize included), the
  encoder's forward (BiLSTM + output layer), Viterbi decoding and set_annotations; what is left of
  the nlp.pipe time is spaCy's own per-doc work and our Python glue;
- the bound: multiply-adds per token of the encoder (counted from its modules) against a measured
  GEMM rate at the same thread count, for the input projection (one big GEMM per batch) and the
  recurrent step (a batch-by-hidden GEMM per time step).
Writes benchmarks/results/speed_profile_<threads>t[_<precision>].json.
"""
from __future__ import annotations

from . import pin_threads

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_rate(m: int, k: int, n: int, repeats: int = 20, dtype: str = "float32") -> float:
    """Measured multiply-adds per second of an (m x k) @ (k x n) product in `dtype` (float32, bfloat16)."""
    import torch

    a, b = torch.randn(m, k, dtype=getattr(torch, dtype)), torch.randn(k, n, dtype=getattr(torch, dtype))
    seconds = _median_time(lambda: [torch.mm(a, b) for _ in range(repeats)], 3) / repeats
    return m * k * n / seconds


def encoder_macs(module) -> Dict[str, float]:
    """Multiply-adds per token of a TaggerEncoder: input projection, recurrence, output layer."""
    rnn = module.encoder.rnn.rnn
    gates = {"LSTM": 4, "GRU": 3}[type(rnn).__name__]
    dirs = 2 if rnn.bidirectional else 1
    hidden, width_in, proj = rnn.hidden_size, rnn.input_size, rnn.proj_size or rnn.hidden_size
    inputs = recurrent = 0
    for layer in range(rnn.num_layers):
        n_in = width_in if layer == 0 else proj * dirs
        inputs += dirs * gates * hidden * n_in
        recurrent += dirs * gates * hidden * proj + (dirs * hidden * proj if rnn.proj_size else 0)
    output = module.output.in_features * module.output.out_features
    return {"input_projection": inputs, "recurrent": recurrent, "output": output}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", default=None, help="a trained pipeline (default: configs/ner.cfg, untrained)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    pin_threads(args.threads)

    import spacy
    import torch
    from spacy.tokens import Doc

    from bilstm_tagger.ml import decode
    from bilstm_tagger.ml.embed import ATTR_IDS, featurize
    from bilstm_tagger.ml.shim import get_module

    from .runner import RESULTS, environment
    from .threads import build_pipelines

    torch.set_num_threads(args.threads)
    ours, peer, words = build_pipelines(args.dataset, args.threads, 0, args.precision)
    if args.model:
        ours = spacy.load(args.model, config={"components": {"bilstm_tagger": {"torch_threads": args.threads,
                                                                               "precision": args.precision}}})
    pipe = ours.get_pipe("bilstm_tagger")
    embed, encoder, decoder = (pipe.model.get_ref(n) for n in ("embed", "encoder", "decoder"))
    n_words = sum(map(len, words))

    def docs(nlp) -> List[Doc]:
        return [Doc(nlp.vocab, words=w) for w in words]

    def batches(items: list) -> List[list]:
        return [items[i : i + 256] for i in range(0, len(items), 256)]

    our_docs = batches(docs(ours))
    a = embed.attrs
    vectors_attr = ATTR_IDS[a["vectors_attr"]] if a.get("include_static_vectors") else None
    feats = [embed.predict(b) for b in our_docs]
    scores = [[pipe.model.ops.to_numpy(s) for s in encoder.predict(f)] for f in feats]
    preds = [pipe.decide(s) for s in scores]
    stages = {
        "featurize (numpy)": lambda: [featurize(b, a["attr_ids"], a["spec"]["rows"], a["max_chars"], vectors_attr) for b in our_docs],
        "embedder forward (featurize included)": lambda: [embed.predict(b) for b in our_docs],
        "encoder forward (BiLSTM + output)": lambda: [encoder.predict(f) for f in feats],
        "Viterbi decoding": lambda: [decode(decoder, s) for s in scores],
        "set_annotations": lambda: [pipe.set_annotations([d.copy() for d in b], p) for b, p in zip(our_docs, preds)],
    }
    seconds = {name: _median_time(fn, args.repeats) for name, fn in stages.items()}
    copy_s = _median_time(lambda: [[d.copy() for d in b] for b in our_docs], args.repeats)
    seconds["set_annotations"] -= copy_s  # the doc copies are the timing's, not the stage's
    whole = {}
    for name, nlp in (("ours", ours), ("spacy_ner", peer)):
        whole[name] = _median_time(lambda: list(nlp.pipe(docs(nlp), batch_size=256)), args.repeats)
    whole_docs_s = _median_time(lambda: docs(ours), args.repeats)

    module = get_module(encoder)
    macs = encoder_macs(module)
    hidden = module.encoder.rnn.rnn.hidden_size
    rates = {
        "input_projection": gemm_rate(8192, module.encoder.rnn.rnn.input_size, 4 * hidden),
        "recurrent": gemm_rate(256, hidden, 4 * hidden),
        "output": gemm_rate(8192, module.output.in_features, module.output.out_features),
    }
    bound_s_per_token = sum(macs[k] / rates[k] for k in macs)
    encoder_wps = n_words / seconds["encoder forward (BiLSTM + output)"]
    out = {
        "command": "python -m benchmarks.speed_profile " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment(args.threads), "precision": args.precision, "words": n_words,
        "model": args.model or "configs/ner.cfg (untrained)",
        "nlp_pipe_words_per_s": {k: n_words / (v - whole_docs_s) for k, v in whole.items()},
        "ratio_to_spacy_ner": whole["spacy_ner"] / whole["ours"],
        "stage_seconds": seconds,
        "stage_share_of_nlp_pipe": {k: v / (whole["ours"] - whole_docs_s) for k, v in seconds.items()},
        "encoder_macs_per_token": macs,
        "gemm_macs_per_s": rates,
        "encoder_bound_words_per_s": 1 / bound_s_per_token,
        "encoder_words_per_s": encoder_wps,
        "encoder_share_of_bound": encoder_wps * bound_s_per_token,
    }
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    path = RESULTS / f"speed_profile_{args.threads}t{suffix}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"nlp.pipe: ours {out['nlp_pipe_words_per_s']['ours']:,.0f} words/s, spaCy ner "
          f"{out['nlp_pipe_words_per_s']['spacy_ner']:,.0f} words/s, ratio {out['ratio_to_spacy_ner']:.2f}")
    for name, share in out["stage_share_of_nlp_pipe"].items():
        print(f"  {name:40s} {share:6.1%}  ({n_words / seconds[name]:,.0f} words/s alone)")
    print(f"encoder: {sum(macs.values()) / 1e6:.2f} M multiply-adds/token; GEMM rates (G/s) "
          + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items()))
    print(f"encoder bound {out['encoder_bound_words_per_s']:,.0f} words/s; measured {encoder_wps:,.0f} "
          f"({out['encoder_share_of_bound']:.0%} of the bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
