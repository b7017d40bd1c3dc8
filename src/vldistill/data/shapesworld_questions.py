"""ShapesWorld language: the fact knowledge base, questions with annotator answers, and captions.

Every question refers to objects by a description that is unique in its scene ("the star",
"the red star", "the large striped star") and is only asked when its answer is clear from the
pixels (a clear horizontal/vertical gap for left/right/above/below, a clear depth gap for
nearest/farthest). Ten simulated annotators answer each question: mostly the true answer, some a
variant that the official VQA normalisation maps to it ("two", "Yes", "a circle"), some one it
does not ("gray", "unsuitable"), a few a wrong but plausible answer; the true answer always keeps
a strict majority.

Questions use ``random.Random`` (faster than numpy for scalar draws), annotators numpy draws in
bulk; both are deterministic per seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vldistill.data.sample import Sample
from vldistill.data.shapesworld_render import COLOURS, PATTERNS, SHAPES, SIZES, ObjectSpec, Scene

VISUAL_TYPES = ("colour", "shape", "count", "exists", "spatial", "nearest", "pattern")
QUESTION_TYPES = VISUAL_TYPES + ("unanswerable", "knowledge")
ANSWERS_PER_QUESTION = 10
MIN_EXACT_ANSWERS = 6     # the true answer, verbatim, from at least this many annotators
DEPTH_GAP_M = 0.5         # nearest/farthest only when the runner-up is this much farther
SPATIAL_GAP = 0.15        # left/right/above/below only with this gap (fraction of the image)
UNANSWERABLE = "unanswerable"

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten")
_CORNERS = {"circle": 0, "square": 4, "triangle": 3, "star": 10, "diamond": 4, "hexagon": 6}
# (category, item, plural, colour): the facts "<Plural> are <colour>." that knowledge questions use
_COLOURED_ITEMS = (
    ("fruit", "strawberry", "strawberries", "red"), ("fruit", "lime", "limes", "green"),
    ("fruit", "blueberry", "blueberries", "blue"), ("fruit", "banana", "bananas", "yellow"),
    ("fruit", "plum", "plums", "purple"), ("fruit", "tangerine", "tangerines", "orange"),
    ("animal", "ladybird", "ladybirds", "red"), ("animal", "frog", "frogs", "green"),
    ("animal", "canary", "canaries", "yellow"), ("animal", "goldfish", "goldfish", "orange"),
    ("animal", "elephant", "elephants", "grey"), ("animal", "swan", "swans", "white"),
)
_DISTRACTOR_FACTS = (
    "Crows are black.", "Flamingos are pink.", "Chocolate is brown.", "Coal is black.",
    "A pentagon has five corners.", "An octagon has eight corners.", "A cube has six faces.",
    "Spiders have eight legs.", "Dogs have four legs.", "Grass is green.", "Snow is white.",
    "The sky is blue on a clear day.", "Lemons taste sour.", "A week has seven days.",
)
_UNKNOWABLE = ("What is written on {}?", "What is the name of {}?", "What is {} made of?",
               "Who drew {}?", "How much does {} weigh?", "How old is {}?")


@dataclass(frozen=True)
class Fact:
    """One knowledge-base sentence, e.g. ``Fact("F003", "A triangle has three corners.")``."""

    id: str
    text: str


class Question(NamedTuple):
    """A question with its true answer; ``answer_kind`` names the pool wrong answers come from."""

    text: str
    answer: str
    question_type: str
    answer_type: str
    answer_kind: str
    fact_ids: tuple[str, ...] = ()


class KnowledgeBase:
    """The facts, and the lookups questions need: corner facts by shape, items by colour."""

    def __init__(self) -> None:
        texts = [f"A {shape} has {_NUMBER_WORDS[n] if n else 'no'} corners."
                 for shape, n in _CORNERS.items()]
        texts += [f"{plural.capitalize()} are {colour}."
                  for _, _, plural, colour in _COLOURED_ITEMS]
        texts += list(_DISTRACTOR_FACTS)
        self.facts = [Fact(f"F{i + 1:03d}", text) for i, text in enumerate(texts)]
        self.corner_fact = {shape: self.facts[i].id for i, shape in enumerate(_CORNERS)}
        self.coloured_items: dict[str, list[tuple[str, str, str]]] = {c: [] for c in COLOURS}
        for i, (category, item, _, colour) in enumerate(_COLOURED_ITEMS):
            self.coloured_items[colour].append((category, item, self.facts[len(_CORNERS) + i].id))


def build_knowledge_base() -> list[Fact]:
    """The ShapesWorld facts (fixed, 32 of them): corner counts for every shape, one or two
    "<things> are <colour>." facts for every colour, and distractors no question needs."""
    return list(KnowledgeBase().facts)


def write_facts_jsonl(facts: list[Fact], path: str | Path) -> None:
    """Write one ``{"id": ..., "text": ...}`` JSON object per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for fact in facts:
            handle.write(json.dumps({"id": fact.id, "text": fact.text}) + "\n")


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

