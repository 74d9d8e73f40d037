"""Decontamination: training documents that hold an evaluation item's n-gram are dropped (or flagged).

GPT-3 removed training documents sharing a 13-gram with a benchmark item; datatrove's n-gram filter and
OLMo's pipeline do the same. Here the items come from ``against`` (any input the one reader takes: jsonl,
json, csv, parquet, .txt lines, globs, Hub datasets), each item is its question followed by its answer
(or the ``fields`` named), normalised as the other rules normalise text, and a document is contaminated
when it holds one of the item's ``ngram``-word n-grams, or the whole item when that is shorter. The
matching itself lives in ``lmforge.plugins.lib.overlap`` (shared with the overlap check a run makes
when it is planned)::

    lmforge run pipeline=clean_only 'cleaner.add=[{name: decontaminate, against: [evals.jsonl]}]'

``action: drop`` removes the document (report: ``removed`` ``decontaminate:contaminated``); ``action: flag``
keeps it and writes the matched phrase into the ``flag_field`` column ("" for clean documents; report:
``flagged``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmforge import CleaningStep, Drop
from lmforge.errors import DataError, LmforgeError
from lmforge.params import ParamError, at_least, one_of
from lmforge.plugins.lib.data import BadRecord, iter_rows
from lmforge.plugins.lib.overlap import OverlapIndex, item_texts
from lmforge.sources import resolve_data

ACTIONS = ("drop", "flag")


@dataclass
class DecontaminateConfig:
    against: Any = "???"  # evaluation items: a file, glob, folder, Hub dataset id, or a list of those
    ngram: int = 13  # words per n-gram (GPT-3's 13); an item shorter than this is matched whole
    fields: list[str] = field(default_factory=list)  # empty: question/prompt then reference/answer
    action: str = "drop"  # drop | flag (keep the document, the matched phrase in `flag_field`)
    flag_field: str = "contaminated"
    norm_numbers: bool = False  # true: every number becomes 0 before matching (datatrove's default)

    def __post_init__(self):
        at_least(self, 1, "ngram")
        one_of(self, "action", ACTIONS)
        if self.action == "flag" and not self.flag_field:
            raise ParamError("flag_field: empty; name the column that holds the matched phrase")
        try:
            resolve_data(self.against, "against")
        except LmforgeError as exc:
            message = str(exc)
            raise ParamError(message if message.startswith("against") else f"against: {message}") from None


class Decontaminate(CleaningStep):
    """Drops (or flags) documents holding an n-gram of an evaluation item from ``against``."""

    name = "decontaminate"
    config_class = DecontaminateConfig
    drop_reason = "contaminated"

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        cfg = self.config
        self.flag_field = cfg.flag_field if cfg.action == "flag" else None  # the cleaner counts flagged documents
        self.index = OverlapIndex(cfg.ngram, norm_numbers=cfg.norm_numbers)
        for row in iter_rows(cfg.against, txt_mode="line"):
            if isinstance(row, BadRecord):
                raise row.error()
            for texts in item_texts(row.fields, cfg.fields):
                self.index.add(row.where, *texts)
        if not len(self.index):
            raise DataError(f"cleaning_step.decontaminate.against: {cfg.against}: no evaluation items with text "
                            f"(fields: {', '.join(cfg.fields) or 'question/prompt + reference/answer'})")

    def process(self, text):
        phrase = self.index.first_match(text)
        if self.flag_field is None:
            return Drop(self.drop_reason) if phrase is not None else text
        return text, {self.flag_field: phrase or ""}
