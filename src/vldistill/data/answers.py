"""VQA answer normalisation, soft scores and the answer vocabulary.

Our own re-implementation of the answer processing in the official VQA evaluation script
(GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, current master), built to
give exactly what it gives, quirks included. The metric that uses it lives in
:mod:`vldistill.eval.vqa_accuracy`; this module is the data layer (soft training targets and the
answer vocabulary) and must not import from ``vldistill.eval``.

Official per-question algorithm (master), for one prediction and the annotator answers::

    every gt answer and the prediction: "\\n" -> " ", "\\t" -> " ", strip()
    if len(set(gt answers)) > 1:                          # annotators disagree
        every gt answer = processDigitArticle(processPunctuation(gt answer))
        prediction      = processDigitArticle(processPunctuation(prediction))
    acc = mean over annotators i of min(1, #{j != i : gt_j == prediction} / 3)

Quirks of the official script, all reproduced here:

1.  **Normalisation only when annotators disagree.** When the (newline/tab-replaced, stripped)
    gt answers are all identical, *neither* the gt answers *nor the prediction* go through
    punctuation / digit / article / contraction processing, and nothing is lower-cased: with
    ten "yes" the prediction "Yes" or "yes." scores 0. The maintainers confirmed this is
    intended (GT-Vision-Lab/VQA issue #14: to leave OCR-style answers untouched).
2.  **Lower-casing happens only inside processDigitArticle**, i.e. only in the disagree case.
    Newline/tab replacement and strip() are applied to prediction and gt answers always.
3.  The unanimity test ``len(set(gtAnswers)) > 1`` is taken *after* strip(), so "yes" and
    "yes " count as the same answer; it is taken *before* normalisation, so "yes" and "Yes"
    count as a disagreement (and then both normalise to "yes").
4.  **Leave-one-annotator-out averaging.** For each of the n annotators, the others (n - 1)
    are compared with the prediction. With k of 10 annotators matching, the k matching ones
    each see k - 1 matches and the 10 - k others see k, so
    acc = (k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10: k=1 -> 0.3, k=2 -> 0.6,
    k=3 -> 0.9, k>=4 -> 1. A single annotator therefore always gives 0 (nobody is left).
    The official code excludes the current annotator with ``item != gtAnsDatum`` on answer
    dicts, which removes exactly one entry because each dict carries a unique ``answer_id``;
    we exclude by position, which is the same for real annotation files.
5.  **Punctuation marks** (master list): ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``.
    The apostrophe, colon, period, ``* # $ % & ^ ~ |`` are *not* in the list and are kept
    (the period has its own rule, see 7). (An older revision of the script had
    ``; : / ' [ ] " ( ) = + \\ _ > < @ ` , ?`` instead.)
6.  **Punctuation rule**, decided per mark on the *input* text (not the partly edited one):
    every occurrence of the mark is deleted if the mark occurs anywhere next to a plain space
    (``mark + " "`` or ``" " + mark`` in the text; a no-break space does not count) *or* if the text contains a digit-comma-digit
    (commaStrip ``(\\d)(\\,)(\\d)``) anywhere; otherwise every occurrence is replaced by a space.
    So "black-and-white" -> "black and white" but "a-b - c" -> "ab  c" (one adjacent "-"
    deletes all of them), and "1,000" -> "1000" while "red,blue" -> "red blue"; a
    digit-comma-digit anywhere also deletes (not spaces) *every other* mark: "1,2 a/b" -> "12 ab".
7.  **periodStrip** is ``(?!<=\\d)(\\.)(?!\\d)``: the author meant a look-*behind* ``(?<!\\d)``
    but wrote a look-*ahead* for the literal text ``<=`` + digit, which can never match where a
    "." stands; the pattern is therefore just "a period not followed by a digit": "yes." ->
    "yes", "3.5" kept, "3." -> "3", ".5" kept, "e.g." -> "eg".
8.  **re.UNICODE passed as the count.** ``periodStrip.sub("", outText, re.UNICODE)`` passes
    the flag (value 32) as the positional ``count`` argument, so at most the first 32 such
    periods are removed; a 33rd is kept. (Patterns on ``str`` are Unicode anyway in Python 3,
    so ``\\d`` matches any Unicode decimal digit, e.g. "٣".)
9.  **processDigitArticle**: lower-case, split on whitespace (runs of spaces collapse), map
    whole number words ``none zero one ... ten`` to digits (note "none" -> "0"; "eleven" and
    "two." or "twenty" as part of a longer token are untouched), drop the articles
    ``a an the``, then expand contraction tokens (``dont`` -> ``don't``). Number words are
    mapped before the article test, contractions after.
10. **Contractions map quirks**: keys with capitals (``Im``, ``Ive``, ``Id've``, ``I'dve``)
    can never match because the text is lower-cased first ("im" stays "im"); ``somebody'd``
    maps *backwards* to ``somebodyd``; ``let's`` and ``she's`` map to themselves; ambiguous
    forms such as ``wed``, ``ill``, ``its``, ``hell``, ``shed`` are absent.
11. The official ``manualMap.setdefault(word, word)`` adds every word it sees to the map (the
    map grows without bound); it has no effect on the output. Our map is read-only.
12. Scores: the official script reports ``round(100 * mean, 2)``; we keep the unrounded value.
    An older revision also accumulated the *last annotator's* accuracy (not the question mean)
    into the per-question-type / per-answer-type lists; master uses the question mean, as we do.

This module adds, for training: :func:`normalize_answer` (the full normalisation, always),
:func:`soft_scores` (the accuracy each distinct normalised answer would get, matching on
normalised answers: the VQA soft target) and :class:`AnswerVocab`.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Marks handled by the punctuation rule (quirk 5). The period is handled separately.
_PUNCTUATION_MARKS = ";/[]\"{}()=+\\_-><@`,?!"
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# Equivalent to the official "(?!<=\d)(\.)(?!\d)", whose first look-ahead never fires (quirk 7).
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# The official script passes re.UNICODE (== 32) as sub()'s count argument (quirk 8).
_PERIOD_STRIP_COUNT = int(re.UNICODE)

_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# The official contractions table, one "key value" pair per line (quirk 10).
_CONTRACTIONS_TABLE = """
aint ain't
arent aren't
cant can't
couldve could've
couldnt couldn't
couldn'tve couldn't've
couldnt've couldn't've
didnt didn't
doesnt doesn't
dont don't
hadnt hadn't
hadnt've hadn't've
hadn'tve hadn't've
hasnt hasn't
havent haven't
hed he'd
hed've he'd've
he'dve he'd've
hes he's
howd how'd
howll how'll
hows how's
Id've I'd've
I'dve I'd've
Im I'm
Ive I've
isnt isn't
itd it'd
itd've it'd've
it'dve it'd've
itll it'll
let's let's
maam ma'am
mightnt mightn't
mightnt've mightn't've
mightn'tve mightn't've
mightve might've
mustnt mustn't
mustve must've
neednt needn't
notve not've
oclock o'clock
oughtnt oughtn't
ow's'at 'ow's'at
'ows'at 'ow's'at
'ow'sat 'ow's'at
shant shan't
shed've she'd've
she'dve she'd've
she's she's
shouldve should've
shouldnt shouldn't
shouldnt've shouldn't've
shouldn'tve shouldn't've
somebody'd somebodyd
somebodyd've somebody'd've
somebody'dve somebody'd've
somebodyll somebody'll
somebodys somebody's
someoned someone'd
someoned've someone'd've
someone'dve someone'd've
someonell someone'll
someones someone's
somethingd something'd
somethingd've something'd've
something'dve something'd've
somethingll something'll
thats that's
thered there'd
thered've there'd've
there'dve there'd've
therere there're
theres there's
theyd they'd
theyd've they'd've
they'dve they'd've
theyll they'll
theyre they're
theyve they've
twas 'twas
wasnt wasn't
wed've we'd've
we'dve we'd've
weve we've
werent weren't
whatll what'll
whatre what're
whats what's
whatve what've
whens when's
whered where'd
wheres where's
whereve where've
whod who'd
whod've who'd've
who'dve who'd've
wholl who'll
whos who's
whove who've
whyll why'll
whyre why're
whys why's
wont won't
wouldve would've
wouldnt wouldn't
wouldnt've wouldn't've
wouldn'tve wouldn't've
yall y'all
yall'll y'all'll
y'allll y'all'll
yall'd've y'all'd've
y'alld've y'all'd've
y'all'dve y'all'd've
youd you'd
youd've you'd've
you'dve you'd've
youll you'll
youre you're
youve you've
"""
CONTRACTIONS: dict[str, str] = dict(
    line.split(" ") for line in _CONTRACTIONS_TABLE.strip().splitlines())

# The VizWiz script's contractions table (VizWiz API vqaEval.py), one "key value" pair per line.
# Same 120 keys in spirit, different characters: most keys and values use the curly apostrophe
# U+2019 ("dont" -> "don’t"), a few keep the straight one ("weve" -> "we've", "wheres" ->
# "where's"), and "somebody’d" maps to "somebodyd". Reproduced character for character, since
# the metric compares strings exactly (docs/notes/vizwiz-eval.md).
_VIZWIZ_CONTRACTIONS_TABLE = """
aint ain't
arent aren't
cant can't
couldve could've
couldnt couldn't
couldn'tve couldn’t’ve
couldnt’ve couldn’t’ve
didnt didn’t
doesnt doesn’t
dont don’t
hadnt hadn’t
hadnt’ve hadn’t’ve
hadn'tve hadn’t’ve
hasnt hasn’t
havent haven’t
hed he’d
hed’ve he’d’ve
he’dve he’d’ve
hes he’s
howd how’d
howll how’ll
hows how’s
Id’ve I’d’ve
I’dve I’d’ve
Im I’m
Ive I’ve
isnt isn’t
itd it’d
itd’ve it’d’ve
it’dve it’d’ve
itll it’ll
let’s let’s
maam ma’am
mightnt mightn’t
mightnt’ve mightn’t’ve
mightn’tve mightn’t’ve
mightve might’ve
mustnt mustn’t
mustve must’ve
neednt needn’t
notve not’ve
oclock o’clock
oughtnt oughtn’t
ow’s’at ’ow’s’at
’ows’at ’ow’s’at
’ow’sat ’ow’s’at
shant shan’t
shed’ve she’d’ve
she’dve she’d’ve
she’s she’s
shouldve should’ve
shouldnt shouldn’t
shouldnt’ve shouldn’t’ve
shouldn’tve shouldn’t’ve
somebody’d somebodyd
somebodyd’ve somebody’d’ve
somebody’dve somebody’d’ve
somebodyll somebody’ll
somebodys somebody’s
someoned someone’d
someoned’ve someone’d’ve
someone’dve someone’d’ve
someonell someone’ll
someones someone’s
somethingd something’d
somethingd’ve something’d’ve
something’dve something’d’ve
somethingll something’ll
thats that’s
thered there’d
thered’ve there’d’ve
there’dve there’d’ve
therere there’re
theres there’s
theyd they’d
theyd’ve they’d’ve
they’dve they’d’ve
theyll they’ll
theyre they’re
theyve they’ve
twas ’twas
wasnt wasn’t
wed’ve we’d’ve
we’dve we’d’ve
weve we've
werent weren’t
whatll what’ll
whatre what’re
whats what’s
whatve what’ve
whens when’s
whered where’d
wheres where's
whereve where’ve
whod who’d
whod’ve who’d’ve
who’dve who’d’ve
wholl who’ll
whos who’s
whove who've
whyll why’ll
whyre why’re
whys why’s
wont won’t
wouldve would’ve
wouldnt wouldn’t
wouldnt’ve wouldn’t’ve
wouldn’tve wouldn’t’ve
yall y’all
yall’ll y’all’ll
y’allll y’all’ll
yall’d’ve y’all’d’ve
y’alld’ve y’all’d’ve
y’all’dve y’all’d’ve
youd you’d
youd’ve you’d’ve
you’dve you’d’ve
youll you’ll
youre you’re
youve you’ve
"""
VIZWIZ_CONTRACTIONS: dict[str, str] = dict(
    line.split(" ") for line in _VIZWIZ_CONTRACTIONS_TABLE.strip().splitlines())

_NORMALIZE_CACHE_SIZE = 1 << 17


def strip_answer(text: str) -> str:
    """Replace newlines and tabs by spaces and strip: what the script does to every answer."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation`` (quirks 5-8 in the module docstring).

    >>> process_punctuation("black-and-white")
    'black and white'
    >>> process_punctuation("1,000.")
    '1000'
    """
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    table: dict[int, str] = {}
    for mark in _PUNCTUATION_MARKS:
        if mark not in text:
            continue
        next_to_space = (mark + " ") in text or (" " + mark) in text
        table[ord(mark)] = "" if delete_all or next_to_space else " "
    out = text.translate(table) if table else text
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str, contractions: dict[str, str] | None = None) -> str:
    """The official ``processDigitArticle``: lower, split, number words, articles, contractions
    (the VQAv2 table unless another is given, e.g. :data:`VIZWIZ_CONTRACTIONS`).

    >>> process_digit_article("The Two  dogs dont")
    "2 dogs don't"
    """
    table = CONTRACTIONS if contractions is None else contractions
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(table.get(word, word))
    return " ".join(words)


@lru_cache(maxsize=_NORMALIZE_CACHE_SIZE)
def normalize_answer(text: str) -> str:
    """The full official normalisation, applied unconditionally.

    Newline/tab -> space, strip, :func:`process_punctuation`, :func:`process_digit_article`.
    The official metric applies the last two only when annotators disagree (quirk 1); use
    :func:`vldistill.eval.vqa_accuracy.vqa_accuracy` for the metric itself. Cached.

    >>> normalize_answer("  Two Dogs.\\n")
    '2 dogs'
    """
    return process_digit_article(process_punctuation(strip_answer(text)))


def leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over annotators i of ``min(1, #{j != i : answers[j] == prediction} / 3)``.

    Exact string comparison, no normalisation; summed in annotator order like the official
    script so the float is bit-identical. ``answers`` must be non-empty.
    """
    matches = [answer == prediction for answer in answers]
    total = sum(matches)
    # min(1, ...) keeps the official int 1 / float mix, so sum() rounds exactly as it does.
    per_annotator = [min(1, float(total - matched) / 3) for matched in matches]
    return float(sum(per_annotator)) / len(per_annotator)


def soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """VQA soft target: the accuracy each distinct normalised answer would get as a prediction.

    Every answer is normalised (always, unlike the metric's quirk 1) and matched on the
    normalised form; keys come in order of first appearance. An empty list gives ``{}``.

    >>> scores = soft_scores(["yes"] * 8 + ["No", "no."])
    >>> {answer: round(score, 6) for answer, score in scores.items()}
    {'yes': 1.0, 'no': 0.6}
    """
    if isinstance(answers, str):
        raise TypeError(
            f"soft_scores expects a sequence of annotator answers, got the string {answers!r}; "
            f"wrap a single answer in a list: [{answers!r}].")
    normalised = [normalize_answer(answer) for answer in answers]
    return {answer: leave_one_out_accuracy(answer, normalised)
            for answer in dict.fromkeys(normalised)}


@dataclass(frozen=True)
class VocabCoverage:
    """How well an answer vocabulary covers a set of questions' annotator answers.

    ``questions`` counts labelled questions (at least one answer); ``unlabelled_questions`` those
    with none, which are left out of every other count. ``top_answer_outside`` counts questions
    whose best soft score is reachable only by an answer outside the vocabulary (if any answer
    tied for best is inside, the question is not counted). ``best_possible_accuracy`` is the mean
    over labelled questions of the best soft score of an in-vocabulary answer, in [0, 1]: the
    ceiling of a classifier over this vocabulary, measured on normalised answers.
    """

    vocab_size: int
    questions: int
    unlabelled_questions: int
    top_answer_outside: int
    questions_without_vocab_answer: int
    annotator_answers: int
    annotator_answers_outside: int
    best_possible_accuracy: float

    def summary(self) -> str:
        def share(part: int, whole: int) -> str:
            return f"{100.0 * part / whole:.2f}%" if whole else "n/a"

        return (
            f"answer vocabulary of {self.vocab_size} over {self.questions} labelled questions "
            f"({self.unlabelled_questions} unlabelled skipped): "
            f"best answer outside the vocabulary for {self.top_answer_outside} "
            f"({share(self.top_answer_outside, self.questions)}); "
            f"no answer in the vocabulary for {self.questions_without_vocab_answer} "
            f"({share(self.questions_without_vocab_answer, self.questions)}); "
            f"{self.annotator_answers_outside} of {self.annotator_answers} annotator answers "
            f"outside ({share(self.annotator_answers_outside, self.annotator_answers)}); "
            f"best possible accuracy {100.0 * self.best_possible_accuracy:.2f}%")


