"""Cleaning rules at their threshold boundaries (a just-kept and a just-dropped document for each), the
optimised repetition counts against Gopher's plain definitions, MinHash recall/precision on synthetic
near-duplicates of known Jaccard similarity, language ID with the bundled model, PII and harmful content."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from lmforge import Drop, registry
from lmforge.errors import ConfigError
from lmforge.plugins.cleaners.content import HarmfulContent, LanguageFilter, PIIRedact
from lmforge.plugins.cleaners.dedup import MinHashDedup
from lmforge.plugins.cleaners.heuristics import (
    WORD_PATTERN,
    WORD_RULES,
    BoilerplateLines,
    C4Quality,
    FineWebQuality,
    GopherQuality,
    GopherRepetition,
    repeated_ngram_chars,
    split_words,
)


def kept(result) -> bool:
    return isinstance(result, (str, tuple))


def reason(result) -> str:
    return result.reason if isinstance(result, Drop) else ""


# ---- Gopher quality -------------------------------------------------------------------------------------
def words_doc(n_content: int, filler: str = "house") -> str:
    return " ".join(["the", "and"] + [filler] * (n_content - 2))


def test_gopher_quality_min_words_boundary():
    step = GopherQuality()
    assert kept(step.process(words_doc(50)))
    assert reason(step.process(words_doc(49))) == "gopher_short_doc"


def test_gopher_quality_mean_word_length_boundary():
    step = GopherQuality()
    assert kept(step.process(words_doc(50, "cat")))  # mean exactly 3
    assert reason(step.process(words_doc(49, "cat") + " at")) == "gopher_below_avg_threshold"  # 149/50
    assert kept(step.process(" ".join(["the", "and"] + ["abcdefghij"] * 48)))  # (6 + 480) / 50 = 9.72
    assert reason(step.process(" ".join(["the", "and"] + ["abcdefghijk"] * 48))) == "gopher_above_avg_threshold"


def test_gopher_quality_hash_ratio_boundary():
    base = words_doc(100)
    step = GopherQuality()
    assert kept(step.process(base + " #" * 11))  # 11 / 111 words = 0.099
    assert reason(step.process(base + " #" * 12)) == "gopher_too_many_hashes"  # 12 / 112 = 0.107


def test_gopher_quality_stop_words_and_bullets():
    step = GopherQuality()
    only_one = " ".join(["the"] + ["house"] * 60)
    assert reason(step.process(only_one)) == "gopher_enough_stop_words"
    names = ["oak", "elm", "ash", "fir", "yew", "box", "bay", "fig", "ivy", "pine"]
    lines = [f"- the and house garden tree {name}" for name in names[:9]] + ["the and house garden plain pine"]
    assert kept(step.process("\n".join(lines)))  # 9/10 bullet lines = 0.9, not above
    lines[-1] = "- " + lines[-1]
    assert reason(step.process("\n".join(lines))) == "gopher_too_many_bullets"


def test_gopher_quality_alpha_words_boundary():
    step = GopherQuality()
    assert kept(step.process(words_doc(80) + " 1234" * 20))  # 80 of 100 words hold a letter
    assert reason(step.process(words_doc(79) + " 1234" * 21)) == "gopher_below_alpha_threshold"


# ---- Gopher repetition ----------------------------------------------------------------------------------
def only(**enabled):
    off = {"dup_line_frac": 0, "dup_para_frac": 0, "dup_line_char_frac": 0, "dup_para_char_frac": 0,
           "top_n_grams": [], "dup_n_grams": []}
    return GopherRepetition({**off, **enabled})


def test_gopher_repetition_duplicate_paragraph_fraction():
    unique = [f"paragraph number {i} about something else" for i in range(7)]
    step = only(dup_para_frac=0.3)
    assert kept(step.process("\n\n".join(unique + unique[:3])))  # 3 of 10 repeat: 0.3
    assert reason(step.process("\n\n".join(unique + unique[:4]))) == "dup_para_frac"  # 4 of 11


def test_repetition_counts_match_gophers_definitions():
    """The numpy/tuple implementation equals datatrove's string-joining loops on random word streams."""
    import numpy as np

    def reference_dup(words, n):
        seen, repeated, idx = set(), 0, 0
        while idx < len(words) - n + 1:
            gram = "".join(words[idx:idx + n])
            if gram in seen:
                repeated += len(gram)
                idx += n
            else:
                seen.add(gram)
                idx += 1
        return repeated

    rng = random.Random(0)
    for _ in range(200):
        words = [rng.choice(["a", "bb", "ccc", "dd", "e", "the", "of"]) for _ in range(rng.randrange(3, 120))]
        offsets = np.cumsum([0] + [len(w) for w in words])
        keys = np.array([hash(w) for w in words], dtype=np.int64).view(np.uint64)
        grams = {1: keys}
        for n in range(2, 11):
            if len(words) >= n:
                with np.errstate(over="ignore"):
                    grams[n] = grams[n - 1][:-1] * np.uint64(0x9E3779B97F4A7C15) + keys[n - 1:]
        for n in range(5, 11):
            if n in grams:
                assert repeated_ngram_chars(grams[n], n, offsets) == reference_dup(words, n)


