"""How tests/data/legacy_0_1/ was made: run with bilstm_tagger 0.1.0 (commit 93d77dc).

It trains two tiny pipelines on the bundled sample corpus with the release's
flat `bilstm_tagger.BiLSTMTagger.v1` architecture (a CRF entity tagger and a
softmax `tag` tagger), saves them, and records what they predict on the
sample test split. tests/test_compat.py loads them with today's code and
checks the predictions are identical. Kept for the record; it needs the old
release to run.
"""
import json
from pathlib import Path

import spacy
from thinc.api import Adam

from bilstm_tagger.data.readers import create_hf_reader

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "corpora" / "sample_ner"
TINY = {
    "@architectures": "bilstm_tagger.BiLSTMTagger.v1",
    "embed_rows": [500, 100, 100, 50],
    "embed_widths": [16, 8, 8, 8],
    "char_width": 8,
    "char_embed": 8,
    "hidden_size": 16,
    "dropout": 0.1,
    "word_dropout": 0.0,
}


def build(target: str, crf: bool, out: Path) -> None:
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    # The sample has no POS column; the `tag` pipeline learns the IOB tags as token.tag_.
    reader = create_hf_reader(str(SAMPLE), split="train", target=target)
    examples = list(reader(nlp))
    nlp.add_pipe("bilstm_tagger", config={"model": {**TINY, "crf": crf}, "target": target})
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for step in range(40):
        nlp.update(examples[(step * 16) % len(examples):][:16], sgd=optimizer, drop=0.1)
    nlp.to_disk(out)
    test = [eg.reference.text for eg in create_hf_reader(str(SAMPLE), split="test", target=target)(nlp)]
    docs = list(nlp.pipe(test))
    expected = {
        "texts": test,
        "ents": [[(e.start, e.end, e.label_) for e in doc.ents] for doc in docs],
        "tags": [[t.tag_ for t in doc] for doc in docs],
    }
    (out.parent / f"{out.name}.expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    root = HERE / "legacy_0_1"
    root.mkdir(exist_ok=True)
    build("ents", True, root / "ner_crf")
    build("tag", False, root / "tag_softmax")