def caption(scene: Scene) -> str:
    """Objects from left to right, e.g.
    "a large red striped circle left of a small blue plain square"."""
    ordered = sorted(scene.objects, key=lambda o: (o.x, o.y))
    return " left of ".join(f"a {o.size} {o.colour} {o.pattern} {o.shape}" for o in ordered)


def write_captions_jsonl(captions: dict[int, str], path: str | Path) -> None:
    """Write one ``{"image_id": ..., "caption": ...}`` JSON object per line, by image id."""
    with open(path, "w", encoding="utf-8") as handle:
        for image_id in sorted(captions):
            handle.write(json.dumps({"image_id": image_id, "caption": captions[image_id]}) + "\n")


# ---------------------------------------------------------------------------------------------
# Questions about one scene
# ---------------------------------------------------------------------------------------------

# Attribute tuples are (size, colour, pattern, shape); adjectives come in that order.
_SIZE, _COLOUR, _PATTERN, _SHAPE = 0, 1, 2, 3
_ADJECTIVE_SUBSETS = ((), (_COLOUR,), (_SIZE,), (_PATTERN,), (_SIZE, _COLOUR),
                     (_COLOUR, _PATTERN), (_SIZE, _PATTERN), (_SIZE, _COLOUR, _PATTERN))
_VOCAB = {_SIZE: SIZES, _COLOUR: COLOURS, _PATTERN: PATTERNS, _SHAPE: SHAPES}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(rnd: random.Random, options: tuple | list):
    """``rnd.choice`` without its overhead (this runs ~10^6 times per world)."""
    return options[int(rnd.random() * len(options))]


