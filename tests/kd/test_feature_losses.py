"""Feature, contrastive, relational and CLIP-affinity terms: hand-computed values, invariances,
feature selection by name, projectors and their materialisation, and bad-input errors."""

import math

import pytest
import torch

from vldistill.kd import (
    CLIPAffinityLoss,
    ContrastiveLoss,
    DistillationStep,
    FeatureLoss,
    RelationalLoss,
    UnknownFeatureError,
    WeightedTerm,
    build_loss,
    clip_affinity_loss,
    hint_loss,
    info_nce_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    select_feature,
    similarity_preserving_loss,
)
from vldistill.kd.feature_losses import match_spatial
from vldistill.models import ModelOutput


def output(**fields) -> ModelOutput:
    features = fields.pop("features", {})
    return ModelOutput(logits=fields.pop("logits", torch.zeros(2, 3)), features=features, **fields)


# ------------------------------------------------------------------------- selection by name

def test_select_feature_by_field_or_features_key():
    image, grid = torch.randn(2, 4), torch.randn(2, 9, 4)
    out = output(image_embeds=image, features={"image_grid": grid})
    assert select_feature(out, "image_embeds") is image
    assert select_feature(out, "image_grid") is grid
    assert select_feature(out, "logits") is out.logits


def test_select_feature_error_lists_only_what_the_model_outputs():
    out = output(image_embeds=torch.randn(2, 4), features={"image_grid": torch.randn(2, 9, 4)})
    with pytest.raises(UnknownFeatureError) as error:
        select_feature(out, "text_embeds")
    message = str(error.value)
    assert "'text_embeds'" in message
    assert "available: logits, image_embeds, image_grid" in message
    assert isinstance(error.value, KeyError) and isinstance(error.value, ValueError)
    with pytest.raises(KeyError, match="available: logits, image_embeds, image_grid"):
        FeatureLoss(feature="fused")(out, out, None)


# ------------------------------------------------------------------------------- hint / FitNet

def test_hint_loss_hand_computed():
    student, teacher = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    # l2: mean((1 - 0)^2, (2 - 0)^2) = (1 + 4) / 2
    assert hint_loss(student, teacher, "l2").item() == pytest.approx(2.5)
    # smooth_l1 (beta 1), d = (0.5, 3): 0.5 * 0.5^2 = 0.125 and 3 - 0.5 = 2.5; mean 2.625 / 2
    assert hint_loss(torch.tensor([[0.5, 3.0]]), teacher, "smooth_l1").item() == pytest.approx(
        1.3125)
    # cosine: (1, 0) vs (1, 1): cos = 1 / sqrt 2; loss 1 - 1 / sqrt 2
    assert hint_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), "cosine").item() \
        == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)


def test_feature_identity_when_widths_agree():
    student, teacher = torch.randn(3, 4), torch.randn(3, 4)
    term = FeatureLoss(kind="smooth_l1")
    value = term(output(image_embeds=student), output(image_embeds=teacher), None)
    assert term.projector is None
    assert value.item() == pytest.approx(hint_loss(student, teacher, "smooth_l1").item())


def test_feature_projector_maps_student_width_to_teacher_width():
    term = FeatureLoss()
    student = torch.tensor([[1.0, 2.0]], requires_grad=True)              # (1, 2)
    teacher = torch.tensor([[1.0, 2.0, 4.0]])                             # (1, 3)
    term(output(image_embeds=student), output(image_embeds=teacher), None)
    assert isinstance(term.projector, torch.nn.Linear)
    assert (term.projector.in_features, term.projector.out_features) == (2, 3)
    with torch.no_grad():   # W = [[1, 0], [0, 1], [1, 1]], b = 0 maps (1, 2) to (1, 2, 3)
        term.projector.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        term.projector.bias.zero_()
    value = term(output(image_embeds=student), output(image_embeds=teacher), None)
    assert value.item() == pytest.approx(1 / 3)   # mean((0, 0, 3 - 4)^2) = 1/3
    value.backward()
    assert student.grad.abs().sum() > 0 and term.projector.weight.grad.abs().sum() > 0