def test_split_words_is_the_word_pattern_token_for_token():
    """The fast paths change no token: the chunked splitter and the pattern with its fast paths give exactly
    the plain rules' tokens on tricky pieces glued in random ways."""
    pieces = ["cannot", "Cannot,", "CANNOT", "can", "not", "Mr.", "mrs.", "A.", "U.S.", "e.g.", "example.com",
              "www.x.org", "http://a.b/c", "https:", "end.The", "word.--", "thus--", "you,--", "so..", "a...b",
              "...", "IL-3", "11-12", "don't", "they're", "I'd", "o'er", "dogs'", "it's", "1,000", "3.5", "10:30",
              "(hello)", '"quoted"', "[x]", "naïve", "cafe\u0301", "日本語", "_under_", "x_y", "#tag", "—", "--",
              "St.", "Inc.", "\u00a0", "word,", "word;", "word:", "word!", "word?", "word)", "word]", 'word"']
    separators = [" ", "  ", "\n", "\n\n", "\t", "\u00a0", "", "\x1c"]
    rules = re.compile(WORD_RULES, re.IGNORECASE)
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) + rng.choice(separators) for _ in range(rng.randrange(1, 12)))
        if rng.random() < 0.5:
            text = text.rstrip()
        expected = rules.findall(text)
        assert split_words(text) == expected, repr(text)
        assert WORD_PATTERN.findall(text) == expected, repr(text)


def test_gopher_repetition_top_ngram_boundary():
    step = only(top_n_grams=[[2, 0.2]])
    text = "alpha beta " * 10 + " ".join(f"w{i:03d}" for i in range(44))  # top bigram "alpha beta" x10
    share = len("alpha beta") * 10 / len(text)
    assert (share > 0.2) == (reason(step.process(text)) == "top_2_gram")
    assert Counter(zip(split_words(text), split_words(text)[1:])).most_common(1)[0][1] == 10


# ---- C4 -------------------------------------------------------------------------------------------------
SENTENCE = "This line is a complete sentence with enough words."


def test_c4_sentence_count_boundary_and_line_rules():
    step = C4Quality()
    five = "\n".join([SENTENCE] * 5)
    assert kept(step.process(five))
    assert reason(step.process("\n".join([SENTENCE] * 4))) == "too_few_sentences"
    lines = ["Home | About | Contact", SENTENCE, "Please enable JavaScript to view this page.",
             "This site uses cookies to improve your experience.", "Too short.", SENTENCE,
             "A line without an end mark", SENTENCE, SENTENCE, SENTENCE]
    noisy = "\n".join(lines)
    result = step.process(noisy)
    assert result == "\n".join([SENTENCE] * 5)  # menu, script, cookie, short and unterminated lines gone


def test_c4_document_rules():
    step = C4Quality()
    assert reason(step.process("\n".join([SENTENCE] * 5 + ["Lorem ipsum dolor sit amet."]))) == "lorem_ipsum"
    assert reason(step.process("\n".join([SENTENCE] * 5 + ["function f() { return 1; }."]))) == "curly_bracket"
    assert C4Quality(filter_no_terminal_punct=False).process("\n".join(["No end mark here at all"] * 5))


