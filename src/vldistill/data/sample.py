"""The one record every reader produces: a question about an image, with its answers.

Readers (VQAv2/OK-VQA JSON, the built-in ShapesWorld, later VizWiz, CSV, RGB-D) all turn their
input into a list of :class:`Sample` plus an :class:`ImageStore` that returns pixels by image id.
Everything downstream (vocabulary, datasets, metrics) sees only these two types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

ImageId = int | str
QuestionId = int | str


@dataclass(frozen=True)
class Sample:
    """One question about one image.

    ``answers`` holds the raw annotator answers (10 for VQAv2-style data), unnormalised, exactly
    as the annotation file has them; it is empty for an unlabelled (transfer-set) question.
    ``fact_ids`` are the gold knowledge-base facts a knowledge question needs (empty otherwise).
    """

    question_id: QuestionId
    image_id: ImageId
    question: str
    answers: tuple[str, ...] = ()
    question_type: str = ""
    answer_type: str = ""
    fact_ids: tuple[str, ...] = ()
    answerable: bool | None = None      # VizWiz: can the question be answered from the image?

    @property
    def labelled(self) -> bool:
        return len(self.answers) > 0

    def unlabelled(self) -> Sample:
        """The same question with its answers removed (for a transfer set)."""
        return Sample(self.question_id, self.image_id, self.question, (), self.question_type,
                      "", self.fact_ids, None)


class ImageStore(Protocol):
    """Pixels by image id. ``rgb`` returns uint8 (H, W, 3); ``depth`` float32 metres (H, W)."""

    def rgb(self, image_id: ImageId) -> np.ndarray: ...

    def depth(self, image_id: ImageId) -> np.ndarray | None: ...

    def ids(self) -> list[ImageId]: ...


@dataclass
class ArrayImageStore:
    """Images held in memory: ``rgb`` (N, H, W, 3) uint8, optional ``depth`` (N, H, W) float."""

    image_ids: list[ImageId]
    rgb_array: np.ndarray
    depth_array: np.ndarray | None = None
    _index: dict[ImageId, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.image_ids) != len(self.rgb_array):
            raise ValueError(
                f"ArrayImageStore got {len(self.image_ids)} image ids but "
                f"{len(self.rgb_array)} images; pass one id per image.")
        self._index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        if len(self._index) != len(self.image_ids):
            raise ValueError("ArrayImageStore got duplicate image ids; ids must be unique.")

    def _row(self, image_id: ImageId) -> int:
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(f"image id {image_id!r} is not in this image store "
                           f"({len(self.image_ids)} images)") from None

    def rgb(self, image_id: ImageId) -> np.ndarray:
        return np.asarray(self.rgb_array[self._row(image_id)])

    def depth(self, image_id: ImageId) -> np.ndarray | None:
        if self.depth_array is None:
            return None
        return np.asarray(self.depth_array[self._row(image_id)], dtype=np.float32)

    def ids(self) -> list[ImageId]:
        return list(self.image_ids)
