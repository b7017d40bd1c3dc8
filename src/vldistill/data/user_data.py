"""Data as users bring it to ``vldistill.distill``, as one item contract.

Accepted, for ``train``, ``val`` and ``transfer`` alike:

- ``(inputs, labels)`` tensors (or arrays, or a labels list); an ``inputs`` tensor alone
  (unlabelled: a transfer set);
- a torch ``Dataset`` whose items are ``(input, label)`` tuples, ``(input,)``, a bare input,
  or dicts with an input and a label column (``columns=`` names them when the names are not
  the usual ones);
- a ``DataLoader``: its dataset (vldistill draws its own batches: the mix of labelled and
  transfer examples, the rank's share under DDP, the place to resume from);
- a Hugging Face ``datasets.Dataset`` with named columns (PIL images become uint8 tensors);
- a path to an image folder, ``root/<class>/<image>``; a :class:`ClassificationDataset`.

Every item becomes ``{"image": input tensor, "label": class index or -1, "labelled": bool}``
(``image`` is the input, whatever it holds). A bad item is reported with its set, its index and
what was expected.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vldistill.core.errors import DataError
from vldistill.core.hashing import tensor_fingerprint
from vldistill.data.augment import ViewDataset
from vldistill.data.classification import ClassificationDataset, image_folder

INPUT_COLUMNS = ("image", "img", "pixel_values", "input", "inputs", "x", "features")
LABEL_COLUMNS = ("label", "labels", "target", "targets", "y", "class", "fine_label")

ACCEPTED = ("(inputs, labels) tensors, an inputs tensor (unlabelled), a torch Dataset of "
            "(input, label) tuples or dicts, a DataLoader, a Hugging Face datasets.Dataset, an "
            "image-folder path (root/<class>/<image>) or a ClassificationDataset")
EXAMPLE = ("vldistill.distill(teacher, student, train=(images, labels), "
           "val=(val_images, val_labels))")


def _tensor(value: Any, where: str) -> torch.Tensor:
    """An input as a tensor: PIL images become (C, H, W) uint8, arrays and lists tensors."""
    if isinstance(value, torch.Tensor):
        return value
    if hasattr(value, "convert") and hasattr(value, "size"):           # a PIL image
        array = np.asarray(value.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    if isinstance(value, (np.ndarray, list, tuple, int, float)):
        return torch.as_tensor(np.asarray(value))
    raise DataError(f"{where}: the input is a {type(value).__name__}; expected a tensor, a "
                    "numpy array or a PIL image.")


def _label(value: Any, where: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: the label is {value!r} ({type(value).__name__}); expected an "
                        "int class index 0..C-1. Fix: map class names to indices first.")
    if value < 0:
        raise DataError(f"{where}: the label is {value}; class indices start at 0.")
    return value


class UserDataset(Dataset):
    """A user's map-style dataset read through the item contract above.

    ``columns`` = (input column, label column) for dict items; found among the usual names
    (:data:`INPUT_COLUMNS`, :data:`LABEL_COLUMNS`) when not given. ``labelled=False`` ignores
    any labels (a transfer set)."""


    def __init__(self, data: Any, *, labelled: bool, what: str,
                 columns: Sequence[str] | None = None) -> None:
        self.data, self.labelled, self.what = data, labelled, what
        self.columns = tuple(columns) if columns is not None else None
        if len(data) == 0:
            raise DataError(f"{what} is empty ({type(data).__name__} of length 0).")

    def __len__(self) -> int:
        return len(self.data)

    def _columns(self, item: Mapping[str, Any], where: str) -> tuple[str, str | None]:
        if self.columns is not None:
            missing = [c for c in self.columns if c not in item]
            if missing:
                raise DataError(f"{where}: no column(s) {missing}; the item has "
                                f"{sorted(item)}. Fix: columns=(input column, label column).")
            return self.columns[0], self.columns[1] if len(self.columns) > 1 else None
        inputs = [c for c in INPUT_COLUMNS if c in item]
        labels = [c for c in LABEL_COLUMNS if c in item]
        if not inputs:
            raise DataError(f"{where}: a dict item with keys {sorted(item)} and none of the "
                            f"usual input names {list(INPUT_COLUMNS)}. Fix: pass "
                            "columns=('<input column>', '<label column>').")
        return inputs[0], labels[0] if labels else None

    def __getitem__(self, index: int) -> dict[str, Any]:
        where = f"{self.what} item {index}"
        raw = self.data[index]
        label: Any = None
        if isinstance(raw, Mapping):
            input_column, label_column = self._columns(raw, where)
            value = raw[input_column]
            label = raw[label_column] if label_column is not None else None
        elif isinstance(raw, (tuple, list)) and not isinstance(raw[0], (int, float)):
            if len(raw) not in (1, 2):
                raise DataError(f"{where}: a {type(raw).__name__} of {len(raw)} values; "
                                "expected (input, label) or (input,).")
            value, label = raw[0], raw[1] if len(raw) == 2 else None
        else:
            value = raw
        if self.labelled and label is None:
            raise DataError(f"{where} has no label, but {self.what} must be labelled. Fix: "
                            "return (input, label), or pass these examples as transfer=... "
                            "(unlabelled).")
        labelled = self.labelled and label is not None
        return {"image": _tensor(value, where),
                "label": _label(label, where) if labelled else -1, "labelled": labelled}


class TensorDataset(ClassificationDataset):
    """``inputs`` (N, ...) and optional ``labels`` (N,): a ClassificationDataset of any input
    shape (images or not), its labels checked to be class indices."""

    def __init__(self, inputs: Any, labels: Any, *, what: str) -> None:
        inputs = _tensor(inputs, what)
        if inputs.ndim < 1 or len(inputs) == 0:
            raise DataError(f"{what}: inputs of shape {tuple(inputs.shape)}; expected (N, ...) "
                            "with N >= 1.")
        if labels is not None:
            labels = torch.as_tensor(np.asarray(labels))
            if labels.ndim != 1 or len(labels) != len(inputs) or labels.is_floating_point():
                raise DataError(f"{what}: labels of shape {tuple(labels.shape)} and dtype "
                                f"{labels.dtype}; expected N = {len(inputs)} integer class "
                                "indices, one per input.")
            if int(labels.min()) < 0:
                raise DataError(f"{what}: a label is {int(labels.min())}; class indices "
                                "start at 0.")
        # ClassificationDataset's own check asks for (N, C, H, W); any shape is fine here
        self.images, self.labels = inputs, None if labels is None else labels.long()
        self.classes = None


def as_user_dataset(data: Any, *, labelled: bool, what: str, image_size: int = 64,
                    columns: Sequence[str] | None = None) -> Dataset:
    """One of the accepted forms (module docstring) as a dataset of items; a clear DataError
    (what was passed, what is accepted, an example) for anything else."""
    if isinstance(data, ClassificationDataset):            # TensorDataset included
        if labelled or data.labels is None:
            return data
        unlabelled = copy.copy(data)
        unlabelled.labels = None
        return unlabelled
    if isinstance(data, UserDataset):
        return data
    if isinstance(data, (str, Path)):
        return image_folder(data, image_size, labelled=labelled)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return TensorDataset(data, None, what=what)
    if isinstance(data, (tuple, list)) and len(data) == 2 and \
            isinstance(data[0], (torch.Tensor, np.ndarray)):
        return TensorDataset(data[0], data[1] if labelled else None, what=what)
    if isinstance(data, DataLoader):
        return as_user_dataset(data.dataset, labelled=labelled, what=what,
                               image_size=image_size, columns=columns)
    if isinstance(data, Dataset) or _is_hf_dataset(data):
        if not hasattr(data, "__len__"):
            raise DataError(f"{what} is an iterable dataset ({type(data).__name__}) without a "
                            "length; vldistill needs a map-style dataset (len and [i]) to mix, "
                            "cache and resume.")
        return UserDataset(data, labelled=labelled, what=what, columns=columns)
    raise DataError(f"{what} is a {type(data).__name__}, which vldistill cannot read. "
                    f"Accepted: {ACCEPTED}. Example: {EXAMPLE}")


def _is_hf_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("datasets.") and hasattr(data, "column_names")


def is_deterministic(dataset: Dataset, probes: int = 3) -> tuple[bool, str]:
    """Whether reading an item twice gives the same input (a dataset that augments at random
    does not); (verdict, the reason in a few words). Tensors and image folders are known
    deterministic; a user's dataset is probed at ``probes`` spread-out items."""
    if isinstance(dataset, ClassificationDataset):
        return True, "in-memory tensors"
    count = len(dataset)
    for index in sorted({round(i * (count - 1) / max(1, probes - 1)) for i in range(probes)}):
        first, second = dataset[index]["image"], dataset[index]["image"]
        if first.shape != second.shape or not torch.equal(first, second):
            return False, (f"reading item {index} twice gave two different inputs: the "
                           "dataset augments at random")
    return True, f"items read twice are identical ({probes} probes)"


