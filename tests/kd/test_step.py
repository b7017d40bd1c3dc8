"""The distillation step: weighting, labelled masking, teacher freezing."""

import pytest
import torch

from vldistill.kd import DistillationStep, KDLoss, VQABCELoss, WeightedTerm, kd_loss, vqa_bce_loss
from vldistill.models import ModelOutput


class Net(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = torch.nn.Linear(5, 3)
        self.norm = torch.nn.BatchNorm1d(5)

    def forward(self, x):
        return ModelOutput(logits=self.layer(self.norm(x)))


def make_batch():
    torch.manual_seed(7)
    return {"inputs": {"x": torch.randn(4, 5)}, "targets": torch.rand(4, 3),
            "labelled": torch.tensor([True, False, False, True])}


def test_weighted_sum_and_masking_by_hand():
    teacher, student = Net(0), Net(1)
    step = DistillationStep(student, [WeightedTerm("task", 0.75, VQABCELoss()),
                                      WeightedTerm("kd", 0.25, KDLoss(2.0))], teacher=teacher)
    step.train()
    batch = make_batch()
    losses = step(batch)
    s = student(batch["inputs"]["x"]).logits
    with torch.no_grad():
        t = teacher(batch["inputs"]["x"]).logits
    mask = batch["labelled"]
    task = vqa_bce_loss(s[mask], batch["targets"][mask])   # task loss on labelled rows only
    kd = kd_loss(s, t, 2.0)                                 # KD on every row
    assert losses["task"].item() == pytest.approx(task.item(), rel=1e-5)
    assert losses["kd"].item() == pytest.approx(kd.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(0.75 * task.item() + 0.25 * kd.item(), rel=1e-5)


def test_teacher_frozen_three_ways():
    teacher = Net(0)
    step = DistillationStep(Net(1), [WeightedTerm("kd", 1.0, KDLoss())], teacher=teacher)
    step.train()
    assert not teacher.training                       # stays in eval mode
    assert all(not p.requires_grad for p in teacher.parameters())
    running = teacher.norm.running_mean.clone()
    step(make_batch())["loss"].backward()
    assert torch.equal(teacher.norm.running_mean, running)   # eval-mode BatchNorm untouched
    assert all(p.grad is None for p in teacher.parameters())


def test_all_unlabelled_batch_gives_zero_task_loss():
    step = DistillationStep(Net(1), [WeightedTerm("task", 1.0, VQABCELoss())])
    batch = make_batch()
    batch["labelled"] = torch.zeros(4, dtype=torch.bool)
    assert step(batch)["loss"].item() == 0.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="need a teacher"):
        DistillationStep(Net(1), [WeightedTerm("kd", 1.0, KDLoss())])
    with pytest.raises(ValueError, match="unique"):
        DistillationStep(Net(1), [WeightedTerm("a", 1.0, VQABCELoss()),
                                  WeightedTerm("a", 1.0, VQABCELoss())])
    with pytest.raises(TypeError, match="ModelOutput"):
        bad = torch.nn.Identity()
        DistillationStep(bad, [WeightedTerm("t", 1.0, VQABCELoss())])(
            {"inputs": ("not a tensor",), "targets": None, "labelled": None})


def test_teacher_runs_without_autograd_even_if_its_parameters_require_grad():
    teacher = Net(0)
    step = DistillationStep(Net(1), [WeightedTerm("kd", 1.0, KDLoss())], teacher=teacher)
    teacher.requires_grad_(True)          # a user un-freezes it by mistake
    output = step.teacher_output(make_batch())
    assert output.logits.grad_fn is None  # still no graph: the teacher runs under no_grad


def test_a_plain_teacher_runs_online_through_its_source():
    """A teacher model is wrapped in an OnlineTeacher: the step asks it for outputs, it reads
    the batch's teacher_inputs when there are any, and it names the teacher's weights."""
    from vldistill.core.hashing import module_fingerprint
    from vldistill.kd import OnlineTeacher, TeacherSource

    teacher = Net(0)
    step = DistillationStep(Net(1), [WeightedTerm("kd", 1.0, KDLoss())], teacher=teacher)
    assert isinstance(step.teacher, OnlineTeacher) and isinstance(step.teacher, TeacherSource)
    assert step.teacher.kind == "online" and step.teacher.model is teacher
    assert step.teacher.weights_fingerprint() == module_fingerprint(teacher)
    batch = make_batch()
    batch["teacher_inputs"] = {"x": batch["inputs"]["x"] * 2}
    with torch.no_grad():
        expected = teacher(batch["teacher_inputs"]["x"]).logits
    assert torch.equal(step.teacher_output(batch).logits, expected)
    # a source given as it is is used as it is
    assert DistillationStep(Net(1), [WeightedTerm("kd", 1.0, KDLoss())],
                            teacher=step.teacher).teacher is step.teacher
    with pytest.raises(TypeError, match="answers for a whole batch"):
        step.teacher(batch["inputs"]["x"])