class SceneQuestioner:
    """Writes questions about one scene; each ``ask_<type>`` returns a Question or None when the
    scene cannot support that type unambiguously."""

    def __init__(self, scene: Scene, image_size: int, kb: KnowledgeBase, rnd: random.Random):
        self.objects: tuple[ObjectSpec, ...] = scene.objects
        self.attrs = [(o.size, o.colour, o.pattern, o.shape) for o in scene.objects]
        self.spatial_gap = SPATIAL_GAP * image_size
        self.kb = kb
        self.rnd = rnd
        self._same: list[list[int]] | None = None
        self.asks = {"colour": self.ask_colour, "shape": self.ask_shape, "count": self.ask_count,
                     "exists": self.ask_exists, "spatial": self.ask_spatial,
                     "nearest": self.ask_nearest, "pattern": self.ask_pattern,
                     "unanswerable": self.ask_unanswerable, "knowledge": self.ask_knowledge}

    def _same_masks(self) -> list[list[int]]:
        """``same[key][i]``: bitmask of the objects whose attribute ``key`` equals object i's."""
        if self._same is None:
            same = []
            for key in range(4):
                groups: dict[str, int] = {}
                for j, attrs in enumerate(self.attrs):
                    groups[attrs[key]] = groups.get(attrs[key], 0) | (1 << j)
                same.append([groups[attrs[key]] for attrs in self.attrs])
            self._same = same
        return self._same

    def describe(self, index: int, exclude: tuple[int, ...] = ()) -> str | None:
        """A description unique in the scene ("the red star") that names none of ``exclude``."""
        same = self._same_masks()
        noun_mask = (1 << len(self.attrs)) - 1 if _SHAPE in exclude else same[_SHAPE][index]
        only_me = 1 << index
        found = []
        for subset in _ADJECTIVE_SUBSETS:
            mask = noun_mask
            for key in subset:
                if key in exclude:
                    break
                mask &= same[key][index]
            else:
                if mask == only_me:
                    found.append(subset)
                    if len(found) == 2:
                        break
        if not found:
            return None
        subset = found[1] if len(found) == 2 and self.rnd.random() < 0.25 else found[0]
        target = self.attrs[index]
        noun = "object" if _SHAPE in exclude else target[_SHAPE]
        return "the " + " ".join([target[key] for key in subset] + [noun])

    def _describable(self, exclude: tuple[int, ...]) -> tuple[int, str] | None:
        """A random object with a unique description avoiding ``exclude``, and that description."""
        n = len(self.attrs)
        start = int(self.rnd.random() * n)
        for step in range(n):
            index = (start + step) % n
            description = self.describe(index, exclude)
            if description is not None:
                return index, description
        return None

    def _ask_attribute(self, key: int, question_type: str, template: str) -> Question | None:
        found = self._describable((key,))
        if found is None:
            return None
        index, description = found
        answer = self.attrs[index][key]
        return Question(template.format(description), answer, question_type, "other", question_type)

    def ask_colour(self) -> Question | None:
        return self._ask_attribute(_COLOUR, "colour", "What colour is {}?")

    def ask_shape(self) -> Question | None:
        return self._ask_attribute(_SHAPE, "shape", "What shape is {}?")

    def ask_pattern(self) -> Question | None:
        return self._ask_attribute(_PATTERN, "pattern", "What pattern does {} have?")

    def ask_count(self) -> Question | None:
        rnd, draw = self.rnd, self.rnd.random()
        if draw < 0.35:
            return Question("How many objects are there?", str(len(self.attrs)), "count", "number",
                            "number")
        key = (_COLOUR if draw < 0.55 else _SHAPE if draw < 0.75 else _SIZE if draw < 0.87
               else _PATTERN)
        value = _pick(rnd, self.attrs)[key] if rnd.random() < 0.6 else _pick(rnd, _VOCAB[key])
        count = sum(1 for a in self.attrs if a[key] == value)
        text = (f"How many {value}s are there?" if key == _SHAPE
                else f"How many {value} objects are there?")
        return Question(text, str(count), "count", "number", "number")

    def ask_exists(self) -> Question | None:
        rnd, draw = self.rnd, self.rnd.random()
        key = _COLOUR if draw < 0.7 else _SIZE if draw < 0.85 else _PATTERN
        present = {(a[key], a[_SHAPE]) for a in self.attrs}
        if rnd.random() < 0.5:
            adjective, noun = _pick(rnd, sorted(present))
        else:
            while True:    # at most 5 of >= 12 combinations are present, so this ends quickly
                adjective, noun = _pick(rnd, _VOCAB[key]), _pick(rnd, SHAPES)
                if (adjective, noun) not in present:
                    break
        answer = "yes" if (adjective, noun) in present else "no"
        return Question(f"Is there {_article(adjective)} {adjective} {noun}?", answer, "exists",
                        "yes/no", "yes/no")

    def ask_spatial(self) -> Question | None:
        n = len(self.objects)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        start = int(self.rnd.random() * len(pairs)) if pairs else 0
        for step in range(len(pairs)):
            i, j = pairs[(start + step) % len(pairs)]
            a, b = self.objects[i], self.objects[j]
            axes = [axis for axis, gap in (("x", b.x - a.x), ("y", b.y - a.y))
                    if abs(gap) >= self.spatial_gap]
            if not axes:
                continue
            first, second = self.describe(i), self.describe(j)
            if first is None or second is None:
                continue
            if _pick(self.rnd, axes) == "x":
                true_rel, false_rel = (("left of", "right of") if a.x < b.x
                                       else ("right of", "left of"))
            else:
                true_rel, false_rel = ("above", "below") if a.y < b.y else ("below", "above")
            answer = "yes" if self.rnd.random() < 0.5 else "no"
            relation = true_rel if answer == "yes" else false_rel
            return Question(f"Is {first} {relation} {second}?", answer, "spatial", "yes/no",
                            "yes/no")
        return None

    def ask_nearest(self) -> Question | None:
        if len(self.objects) < 2:
            return None
        order = sorted(range(len(self.objects)), key=lambda i: self.objects[i].depth)
        depth = [self.objects[i].depth for i in order]
        options = []
        if depth[1] - depth[0] > DEPTH_GAP_M:
            options.append(("nearest", order[0]))
        if depth[-1] - depth[-2] > DEPTH_GAP_M:
            options.append(("farthest", order[-1]))
        if not options:
            return None
        which, index = _pick(self.rnd, options)
        key = _pick(self.rnd, (_COLOUR, _SHAPE, _PATTERN))
        text = {_COLOUR: f"What colour is the {which} object?",
                _SHAPE: f"What shape is the {which} object?",
                _PATTERN: f"What pattern does the {which} object have?"}[key]
        kind = {_COLOUR: "colour", _SHAPE: "shape", _PATTERN: "pattern"}[key]
        return Question(text, self.attrs[index][key], "nearest", "other", kind)

    def ask_unanswerable(self) -> Question | None:
        rnd = self.rnd
        found = self._describable(()) if rnd.random() < 0.6 else None
        if found is not None:     # a property no image shows
            text = _pick(rnd, _UNKNOWABLE).format(found[1])
        else:                     # an object that is not there
            present = {a[_SHAPE] for a in self.attrs}
            missing = _pick(rnd, [s for s in SHAPES if s not in present])
            text = _pick(rnd, ("What colour is the {}?", "What pattern does the {} have?",
                               "Is the {} large?")).format(missing)
        return Question(text, UNANSWERABLE, "unanswerable", "unanswerable", "unanswerable")

    def ask_knowledge(self) -> Question | None:
        if self.rnd.random() < 0.5:
            return self._ask_corners() or self._ask_same_colour()
        return self._ask_same_colour() or self._ask_corners()

    def _ask_corners(self) -> Question | None:
        found = self._describable((_SHAPE,))
        if found is None:
            return None
        index, description = found
        shape = self.attrs[index][_SHAPE]
        return Question(f"How many corners does {description} have?", str(_CORNERS[shape]),
                        "knowledge", "number", "corners", (self.kb.corner_fact[shape],))

    def _ask_same_colour(self) -> Question | None:
        found = self._describable((_COLOUR,))
        if found is None:
            return None
        index, description = found
        items = self.kb.coloured_items[self.attrs[index][_COLOUR]]
        if not items:
            return None
        category, item, fact_id = _pick(self.rnd, items)
        return Question(f"Which {category} has the same colour as {description}?", item,
                        "knowledge", "other", category, (fact_id,))

    def questions(self, count: int, unanswerable_fraction: float, knowledge_fraction: float,
                  type_counts: dict[str, int]) -> list[Question]:
        """``count`` distinct questions where the scene allows.

        Unanswerable and knowledge questions come at their fractions; the rest go to the visual
        type asked least so far (``type_counts``, shared across a split and updated here), a type
        this scene cannot support passing its turn to the next, so the visual types stay about
        equally frequent although some (spatial, nearest) fit fewer scenes.
        """
        rnd, asked, seen = self.rnd, [], set()
        for _ in range(count):
            draw = rnd.random()
            offset = int(rnd.random() * len(VISUAL_TYPES))     # random tie-break (sort is stable)
            visual = sorted(VISUAL_TYPES[offset:] + VISUAL_TYPES[:offset],
                            key=type_counts.__getitem__)
            if draw < unanswerable_fraction:
                candidates = ["unanswerable"] * 4 + visual
            elif draw < unanswerable_fraction + knowledge_fraction:
                candidates = ["knowledge"] * 4 + visual
            else:
                candidates = visual * 2
            question = None
            for question_type in candidates:
                candidate = self.asks[question_type]()
                if candidate is not None:
                    question = question or candidate
                    if candidate.text not in seen:
                        question = candidate
                        break
            asked.append(question)
            seen.add(question.text)
            if question.question_type in type_counts:
                type_counts[question.question_type] += 1
        return asked


