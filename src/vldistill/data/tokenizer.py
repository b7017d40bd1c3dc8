"""A word-level question tokenizer for the built-in models.

Built from the training questions; id 0 is padding, 1 is unknown. Hugging Face adapters use
their own tokenizers instead (an adapter owns its preprocessing).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class QuestionTokenizer:
    def __init__(self, vocabulary: list[str]) -> None:
        if vocabulary[:2] != [PAD, UNK]:
            raise ValueError(f"a question vocabulary starts with {PAD!r}, {UNK!r}; got "
                             f"{vocabulary[:2]!r}. Build it with QuestionTokenizer.build().")
        self.vocabulary = list(vocabulary)
        self._ids = {word: i for i, word in enumerate(self.vocabulary)}

    @classmethod
    def build(cls, questions: Iterable[str], min_count: int = 1) -> QuestionTokenizer:
        counts = Counter(word for question in questions for word in words(question))
        kept = sorted(word for word, count in counts.items() if count >= min_count)
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.vocabulary)

    def encode(self, question: str) -> list[int]:
        """Token ids of a question; at least one id (an empty question is one <unk>)."""
        return [self._ids.get(word, 1) for word in words(question)] or [1]

    def to_json(self) -> list[str]:
        return list(self.vocabulary)

    @classmethod
    def from_json(cls, vocabulary: list[str]) -> QuestionTokenizer:
        return cls(list(vocabulary))
