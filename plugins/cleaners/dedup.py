"""MinHash near-duplicate removal with LSH banding, at datatrove's defaults (FineWeb's recipe).

Word 5-grams of the simplified text (lower case, punctuation -> space, numbers -> 0, diacritics dropped),
each hashed with xxhash64, then 112 universal hashes ``(a*x + b) mod (2**61 - 1)`` seeded exactly like
datatrove (``numpy.random.RandomState(1)``), split into 14 bands of 8. Two documents are candidates when
any band matches; P(candidate) = 1 - (1 - s**8)**14 (0.92 at Jaccard 0.8, 0.02 at 0.5).

Why not datasketch: its LSH keeps an index of every key and its MinHash hashes shingles with sha1 in a
Python loop; here one vectorised numpy expression per document gives datatrove-identical signatures, and
the streaming decision needs only the set of band hashes already seen.

Keeping one document per cluster, streaming: every document that reaches the step adds its band hashes
to the index, and a document any of whose bands is already there is dropped. Indexing the dropped ones
too makes the rule transitive (A~B, B~C drops B and C even when A and C are not similar), which is
exactly datatrove's union-find clustering keeping the earliest document of each cluster. Memory: 14
128-bit hashes per document (~1 KB in Python sets), so a few million documents per process; beyond
that run the steps on a distributed engine (see ``engines.py``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from itertools import accumulate

from lmforge import CleaningStep, Drop
from lmforge.plugins.cleaners.punctuation import PUNCTUATION

MERSENNE_PRIME = (1 << 61) - 1
_PUNCTUATION_TO_SPACE = str.maketrans(PUNCTUATION, " " * len(PUNCTUATION))
_NUMBER = re.compile(r"\d+([.,،٫⎖⎗⎘]\d+)?")
_SPACES = re.compile(r"\s+")
# spaCy (datatrove's English word splitter) also splits a number from a unit it knows ("0km"), "cannot",
# apostrophe-less contractions ("dont" -> do|nt, "thats" -> that|s), and symbols missing from the punctuation table ("£", "®", "‘") from the word they touch
_UNITS = "km|m|dm|cm|mm|ha|yd|in|ft|kg|g|mg|t|lb|oz|mph|kmh|mbar|mb|kb|gb|tb"
_CONTRACTIONS = (r"(?:do|does|did|is|are|was|were|have|has|had|could|would|should|must|need|ca|wo|ai)(?=nt\b)"
                 r"|(?:that|what|there|here|who|where)(?=s\b)|i(?=(?:d|m|ve)\b)|(?:you|they)(?=(?:re|ve|ll|d)\b)")
_WORD = re.compile(rf"\d+(?=(?:{_UNITS})\b)|can(?=not\b)|{_CONTRACTIONS}|[^\W_]+|[^\w\s]")


def simplify_text(text: str, norm_numbers: bool = True) -> str:
    """datatrove's TextNormConfig defaults: lower, numbers -> 0 (unless ``norm_numbers=False``), punctuation ->
    space, no diacritics."""
    text = text.lower()
    if norm_numbers:
        text = _NUMBER.sub("0", text)
    text = text.translate(_PUNCTUATION_TO_SPACE)
    text = _SPACES.sub(" ", text.strip())
    if not text.isascii():
        text = unicodedata.normalize("NFD", text).translate(_combining_marks())
    return text.strip()


@functools.cache
def _combining_marks() -> dict[int, None]:
    """str.translate table deleting every combining mark (category Mn): one C pass over the text."""
    return dict.fromkeys(c for c in range(0x110000) if unicodedata.category(chr(c)) == "Mn")


@dataclass
class MinHashConfig:
    """datatrove's FineWeb values: 14 bands of 8 hashes flag pairs above Jaccard ~0.72 ((1/14) ** (1/8))."""

    n_grams: int = 5  # word 5-grams are the shingles compared
    num_buckets: int = 14  # LSH bands: documents sharing all hashes of any one band are duplicates
    hashes_per_bucket: int = 8  # hashes per band (more: stricter; 14 x 8 = 112 hashes per document)
    seed: int = 1  # of the hash functions, so two runs flag the same pairs
    # 0: any shared band drops the document (datatrove). > 0: a candidate must also agree on at least this
    # share of all hashes (the estimated Jaccard), which removes LSH's chance merges below the threshold
    # at ~1 KB more memory per document.
    verify_threshold: float = 0.0


