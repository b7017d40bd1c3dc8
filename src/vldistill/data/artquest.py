"""ArtQuest-style CSV VQA data (seed 002): one row per question, images under a root folder.

    image,question,answer,question_id
    paintings/0001.jpg,What style is this painting?,impressionism,17

``image`` is a path relative to the image root (subfolders allowed; a path that leaves the root,
absolute or through ``..``, is refused), ``answer`` one answer (repeated as its ten annotator
answers, so VQA accuracy is exact match), ``question_id`` optional (default: the row number).
Extra columns are kept only when known: ``question_type`` (e.g. ``style``).

:func:`write_artquest` writes ShapesWorld in this layout; its ``question_type`` column keeps the
per-type report (``style`` for the image-level pattern questions, see
vldistill.data.shapesworld_questions.style_questions).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vldistill.core.errors import DataError, MissingFileError
from vldistill.core.fileio import atomic_write_text
from vldistill.data.batches import common_answer
from vldistill.data.images import check_inside
from vldistill.data.jsonio import check_unique
from vldistill.data.sample import ImageStore, Sample
from vldistill.data.vqa import FolderImageStore

REQUIRED = ("image", "question", "answer")
ANNOTATORS = 10


def read_artquest(csv_path: Path, image_root: Path, *, image_size: int | None = None,
                  check_images: bool = True) -> tuple[list[Sample], FolderImageStore]:
    """Samples (file order) and an image store for one CSV split."""
    path = Path(csv_path)
    if not path.is_file():
        raise MissingFileError(f"ArtQuest CSV {path} does not exist. Fix: pass the split's CSV "
                               "(columns image, question, answer[, question_id]).")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start}). Fix: save the CSV as "
                        "UTF-8.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found "
                        f"{', '.join(columns) or 'no header'}); an ArtQuest CSV needs image, "
                        "question, answer and optionally question_id. Fix: add or rename the "
                        "header row's columns.")
    root = Path(image_root)
    samples = []
    for number, row in enumerate(reader, start=2):           # line 1 is the header
        where = f"{path}, line {number}"
        if None in row or any(v is None for v in row.values()):
            raise DataError(f"{where}: {len(columns)} columns expected, the row has "
                            f"{len(columns) + len(row.get(None) or []) if None in row else 'fewer'}"
                            ". Fix: quote fields that contain commas, and close every "
                            "opening quote (an unclosed one swallows the rest of the file).")
        values = {key: row[key].strip() for key in REQUIRED}
        empty = [key for key, value in values.items() if not value]
        if empty:
            raise DataError(f"{where}: empty {', '.join(empty)}; every row needs an image, a "
                            "question and an answer. Fix: fill in that cell or drop the row.")
        check_inside(root, values["image"], where)
        question_id = (row.get("question_id") or "").strip() or str(number - 1)
        samples.append(Sample(
            question_id=int(question_id) if question_id.isascii() and question_id.isdigit()
            else question_id,
            image_id=values["image"], question=values["question"],
            answers=(values["answer"],) * ANNOTATORS,
            question_type=(row.get("question_type") or "").strip()))
    if not samples:
        raise DataError(f"{path}: no rows after the header; an empty split cannot be used. "
                        "Fix: add the split's rows, or point the recipe at another CSV.")
    check_unique([s.question_id for s in samples], path, "question_id")
    store = FolderImageStore(root, "{image_id}", None, image_size)
    if check_images:
        try:
            store.check_images(samples)
        except MissingFileError as error:
            raise MissingFileError(f"{path}: {error}") from None
    return samples, store


def write_artquest(samples: Sequence[Sample], images: ImageStore, out_dir: Path, split: str
                   ) -> dict[str, Path]:
    """``<out_dir>/<split>.csv`` and one PNG per image under ``<out_dir>/images/<split>/``.
    Labelled samples only (the CSV holds one answer: the most common)."""

    out_dir = Path(out_dir)
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "question", "answer", "question_id", "question_type"])
    written: set = set()
    for sample in samples:
        if not sample.labelled:
            continue
        name = f"{split}/{sample.image_id}.png"
        if sample.image_id not in written:
            Image.fromarray(images.rgb(sample.image_id)).save(out_dir / "images" / name)
            written.add(sample.image_id)
        writer.writerow([name, sample.question, common_answer(sample.answers),
                         sample.question_id, sample.question_type])
    csv_path = out_dir / f"{split}.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    return {"csv": csv_path, "images": out_dir / "images"}