def test_token_grids_pool_as_2d_grids():
    # Teacher 4 x 4 grid of values 0..15 (one channel), student 2 x 2: the teacher's 2 x 2 blocks
    # average to {0, 1, 4, 5} -> 2.5, {2, 3, 6, 7} -> 4.5, {8, 9, 12, 13} -> 10.5, {10, 11, 14,
    # 15} -> 12.5.
    teacher = torch.arange(16.0).view(1, 16, 1)                          # (N, G, D)
    student = torch.zeros(1, 4, 1)
    pooled_student, pooled_teacher = match_spatial(student, teacher)
    assert pooled_student is student
    assert pooled_teacher.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    # l2 against zeros: (2.5^2 + 4.5^2 + 10.5^2 + 12.5^2) / 4 = 293 / 4
    value = FeatureLoss(feature="grid")(output(features={"grid": student}),
                                     output(features={"grid": teacher}), None)
    assert value.item() == pytest.approx(73.25)
    # the same as a (N, C, H, W) map
    maps = match_spatial(torch.zeros(1, 1, 2, 2), teacher.view(1, 1, 4, 4))[1]
    assert maps.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_token_sequences_pool_in_1d_and_widths_and_grids_mismatch_together():
    # 6 tokens -> 3: pairs (0, 1), (2, 3), (4, 5) average to 0.5, 2.5, 4.5
    teacher = torch.arange(6.0).view(1, 6, 1)
    assert match_spatial(torch.zeros(1, 3, 1), teacher)[1].flatten().tolist() == [0.5, 2.5, 4.5]
    term = FeatureLoss(feature="grid", kind="cosine")
    student = torch.randn(2, 16, 5, requires_grad=True)
    value = term(output(features={"grid": student}),
                 output(features={"grid": torch.randn(2, 4, 8)}), None)
    assert (term.projector.in_features, term.projector.out_features) == (5, 8)
    value.backward()
    assert student.grad.abs().sum() > 0


def test_unmatched_shapes_error_names_both_shapes():
    term = FeatureLoss(feature="grid")
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(3, 4\)"):          # batch sizes differ
        term(output(features={"grid": torch.randn(2, 4)}),
             output(features={"grid": torch.randn(3, 4)}), None)
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3, 4\)"):       # ranks differ
        term(output(features={"grid": torch.randn(2, 4)}),
             output(features={"grid": torch.randn(2, 3, 4)}), None)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        rkd_distance_loss(torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="kind 'l1' is not one of: l2, smooth_l1, cosine"):
        build_loss("feature", kind="l1")


# --------------------------------------------------------------------------------- contrastive

