"""The scorer takes a span getter and agrees with each task's own score."""
import pytest
import spacy
from spacy.tokens import Span
from spacy.training import Example

from bilstm_tagger.errors import ConfigError
from bilstm_tagger.pipeline.scoring import score_seqeval
from bilstm_tagger.pipeline.tasks import TASKS, get_task


def _examples():
    nlp = spacy.blank("en")
    gold, pred = nlp("Ada Lovelace met Charles Babbage in London"), nlp("Ada Lovelace met Charles Babbage in London")
    for doc, spans in ((gold, [(0, 2, "PER"), (3, 5, "PER"), (6, 7, "LOC")]), (pred, [(0, 2, "PER"), (3, 4, "PER"), (6, 7, "ORG")])):
        doc.ents = [Span(doc, s, e, label) for s, e, label in spans]
        doc.spans["sc"] = [Span(doc, s, e, label) for s, e, label in spans]
        for token, tag in zip(doc, ["NNP", "NNP", "VBD", "NNP", "NNP", "IN", "NNP"]):
            token.tag_ = tag
            token.pos_ = "PROPN" if tag == "NNP" else "VERB"
    pred[3].tag_ = "NN"
    return [Example(pred, gold)]


@pytest.mark.parametrize("target", list(TASKS))
def test_score_seqeval_matches_the_task(target):
    examples = _examples()
    assert score_seqeval(examples, target=target) == get_task(target).score(examples)


def test_score_seqeval_uses_the_span_getter():
    examples = _examples()
    only_per = score_seqeval(examples, getter=lambda doc: [s for s in doc.ents if s.label_ == "PER"])
    assert set(only_per["ents_per_type"]) == {"PER"}
    assert only_per["ents_p"] == pytest.approx(0.5)


def test_score_seqeval_names_a_bad_target():
    with pytest.raises(ConfigError, match="target must be one of ents, spans, tag, pos, not 'x'"):
        score_seqeval(_examples(), target="x")