def test_boilerplate_menu_lines():
    step = BoilerplateLines()
    assert step.process(f"Home | About\n{SENTENCE}") == f"Home | About\n{SENTENCE}"  # one separator: kept
    assert step.process(f"Home | About | Contact\n{SENTENCE}") == SENTENCE
    assert step.process(f"Prices | taxes | fees are listed below.\n{SENTENCE}").startswith("Prices")  # a sentence


# ---- FineWeb --------------------------------------------------------------------------------------------
def fineweb_lines(n_lines: int, n_terminal: int) -> str:
    lines = [f"line number {i} has quite a few words in it and more" for i in range(n_lines)]
    return "\n".join(line + ("." if i < n_terminal else "") for i, line in enumerate(lines))


def test_fineweb_line_punctuation_boundary():
    step = FineWebQuality()
    assert kept(step.process(fineweb_lines(25, 3)))  # 3/25 = 0.12
    assert reason(step.process(fineweb_lines(25, 2))) == "line_punct_ratio"


def test_fineweb_short_lines_and_duplicate_chars():
    step = FineWebQuality()
    long_lines = [f"this is a long sentence number {i} with several words." for i in range(33)]
    short = [f"short {i}." for i in range(68)]
    assert kept(step.process("\n".join(long_lines + short[:67])))  # 67/100
    assert reason(step.process("\n".join(long_lines + short))) == "short_line_ratio"  # 68/101
    body = [f"this is a long sentence number {i} with several words in it." for i in range(200)]
    one_repeat = "\n".join(body + body[:1])  # repeated chars ~0.5% of the text
    assert kept(step.process(one_repeat))
    five_repeats = "\n".join(body + body[:5])  # ~2.5%: above 0.01, below the paper's 0.1
    assert reason(step.process(five_repeats)) == "char_dup_ratio"
    assert kept(FineWebQuality(char_duplicates_ratio=0.1).process(five_repeats))


# ---- MinHash --------------------------------------------------------------------------------------------
_VOCABULARY = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=8)) for i in range(20000)]


def random_word(rng: random.Random) -> str:
    return rng.choice(_VOCABULARY)  # letters only: digits normalise to 0 before shingling


def pair_with_jaccard(rng: random.Random, similarity: float, length: int = 300) -> tuple[str, str, float]:
    """Two word sequences whose 5-gram sets have (close to) the given Jaccard similarity."""
    words = [random_word(rng) for _ in range(length)]
    grams = length - 4
    shared = round(2 * grams * similarity / (1 + similarity))  # shared prefix grams: J = s / (2g - s)
    prefix = shared + 4
    other = words[:prefix] + [random_word(rng) for _ in range(length - prefix)]
    set_a = {tuple(words[i:i + 5]) for i in range(grams)}
    set_b = {tuple(other[i:i + 5]) for i in range(grams)}
    return " ".join(words), " ".join(other), len(set_a & set_b) / len(set_a | set_b)


_STEPS: dict = {}


def is_merged(first: str, second: str, verify_threshold: float = 0.0) -> bool:
    step = _STEPS.setdefault(verify_threshold, MinHashDedup(verify_threshold=verify_threshold))
    step.reset()
    return kept(step.process(first)) and isinstance(step.process(second), Drop)


def test_minhash_recall_at_high_similarity_and_no_merges_below_half():
    rng = random.Random(0)
    high = [pair_with_jaccard(rng, s) for s in (0.8, 0.85, 0.9, 0.95) for _ in range(40)]
    assert min(j for _, _, j in high) >= 0.79
    recall = sum(is_merged(a, b) for a, b, _ in high) / len(high)
    assert recall >= 0.9, recall  # theory 1-(1-s^8)^14: 0.92 at 0.8, 0.999 at 0.95
    low = [pair_with_jaccard(rng, s) for s in (0.2, 0.3, 0.4) for _ in range(40)]
    assert max(j for _, _, j in low) < 0.5
    # datatrove's banding alone merges by chance: 1-(1-s^8)^14 = 0.009 per pair at 0.4, 3e-5 at 0.2
    assert sum(is_merged(a, b) for a, b, _ in low) <= 3
    # with the signature check, no pair below 0.5 is merged and recall at >= 0.8 stays >= 0.9
    assert sum(is_merged(a, b, verify_threshold=0.6) for a, b, _ in low) == 0
    assert sum(is_merged(a, b, verify_threshold=0.6) for a, b, _ in high) / len(high) >= 0.9


