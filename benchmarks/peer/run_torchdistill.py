"""torchdistill's side of the benchmark; runs in torchdistill's own virtual environment
(`.venv-peer`: torch 2.14.1, torchvision 0.29.1, torchdistill 1.1.5), never in ours.

    .venv-peer/bin/python benchmarks/peer/run_torchdistill.py --work runs/peer --seed 0 \
        --epochs 10 --batch-size 64 --lr 0.05 --out runs/peer/torchdistill-seed0.json

Reads the tensors and the teacher that run.py exported (--data-file, teacher.pt), registers the
networks of models.py with torchdistill's model registry, builds torchdistill's distillation box
from torchdistill_kd.yaml (its own loaders, KDLoss, SGD, scheduler) and trains the way
torchdistill's image-classification example does: per batch ``forward_process`` then
``post_forward_process``, per epoch ``pre_epoch_process`` / ``post_epoch_process``, the student
evaluated after every epoch. Writes one JSON record per epoch (time since training began,
validation accuracy) and the totals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchdistill.common import yaml_util
from torchdistill.common.main_util import set_seed
from torchdistill.core.distillation import get_distillation_box
from torchdistill.models.registry import get_model, register_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import STUDENT, TEACHER, ConvNet

CLASSES: list[int] = []          # the class count, set from the data before models are built


@register_model(key="PeerConvNet")
def peer_convnet(role: str) -> ConvNet:
    return ConvNet(TEACHER if role == "teacher" else STUDENT, CLASSES[0])


class CountingTeacher(torch.nn.Module):
    """The teacher, counting the examples it runs on (the table's teacher forward passes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.examples = model, 0

    def forward(self, images):
        self.examples += len(images)
        return self.model(images)


@torch.inference_mode()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + 256]).argmax(1) == labels[i:i + 256]).sum())
                  for i in range(0, len(images), 256))
    return 100.0 * correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-file", default="data.npz")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = np.load(args.work / args.data_file)
    train = TensorDataset(torch.from_numpy(data["train_images"]),
                          torch.from_numpy(data["train_labels"]))
    val_images = torch.from_numpy(data["val_images"])
    val_labels = torch.from_numpy(data["val_labels"])
    CLASSES.append(int(data["classes"]))

    config = yaml_util.load_yaml_file(str(Path(__file__).with_name("torchdistill_kd.yaml")))
    train_config = config["train"]
    train_config["num_epochs"] = args.epochs
    train_config["train_data_loader"]["kwargs"]["batch_size"] = args.batch_size
    train_config["optimizer"]["kwargs"]["lr"] = args.lr
    train_config["scheduler"]["kwargs"]["T_max"] = args.epochs
    models = config["models"]

    set_seed(args.seed)
    teacher = get_model(models["teacher_model"]["key"], **models["teacher_model"]["kwargs"])
    teacher.load_state_dict(torch.load(args.work / "teacher.pt", weights_only=True))
    # torchdistill freezes the teacher's parameters but leaves its train/eval mode as given; a
    # teacher in train mode would distil BatchNorm's batch statistics, so hand it over in eval
    # mode, as a careful user does (vldistill keeps every teacher in eval mode itself)
    teacher = CountingTeacher(teacher.eval()).eval()
    torch.manual_seed(args.seed)          # the student's initial weights: the same as ours
    student = get_model(models["student_model"]["key"], **models["student_model"]["kwargs"])
    box = get_distillation_box(teacher, student, {"peer/train": train,
                                                  "peer/val": TensorDataset(val_images,
                                                                            val_labels)},
                               train_config, torch.device("cpu"), None, False, 1)
    history = []
    start = time.perf_counter()
    for epoch in range(box.num_epochs):
        box.pre_epoch_process(epoch=epoch)
        box.student_model.train()
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
        value = accuracy(box.student_model, val_images, val_labels)
        box.post_epoch_process()
        history.append({"epoch": epoch + 1, "time_s": time.perf_counter() - start,
                        "accuracy": value})
        print(f"torchdistill kd seed {args.seed} epoch {epoch + 1}: val accuracy {value:.2f} "
              f"({history[-1]['time_s']:.1f} s)", flush=True)
    box.clean_modules()
    record = {"method": "torchdistill kd", "seed": args.seed, "history": history,
              "accuracy": history[-1]["accuracy"], "wall_time_s": history[-1]["time_s"],
              "teacher_forward_examples": teacher.examples,
              "versions": {"torch": torch.__version__,
                           "torchdistill": __import__("torchdistill").__version__}}
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
