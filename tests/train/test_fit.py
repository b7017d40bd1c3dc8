"""fit(): lazily shaped projectors of feature terms are materialised and trained."""

import torch

from vldistill.config import OptimSettings, TrainerSettings, TrainSettings
from vldistill.data.classification import ClassificationDataset, collate_classification
from vldistill.eval.evaluators import ClassificationEvaluator
from vldistill.kd import DistillationStep, WeightedTerm, build_loss
from vldistill.models import ModelOutput
from vldistill.train.fit import fit, mixed_loaders


class Embedder(torch.nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Linear(16, dim)
        self.head = torch.nn.Linear(dim, 2)

    def forward(self, images):
        embeds = self.body(images.flatten(1))
        return ModelOutput(logits=self.head(embeds), image_embeds=embeds)


def test_feature_projector_is_materialised_and_trained(tmp_path):
    images = torch.rand(32, 1, 4, 4)
    labels = (images.mean(dim=(1, 2, 3)) > 0.5).long()
    data = ClassificationDataset(images, labels)
    step = DistillationStep(Embedder(3, 0), [
        WeightedTerm("ce", 1.0, build_loss("ce")),
        WeightedTerm("feature", 1.0, build_loss("feature", feature="image_embeds"))],
        teacher=Embedder(8, 1))
    loaders = mixed_loaders(data, None, collate_classification, None, batch_size=8,
                            transfer_fraction=0.0, seed=0)
    train = TrainSettings(max_steps=5, batch_size=8, val_every_n_steps=5,
                          optim=OptimSettings(lr=0.1, warmup_steps=0))
    fit(step, loaders, ClassificationEvaluator(), train, TrainerSettings(progress_bar=False),
        run_dir=tmp_path, role="student")
    projector = [p for name, p in step.named_parameters() if name.startswith("terms.feature")]
    assert projector and all(p.shape[0] == 8 for p in projector if p.ndim == 2)
    before = Embedder(3, 0)
    assert not torch.allclose(step.student.body.weight, before.body.weight)
    # the projector was part of the training graph
    assert all(p.grad is not None for p in projector)
