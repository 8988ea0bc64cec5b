"""What filing the confidence record costs, in one process: `set_annotations` with the scores
(records filed) vs the same tag ids as a plain list (nothing filed, as before this feature).

    python -m benchmarks.confidence_overhead MODEL ../shared/datasets/conll2003
"""
import statistics, time, spacy
from spacy.tokens import Doc
from bilstm_tagger.data.readers import create_hf_reader
import sys
MODEL, DATASET = sys.argv[1], sys.argv[2]
nlp = spacy.load(MODEL)
pipe = nlp.get_pipe("bilstm_tagger")
words = [[t.text for t in eg.reference] for eg in create_hf_reader(DATASET, split="test")(spacy.blank("en"))]
docs = [Doc(nlp.vocab, words=w) for w in words]
t = time.perf_counter(); batches = [pipe.predict(docs[i:i + 256]) for i in range(0, len(docs), 256)]; predict_s = time.perf_counter() - t
def run(with_scores):
    fresh = [Doc(nlp.vocab, words=w) for w in words]
    t = time.perf_counter()
    for i, decoded in zip(range(0, len(fresh), 256), batches):
        pipe.set_annotations(fresh[i:i + 256], decoded if with_scores else list(decoded))
    return time.perf_counter() - t
plain, filed = [], []
for _ in range(5):
    plain.append(run(False)); filed.append(run(True))
n = sum(map(len, words))
print(f"{len(docs)} docs, {n} words; predict {predict_s:.2f}s; set_annotations median plain {statistics.median(plain):.3f}s, with records {statistics.median(filed):.3f}s; "
      f"added {(statistics.median(filed) - statistics.median(plain)) / len(docs) * 1e6:.1f} us/doc = {(statistics.median(filed) - statistics.median(plain)) / predict_s * 100:.2f}% of predict")
