"""Export the built-in ShapesWorld in the real formats, so the same readers serve both."""

from __future__ import annotations

from pathlib import Path

from vldistill.data.artquest import write_artquest
from vldistill.data.batches import group_by_image
from vldistill.data.rgbd import write_rgbd
from vldistill.data.shapesworld import write_captions_jsonl, write_facts_jsonl
from vldistill.data.shapesworld_questions import style_questions as style
from vldistill.data.vizwiz import write_vizwiz
from vldistill.data.vqa import write_vqa

FORMATS = ("vqa", "vizwiz", "rgbd", "artquest")


def export_shapesworld(world, out_dir: Path, format: str = "vqa", style_questions: int = 2
                       ) -> dict[str, Path]:
    """Write every split in the VQAv2 layout (``{split}_questions.json``,
    ``{split}_annotations.json``, ``images/``, ``depth/``) plus ``facts.jsonl`` and
    ``{split}_captions.jsonl``, or (``format="vizwiz"``) in the VizWiz layout
    (``annotations/{split}.json``, ``{split}/``; the unanswerable questions included), or
    (``format="rgbd"``) in the RGB-D layout (``{split}.json``, ``images/``, ``depth/`` in
    millimetres; vldistill.data.rgbd), or (``format="artquest"``) as ArtQuest CSVs
    (``{split}.csv``, ``images/{split}/``) with ``style_questions`` image-level style questions
    per image after its own. Returns the written paths by name."""

    if format not in FORMATS:
        raise ValueError(f"export format {format!r} is not one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if format == "artquest":

        for name, split in world.splits.items():
            scenes = {scene.image_id: scene for scene in split.scenes}
            samples = [s for group in group_by_image(split.samples)
                       for s in group + style(scenes[group[0].image_id], style_questions)]
            paths = write_artquest(samples, split.images, out_dir, name)
            written.update({f"{name} {kind}": path for kind, path in paths.items()})
        return written
    if format in ("vizwiz", "rgbd"):
        write = write_vizwiz if format == "vizwiz" else write_rgbd
        for name, split in world.splits.items():
            paths = write(split.samples, split.images, out_dir, name)
            written.update({f"{name} {kind}": path for kind, path in paths.items()})
        return written
    for name, split in world.splits.items():
        paths = write_vqa(split.samples, split.images, out_dir, name)
        written.update({f"{name} {kind}": path for kind, path in paths.items()})
        captions = out_dir / f"{name}_captions.jsonl"
        write_captions_jsonl(split.captions, captions)
        written[f"{name} captions"] = captions
    facts = out_dir / "facts.jsonl"
    write_facts_jsonl(world.facts, facts)
    written["facts"] = facts
    return written