def dataset_fingerprint(dataset: Dataset) -> str:
    """SHA-256 over every item's input bytes, shape and label, in order (tensor-backed sets
    hash their tensors at once): what the teacher saw, for the cache's fingerprint."""
    if isinstance(dataset, ClassificationDataset):
        return tensor_fingerprint(*(t for t in (dataset.images, dataset.labels)
                                    if t is not None))
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        item = dataset[index]
        array = np.ascontiguousarray(item["image"].numpy())
        digest.update(f"{array.dtype}{array.shape}{item['label']}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class Pool(Dataset):
    """The labelled set then the transfer set as one dataset: item j is row j (what the
    teacher cache answers by). Transfer items are unlabelled whatever they carry."""

    def __init__(self, labelled: Dataset, transfer: Dataset | None) -> None:
        self.labelled, self.transfer = labelled, transfer
        self.num_labelled = len(labelled)
        self.num_transfer = len(transfer) if transfer is not None else 0

    def __len__(self) -> int:
        return self.num_labelled + self.num_transfer

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < self.num_labelled:
            item = dict(self.labelled[index])
        else:
            item = dict(self.transfer[index - self.num_labelled])
            item["label"], item["labelled"] = -1, False
        item["row"] = index
        return item


def collate_inputs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A batch of items: ``inputs`` = (stacked inputs,), ``targets``, ``labelled`` and, when
    the items carry them, ``rows``. Inputs of different shapes are named, not stacked."""
    shapes = {tuple(item["image"].shape) for item in items}
    if len(shapes) > 1:
        raise DataError(f"inputs in one batch differ in shape: {sorted(shapes)}. Fix: give every "
                        "example the same shape (resize images; image_folder does this with "
                        "image_size=...).")
    labels = torch.tensor([item["label"] for item in items], dtype=torch.long)
    batch = {"inputs": (torch.stack([item["image"] for item in items]),),
             "targets": labels.clamp(min=0),
             "labelled": torch.tensor([item["labelled"] for item in items])}
    if "row" in items[0]:
        batch["rows"] = torch.tensor([item["row"] for item in items], dtype=torch.long)
    return batch


class PoolViews(ViewDataset):
    """The replayable views of a :class:`Pool`: item ``j * views + v`` is view v of row j, and
    its ``row`` is that index (the teacher cache stores one row per view)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = super().__getitem__(index)
        record["row"] = index
        return record