# ---------------------------------------------------------------------------------------------
# Annotators
# ---------------------------------------------------------------------------------------------

def _variants() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """answer -> (variants the VQA normalisation maps to it, variants it does not)."""
    table: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for n, word in enumerate(_NUMBER_WORDS):
        table[str(n)] = ((word, f"{n}.") + (("none",) if n == 0 else ()), ())
    table["yes"] = (("Yes", "yes.", "YES"), ("yeah", "yep"))
    table["no"] = (("No", "no."), ("nope",))
    table[UNANSWERABLE] = (("Unanswerable", "unanswerable."), ("unsuitable", "unsuitable image"))
    unmapped = {"grey": ("gray",), "purple": ("violet",), "circle": ("round",),
                "triangle": ("triangular",), "diamond": ("rhombus",), "hexagon": ("hexagonal",),
                "striped": ("stripes", "stripy"), "dotted": ("spotted", "polka dots"),
                "plain": ("solid",)}
    for word in COLOURS + PATTERNS:
        table[word] = ((word.capitalize(), f"{word}."), unmapped.get(word, ()))
    nouns = {item: plural for _, item, plural, _ in _COLOURED_ITEMS}
    nouns.update({shape: shape + "s" for shape in SHAPES})
    for noun, plural in nouns.items():
        mapped = (noun.capitalize(), f"{_article(noun)} {noun}", f"the {noun}")
        table[noun] = (mapped, unmapped.get(noun, ()) + ((plural,) if plural != noun else ()))
    return table


