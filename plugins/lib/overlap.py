"""Overlap between evaluation items and training text: the one normalisation and the one matcher behind the
``decontaminate`` cleaning step and the overlap check made when a run is planned.

Normalisation is the cleaner's own (``cleaners.dedup.simplify_text``: datatrove's ``TextNormConfig`` —
lower case, punctuation to spaces, whitespace collapsed, diacritics dropped, optionally numbers to ``0``)
followed by its spaCy-compatible word split. The plan-time check also puts arithmetic in one order
(:func:`canonical_arithmetic`: "3 + 1", "1 plus 3" and "add 1 and 3" are one fact), so a held-out
question is not "new" because its operands were swapped.

Matching follows datatrove's n-gram decontamination (``datatrove/pipeline/decont/n_grams.py``): an item
is one word sequence (its question, then its answer), every word n-gram of it goes into an index, and a
text overlaps the item when any of the text's n-grams is in the index. With datatrove's
``find_query_ngrams=True, find_overlap_ngrams=True`` its query, label and query-to-label n-grams are
exactly the n-grams of that concatenation, so the two flag the same texts. One rule is ours: an item
shorter than n words (datatrove indexes nothing for it) is matched whole, as a word sequence inside the
text, so a short question ("Who are you?") is not invisible to the check.

Why our own code rather than datatrove's filter: datatrove builds its index from lighteval tasks (its
``NGramsDecontIndexer`` imports lighteval) and writes it to files for its executor; here the items come from
any file the one reader takes, the index is a dict of a few thousand strings, and the same matcher answers
both "does this document hold an item?" (cleaning) and "which items does the training data hold?" (the
plan-time check). N-grams are kept as strings, not 64-bit hashes, so there are no hash collisions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from lmforge.plugins.cleaners.dedup import _WORD, simplify_text

_NUMBER = r"\d+(?:[.,]\d+)?"
# one operator between two numbers; the words say which ones are commutative
_OPERATORS = {"+": "plus", "plus": "plus", "×": "times", "*": "times", "x": "times", "times": "times",
              "-": "minus", "−": "minus", "minus": "minus", "/": "divided by", "÷": "divided by",
              "divided by": "divided by"}
_OPERATOR = "|".join(sorted((re.escape(k) for k in _OPERATORS), key=len, reverse=True))
_CHAIN = re.compile(rf"(?<![\w.,]){_NUMBER}(?:\s*(?:{_OPERATOR})\s*{_NUMBER})+(?![\w]|[.,]\d)", re.IGNORECASE)
_PART = re.compile(rf"{_NUMBER}|{_OPERATOR}", re.IGNORECASE)
_PHRASE = re.compile(rf"\b(add|sum of|multiply|product of)\s+({_NUMBER})\s+and\s+({_NUMBER})(?![\w]|[.,]\d)",
                     re.IGNORECASE)
COMMUTATIVE = ("plus", "times")
_DIGIT = re.compile(r"\d")


def _value(number: str) -> float:
    return float(number.replace(",", "."))


def _chain(match: re.Match) -> str:
    parts = _PART.findall(match.group(0))
    numbers, operators = parts[0::2], [_OPERATORS[p.lower()] for p in parts[1::2]]
    if len(set(operators)) == 1 and operators[0] in COMMUTATIVE:
        numbers = sorted(numbers, key=_value)
    out = [numbers[0]]
    for operator, number in zip(operators, numbers[1:]):
        out += [operator, number]
    return " ".join(out)


def _phrase(match: re.Match) -> str:
    verb, a, b = match.groups()
    first, second = sorted((a, b), key=_value)
    return f"{verb} {first} and {second}"


def canonical_arithmetic(text: str) -> str:
    """Operators between numbers as words, and the operands of a sum or a product in ascending order:
    "What is 3 + 1?" and "What is 1 plus 3?" both become "What is 1 plus 3?"; "5 - 3" stays in order."""
    return _PHRASE.sub(_phrase, _CHAIN.sub(_chain, text))


def words(text: str, norm_numbers: bool = False, commutative: bool = False) -> list[str]:
    """The normalised words of ``text``: the cleaner's simplified text (numbers kept unless ``norm_numbers``),
    split as the MinHash step splits it; ``commutative`` first puts arithmetic in one order."""
    if commutative and _DIGIT.search(text):
        text = canonical_arithmetic(text)
    return _WORD.findall(simplify_text(text, norm_numbers=norm_numbers))


class OverlapIndex:
    """Word n-grams of evaluation items, and the texts that hold them.

    ``add(label, *texts)`` indexes one item: its texts' words in order as one sequence (its n-grams, or the
    whole sequence when it is shorter than ``n`` words). ``first_match(text)`` is the first indexed phrase a
    text holds (what the cleaning step needs); ``matches(text)`` every item it holds, and whether the text
    *is* the item (equal after normalisation) or holds one of its n-grams.
    """

    def __init__(self, n: int = 13, norm_numbers: bool = False, commutative: bool = False):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.norm_numbers, self.commutative = n, norm_numbers, commutative
        self.labels: list[Any] = []
        self._items: dict[str, list[int]] = {}  # an indexed phrase -> the items holding it
        # a phrase's first word -> its second word ("" for a one-word phrase) -> phrase lengths, longest first:
        # two dict look-ups rule out almost every position of a text before a phrase is joined
        self._starts: dict[str, dict[str, tuple[int, ...]]] = {}
        self._whole: dict[str, list[int]] = {}  # an item's whole normalised text -> items

    def words(self, text: str) -> list[str]:
        return words(text, self.norm_numbers, self.commutative)

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, label: Any, *texts: str) -> int | None:
        """Index one item (its texts joined in order); None when it has no words."""
        sequence = [w for text in texts if text for w in self.words(text)]
        if not sequence:
            return None
        item = len(self.labels)
        self.labels.append(label)
        n = self.n
        phrases = ([sequence[i:i + n] for i in range(len(sequence) - n + 1)] if len(sequence) >= n
                   else [sequence])
        for phrase in phrases:
            key = " ".join(phrase)
            holders = self._items.setdefault(key, [])
            if not holders or holders[-1] != item:
                holders.append(item)
                follows = self._starts.setdefault(phrase[0], {})
                second = phrase[1] if len(phrase) > 1 else ""
                lengths = follows.get(second, ())
                if len(phrase) not in lengths:
                    follows[second] = tuple(sorted((*lengths, len(phrase)), reverse=True))
        self._whole.setdefault(" ".join(sequence), []).append(item)
        return item

    def _phrases(self, text_words: list[str]) -> Iterator[tuple[str, list[int]]]:
        """(phrase, items) for every indexed phrase in the words, in text order."""
        size, starts, items = len(text_words), self._starts, self._items
        for start, word in enumerate(text_words):
            follows = starts.get(word)
            if follows is None:
                continue
            lengths = follows.get(text_words[start + 1], ()) if start + 1 < size else ()
            for length in (*lengths, *follows.get("", ())):
                if start + length <= size:
                    key = " ".join(text_words[start:start + length])
                    if key in items:
                        yield key, items[key]

    def first_match(self, text: str) -> str | None:
        """The first indexed phrase ``text`` holds (an n-gram, or a whole short item), or None."""
        return next((phrase for phrase, _ in self._phrases(self.words(text))), None)

    def matches(self, text: str) -> dict[int, tuple[str, str]]:
        """Every item ``text`` overlaps: item -> (``"exact"`` (the text is the item, after normalisation) or
        ``"ngram"`` (the text holds one of its n-grams, or the whole item when it is short), the phrase found)."""
        text_words = self.words(text)
        whole = " ".join(text_words)
        found = {item: ("exact", whole) for item in self._whole.get(whole, ())}
        for phrase, holders in self._phrases(text_words):
            for item in holders:
                found.setdefault(item, ("ngram", phrase))
        return found


def item_texts(record: dict[str, Any], fields: Iterable[str] | None = None) -> list[list[str]]:
    """The word-sequence texts of one evaluation record, one list per reference answer.

    ``fields`` given: those fields' texts, in that order, as one item. Else the question (``question``,
    ``prompt``, ``instruction`` + ``input``, a chat's user turns, or ``text``) followed by the answer
    (``reference``, ``answer``, ``completion``, ``output``, ``chosen`` or a chat's last assistant turn);
    several answers (a list of strings) make one item each, with the same question (datatrove's golds)."""
    if fields:
        return [[_text(record.get(field)) for field in fields]]
    question = next((_text(record[k]) for k in ("question", "prompt", "instruction") if k in record), None)
    if question is not None and record.get("input") and "instruction" in record:
        question = f"{question}\n{_text(record['input'])}"
    answers: list[str] = []
    for key in ("reference", "answer", "completion", "output", "chosen"):
        if key in record and record[key] is not None:
            value = record[key]
            answers = ([_text(v) for v in value] if isinstance(value, list) and value
                       and all(isinstance(v, str) for v in value) else [_text(value)])
            break
    messages = record.get("messages") or record.get("conversations")
    if question is None and isinstance(messages, list):
        turns = [m for m in messages if isinstance(m, dict)]
        question = "\n".join(_turn_text(m) for m in turns if _role(m) in ("user", "human"))
        if not answers and turns and _role(turns[-1]) in ("assistant", "gpt", "model"):
            answers = [_turn_text(turns[-1])]
    if question is None:
        question = _text(record.get("text"))
    return [[question, answer] for answer in answers] if answers else [[question]]


def _role(turn: dict) -> str:
    return str(turn.get("role", turn.get("from", ""))).lower()


def _turn_text(turn: dict) -> str:
    return _text(turn.get("content", turn.get("value")))


def _text(value: Any) -> str:
    """The text of a field: a string, or the contents of a message / list of messages (system turns left out)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "" if value.get("role") == "system" else _text(value.get("content", value.get("value")))
    if isinstance(value, list):
        return "\n".join(t for t in (_text(v) for v in value) if t)
    return str(value)


def string_leaves(value: Any) -> Iterator[str]:
    """Every string inside a record (its fields, chat turns, nested lists and mappings), in order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from string_leaves(item)
