"""Answer normalisation, soft scores and the answer vocabulary.

Expected values are worked out by hand from the official GT-Vision-Lab/VQA vqaEval.py rules;
each test names the rule (quirk number in the vldistill.data.answers docstring) it pins down.
"""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vldistill.data.answers import (
    CONTRACTIONS,
    AnswerVocab,
    VocabCoverage,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    soft_scores,
)

# ---------------------------------------------------------------------------------------------
# A reference that follows the official processPunctuation / processDigitArticle step by step
# (re-typed, including its regexes verbatim and re.UNICODE passed as the count).
# ---------------------------------------------------------------------------------------------
OFFICIAL_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                  ">", "<", "@", "`", ",", "?", "!"]
OFFICIAL_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
OFFICIAL_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
OFFICIAL_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3",
                    "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
                    "nine": "9", "ten": "10"}
OFFICIAL_ARTICLES = ["a", "an", "the"]


def reference_process_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in OFFICIAL_PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (
                re.search(OFFICIAL_COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    # The official call is periodStrip.sub("", outText, re.UNICODE): the flag lands in `count`.
    return OFFICIAL_PERIOD_STRIP.sub("", out_text, count=re.UNICODE)


def reference_process_digit_article(in_text: str) -> str:
    manual_map = dict(OFFICIAL_NUMBERS)
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in OFFICIAL_ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


TOKENS = ["a", "an", "the", "A", "The", "two", "Two", "none", "ten", "yes", "Yes", "dont",
          "Im", "somebody'd", "1", "3", "5", "٣", "x", ",", ".", "..", "-", "/", "!", "?", "(",
          ")", "'", ":", "\\", "_", " ", "  ", "\n", "\t"]
token_text = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)


# ---------------------------------------------------------------------------------------------
# process_punctuation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    # periodStrip: a period not followed by a digit is removed (quirk 7)
    ("yes.", "yes"),
    ("3.5", "3.5"),
    ("3.", "3"),
    (".5", ".5"),
    ("e.g.", "eg"),
    ("٣.٥", "٣.٥"),  # \d is Unicode in Python 3: Arabic-Indic digits keep their period
    # commaStrip: a digit-comma-digit anywhere deletes every mark instead of spacing it
    ("1,000", "1000"),
    ("1,2 a/b", "12 ab"),
    # no digit-comma-digit, no space next to the mark: replaced by a space
    ("red,blue", "red blue"),
    ("black-and-white", "black and white"),
    ("what?", "what "),
    ("(a)", " a "),
    # the mark occurs next to a space somewhere: every occurrence is deleted
    ("red, blue", "red blue"),
    ("a-b - c", "ab  c"),
    ("yes !", "yes "),
    # not in the punctuation list: apostrophe, colon, asterisk, percent kept
    ("don't", "don't"),
    ("10:30", "10:30"),
    ("5%*", "5%*"),
    # each mark is decided on the input text: "/" -> " " makes "a( b", yet "(" is still
    # replaced (not deleted) because the *input* "a(/b" has no "( "
    ("a(/b", "a  b"),
    ("a/b(c) d", "a b c d"),  # ")" is next to a space: deleted; "/" and "(" are not
])
def test_process_punctuation_fixed_values(text: str, expected: str) -> None:
    assert process_punctuation(text) == expected


def test_period_strip_count_is_re_unicode_32() -> None:
    # Quirk 8: re.UNICODE == 32 is passed as sub()'s count, so only the first 32 go.
    assert re.UNICODE == 32
    assert process_punctuation("." * 32) == ""
    assert process_punctuation("." * 33) == "."
    assert process_punctuation("wait" + "." * 40) == "wait" + "." * 8
    # "yes." and "3." use up 2 of the 32: 30 of the 40 trailing periods go, 10 stay
    assert process_punctuation("yes. 3.5 3. .5 " + "." * 40) == "yes 3.5 3 .5 " + "." * 10