class MinHashDedup(CleaningStep):
    """Near-duplicate removal: MinHash signatures + LSH bands, the first document of each cluster kept."""

    name = "minhash_dedup"
    config_class = MinHashConfig
    deduplicates = True
    drop_reason = "near_duplicate"

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        import numpy as np

        cfg = self.config
        generator = np.random.RandomState(cfg.seed)
        size = (1, cfg.num_buckets * cfg.hashes_per_bucket)
        self._a = generator.randint(1, MERSENNE_PRIME, dtype=np.uint64, size=size)
        self._b = generator.randint(0, MERSENNE_PRIME, dtype=np.uint64, size=size)
        _combining_marks()  # built once here, so forked workers inherit it
        self.reset()

    def reset(self) -> None:
        """Forget every document seen so far."""
        self.seen: set[int] = set()
        self.first_with_band: dict[int, int] = {}  # band hash -> index into self.minima (verification only)
        self.minima: list = []

    def signature(self, text: str) -> tuple[int, ...] | None:
        """One 128-bit hash per band, or None for a text shorter than one n-gram (never deduplicated)."""
        import numpy as np
        import xxhash

        words = _WORD.findall(simplify_text(text))
        n = self.config.n_grams
        if len(words) < n:
            return None
        # each shingle is the n words joined by spaces (as datatrove hashes it): slice it out of the
        # encoded text instead of joining lists, then hash the bytes
        encoded = " ".join(words).encode()
        lengths = map(len, words) if len(encoded) == sum(map(len, words)) + len(words) - 1 else (
            len(w.encode()) for w in words)
        starts = np.fromiter(accumulate((length + 1 for length in lengths), initial=0), dtype=np.int64,
                             count=len(words) + 1)
        count = len(words) - n + 1
        view = memoryview(encoded)
        hash64 = xxhash.xxh64_intdigest
        shingles = np.fromiter((hash64(view[a:b]) for a, b in zip(starts[:count].tolist(),
                                                                  (starts[n:] - 1).tolist())),
                               dtype=np.uint64, count=count).reshape(-1, 1)
        with np.errstate(over="ignore"):  # uint64 wrap-around is part of datatrove's hash
            mixed = shingles * self._a + self._b
        # x mod (2^61 - 1) without a 64-bit division: fold the top 3 bits onto the low 61, subtract once
        folded = (mixed & np.uint64(MERSENNE_PRIME)) + (mixed >> np.uint64(61))
        folded[folded >= np.uint64(MERSENNE_PRIME)] -= np.uint64(MERSENNE_PRIME)
        minima = folded.min(axis=0)
        bands = minima.reshape(self.config.num_buckets, self.config.hashes_per_bucket)
        hash128 = xxhash.xxh3_128_intdigest
        band_hashes = tuple(hash128(band.tobytes(), seed=index) for index, band in enumerate(bands))
        return (band_hashes, minima) if self.config.verify_threshold > 0 else band_hashes

    def seen_before(self, signature) -> bool:
        if signature is None:
            return False
        if self.config.verify_threshold > 0:
            return self._seen_verified(*signature)
        duplicate = not self.seen.isdisjoint(signature)
        self.seen.update(signature)
        return duplicate

    def _seen_verified(self, band_hashes, minima) -> bool:
        candidates = {self.first_with_band[h] for h in band_hashes if h in self.first_with_band}
        duplicate = any(float((self.minima[c] == minima).mean()) >= self.config.verify_threshold
                        for c in sorted(candidates))
        index = len(self.minima)
        self.minima.append(minima)
        for band_hash in band_hashes:
            self.first_with_band.setdefault(band_hash, index)
        return duplicate

    def process(self, text):
        return Drop(self.drop_reason) if self.seen_before(self.signature(text)) else text
