"""Export the built-in ShapesWorld in the real formats, so the same readers serve both."""

from __future__ import annotations

from pathlib import Path

from vldistill.data.vqa import write_vqa


def export_shapesworld(world, out_dir: Path) -> dict[str, Path]:
    """Write every split in the VQAv2 layout (``{split}_questions.json``,
    ``{split}_annotations.json``, ``images/``, ``depth/``) plus ``facts.jsonl`` and
    ``{split}_captions.jsonl``. Returns the written paths by name."""
    from vldistill.data.shapesworld import write_captions_jsonl, write_facts_jsonl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
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
