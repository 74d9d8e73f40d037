"""The basic cleaner: an ordered list of cleaning steps over documents, with a removal report.

Why our own loop rather than a library pipeline: the steps here are a few string checks per document; a
plain loop keeps them readable and fast, and every removal is recorded with its step and reason so a
human can audit what was dropped (``report.json`` beside the parquet output).

Steps are ``cleaning_step`` plugins, so a third-party step drops in by name::

    cleaner:
      steps: [normalize, exact_dedup, {name: quality, min_words: 20}, shout]
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import Cleaner, CleaningStep, Drop, registry
from lmforge.config import named_spec
from lmforge.errors import DataError
from lmforge.params import check_bounds
from lmforge.plugins.lib.data import iter_texts, write_dataset_card


@dataclass
class NormalizeConfig:
    form: str = "NFC"  # unicode normal form
    collapse_spaces: bool = True  # runs of spaces/tabs -> one space; 3+ newlines -> 2


class Normalize(CleaningStep):
    """Unicode normal form, stripped control characters and tidy whitespace."""

    name = "normalize"
    config_class = NormalizeConfig
    _controls = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

    def process(self, text):
        text = unicodedata.normalize(self.config.form, text)
        text = self._controls.sub("", text)
        if self.config.collapse_spaces:
            text = re.sub(r"[ \t]+", " ", text)
            text = re.sub(r"\n\s*\n\s*\n+", "\n\n", text)
        return text.strip()


class ExactDedup(CleaningStep):
    """Drops a document whose whitespace- and case-normalised text was seen before (first copy kept).

    Deduplicating steps split their work in two so the parallel cleaner can compute the costly part in
    worker processes and keep the decision (which needs every earlier document) in document order:
    ``signature(text)`` anywhere, ``seen_before(signature)`` in order.
    """

    name = "exact_dedup"
    deduplicates = True
    drop_reason = "duplicate"

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        self.seen: set[bytes] = set()

    def signature(self, text: str) -> bytes:
        return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).digest()

    def seen_before(self, signature: bytes) -> bool:
        if signature in self.seen:
            return True
        self.seen.add(signature)
        return False

    def process(self, text):
        return Drop(self.drop_reason) if self.seen_before(self.signature(text)) else text


@dataclass
class QualityConfig:
    """Gopher's first rules with its values, on whitespace-split words (``gopher_quality`` has them all)."""

    min_words: int = 50  # fewer words: a fragment, not a document
    max_words: int = 100_000  # more: a dump or a concatenation
    min_mean_word_length: float = 3.0  # shorter on average: symbol or number lists
    max_mean_word_length: float = 10.0  # longer: URLs, hashes, glued words
    min_alpha_word_fraction: float = 0.8  # words holding at least one letter (Gopher)

    def __post_init__(self):
        check_bounds(self)


class Quality(CleaningStep):
    """Gopher-style document quality: length, mean word length, share of words with letters."""

    name = "quality"
    config_class = QualityConfig

    def process(self, text):
        cfg = self.config
        words = text.split()
        if len(words) < cfg.min_words:
            return Drop("too_few_words")
        if len(words) > cfg.max_words:
            return Drop("too_many_words")
        mean = sum(map(len, words)) / len(words)
        if not cfg.min_mean_word_length <= mean <= cfg.max_mean_word_length:
            return Drop("mean_word_length")
        alpha = sum(1 for w in words if any(c.isalpha() for c in w)) / len(words)
        if alpha < cfg.min_alpha_word_fraction:
            return Drop("too_few_alpha_words")
        return text


@dataclass
class BasicCleanerConfig:
    steps: list[Any] = field(default_factory=lambda: ["normalize", "exact_dedup", "quality"])
    text_field: str = "text"
    examples_per_reason: int = 3
    add: list[Any] = field(default_factory=list)  # steps to put in without restating `steps` (see edit_steps)
    remove: list[str] = field(default_factory=list)  # step names to take out of `steps`

    def __post_init__(self):
        self.steps, self.add, self.remove = edit_steps(self.steps, self.add, self.remove), [], []