@settings(max_examples=500, deadline=None)
@given(token_text)
def test_process_punctuation_matches_official_reference(text: str) -> None:
    assert process_punctuation(text) == reference_process_punctuation(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_process_punctuation_matches_official_reference_on_any_unicode(text: str) -> None:
    assert process_punctuation(text) == reference_process_punctuation(text)


# ---------------------------------------------------------------------------------------------
# process_digit_article
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    # case: lower-cased here (and only here)
    ("YES", "yes"),
    # number words, whole tokens only; "none" is mapped to "0"
    ("Two Dogs", "2 dogs"),
    ("none", "0"),
    ("zero one ten", "0 1 10"),
    ("eleven twenty", "eleven twenty"),
    ("twos", "twos"),
    # articles removed
    ("a red", "red"),
    ("An apple", "apple"),
    ("the an a", ""),
    ("theater", "theater"),
    # whitespace runs collapse, ends trimmed
    ("  two   red  ", "2 red"),
    # contractions, one per form class
    ("dont", "don't"),          # n't
    ("couldve", "could've"),    # 've
    ("itll", "it'll"),          # 'll
    ("youre", "you're"),        # 're
    ("hed", "he'd"),            # 'd
    ("hes", "he's"),            # 's
    ("hadnt've", "hadn't've"),  # double, half written
    ("mightn'tve", "mightn't've"),
    ("maam oclock yall twas", "ma'am o'clock y'all 'twas"),  # irregular
    ("ow's'at", "'ow's'at"),
    ("somebody'd", "somebodyd"),  # maps backwards (quirk 10)
    ("let's", "let's"),           # identity entry
    ("Im Ive", "im ive"),         # capitalised keys never match after lower() (quirk 10)
    ("wed ill its", "wed ill its"),  # ambiguous forms are absent
])
def test_process_digit_article_fixed_values(text: str, expected: str) -> None:
    assert process_digit_article(text) == expected


def test_contractions_table_is_the_official_one() -> None:
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["dont"] == "don't"
    assert CONTRACTIONS["y'all'dve"] == "y'all'd've"
    assert CONTRACTIONS["'ows'at"] == "'ow's'at"
    assert all("’" not in key + value for key, value in CONTRACTIONS.items())  # straight quotes


@settings(max_examples=500, deadline=None)
@given(token_text)
def test_process_digit_article_matches_official_reference(text: str) -> None:
    assert process_digit_article(text) == reference_process_digit_article(text)


# ---------------------------------------------------------------------------------------------
# normalize_answer: newline/tab -> space, strip, punctuation, digit/article/contractions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("Yes.\n", "yes"),
    ("\tTwo dogs\n", "2 dogs"),
    ("red\nblue", "red blue"),
    ("red\tblue", "red blue"),
    ("The Cat's toy!", "cat's toy"),
    ("It's 1,000!", "it's 1000"),
    ("a red", "red"),
    ("Gray", "gray"),
    ("a", ""),
    ("Dont know.", "don't know"),
])
def test_normalize_answer_fixed_values(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@settings(max_examples=300, deadline=None)
@given(token_text)
def test_normalize_answer_is_the_official_chain(text: str) -> None:
    stripped = text.replace("\n", " ").replace("\t", " ").strip()
    expected = reference_process_digit_article(reference_process_punctuation(stripped))
    assert normalize_answer(text) == expected


# ---------------------------------------------------------------------------------------------
# soft_scores: leave-one-annotator-out average of min(1, matches / 3)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("matching", "expected"), [
    # k of 10 match: the k matching annotators each see k - 1 matches among the other 9,
    # the 10 - k others see k:  (k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10
    (1, (1 * 0.0 + 9 * (1 / 3)) / 10),        # 0.3
    (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),    # 0.6
    (3, (3 * (2 / 3) + 7 * 1.0) / 10),        # 0.9
    (4, (4 * 1.0 + 6 * 1.0) / 10),            # 1.0
    (10, 1.0),
])
def test_soft_scores_leave_one_out(matching: int, expected: float) -> None:
    answers = ["cat"] * matching + ["dog"] * (10 - matching)
    assert soft_scores(answers)["cat"] == pytest.approx(expected, abs=1e-12)