_VARIANTS = _variants()
_WRONG_POOLS: dict[str, tuple[str, ...]] = {
    "colour": COLOURS, "shape": SHAPES, "pattern": PATTERNS, "yes/no": ("yes", "no"),
    "number": tuple(str(n) for n in range(6)), "corners": ("0", "3", "4", "5", "6", "8", "10"),
    "fruit": tuple(item for category, item, _, _ in _COLOURED_ITEMS if category == "fruit"),
    "animal": tuple(item for category, item, _, _ in _COLOURED_ITEMS if category == "animal"),
    "unanswerable": ("nothing", "no", "red", "circle", "1"),
}


UNMAPPED_SHARE = 0.35    # share of the synonym answers that the VQA normalisation does not map


def annotate(questions: list[Question], rng: np.random.Generator, error_rate: float,
             synonym_rate: float) -> list[tuple[str, ...]]:
    """Ten annotator answers for each question (see the module docstring).

    Each annotator independently answers wrongly with probability ``error_rate`` (a plausible
    answer of the same kind), writes a variant with probability ``synonym_rate`` (a share
    UNMAPPED_SHARE of them one the VQA normalisation does not map), else the true answer
    verbatim; answers are then corrected, last first, until the true answer has a strict
    majority (MIN_EXACT_ANSWERS).
    """
    shape = (len(questions), ANSWERS_PER_QUESTION)
    draw, choice = rng.random(shape), rng.random(shape)
    unmapped_until = error_rate + synonym_rate * UNMAPPED_SHARE
    code = np.select([draw < error_rate, draw < unmapped_until, draw < error_rate + synonym_rate],
                     [_WRONG, _UNMAPPED, _MAPPED], _EXACT)
    rows, cols = np.nonzero(code)             # row-major: grouped by question
    codes, picks = code[rows, cols].tolist(), choice[rows, cols].tolist()
    rows, cols = rows.tolist(), cols.tolist()
    result, position, n_deviations = [], 0, len(rows)
    for index, question in enumerate(questions):
        truth = question.answer
        if position == n_deviations or rows[position] != index:
            result.append((truth,) * ANSWERS_PER_QUESTION)
            continue
        answers = [truth] * ANSWERS_PER_QUESTION
        while position < n_deviations and rows[position] == index:
            answers[cols[position]] = _deviant(question, codes[position], picks[position])
            position += 1
        missing = MIN_EXACT_ANSWERS - answers.count(truth)
        for slot in range(ANSWERS_PER_QUESTION - 1, -1, -1):
            if missing <= 0:
                break
            if answers[slot] != truth:
                answers[slot] = truth
                missing -= 1
        result.append(tuple(answers))
    return result