def edit_steps(steps: list[Any], add: list[Any], remove: list[str]) -> list[Any]:
    """``steps`` with the ``remove`` names taken out, then each ``add`` spec put in — appended, or placed with
    ``before: <step>`` / ``after: <step>``: ``cleaner.remove=[pii] 'cleaner.add=[{name: shout, after: normalize}]'``.
    """
    from lmforge.errors import ConfigError

    steps = list(steps)
    names = [named_spec(spec, "cleaner.steps")[0] for spec in steps]
    for name in remove or []:
        if name not in names:
            raise ConfigError(f"cleaner.remove: no step '{name}' in cleaner.steps; steps: {', '.join(names)}")
        index = names.index(name)
        del steps[index], names[index]
    for spec in add or []:
        name, params = named_spec(spec, "cleaner.add")
        anchor = {k: params.pop(k) for k in ("before", "after") if k in params}
        if len(anchor) > 1:
            raise ConfigError(f"cleaner.add: {name}: give 'before' or 'after', not both")
        new = {"name": name, **params} if params else name
        if not anchor:
            steps.append(new)
            names.append(name)
            continue
        (where, target), = anchor.items()
        if target not in names:
            raise ConfigError(f"cleaner.add: {name}: {where} '{target}': no such step; steps: {', '.join(names)}")
        index = names.index(target) + (where == "after")
        steps.insert(index, new)
        names.insert(index, name)
    return steps


def check_steps(specs: list[Any]) -> None:
    """Each step's name and parameters, checked without building the step (no models loaded): a typo or an
    impossible threshold fails before any stage runs (``Stage.preflight``)."""
    from lmforge.config import build_params

    for index, spec in enumerate(specs):
        name, params = named_spec(spec, f"cleaner.steps[{index}]")
        cls = registry().get("cleaning_step", name)
        build_params(getattr(cls, "config_class", None), params, where=f"cleaning_step.{name}")


def build_steps(specs: list[Any]) -> list[CleaningStep]:
    """``["normalize", {"name": "quality", "min_words": 20}]`` -> step instances, looked up by name."""
    steps = []
    for index, spec in enumerate(specs):
        name, params = named_spec(spec, f"cleaner.steps[{index}]")
        cls = registry().get("cleaning_step", name)
        steps.append(cls(params) if params else cls())
    return steps


class BasicCleaner(Cleaner):
    """Runs the configured steps in order over every document and writes parquet + report.json."""

    config_class = BasicCleanerConfig

    def preflight(self, context):
        check_steps(self.config.steps)

    def run(self, inputs, output_dir, context):
        import pyarrow as pa
        import pyarrow.parquet as pq

        steps = build_steps(self.config.steps)
        names = [getattr(s, "name", "") or type(s).__name__ for s in steps]
        docs_in = Counter()
        chars_in = Counter()
        removed = Counter()
        flagged = Counter()  # documents a step kept but marked (its flag_field: decontaminate's action=flag)
        examples: dict[str, list[str]] = defaultdict(list)
        kept: list[str] = []
        for batch in iter_texts(inputs["text"], self.config.text_field):
            for text in batch:
                if not isinstance(text, str):
                    raise DataError(f"{inputs['text']}: a '{self.config.text_field}' value is not text")
                for name, step in zip(names, steps):
                    docs_in[name] += 1
                    chars_in[name] += len(text)
                    result = step.process(text)
                    if result is None or isinstance(result, Drop):
                        reason = f"{name}:{result.reason if result else 'dropped'}"
                        removed[reason] += 1
                        if len(examples[reason]) < self.config.examples_per_reason:
                            examples[reason].append(text[:500])
                        break
                    if isinstance(result, tuple):
                        text, extra = result
                        flagged[name] += bool(getattr(step, "flag_field", None) and extra.get(step.flag_field))
                    else:
                        text = result
                else:
                    kept.append(text)
        total_in = docs_in[names[0]] if names else len(kept)
        if total_in == 0:
            raise DataError(f"{inputs['text']}: no documents in the input")
        if not kept:
            raise DataError(f"{inputs['text']}: every document was removed ({dict(removed)}); loosen the steps")
        data_dir = Path(output_dir)
        pq.write_table(pa.table({self.config.text_field: kept}), data_dir / "data-00000.parquet")
        report = {
            "docs_in": total_in, "docs_out": len(kept),
            "chars_in": chars_in[names[0]] if names else sum(map(len, kept)), "chars_out": sum(map(len, kept)),
            "per_step": [{"step": n, "docs_in": docs_in[n], "chars_in": chars_in[n]} for n in names],
            "removed": dict(removed), "flagged": {k: v for k, v in flagged.items() if v}, "examples": dict(examples),
        }
        (data_dir / "report.json").write_text(json.dumps(report, indent=2))
        write_dataset_card(output_dir, "Cleaned text")
        context.log_metrics({"docs_in": report["docs_in"], "docs_out": report["docs_out"],
                             "chars_out": report["chars_out"]})
        return output_dir