def test_soft_scores_hand_values() -> None:
    assert soft_scores(["yes"] * 8 + ["No", "no."]) == pytest.approx({"yes": 1.0, "no": 0.6})
    # normalised before matching: "two" and "2" are one answer, "a red" and "red" too
    scores = soft_scores(["two", "2", "2", "a red", "red", "grey", "gray"])
    # n=7. "2" (k=3): 3 annotators see 2, 4 see 3 -> (3 * 2/3 + 4 * 1) / 7 = 6/7
    # "red" (k=2): (2 * 1/3 + 5 * 2/3) / 7 = 4/7;  "grey", "gray" (k=1): (0 + 6 * 1/3) / 7 = 2/7
    assert scores == pytest.approx({"2": 6 / 7, "red": 4 / 7, "grey": 2 / 7, "gray": 2 / 7})
    assert list(scores) == ["2", "red", "grey", "gray"]  # order of first appearance
    assert soft_scores(["yes"]) == {"yes": 0.0}  # one annotator: nobody left to agree
    assert soft_scores([]) == {}


def test_soft_scores_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError, match="wrap a single answer"):
        soft_scores("yes")


# ---------------------------------------------------------------------------------------------
# AnswerVocab
# ---------------------------------------------------------------------------------------------
TRAIN = [
    ["yes", "yes", "Yes.", "no"],      # yes x3, no x1
    ["no", "two", "2", "2"],           # no x1, 2 x3
    ["a red", "red", "Red", "blue"],   # red x3, blue x1
    ["cat", "dog"],                    # cat x1, dog x1
]


def test_vocab_orders_by_count_then_alphabetically() -> None:
    vocab = AnswerVocab.build(TRAIN)
    # counts: 2:3, red:3, yes:3, no:2, blue:1, cat:1, dog:1
    assert vocab.answers == ["2", "red", "yes", "no", "blue", "cat", "dog"]
    assert len(vocab) == 7


def test_vocab_is_deterministic_under_input_order() -> None:
    expected = AnswerVocab.build(TRAIN).answers
    rng = random.Random(0)
    for _ in range(20):
        shuffled = [rng.sample(answers, len(answers)) for answers in rng.sample(TRAIN, 4)]
        assert AnswerVocab.build(shuffled).answers == expected


def test_vocab_min_count_and_max_size() -> None:
    assert AnswerVocab.build(TRAIN, min_count=2).answers == ["2", "red", "yes", "no"]
    assert AnswerVocab.build(TRAIN, max_size=2).answers == ["2", "red"]
    assert AnswerVocab.build(iter(TRAIN), min_count=3, max_size=10).answers == [
        "2", "red", "yes"]


def test_vocab_drops_the_empty_answer() -> None:
    assert AnswerVocab.build([["a", "the", "yes"]]).answers == ["yes"]