def test_minhash_clusters_are_transitive_and_keep_the_first():
    """A~B and B~C collide in LSH, A and C do not: C still goes (one cluster), as datatrove's union-find."""
    for seed in range(50):
        rng = random.Random(seed)
        words = [random_word(rng) for _ in range(480)]
        a, b, c = (" ".join(words[start:start + 400]) for start in (0, 40, 80))  # J(a,b)=J(b,c)=0.82, J(a,c)=0.66
        probe = MinHashDedup()
        sig_a, sig_b, sig_c = probe.signature(a), probe.signature(b), probe.signature(c)
        if set(sig_a) & set(sig_b) and set(sig_b) & set(sig_c) and not set(sig_a) & set(sig_c):
            break
    else:
        pytest.fail("no chained triple found")
    step = MinHashDedup()
    results = [step.process(text) for text in (a, b, c)]
    assert kept(results[0]) and isinstance(results[1], Drop) and isinstance(results[2], Drop)
    alone = MinHashDedup()
    assert kept(alone.process(a)) and kept(alone.process(c))
    assert step.signature("too short") is None  # under one 5-gram: never deduplicated


# ---- language, PII, harmful -----------------------------------------------------------------------------
def test_language_filter_uses_the_bundled_model_offline():
    step = LanguageFilter()
    english = step.process("The quick brown fox jumps over the lazy dog while the farmer watches quietly.")
    assert english[1]["language"] == "en" and english[1]["language_score"] >= 0.65
    assert reason(step.process("Le renard brun saute par-dessus le chien paresseux pendant que le fermier "
                               "regarde.")) == "language_fr"
    assert kept(LanguageFilter(languages=[]).process("Der schnelle braune Fuchs springt über den Hund."))


def test_pii_redaction():
    step = PIIRedact()
    text = ("Mail jane.doe@example.com or call +1 (555) 123-4567 or 020 7946 0958; server 8.8.8.8, "
            "router 192.168.1.1; founded in 1999 and 2005, chapter 3.2.")
    out = step.process(text)
    assert "jane.doe" not in out and "<EMAIL>" in out
    assert "123-4567" not in out and "7946 0958" not in out and out.count("<PHONE>") == 2
    assert "<IP>" in out and "192.168.1.1" in out  # private addresses are not personal (as datatrove)
    assert "1999 and 2005" in out and "3.2" in out


def test_harmful_filter_drops_instructions_and_keeps_education():
    step = HarmfulContent()
    assert reason(step.process("Step by step: how to make a bomb from household items.")) == "weapons"
    assert reason(step.process("Here are the best way to commit suicide and more.")) == "self_harm"
    education = ("Our sex education class covers puberty, consent, contraception and sexual health, "
                 "including why explicit sex scenes in media are not how real relationships work.")
    assert kept(step.process(education))
    prevention = "If you are looking for ways to kill yourself, please call the suicide prevention lifeline."
    assert kept(step.process(prevention))
    with pytest.raises(ConfigError, match="unknown category 'gambling'"):
        HarmfulContent(categories=["gambling"])


class KeywordScorer:
    """A real (if simple) content classifier plugin, to show the `content_classifier` hook end to end."""

    def score(self, text):
        return {"spam": 1.0 if "buy now" in text.lower() else 0.0}


def test_harmful_filter_classifier_hook():
    registry().add("content_classifier", "keyword_scorer", KeywordScorer)
    step = HarmfulContent(classifier="keyword_scorer", classifier_threshold=0.5)
    assert reason(step.process("Great prices, buy now!")) == "classifier_spam"
    assert kept(step.process("A quiet article about gardening."))
