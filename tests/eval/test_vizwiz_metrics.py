"""VizWiz accuracy and answerability, as the official VizWiz script computes them."""

import pytest

from vldistill.eval.vizwiz import (
    VizWizAccuracy,
    answerability,
    normalize_prediction,
    vizwiz_accuracy,
)
from vldistill.eval.vqa_accuracy import vqa_accuracy


def test_leave_one_out_by_hand():
    # leaving out one of the 3 "soup" annotators leaves 2 matches -> 2/3; leaving out one of
    # the 7 "can" annotators leaves all 3 -> 1
    assert vizwiz_accuracy("soup", ["soup"] * 3 + ["can"] * 7) == pytest.approx(
        (3 * 2 / 3 + 7 * 1) / 10)
    assert vizwiz_accuracy("can", ["soup"] * 3 + ["can"] * 7) == pytest.approx(1.0)
    assert vizwiz_accuracy("tea", ["soup"] * 10) == 0.0


def test_the_prediction_is_normalised_and_the_ground_truth_is_not():
    assert normalize_prediction("  The Two Dogs.\n") == "2 dogs"
    assert vizwiz_accuracy("Two.", ["2"] * 10) == 1.0           # prediction normalised
    assert vizwiz_accuracy("two", ["two"] * 10) == 0.0          # gt "two" never becomes "2"
    assert vizwiz_accuracy("yes", ["Yes"] * 10) == 0.0          # gt not lower-cased


def test_where_vizwiz_and_vqav2_part():
    # VQAv2: unanimous annotators -> nothing normalised, exact match; VizWiz: prediction only
    assert vqa_accuracy("Yes", ["Yes"] * 10) == 1.0
    assert vizwiz_accuracy("Yes", ["Yes"] * 10) == 0.0
    # VQAv2 normalises both sides when annotators disagree; VizWiz still only the prediction
    answers = ["two"] * 5 + ["2"] * 5
    assert vqa_accuracy("two", answers) == 1.0
    assert vizwiz_accuracy("two", answers) == 1.0 and vizwiz_accuracy("2", answers) == 1.0
    assert vizwiz_accuracy("two", ["two"] * 9 + ["three"]) == 0.0


def test_answerability_by_hand():
    # unanswerable = positive. Scores for "unanswerable" (1 - p): 0.9 (pos), 0.8 (neg),
    # 0.3 (pos), 0.1 (neg). AP = 0.5 * 1 + 0.5 * 2/3; F1 at 0.5: TP 1, FP 1, FN 1 -> 0.5
    result = answerability([0, 1, 0, 1], [0.1, 0.2, 0.7, 0.9])
    assert result["average_precision"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    assert result["f1"] == pytest.approx(50.0)


def test_answerability_needs_matching_lengths_and_a_positive():
    with pytest.raises(ValueError, match="one score per question"):
        answerability([1, 0], [0.5])
    with pytest.raises(ValueError, match="no question is unanswerable"):
        answerability([1, 1], [0.2, 0.9])


def test_accumulator_reports_overall_per_type_and_answerability():
    metric = VizWizAccuracy()
    metric.update("soup", ["soup"] * 10, "other", answerable=True, answerable_score=0.9)
    metric.update("no", ["yes"] * 10, "yes/no", answerable=True, answerable_score=0.6)
    metric.update("unanswerable", ["unanswerable"] * 10, "unanswerable", answerable=False,
                  answerable_score=0.2)
    result = metric.compute()
    assert result["overall"] == pytest.approx(200 / 3)
    assert result["per_answer_type"] == {"other": 100.0, "yes/no": 0.0, "unanswerable": 100.0}
    assert result["unanswerability"] == {"average_precision": 100.0, "f1": 100.0, "count": 3}
    assert result["count"] == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty list"):
        vizwiz_accuracy("x", [])
    with pytest.raises(ValueError, match="non-empty list"):
        vizwiz_accuracy("x", "x")
    with pytest.raises(TypeError, match="string answer"):
        vizwiz_accuracy(3, ["3"])


def test_the_vizwiz_contractions_table_uses_curly_apostrophes():
    assert normalize_prediction("dont know") == "don\u2019t know"
    assert vizwiz_accuracy("dont know", ["don't know"] * 10) == 0.0       # straight: no match
    assert vizwiz_accuracy("dont know", ["don\u2019t know"] * 10) == 1.0
    assert normalize_prediction("weve") == "we've"                        # a straight one
    assert normalize_prediction("somebody\u2019d") == "somebodyd"         # the reversed entry
    assert vqa_accuracy("dont", ["don't"] * 5 + ["no"] * 5) > 0           # VQAv2: straight
