"""Reading JSON datasets with errors that name the file, the record, the field and the fix.

Shared by the readers of every JSON layout (VQAv2 / OK-VQA, VizWiz).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.sample import QuestionId

MAX_LISTED = 5


def load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise MissingFileError(f"{what} file {path} does not exist. Fix: check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {err.start}). Fix: "
                        f"re-save the file as UTF-8 JSON.") from err
    return _decode(text, str(path), "repair or re-export the file", whole_file=True)


def parse_line(line: str, where: str, expected: str) -> Any:
    """One JSONL line; bad JSON or a key given twice raises naming ``where`` and ``expected``
    (e.g. 'one {"id": ..., "text": ...} object per line')."""
    return _decode(line, where, expected, whole_file=False)


def _decode(text: str, where: str, fix: str, whole_file: bool) -> Any:
    """JSON text -> data; every way it can fail is a DataError naming ``where`` and ``fix``
    (a position by line, column and char in a whole file, by column in one JSONL line)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as error:
        key, record = error.args
        raise DataError(f"{where}: key {key!r} appears twice in one JSON object, {record} "
                        "(JSON readers would keep only the last value). Fix: remove one of "
                        "them.") from None
    except json.JSONDecodeError as error:
        at = (f"line {error.lineno}, column {error.colno} (char {error.pos})" if whole_file
              else f"column {error.colno}")
        raise DataError(f"{where}: not valid JSON at {at}: {error.msg}. Fix: {fix}.") from None
    except (ValueError, RecursionError) as error:   # digit limit, deep nesting
        raise DataError(f"{where}: not readable as JSON ({type(error).__name__}: "
                        f"{str(error)[:120]}). Fix: {fix}.") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(key, show(record))
    return record


def jsonl_records(path: Path, what: str, layout: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, where, value) for each non-blank line of a JSONL file, ``where`` being
    "FILE, line N"; undecodable bytes, bad JSON and a key given twice raise naming the line and
    ``layout`` (e.g. 'one {"id": ..., "text": ...} object per line'). The reader checks that
    each value is the object it expects."""
    for number, line in enumerate(read_utf8_lines(path, what), start=1):
        if line.strip():
            where = f"{path}, line {number}"
            yield number, where, parse_line(line, where, layout)


def read_utf8_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (JSONL), split at newlines only (a JSON string may hold
    U+2028); an undecodable byte is named by its line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (bad byte at offset {err.start}). "
                        f"Fix: re-save the {what} as UTF-8.") from None


_REQUIRED = object()
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (lambda v: type(v) in (int, str), "an int id (or a string id)"),
    "int": (lambda v: type(v) is int, "an int"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "str_list": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                 "a list of strings"),
}


def get(record: dict[str, Any], field: str, path: Path, where: str, kind: str,
         default: Any = _REQUIRED) -> Any:
    """``record[field]`` checked to be of ``kind``; ``default`` when absent (else an error)."""
    is_kind, expected = _KINDS[kind]
    if field not in record:
        if default is not _REQUIRED:
            return default
        raise DataError(f"{path}: {where} has no field {field!r} (it has {sorted(record)}); "
                        f"expected {expected}. Fix: add the field to that record.")
    value = record[field]
    if not is_kind(value):
        raise DataError(f"{path}: {where} field {field!r} is {show(value)} "
                        f"({type(value).__name__}); expected {expected}. Fix: correct that "
                        f"record.")
    return value


def check_unique(question_ids: list[QuestionId], path: Path, key: str) -> None:
    counts = Counter(question_ids)
    duplicates = [question_id for question_id, n in counts.items() if n > 1]
    if duplicates:
        raise DataError(f"{path}: {len(duplicates)} question ids appear more than once in "
                        f"{key!r}: {first(duplicates)}. Fix: keep one record per question id.")


def first(values: Sequence[Any], n: int = MAX_LISTED) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return f"[{shown}{', ...' if len(values) > n else ''}]"


def show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