class AnswerVocab:
    """Normalised answers a classifier head predicts, most frequent first.

    Build it with :meth:`build` from training answers. Indices are stable: ordered by count
    (descending), ties alphabetically. The empty string (e.g. an answer that was only "the")
    is never part of a vocabulary.
    """

    def __init__(self, answers: Sequence[str]) -> None:
        self._check_answers(answers)
        bad = [a for a in answers if a != normalize_answer(a)]
        if bad:
            raise ValueError(
                f"AnswerVocab answers must already be normalised; got {bad[:5]!r} (normalised: "
                f"{[normalize_answer(a) for a in bad[:5]]!r}). Use AnswerVocab.build, which "
                f"normalises, or apply normalize_answer first.")
        self._set_answers(answers)

    @staticmethod
    def _check_answers(answers: Sequence[str]) -> None:
        if isinstance(answers, str) or not all(isinstance(a, str) for a in answers):
            raise TypeError(
                f"AnswerVocab expects a list of answer strings, got {answers!r:.200}; "
                f"pass e.g. ['yes', 'no', '2'] (or use AnswerVocab.build on raw answers).")
        if len(answers) == 0:
            raise ValueError(
                "AnswerVocab got an empty answer list; a vocabulary needs at least one answer. "
                "Build it with AnswerVocab.build(...) from labelled training answers.")
        if "" in answers:
            raise ValueError(
                "AnswerVocab got the empty string as an answer; remove it (build() drops it).")
        duplicates = sorted(a for a, n in Counter(answers).items() if n > 1)
        if duplicates:
            raise ValueError(
                f"AnswerVocab got duplicate answers {duplicates[:5]!r}; each answer must "
                f"appear once.")

    def _set_answers(self, answers: Sequence[str]) -> None:
        self._answers = list(answers)
        self._index = {answer: i for i, answer in enumerate(self._answers)}

    @classmethod
    def build(cls, answer_lists: Iterable[Sequence[str]], min_count: int = 1,
              max_size: int | None = None) -> AnswerVocab:
        """Count every annotator answer (normalised) and keep the frequent ones.

        ``answer_lists``: one sequence of raw annotator answers per training question.
        Keeps answers seen at least ``min_count`` times, at most ``max_size`` of them.
        """
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}.")
        if max_size is not None and (isinstance(max_size, bool)
                                     or not isinstance(max_size, int) or max_size < 1):
            raise ValueError(f"max_size must be None or an integer >= 1, got {max_size!r}.")
        counts: Counter[str] = Counter()
        for answers in answer_lists:
            counts.update(normalize_answer(answer) for answer in _as_answer_list(answers))
        counts.pop("", None)
        if not counts:
            raise ValueError(
                "AnswerVocab.build got no usable answers: expected an iterable of annotator "
                "answer lists with at least one non-empty answer, e.g. [['yes', 'yes', 'no']]. "
                "Pass the labelled training samples' answers (sample.answers), not unlabelled "
                "transfer-set samples.")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [answer for answer, count in ranked if count >= min_count][:max_size]
        if not kept:
            raise ValueError(
                f"AnswerVocab.build: no answer occurs at least min_count={min_count} times "
                f"(most frequent: {ranked[0][0]!r} x{ranked[0][1]}); lower min_count.")
        # Built answers are normalised by construction. They skip the fixed-point check of
        # __init__: normalisation is not idempotent for > 32 trailing periods (quirk 8).
        vocab = cls.__new__(cls)
        vocab._set_answers(kept)
        return vocab

    def __len__(self) -> int:
        return len(self._answers)

    def __repr__(self) -> str:
        return f"AnswerVocab({len(self)} answers, first {self._answers[:5]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnswerVocab) and self._answers == other._answers

    @property
    def answers(self) -> list[str]:
        """The answers in index order (a copy)."""
        return list(self._answers)

    def index(self, answer: str) -> int | None:
        """Index of ``answer`` after normalisation, or None when it is not in the vocabulary."""
        return self._index.get(normalize_answer(answer))

    def answer(self, i: int) -> str:
        """The answer string at index ``i`` (negative indices are rejected, not wrapped)."""
        position = operator.index(i)
        if not 0 <= position < len(self._answers):
            raise IndexError(
                f"answer index {position} is out of range for a vocabulary of "
                f"{len(self._answers)} answers; valid indices are 0..{len(self._answers) - 1}.")
        return self._answers[position]

    def targets(self, answers: Sequence[str]) -> tuple[list[int], list[float]]:
        """Sparse soft targets for one question: (indices ascending, soft scores).

        Answers outside the vocabulary are dropped here; :meth:`coverage` counts them.
        """
        pairs = sorted((self._index[answer], score)
                       for answer, score in soft_scores(_as_answer_list(answers)).items()
                       if answer in self._index)
        return [i for i, _ in pairs], [score for _, score in pairs]

    def dense_targets(self, answer_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Soft targets for N questions as a float32 array (N, V)."""
        dense = np.zeros((len(answer_lists), len(self._answers)), dtype=np.float32)  # (N, V)
        for row, answers in enumerate(answer_lists):
            indices, scores = self.targets(answers)
            dense[row, indices] = scores
        return dense

    def to_json(self) -> list[str]:
        """A plain list of the answers in index order."""
        return list(self._answers)

    @classmethod
    def from_json(cls, data: Sequence[str]) -> AnswerVocab:
        """Inverse of :meth:`to_json`."""
        if not isinstance(data, list | tuple):
            raise TypeError(
                f"AnswerVocab.from_json expects the list written by to_json(), got "
                f"{type(data).__name__}: {data!r:.200}.")
        return cls(list(data))

    def coverage(self, answer_lists: Iterable[Sequence[str]]) -> VocabCoverage:
        """Count how many questions and annotator answers fall outside this vocabulary."""
        questions = unlabelled = top_outside = without_answer = 0
        annotator_answers = annotator_outside = 0
        best_total = 0.0
        for answers in answer_lists:
            answers = _as_answer_list(answers)
            if len(answers) == 0:
                unlabelled += 1
                continue
            questions += 1
            normalised = [normalize_answer(answer) for answer in answers]
            annotator_answers += len(normalised)
            annotator_outside += sum(answer not in self._index for answer in normalised)
            scores = soft_scores(answers)
            inside = [score for answer, score in scores.items() if answer in self._index]
            best_inside = max(inside, default=0.0)
            without_answer += not inside
            top_outside += best_inside < max(scores.values())
            best_total += best_inside
        return VocabCoverage(
            vocab_size=len(self._answers), questions=questions, unlabelled_questions=unlabelled,
            top_answer_outside=top_outside, questions_without_vocab_answer=without_answer,
            annotator_answers=annotator_answers, annotator_answers_outside=annotator_outside,
            best_possible_accuracy=best_total / questions if questions else 0.0)


def _as_answer_list(answers: Sequence[str]) -> Sequence[str]:
    if isinstance(answers, str):
        raise TypeError(
            f"expected one sequence of annotator answers per question, got the string "
            f"{answers!r}; wrap it: [{answers!r}] (answer_lists is a list of such lists).")
    return answers
