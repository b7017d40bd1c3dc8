"""The fact knowledge base: JSONL facts (``id``, ``text``, optional fields), read with errors
that name the file and the line, and fingerprinted so that an index built from another
knowledge base is refused.

One fact per line::

    {"id": "F003", "text": "A triangle has three corners.", "source": "shapesworld"}
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.jsonio import MAX_LISTED, first, jsonl_records, show
from vldistill.data.sample import Sample
from vldistill.data.shapesworld_questions import Fact


@dataclass
class KnowledgeBase:
    """Facts in file order; ``fields[id]`` holds a fact's optional fields."""

    facts: list[Fact]
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        counts = Counter(f.id for f in self.facts)
        duplicates = [fact_id for fact_id, n in counts.items() if n > 1]
        if duplicates:
            raise DataError(f"{self.source}: {len(duplicates)} fact ids appear more than once: "
                            f"{first(duplicates)}. Fix: give every fact its own id.")
        self.index = {f.id: i for i, f in enumerate(self.facts)}
        self._ids = [f.id for f in self.facts]
        self._texts = [f.text for f in self.facts]

    def __len__(self) -> int:
        return len(self.facts)

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def texts(self) -> list[str]:
        return self._texts

    def fingerprint(self) -> str:
        """SHA-256 over the ids and texts in order (what an index is built from)."""
        digest = hashlib.sha256()
        for fact in self.facts:
            digest.update(f"{fact.id}\t{fact.text}\n".encode())
        return digest.hexdigest()

    def check_gold(self, samples: Iterable[Sample], where: str = "the questions") -> None:
        """Refuse questions whose gold fact ids are not in the knowledge base, naming them."""
        unknown = [(s.question_id, fact_id) for s in samples for fact_id in s.fact_ids
                   if fact_id not in self.index]
        if unknown:
            shown = ", ".join(f"question {q!r} -> {f!r}" for q, f in unknown[:MAX_LISTED])
            raise DataError(f"{len(unknown)} gold fact id(s) of {where} are not in the knowledge "
                            f"base {self.source} ({len(self)} facts): {shown}"
                            f"{' ...' if len(unknown) > MAX_LISTED else ''}. Fix: use the "
                            "knowledge base the questions were written for.")


def read_facts(path: Path) -> KnowledgeBase:
    """A JSONL knowledge base; every bad line is named by file and line number."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"knowledge base {path} does not exist. Fix: pass a JSONL file "
                               "of {\"id\": ..., \"text\": ...} lines (vldistill data shapesworld "
                               "writes facts.jsonl).")
    facts, fields, lines_of = [], {}, {}
    for number, where, record in jsonl_records(path, "knowledge base",
                                               'one {"id": ..., "text": ...} object per line'):
        if not isinstance(record, dict):
            raise DataError(f"{where}: {show(record)} is not a JSON object. "
                            "Fix: one {\"id\": ..., \"text\": ...} object per line.")
        for key in ("id", "text"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                got = "missing" if key not in record else f"{show(record[key])}"
                raise DataError(f"{where}: field {key!r} is {got}; expected a non-empty string. "
                                "Fix: give every fact an id and a text.")
        fact_id = record["id"]
        if fact_id in lines_of:
            lines_of[fact_id].append(number)
            continue
        lines_of[fact_id] = [number]
        facts.append(Fact(fact_id, record["text"]))
        extra = {k: v for k, v in record.items() if k not in ("id", "text")}
        if extra:
            fields[fact_id] = extra
    duplicates = {k: v for k, v in lines_of.items() if len(v) > 1}
    if duplicates:
        shown = "; ".join(f"{k!r} on lines {', '.join(map(str, v))}"
                          for k, v in list(duplicates.items())[:MAX_LISTED])
        raise DataError(f"{path}: {len(duplicates)} fact ids appear more than once: {shown}"
                        f"{' ...' if len(duplicates) > MAX_LISTED else ''}. Fix: give every fact "
                        "its own id.")
    if not facts:
        raise DataError(f"{path} holds no facts. Fix: one {{\"id\": ..., \"text\": ...}} "
                        "object per line.")
    return KnowledgeBase(facts, fields, str(path))


def write_facts(kb: KnowledgeBase | Sequence[Fact], path: Path) -> Path:
    """One JSON object per line: id, text and the fact's optional fields."""
    facts = kb.facts if isinstance(kb, KnowledgeBase) else list(kb)
    fields = kb.fields if isinstance(kb, KnowledgeBase) else {}
    with open(path, "w", encoding="utf-8") as handle:
        for fact in facts:
            handle.write(json.dumps({"id": fact.id, "text": fact.text,
                                     **fields.get(fact.id, {})}) + "\n")
    return Path(path)


CAPTION_LAYOUT = 'one {"image_id": ..., "caption": ...} object per line'


def read_captions(path: Path | None) -> dict[Any, str]:
    """{image id: caption} from a JSONL of ``{"image_id", "caption"}`` lines: the image as
    text (e.g. a captioner's output) that knowledge-based VQA appends to the question. None:
    no captions. Every bad line is named by file and line number."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise MissingFileError(f"captions file {path} does not exist. Fix: pass a JSONL of "
                               "{\"image_id\": ..., \"caption\": ...} lines, or null.")
    captions = {}
    for _, where, record in jsonl_records(Path(path), "captions file", CAPTION_LAYOUT):
        if not isinstance(record, dict) or "image_id" not in record or "caption" not in record:
            raise DataError(f"{where}: {show(record)} is not a JSON object with image_id and "
                            f"caption. Fix: {CAPTION_LAYOUT}.")
        captions[record["image_id"]] = str(record["caption"])
    return captions
