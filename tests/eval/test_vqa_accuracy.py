"""The official VQA accuracy: hand-computed values, quirks, and an official-algorithm reference."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vldistill.data.answers import CONTRACTIONS, normalize_answer, soft_scores
from vldistill.eval.vqa_accuracy import VQAAccuracy, vqa_accuracy


# ---------------------------------------------------------------------------------------------
# Reference: the official master VQAEval.evaluate for one question, re-typed step by step,
# on answer dicts with an answer_id like the annotation files.
# ---------------------------------------------------------------------------------------------
class OfficialReference:
    punct = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
             ">", "<", "@", "`", ",", "?", "!"]
    period_strip = re.compile(r"(?!<=\d)(\.)(?!\d)")
    comma_strip = re.compile(r"(\d)(\,)(\d)")
    articles = ["a", "an", "the"]

    def __init__(self) -> None:
        self.manual_map = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3",
                           "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
                           "nine": "9", "ten": "10"}

    def process_punctuation(self, in_text: str) -> str:
        out_text = in_text
        for p in self.punct:
            if (p + " " in in_text or " " + p in in_text) or (
                    re.search(self.comma_strip, in_text) is not None):
                out_text = out_text.replace(p, "")
            else:
                out_text = out_text.replace(p, " ")
        # official: self.periodStrip.sub("", outText, re.UNICODE) -> count=32
        return self.period_strip.sub("", out_text, count=re.UNICODE)

    def process_digit_article(self, in_text: str) -> str:
        out_text = []
        for word in in_text.lower().split():
            word = self.manual_map.setdefault(word, word)
            if word not in self.articles:
                out_text.append(word)
        for word_id, word in enumerate(out_text):
            if word in CONTRACTIONS:
                out_text[word_id] = CONTRACTIONS[word]
        return " ".join(out_text)

    def accuracy(self, prediction: str, gt_answers: list[str]) -> float:
        answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                   for i, a in enumerate(gt_answers)]
        for ans_dic in answers:
            ans_dic["answer"] = ans_dic["answer"].replace("\n", " ")
            ans_dic["answer"] = ans_dic["answer"].replace("\t", " ")
            ans_dic["answer"] = ans_dic["answer"].strip()
        res_ans = prediction
        res_ans = res_ans.replace("\n", " ")
        res_ans = res_ans.replace("\t", " ")
        res_ans = res_ans.strip()
        gt_acc = []
        gt_answer_strings = [ans["answer"] for ans in answers]
        if len(set(gt_answer_strings)) > 1:
            for ans_dic in answers:
                ans_dic["answer"] = self.process_punctuation(ans_dic["answer"])
                ans_dic["answer"] = self.process_digit_article(ans_dic["answer"])
            res_ans = self.process_punctuation(res_ans)
            res_ans = self.process_digit_article(res_ans)
        for gt_ans_datum in answers:
            other_gt_ans = [item for item in answers if item != gt_ans_datum]
            matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
            acc = min(1, float(len(matching_ans)) / 3)
            gt_acc.append(acc)
        return float(sum(gt_acc)) / len(gt_acc)


TOKENS = ["a", "the", "The", "two", "Two", "2", "none", "0", "yes", "Yes", "dont", "don't",
          "1", "5", ",", ".", "-", "/", "!", "?", "(", "'", " ", "  ", "\n", "\t", "x"]
token_text = st.lists(st.sampled_from(TOKENS), max_size=8).map("".join)


@st.composite
def questions(draw: st.DrawFn, text: st.SearchStrategy[str]) -> tuple[str, list[str]]:
    """A prediction and 1-10 gt answers drawn from a small pool, so that matches happen."""
    pool = draw(st.lists(text, min_size=1, max_size=4))
    gt_answers = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=10))
    prediction = draw(st.one_of(st.sampled_from(pool), text))
    return prediction, gt_answers


@settings(max_examples=1000, deadline=None)
@given(questions(token_text))
def test_matches_official_reference(question: tuple[str, list[str]]) -> None:
    prediction, gt_answers = question
    assert vqa_accuracy(prediction, gt_answers) == OfficialReference().accuracy(
        prediction, gt_answers)  # bit-identical, not approx


@settings(max_examples=300, deadline=None)
@given(questions(st.text(max_size=20)))
def test_matches_official_reference_on_any_unicode(question: tuple[str, list[str]]) -> None:
    prediction, gt_answers = question
    assert vqa_accuracy(prediction, gt_answers) == OfficialReference().accuracy(
        prediction, gt_answers)


# ---------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("matching", "expected"), [
    # k of 10 annotators give the prediction. Each of the k matching annotators, left out,
    # leaves k - 1 matches among the other 9; each of the 10 - k others leaves k:
    # acc = (k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10
    (0, 0.0),
    (1, (1 * 0.0 + 9 * (1 / 3)) / 10),         # 3/10 = 0.3
    (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),     # 18/30 = 0.6
    (3, (3 * (2 / 3) + 7 * 1.0) / 10),         # 9/10 = 0.9
    (4, 1.0),                                  # every subset keeps >= 3 matches
    (10, 1.0),
])
def test_leave_one_out_averaging(matching: int, expected: float) -> None:
    gt_answers = ["cat"] * matching + ["dog"] * (10 - matching)
    assert vqa_accuracy("cat", gt_answers) == pytest.approx(expected, abs=1e-12)


def test_github_issue_1_example() -> None:
    # 8 "yes", 2 "no": "no" -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6 ; "yes" -> 1.0
    gt_answers = ["yes"] * 8 + ["no"] * 2
    assert vqa_accuracy("no", gt_answers) == pytest.approx(0.6)
    assert vqa_accuracy("yes", gt_answers) == 1.0


def test_unanimous_gt_means_no_normalisation_at_all() -> None:
    # Quirk 1: all ten agree -> neither gt nor prediction is normalised or lower-cased.
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy("yes", ["Yes."] * 10) == 0.0
    assert vqa_accuracy("Yes.", ["Yes."] * 10) == 1.0
    # ... but newline/tab replacement and strip() always apply
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", ["\tyes ", "yes"] * 5) == 1.0  # unanimous after strip
    assert vqa_accuracy("red\tcar", ["red car"] * 10) == 1.0


def test_disagreeing_gt_normalises_both_sides() -> None:
    # 9 "yes" + 1 "no": disagreement -> "Yes!" becomes "yes", k=9 -> 1.0
    assert vqa_accuracy("Yes!", ["yes"] * 9 + ["no"]) == 1.0
    # "Yes" vs "yes" is a disagreement before normalisation; afterwards all ten are "yes"
    assert vqa_accuracy("YES.", ["yes"] * 9 + ["Yes"]) == 1.0
    # number words and articles on both sides: "2" x2 (as "two", "2"), 8 "a dog"
    gt_answers = ["two", "2"] + ["a dog"] * 8
    assert vqa_accuracy("Two", gt_answers) == pytest.approx(0.6)  # k=2
    assert vqa_accuracy("the dog", gt_answers) == 1.0             # k=8
    assert vqa_accuracy("dont know", ["don't know"] * 3 + ["no"] * 7) == pytest.approx(0.9)


def test_single_annotator_always_scores_zero() -> None:
    # leave-one-out with one annotator leaves nobody to agree with
    assert vqa_accuracy("yes", ["yes"]) == 0.0


def test_bad_inputs_raise_with_the_fix() -> None:
    with pytest.raises(ValueError, match="gt_answers is empty"):
        vqa_accuracy("yes", [])
    with pytest.raises(TypeError, match=r"wrap it: \['yes'\]"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(TypeError, match="prediction must be a string"):
        vqa_accuracy(3, ["3"] * 10)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# soft_scores (training targets) agree with the metric
# ---------------------------------------------------------------------------------------------
ALPHABET = ["2", "two", "yes", "Yes.", "grey", "gray", "a red", "red"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=10))
def test_soft_scores_equal_vqa_accuracy(answers: list[str]) -> None:
    scores = soft_scores(answers)
    normalised = [normalize_answer(answer) for answer in answers]
    for answer, score in scores.items():
        # against normalised gt the metric agrees exactly, unanimous or not
        assert score == vqa_accuracy(answer, normalised)
        # against raw gt it agrees whenever the annotators disagree (quirk 1 otherwise)
        if len(set(answers)) > 1:
            assert score == vqa_accuracy(answer, answers)
    # an answer nobody gave scores 0
    assert vqa_accuracy("purple", answers) == 0.0


# ---------------------------------------------------------------------------------------------
# VQAAccuracy
# ---------------------------------------------------------------------------------------------
def test_accumulator_per_type_percentages() -> None:
    metric = VQAAccuracy()
    assert metric.update("yes", ["yes"] * 10, "is the", "yes/no") == 1.0
    assert metric.update("no", ["yes"] * 8 + ["no"] * 2, "is the", "yes/no") == pytest.approx(0.6)
    assert metric.update("3", ["2"] * 9 + ["3"], "how many", "number") == pytest.approx(0.3)
    assert metric.update("red", ["blue"] * 10, "what color", "other") == 0.0
    result = metric.compute()
    assert result["count"] == 4
    assert result["overall"] == pytest.approx(100 * (1.0 + 0.6 + 0.3 + 0.0) / 4)  # 47.5
    assert result["per_question_type"] == pytest.approx(
        {"is the": 80.0, "how many": 30.0, "what color": 0.0})
    assert result["per_answer_type"] == pytest.approx(
        {"yes/no": 80.0, "number": 30.0, "other": 0.0})
    assert len(metric) == 4


def test_accumulator_is_not_rounded() -> None:
    metric = VQAAccuracy()
    metric.update("cat", ["cat"] * 10)
    metric.update("dog", ["cat"] * 10)
    metric.update("dog", ["cat"] * 10)
    result = metric.compute()
    assert result["overall"] == 100 * 1.0 / 3  # 33.333..., the script would print 33.33
    assert result["per_question_type"] == {}  # empty types only count in overall
    assert result["per_answer_type"] == {}


def test_accumulator_compute_before_update_raises() -> None:
    metric = VQAAccuracy()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    metric.update("yes", ["yes"] * 10)
    metric.reset()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()


def test_accumulator_is_fast_for_10k_questions() -> None:
    words = ["yes", "no", "2", "two", "red", "a red car", "Yes.", "grey", "gray", "3", "dog"]
    questions_ = [([words[(i * 7 + j * j) % len(words)] for j in range(10)],
                   words[(i * 3) % len(words)]) for i in range(10_000)]
    metric = VQAAccuracy()
    start = time.perf_counter()
    for gt_answers, prediction in questions_:
        metric.update(prediction, gt_answers, "what", "other")
    result = metric.compute()
    elapsed = time.perf_counter() - start
    assert result["count"] == 10_000
    assert elapsed < 1.0, f"10k questions took {elapsed:.3f} s"