_EXACT, _WRONG, _MAPPED, _UNMAPPED = 0, 1, 2, 3
_WRONG_BY_TRUTH: dict[tuple[str, str], tuple[str, ...]] = {}


def _deviant(question: Question, code: int, pick: float) -> str:
    """The answer of an annotator who errs (``code`` _WRONG) or writes a variant.

    ``pick`` in [0, 1) chooses from the pool."""
    truth = question.answer
    if code == _WRONG:
        key = (question.answer_kind, truth)
        pool = _WRONG_BY_TRUTH.get(key)
        if pool is None:
            pool = _WRONG_BY_TRUTH[key] = tuple(w for w in _WRONG_POOLS[key[0]] if w != truth)
    else:
        mapped, unmapped = _VARIANTS.get(truth, ((), ()))
        pool = unmapped if code == _UNMAPPED and unmapped else mapped
        if not pool:
            return truth
    return pool[int(pick * len(pool))]


# Image-level "style" questions (seed 002's ArtQuest asks about a painting's style): the pattern
# that covers most of the picture. Not among a world's eight questions per image (the built-in
# data stays as it is); data.style_questions adds them to the student's labelled set and val
# (vldistill.jobs.vqa_kd.data), and the ArtQuest export writes them.
STYLE_TEMPLATES = ("What is the main pattern in this picture?",
                   "Which pattern covers most of this picture?")
STYLE_ID_OFFSET = 90          # question_id = image_id * 100 + 90 + k
# a large object covers (0.19 / 0.11)^2 ~ 3x the area of a small one (shapesworld_render)
SIZE_AREA = {"small": 1.0, "large": 3.0}


def main_pattern(scene: Scene) -> str | None:
    """The pattern with the most object area in the scene; None on a tie."""
    area: dict[str, float] = {}
    for obj in scene.objects:
        area[obj.pattern] = area.get(obj.pattern, 0.0) + SIZE_AREA[obj.size]
    ranked = sorted(area.values(), reverse=True)
    if len(ranked) > 1 and ranked[0] == ranked[1]:
        return None
    return max(area, key=area.get)


def style_questions(scene: Scene, count: int, stride: int = 100) -> list[Sample]:
    """Up to ``count`` style questions about ``scene`` (none when two patterns tie), each with
    ten identical annotator answers; question ids ``image_id * stride + 90 + k``."""
    answer = main_pattern(scene)
    if answer is None or count <= 0:
        return []
    return [Sample(question_id=scene.image_id * stride + STYLE_ID_OFFSET + k,
                   image_id=scene.image_id, question=STYLE_TEMPLATES[k % len(STYLE_TEMPLATES)],
                   answers=(answer,) * 10, question_type="style", answer_type="other")
            for k in range(min(count, len(STYLE_TEMPLATES)))]