@pytest.mark.parametrize("answer_lists", [[], [[]], [[], []], [["the", "a"]]])
def test_vocab_from_nothing_raises_with_the_fix(answer_lists: list[list[str]]) -> None:
    with pytest.raises(ValueError, match="expected an iterable of annotator answer lists"):
        AnswerVocab.build(answer_lists)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_count": 0}, "min_count must be an integer >= 1, got 0"),
    ({"min_count": 10}, "lower min_count"),
    ({"max_size": 0}, "max_size must be None or an integer >= 1, got 0"),
])
def test_vocab_build_rejects_bad_limits(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnswerVocab.build(TRAIN, **kwargs)


def test_vocab_constructor_validates() -> None:
    with pytest.raises(ValueError, match="needs at least one answer"):
        AnswerVocab([])
    with pytest.raises(ValueError, match="duplicate answers \\['no'\\]"):
        AnswerVocab(["yes", "no", "no"])
    with pytest.raises(ValueError, match="already be normalised"):
        AnswerVocab(["Yes"])
    with pytest.raises(TypeError, match="list of answer strings"):
        AnswerVocab("yes")


def test_vocab_lookup() -> None:
    vocab = AnswerVocab.build(TRAIN)
    assert vocab.index("2") == 0
    assert vocab.index("Two.") == 0  # normalises its input
    assert vocab.index("\tRED\n") == 1
    assert vocab.index("purple") is None
    assert vocab.answer(2) == "yes"
    assert vocab.answer(np.int64(3)) == "no"
    with pytest.raises(IndexError, match="valid indices are 0..6"):
        vocab.answer(7)
    with pytest.raises(IndexError, match="out of range"):
        vocab.answer(-1)


def test_vocab_targets_drop_answers_outside() -> None:
    vocab = AnswerVocab(["2", "red", "yes", "no"])
    answers = ["yes"] * 8 + ["no", "maybe"]
    # yes (k=8) -> 1.0; no (k=1) -> 0.3; maybe (k=1) -> outside, dropped
    indices, scores = vocab.targets(answers)
    assert indices == [2, 3]
    assert scores == pytest.approx([1.0, 0.3])
    assert vocab.targets([]) == ([], [])
    assert vocab.targets(["purple"] * 10) == ([], [])


def test_vocab_dense_targets() -> None:
    vocab = AnswerVocab(["2", "red", "yes", "no"])
    dense = vocab.dense_targets([["yes"] * 8 + ["no", "maybe"], ["two", "2", "red", "red"], []])
    assert dense.shape == (3, 4)
    assert dense.dtype == np.float32
    # row 1: n=4; "2" k=2: (2 * 1/3 + 2 * 2/3) / 4 = 0.5, "red" likewise 0.5
    expected = np.array([[0.0, 0.0, 1.0, 0.3], [0.5, 0.5, 0.0, 0.0], [0.0] * 4], np.float32)
    np.testing.assert_allclose(dense, expected, atol=1e-7)
    assert vocab.dense_targets([]).shape == (0, 4)


def test_vocab_json_round_trip() -> None:
    vocab = AnswerVocab.build(TRAIN)
    data = vocab.to_json()
    assert data == vocab.answers
    assert all(isinstance(answer, str) for answer in data)
    assert AnswerVocab.from_json(data) == vocab
    with pytest.raises(TypeError, match="expects the list written by to_json"):
        AnswerVocab.from_json({"answers": data})


def test_vocab_coverage_counts_answers_outside() -> None:
    vocab = AnswerVocab(["yes", "no"])
    coverage = vocab.coverage([
        ["yes"] * 8 + ["no", "maybe"],   # best "yes" inside; 1 answer outside
        ["red"] * 6 + ["yes"] * 4,       # best "red" (1.0) outside; yes (k=4) also 1.0: tie
        ["red"] * 7 + ["no"] * 3,        # best "red" 1.0 outside, "no" 0.9; 7 outside
        ["blue", "green"],               # nothing inside: 2 outside
        [],                              # unlabelled
    ])
    assert coverage == VocabCoverage(
        vocab_size=2, questions=4, unlabelled_questions=1, top_answer_outside=2,
        questions_without_vocab_answer=1, annotator_answers=32, annotator_answers_outside=16,
        best_possible_accuracy=pytest.approx((1.0 + 1.0 + 0.9 + 0.0) / 4))
    summary = coverage.summary()
    for fragment in ["vocabulary of 2", "4 labelled questions", "1 unlabelled",
                     "best answer outside the vocabulary for 2 (50.00%)",
                     "no answer in the vocabulary for 1 (25.00%)",
                     "16 of 32 annotator answers outside (50.00%)",
                     "best possible accuracy 72.50%"]:
        assert fragment in summary


def test_vocab_coverage_of_nothing_does_not_crash() -> None:
    coverage = AnswerVocab(["yes"]).coverage([])
    assert coverage.questions == 0
    assert coverage.best_possible_accuracy == 0.0
    assert "n/a" in coverage.summary()


def test_vocab_with_many_periods_does_not_crash() -> None:
    # normalisation is not idempotent past 32 periods (quirk 8); build must still work
    vocab = AnswerVocab.build([["." * 40, "yes"]])
    assert "." * 8 in vocab.answers
    assert vocab.targets(["." * 40])[0] == [vocab.answers.index("." * 8)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["2", "two", "yes", "Yes.", "grey", "gray", "a red",
                                          "red", "the"]), max_size=10), max_size=8))
def test_vocab_coverage_is_consistent_with_targets(answer_lists: list[list[str]]) -> None:
    vocab = AnswerVocab(["2", "yes", "red"])
    coverage = vocab.coverage(answer_lists)
    labelled = [answers for answers in answer_lists if answers]
    assert coverage.questions == len(labelled)
    assert coverage.annotator_answers == sum(map(len, labelled))
    no_target = sum(vocab.targets(answers) == ([], []) for answers in labelled)
    assert coverage.questions_without_vocab_answer == no_target
    outside = sum(vocab.index(answer) is None for answer in itertools.chain(*labelled))
    assert coverage.annotator_answers_outside == outside
