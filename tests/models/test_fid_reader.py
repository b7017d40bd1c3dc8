"""Tests for the Fusion-in-Decoder T5 reader (vldistill.models.fid_reader)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vldistill.config import TrainerSettings
from vldistill.core.runpaths import RunPaths
from vldistill.data.sample import Sample
from vldistill.jobs.kbvqa.reader import (
    ReaderStep,
    evaluate_reader,
    load_reader_weights,
    train_reader,
)
from vldistill.jobs.kbvqa.recipe import constant_lr
from vldistill.kd.token_losses import token_kd
from vldistill.models.fid_reader import FiDReader, passage

TEXTS = ["question how many corners does the red object have image a large red striped "
         "triangle square fact a triangle has three corners square four bananas are yellow",
         "3", "4", "none"]
QUESTION, IMAGE = "how many corners does the red object have", "a large red striped triangle"


def tiny(seed: int = 0, d_model: int = 32) -> FiDReader:
    return FiDReader.from_config(TEXTS, d_model=d_model, layers=1, heads=2, seed=seed).eval()


def test_one_passage_equals_plain_t5_on_that_passage() -> None:
    reader = tiny()
    encoded = reader.tokenizer([passage(QUESTION, IMAGE, "A triangle has three corners.")],
                               return_tensors="pt")
    with torch.no_grad():
        plain = reader.model(**encoded, labels=reader.labels(["3"])).logits
        fid, labels = reader([QUESTION], [IMAGE], [["A triangle has three corners."]], ["3"])

    torch.testing.assert_close(fid, plain)
    assert labels.tolist() == [[reader.tokenizer.convert_tokens_to_ids("3"), 1]]


def test_passages_are_encoded_separately_and_concatenated() -> None:
    reader = tiny()
    facts = ["A triangle has three corners.", "Bananas are yellow.", None]
    with torch.no_grad():
        fused, mask = reader.encode([QUESTION], [IMAGE], [facts])
        alone = [reader.encode([QUESTION], [IMAGE], [[f]]) for f in facts]

    width = fused.shape[1] // 3
    for i, (hidden, single_mask) in enumerate(alone):
        length = int(single_mask.sum())         # the padded tail of a shorter passage differs
        torch.testing.assert_close(fused[0, i * width:i * width + length], hidden[0, :length])
        assert int(mask[0, i * width:(i + 1) * width].sum()) == length


def test_the_reader_learns_to_answer_from_the_fact() -> None:
    reader = tiny()
    questions, images = [QUESTION] * 2, [IMAGE] * 2
    facts = [["A triangle has three corners."], ["A square has four corners."]]
    reader.train()
    optimiser = torch.optim.Adam(reader.parameters(), lr=3e-3)
    for _ in range(300):
        loss = reader.loss(questions, images, facts, ["3", "4"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    assert float(loss.detach()) < 0.05
    assert reader.eval().generate(questions, images, facts) == ["3", "4"]


def test_a_saved_reader_loads_back_through_from_pretrained(tmp_path: Path) -> None:
    reader = tiny(seed=3)
    reader.save_pretrained(tmp_path / "reader")

    loaded = FiDReader.from_pretrained(tmp_path / "reader").eval()

    inputs = ([QUESTION], [IMAGE], [["A triangle has three corners.", None]], ["3"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs)[0], reader(*inputs)[0])
    assert loaded.generate(*inputs[:3]) == reader.generate(*inputs[:3])


def test_token_kd_is_zero_against_itself_and_masks_padding() -> None:
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    other = logits.clone()
    other[0, 2, 1] += 10.0                   # a padded position, one token: ignored

    assert float(token_kd(logits, other, labels)) == pytest.approx(0.0, abs=1e-6)
    other[1, 0, 2] += 3.0                    # a real position, one token: a different softmax
    assert float(token_kd(logits, other, labels)) > 0.0


def test_training_with_a_teacher_adds_token_kd(tmp_path: Path) -> None:
    samples = [Sample(i, i % 2, QUESTION, ("3",) * 10, "knowledge", fact_ids=("F1",))
               for i in range(4)]
    captions = {0: IMAGE, 1: IMAGE}
    contexts = [["A triangle has three corners."]] * 4
    student, teacher = tiny(seed=1, d_model=16), tiny(seed=2)
    quiet = TrainerSettings(progress_bar=False)

    with_kd = train_reader(student, samples, captions, contexts, constant_lr(1e-3, 3, 2),
                           paths=RunPaths(tmp_path / "kd"), trainer=quiet, teacher=teacher,
                           kd_weight=0.5).losses
    alone = train_reader(tiny(seed=1, d_model=16), samples, captions, contexts,
                         constant_lr(1e-3, 3, 2), paths=RunPaths(tmp_path / "alone"),
                         trainer=quiet).losses
    assert len(with_kd) == 3 and with_kd != alone
    # the first batch, by hand: (1 - w) * NLL + w * token KD from the teacher
    step = ReaderStep(tiny(seed=1, d_model=16), samples, contexts, captions, teacher=teacher,
                      kd_weight=0.5)
    rows = torch.tensor([0, 1])
    terms = {k: v.detach() for k, v in step({"rows": rows}).items()}
    assert float(terms["loss"]) == pytest.approx(
        0.5 * float(terms["nll"]) + 0.5 * float(terms["token_kd"]), rel=1e-6)
    assert float(terms["token_kd"]) > 0
    with pytest.raises(ValueError, match="kd_weight must lie in"):
        ReaderStep(student, samples, contexts, captions, kd_weight=1.5)


def test_early_stopping_keeps_the_best_exact_match_weights(tmp_path: Path) -> None:
    """Validation every step on a held-out slice; the weights restored at the end are those of
    the best validation, written as <role>-best.safetensors."""
    samples = [Sample(i, 0, QUESTION, ("3",) * 10, "knowledge") for i in range(4)]
    contexts = [["A triangle has three corners."]] * 4
    reader = tiny(seed=4, d_model=16)
    fitted = train_reader(reader, samples, {0: IMAGE}, contexts,
                          constant_lr(3e-3, 6, 2, val_every_n_steps=1),
                          paths=RunPaths(tmp_path), trainer=TrainerSettings(progress_bar=False),
                          role="r", validate=(samples[:2], contexts[:2]))

    best = tmp_path / "checkpoints" / "r-best.safetensors"
    assert best.is_file() and fitted.steps == 6
    reloaded = tiny(seed=5, d_model=16)
    load_reader_weights(reloaded, best)
    for key, value in reader.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)
    history = (tmp_path / "logs" / "r" / "metrics.csv").read_text()
    assert "val/EM" in history


def test_evaluation_scores_squad_em_f1_and_vqa_accuracy_by_hand() -> None:
    class Fixed(FiDReader):
        def __init__(self, answers):
            torch.nn.Module.__init__(self)
            self.answers = answers

        def eval(self):
            return self

        def generate(self, questions, images, facts):
            return self.answers[:len(questions)]

    samples = [Sample(1, 0, "q", ("red apple",) * 10), Sample(2, 0, "q", ("3",) * 3 + ("4",) * 7)]
    metrics = evaluate_reader(Fixed(["the red apple pie", "3"]), samples, {0: "img"},
                              [[None], [None]])
    # EM: 0 and 1; F1: P 2/3 R 1 -> 0.8, and 1; VQA: 0, and 3 annotators say "3" -> 90 %
    assert metrics["EM"] == pytest.approx(50.0)
    assert metrics["F1"] == pytest.approx(90.0)
    assert metrics["VQA"] == pytest.approx(45.0)
