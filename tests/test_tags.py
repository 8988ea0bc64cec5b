import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_tagger.tags import (
    TagError,
    is_legal_sequence,
    spans_from_tags,
    tag_names,
    tags_from_spans,
    transition_constraints,
)

LABELS = ["LOC", "PER"]
ANY_TAG = st.sampled_from(["O", "B-PER", "I-PER", "L-PER", "U-PER", "E-LOC", "S-LOC", "B-LOC", "I-LOC"])


def test_tag_names_per_scheme():
    assert tag_names(LABELS, "IOB2") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert tag_names(["X"], "BILOU") == ["O", "B-X", "I-X", "L-X", "U-X"]
    with pytest.raises(ValueError, match="Unknown tag scheme 'BIO'"):
        tag_names(LABELS, "BIO")


def test_iob2_constraints():
    tags = tag_names(["X"], "IOB2")  # O, B-X, I-X
    start, trans, end = transition_constraints(tags, "IOB2")
    assert start.tolist() == [True, True, False]
    assert trans.tolist() == [[True, True, False], [True, True, True], [True, True, True]]
    assert end.all()


def test_bilou_constraints():
    tags = tag_names(["X"], "BILOU")  # O, B, I, L, U
    start, trans, end = transition_constraints(tags, "BILOU")
    assert start.tolist() == [True, True, False, False, True]
    assert end.tolist() == [True, False, False, True, True]
    # From B or I only I or L may follow; from O, L, U only O, B, U.
    assert trans.tolist() == [
        [True, True, False, False, True],
        [False, False, True, True, False],
        [False, False, True, True, False],
        [True, True, False, False, True],
        [True, True, False, False, True],
    ]


def test_labels_do_not_mix_inside_a_chunk():
    assert not is_legal_sequence(["B-PER", "I-LOC"], "IOB2")
    assert not is_legal_sequence(["B-PER", "L-LOC"], "BILOU")
    assert is_legal_sequence(["B-PER", "I-PER", "L-PER", "U-LOC"], "BILOU")


@pytest.mark.parametrize(
    "tags, spans, repairs",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")], 0),
        (["I-PER", "I-PER", "O"], [(0, 2, "PER")], 1),  # IOB1 start
        (["O", "I-PER"], [(1, 2, "PER")], 1),  # I after O
        (["B-PER", "I-LOC"], [(0, 1, "PER"), (1, 2, "LOC")], 1),  # label switch
        (["B-PER", "L-PER", "U-LOC"], [(0, 2, "PER"), (2, 3, "LOC")], 0),
        (["S-PER", "B-LOC", "E-LOC"], [(0, 1, "PER"), (1, 3, "LOC")], 0),  # BIOES
        (["L-PER"], [(0, 1, "PER")], 1),
        (["B-PER", "B-PER"], [(0, 1, "PER"), (1, 2, "PER")], 0),
        ([], [], 0),
    ],
)
def test_spans_from_tags_repairs(tags, spans, repairs):
    decoded = spans_from_tags(tags)
    assert decoded.spans == spans
    assert decoded.repairs == repairs


@pytest.mark.parametrize("bad", ["X-PER", "B-", "PER", "", "b-PER"])
def test_unknown_prefix_is_an_error(bad):
    with pytest.raises(TagError, match="fits no scheme"):
        spans_from_tags(["O", bad])


@settings(max_examples=300, deadline=None)
@given(st.lists(ANY_TAG, max_size=30))
def test_any_tag_sequence_gives_disjoint_spans_inside(tags):
    spans = spans_from_tags(tags).spans
    covered = [i for s, e, _ in spans for i in range(s, e)]
    assert len(covered) == len(set(covered))
    assert all(0 <= s < e <= len(tags) for s, e, _ in spans)


@settings(max_examples=300, deadline=None)
@given(st.lists(ANY_TAG, max_size=30), st.sampled_from(["IOB2", "BILOU"]))
def test_round_trip_through_a_scheme_is_legal_and_stable(tags, scheme):
    spans = spans_from_tags(tags).spans
    rewritten = tags_from_spans(spans, len(tags), scheme)
    assert is_legal_sequence(rewritten, scheme)
    decoded = spans_from_tags(rewritten)
    assert decoded.spans == spans and decoded.repairs == 0