def test_info_nce_hand_computed():
    eye = torch.eye(2)
    # s = t = e1, e2; tau = 1: logits [[1, 0], [0, 1]]; each row -log(e / (e + 1)) = ln(1 + 1/e)
    assert info_nce_loss(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    # shuffled s = e2, e1: logits [[0, 1], [1, 0]]; each row -log(1 / (1 + e)) = ln(1 + e)
    shuffled = eye.flip(0)
    assert info_nce_loss(shuffled, eye, 1.0).item() == pytest.approx(math.log(1 + math.e))
    # a queued negative (-1, 0): row 0 logits (1, 0, -1) -> ln(1 + e^-1 + e^-2);
    # row 1 logits (0, 1, 0) -> -1 + ln(1 + e + 1)
    queued = info_nce_loss(eye, eye, 1.0, negatives=torch.tensor([[-1.0, 0.0]]))
    expected = (math.log(1 + math.exp(-1) + math.exp(-2)) + math.log(2 + math.e) - 1) / 2
    assert queued.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_does_not_count_duplicate_teacher_rows_as_negatives():
    # two questions about one image: identical teacher rows; without the mask each row would be
    # ln 2, with it each row has no negative left and costs 0
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert info_nce_loss(same, same, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_contrastive_lower_when_student_matches_teacher_than_shuffled():
    torch.manual_seed(0)
    teacher = torch.randn(16, 8)
    matched = ContrastiveLoss(temperature=0.1)(output(image_embeds=teacher.clone()),
                                               output(image_embeds=teacher), None)
    shuffled = ContrastiveLoss(temperature=0.1)(output(image_embeds=teacher[torch.randperm(16)]),
                                                output(image_embeds=teacher), None)
    assert matched.item() < shuffled.item()
    assert matched.item() < 0.1 < shuffled.item()


def test_contrastive_queue_fills_in_training_only_and_is_capped():
    torch.manual_seed(1)
    term = ContrastiveLoss(queue_size=5)
    first, second = torch.randn(3, 4), torch.randn(3, 4)
    term.eval()
    term(output(image_embeds=first), output(image_embeds=first), None)
    assert term.queue.numel() == 0
    term.train()
    term(output(image_embeds=first), output(image_embeds=first), None)
    assert term.queue.shape == (3, 4)
    value = term(output(image_embeds=second), output(image_embeds=second), None)
    normalised = torch.nn.functional.normalize
    expected = info_nce_loss(second, second, 0.1, negatives=normalised(first, dim=-1))
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)   # the queue was used
    assert term.queue.shape == (5, 4)                                 # newest 3 + oldest 2
    torch.testing.assert_close(term.queue[:3], normalised(second, dim=-1))
    with pytest.raises(ValueError, match="queue_size must be an integer >= 0"):
        build_loss("contrastive", queue_size=-1)


# ---------------------------------------------------------------------------------- relational

def test_rkd_distance_hand_computed():
    # Student points (0,0), (1,0), (0,1): pair distances 1, 1, sqrt 2; mean m_s = (2 + sqrt 2)/3.
    # Teacher points (0,0), (1,0), (2,0): pair distances 1, 2, 1; mean 4/3 -> 0.75, 1.5, 0.75.
    # Differences: 1/m_s - 0.75, 1/m_s - 1.5, sqrt2/m_s - 0.75, all |d| < 1 -> 0.5 d^2 each,
    # every pair twice in the 3 x 3 matrix, diagonal 0; mean over 9 entries.
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    m_s = (2 + math.sqrt(2)) / 3
    diffs = [1 / m_s - 0.75, 1 / m_s - 1.5, math.sqrt(2) / m_s - 0.75]
    expected = 2 * sum(0.5 * d * d for d in diffs) / 9                   # 0.0717
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_rkd_angle_hand_computed():
    # Same points. Cosines <e_ji, e_jk> at vertex j for i != k (both != j), each pair twice:
    #   vertex 0: student e01 = (1,0), e02 = (0,1): 0;  teacher (1,0), (1,0): 1;   d = -1
    #   vertex 1: student (-1,0), (-1,1)/sqrt2: 1/sqrt2; teacher (-1,0), (1,0): -1; d = 1/sqrt2+1
    #   vertex 2: student (0,-1), (1,-1)/sqrt2: 1/sqrt2; teacher (-1,0), (-1,0): 1; d = 1/sqrt2-1
    # i == k (cos 1 on both) and entries with i or k == j (zero vector) agree.
    # huber_1: 0.5 (|d| = 1), (1/sqrt2 + 1) - 0.5, 0.5 (1 - 1/sqrt2)^2; these sum to 1.75 exactly
    # (1 + 1/sqrt2 + 0.75 - 1/sqrt2), twice each: 3.5; mean over 27 triplets.
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(3.5 / 27, rel=1e-5)


def test_similarity_preserving_hand_computed():
    # Student F = I: G = I, rows already unit. Teacher F = [[1,0],[1,0]]: G = all ones, rows
    # normalised to 1/sqrt2. ||G~_T - G~_S||_F^2 = 2 (1 - 1/sqrt2)^2 + 2 (1/sqrt2)^2
    # = 4 - 2 sqrt2; divided by N^2 = 4: 1 - sqrt2 / 2.
    student, teacher = torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert similarity_preserving_loss(student, teacher).item() == pytest.approx(
        1 - math.sqrt(2) / 2, rel=1e-6)


@pytest.mark.parametrize("loss", [rkd_distance_loss, rkd_angle_loss, similarity_preserving_loss])
def test_relational_invariances(loss):
    torch.manual_seed(2)
    student, teacher = torch.randn(6, 5), torch.randn(6, 9)   # widths may differ
    reference = loss(student, teacher).item()
    # scaling both embeddings (and each one alone) changes nothing
    assert loss(3.0 * student, 0.5 * teacher).item() == pytest.approx(reference, rel=1e-4)
    # zero when the student's feature equals the teacher's (up to the scale, for these)
    assert loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(2.0 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert reference > 0


def test_relational_term_reads_the_named_feature():
    torch.manual_seed(3)
    student, teacher = torch.randn(4, 3, 2), torch.randn(4, 5)
    term = RelationalLoss(feature="fused", kind="similarity")
    value = term(output(features={"fused": student}), output(features={"fused": teacher}), None)
    assert value.item() == pytest.approx(similarity_preserving_loss(student, teacher).item())
    with pytest.raises(ValueError, match="kind 'rkd' is not one of: rkd_distance, rkd_angle"):
        build_loss("relational", kind="rkd")


# ------------------------------------------------------------------------------ clip affinity

def test_clip_affinity_hand_computed():
    # tau = 1, sigma = e / (1 + e). Student image = text = I: S_S = I, both directions rows
    # softmax([1, 0]) = (sigma, 1 - sigma) and softmax([0, 1]).
    # Teacher image = I, text = [[1,0],[1,0]]: S_T = [[1, 1], [0, 0]].
    #  image->text rows (1/2, 1/2): KL = ln(1/2) - 1/2 ln(sigma (1 - sigma))
    #                                  = ln(1 + e) - ln 2 - 1/2, both rows
    #  text->image S_T^T = [[1, 0], [1, 0]]: row 0 equals the student's (KL 0), row 1 against
    #  (1 - sigma, sigma): KL = (2 sigma - 1) ln(sigma / (1 - sigma)) = 2 sigma - 1; mean /2
    # loss = 1/2 (image->text + text->image)
    sigma = math.e / (1 + math.e)
    image_to_text = math.log(1 + math.e) - math.log(2) - 0.5
    text_to_image = (2 * sigma - 1) / 2
    value = clip_affinity_loss(torch.eye(2), torch.eye(2), torch.eye(2),
                               torch.tensor([[1.0, 0.0], [1.0, 0.0]]), temperature=1.0)
    assert value.item() == pytest.approx(0.5 * (image_to_text + text_to_image), rel=1e-5)


def test_clip_affinity_minimal_with_zero_gradient_when_similarities_agree():
    torch.manual_seed(4)
    teacher_image, teacher_text = torch.randn(5, 6), torch.randn(5, 6)
    # the student's embeddings: a rotation of the teacher's into a wider space (same similarities)
    rotation = torch.linalg.qr(torch.randn(8, 8))[0][:6]                  # (6, 8) orthonormal rows
    student_image = (teacher_image @ rotation).requires_grad_()
    student_text = (teacher_text @ rotation).requires_grad_()
    value = clip_affinity_loss(student_image, student_text, teacher_image, teacher_text, 0.1)
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-5)
    assert student_image.grad.abs().max().item() < 1e-4
    assert student_text.grad.abs().max().item() < 1e-4
    moved = clip_affinity_loss(student_image + 0.3 * torch.randn(5, 8), student_text,
                               teacher_image, teacher_text, 0.1)
    assert moved.item() > 1e-3
    term = CLIPAffinityLoss(temperature=0.1)
    with pytest.raises(KeyError, match="available: logits, image_embeds"):
        term(output(image_embeds=teacher_image), output(image_embeds=teacher_image), None)


# ------------------------------------------------------------------------ empty batches, step

@pytest.mark.parametrize("loss", [
    lambda s, t: hint_loss(s, t, "cosine"), info_nce_loss, rkd_distance_loss, rkd_angle_loss,
    similarity_preserving_loss, lambda s, t: clip_affinity_loss(s, s, t, t)])
def test_zero_rows_give_zero_and_are_differentiable(loss):
    empty = torch.zeros(0, 4, requires_grad=True)
    value = loss(empty, torch.zeros(0, 4))
    assert value.item() == 0.0
    value.backward()


class Net(torch.nn.Module):
    def __init__(self, seed: int, width: int):
        super().__init__()
        torch.manual_seed(seed)
        self.norm = torch.nn.BatchNorm1d(5)
        self.embed = torch.nn.Linear(5, width)

    def forward(self, x):
        embeds = self.embed(self.norm(x))
        return ModelOutput(logits=embeds[:, :2], image_embeds=embeds)


def test_materialize_creates_projectors_before_the_optimiser_and_changes_nothing_else():
    student, teacher = Net(1, 4), Net(0, 6)
    step = DistillationStep(student, [WeightedTerm("hint", 1.0, FeatureLoss()),
                                      WeightedTerm("crd", 0.5, ContrastiveLoss(queue_size=8))],
                            teacher=teacher)
    step.train()
    torch.manual_seed(5)
    batch = {"inputs": (torch.randn(8, 5),), "targets": None, "labelled": torch.ones(8).bool()}
    running_mean = student.norm.running_mean.clone()
    step.materialize(batch)
    hint, crd = step.terms["hint"], step.terms["crd"]
    assert isinstance(hint.projector, torch.nn.Linear) and hint.projector.in_features == 4
    assert isinstance(crd.projector, torch.nn.Linear) and crd.projector.out_features == 6
    assert torch.equal(student.norm.running_mean, running_mean)          # ran in eval mode
    assert crd.queue.numel() == 0                                        # no queue update
    assert step.training and student.training and not teacher.training
    assert hint.projector.training
    assert all(p.grad is None for p in step.parameters())
    trainable = [p for p in step.parameters() if p.requires_grad]
    assert any(p is hint.projector.weight for p in trainable)
    assert not any(p is q for p in trainable for q in teacher.parameters())
    optimiser = torch.optim.SGD(trainable, lr=0.1)
    before = hint.projector.weight.detach().clone()
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    step(batch)["loss"].backward()
    optimiser.step()
    assert not torch.equal(hint.projector.weight, before)                # projector trains
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), teacher_before))
    # a fresh step loads the checkpoint without a materialising pass
    fresh = DistillationStep(Net(1, 4), [WeightedTerm("hint", 1.0, FeatureLoss()),
                                         WeightedTerm("crd", 0.5, ContrastiveLoss(queue_size=8))],
                             teacher=Net(0, 6))
    fresh.load_state_dict(step.state_dict())
    torch.testing.assert_close(fresh.terms["hint"].projector.weight, hint.projector.weight)
