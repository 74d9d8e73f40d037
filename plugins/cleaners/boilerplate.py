"""Boilerplate removal for text that already lost its markup: the article's lines stay, the page's go.

Why a line classifier before the document filters: web text saved as text still carries the page around the
article (menus, share bars, "related posts", cookie and subscription banners, bylines, comment forms, footers,
and often hundreds of lines of inline JavaScript). Document-level rules (Gopher repetition, FineWeb's
duplicate-line and short-line ratios) then condemn the whole page, article included. Removing the chrome
line by line first keeps the article.

How: jusText's idea (Pomikálek 2011), for lines instead of HTML blocks. Each line is first classed on its own:

- ``bad``: script or style source (braces, semicolons, ``function(``, ``=>``, ``window.``, tags, JSON), a line
  matching a page-furniture phrase (cookies, subscribe, share on, related posts, ©, log in, posted in, …), a
  menu line ("Home | About | Contact"), a line without letters;
- ``good``: a long line (>= ``good_words`` words) with enough stop words (jusText's English list) that ends
  like a sentence, or a very long one;
- ``near``: a shorter sentence (>= ``near_words`` words, ends in a full stop, has stop words);
- ``short``: everything else (menu items, headings, names, dates).

Then context decides the undecided, as jusText does: a ``near`` line with a ``good`` line among its nearest
decided neighbours is kept; a ``short`` run between good text on both sides (a section heading) or right
before it (a title) is kept if it is at most ``max_heading_run`` lines long, else it is a menu and goes.

Two repairs come first: paragraphs glued without a space ("…socialism.Humans lived…", as in text copied out
of Wikipedia) are split into lines, so a trailing run of category names ("Anti-fascismEconomic ideologies…")
is a line of its own that the classifier can drop.

For text inputs only: the standard cleaner passes articles its HTML reader extracted through untouched
(``extracted_html: false``). trafilatura has already taken the page's chrome out of those, and there the short
lines the classifier cannot place are the article's title, headings and list items: on real news pages
(benchmarks/bench_extract.py) the step removed them from articles that had been extracted cleanly. Checked on
the labelled pages of tests/data/web (real article text in chrome written for the set; a test fixture).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from lmforge import CleaningStep, Drop
from lmforge.plugins.cleaners.punctuation import TERMINAL_PUNCTUATION

CODE = re.compile(
    r"[{};]\s*$|^\s*[})\]]|\bfunction\s*\w*\s*\(|=>|\b(?:var|let|const)\s+[\w$]+\s*=|\b(?:window|document|console)\.\w"
    r"|^\s*(?:if|for|while|try|catch|return)\b.*[({]|</?[a-z][a-z0-9]*(?:\s[^>]*)?>|\\[\"'nt]|^\s*[@.#][\w-]+[^{]*\{"
    r"|\w\s*\(\s*['\"][^'\"]*['\"]\s*(?:,|\))|^\s*[\"']?[\w$-]+[\"']?\s*:\s*[\"'{\[]|&&|\|\|"
    r"|^\s*(?:@media|@import|@font-face)|\b(?:px|em|rem)\s*;|\.\w+\(",
    re.IGNORECASE,
)
CHROME = re.compile(  # page furniture: a line this matches is chrome if it has at most max_chrome_words
    r"\bwe use cookies\b|\buses? cookies\b|\bcookie (?:policy|settings|preferences)\b|\baccept (?:all )?cookies\b"
    r"|\bshare (?:on|this|via)\b|\bfollow us\b|\bpin it\b|\bcopy link\b"
    r"|\brelated (?:posts?|articles?|stories)\b|\byou (?:may|might) also like\b|\brecommended for you\b"
    r"|\bmore stories\b|\bskip to\b|\bjump to\b|\bback to top\b"
    r"|©|\(c\) ?\d{4}|\ball rights reserved\b|\bprivacy (?:policy|notice|settings)\b|\bterms (?:of|and) (?:use|service|conditions)\b"
    r"|\bposted (?:on|in|by)\b|\bpublished\s+(?:on\s+)?\d|\bupdated\s+(?:on\s+)?\d|\blast (?:edited|updated|modified)\b"
    r"|^\s*by\s+[A-Z][\w.-]+(?:\s+[A-Z][\w.-]+){0,3}\s*(?:[|,·•-]|$)|\b\d+\s+(?:comments?|replies|thoughts)\b"
    r"|\bsays:\s*$|^\s*reply\s*$|\bprevious (?:post|article|page)\b"
    r"|\bnext (?:post|article|page)\b|\bpowered by\b|\bwas this (?:page|article) helpful\b|\bedit this page\b"
    r"|^\s*(?:categories|tags|topics|filed under|tagged)\s*:|\bout of 5 stars\b|\b\d+ reviews?\b"
    r"|^\s*(?:advertisement|sponsored|sponsored content)\s*$|\benable javascript\b|\bjavascript (?:is )?(?:disabled|required)\b"
    r"|\badd to (?:cart|basket|bag)\b|\bbasket \(\d+\)|\bcart \(\d+\)|\bfrom wikipedia\b|\bview history\b"
    r"|^\s*(?:home|menu|search|print|save|email)\s*$",
    re.IGNORECASE,
)
WEAK_CHROME = re.compile(  # words that are chrome only in short lines (at most max_weak_words)
    r"\bcookies?\b|\bsubscri(?:be|ption|ber)|\bnewsletter|\bsign (?:up|in)\b|\blog ?in\b|\blog out\b"
    r"|\bcreate (?:an )?account|\btweet\b|\bread more\b|\bcontinue reading\b|\bclick here\b"
    r"|\bfree (?:delivery|shipping|trial)\b|\bdownload (?:the|our) app\b|\bleave a (?:reply|comment)\b"
    r"|\bcopyright\b|\bcreative commons\b|\bwe use\b.*\bexperience\b",
    re.IGNORECASE,
)
# an encyclopaedia page's reference sections, which hold lists of titles and links rather than prose
REFERENCE_SECTION = re.compile(r"(?:See also|External links|Further reading|References|Bibliography|Notes|Footnotes"
                               r"|Sources|Citations)(?:\s|$|[A-Z])")
MENU_SEPARATORS = set("|»›·•>/‹«")
GLUED = re.compile(r"([a-z0-9)\]][.!?])([A-Z][a-z])")
# a glued section title of an encyclopaedia page ("…radiationReferencesExternal links …")
GLUED_SECTION = re.compile(r"(?<=[a-z)\].!?:])(?=(?:See also|References|External links|Further reading|Bibliography"
                           r"|Notes|Footnotes|Sources|Citations)\b)")
SECTION_WORDS = ("See also", "References", "External links", "Further reading", "Bibliography", "Notes",
                 "Footnotes", "Sources", "Citations")
SENTENCE_ENDS = re.compile(r"[a-z]{2}[.!?][\"')\]]?[ \t]+")
CAMEL = re.compile(r"[a-z)][A-Z]")


def split_glued(text: str) -> str:
    """Puts paragraphs glued without a space on lines of their own, and splits off a line's tail of names
    glued together ("…anarchism. Anti-fascismEconomic ideologiesLeft-wing politics": category links)."""
    text = GLUED.sub("\\1\n\\2", text)
    if any(word in text for word in SECTION_WORDS):
        text = GLUED_SECTION.sub("\n", text)
    if not CAMEL.search(text):
        return text
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if len(CAMEL.findall(line)) < 2:
            continue
        last = None
        for last in SENTENCE_ENDS.finditer(line):
            pass
        start = last.end() if last else 0
        tail = line[start:]
        if start and len(CAMEL.findall(tail)) >= 2 and tail.rstrip()[-1:] not in TERMINAL_PUNCTUATION:
            lines[index] = line[:start].rstrip() + "\n" + tail
    return "\n".join(lines)


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """jusText's English stop-word list (453 words), which its block classifier uses."""
    import justext

    return frozenset(justext.get_stoplist("English"))


@dataclass
class BoilerplateConfig:
    good_words: int = 10  # a line this long, with stop words, ending like a sentence, is article text
    near_words: int = 4  # a sentence this long is article text if good text is next to it
    long_words: int = 40  # a line this long is article text whatever its ending (unless code or chrome)
    min_stop_density: float = 0.25  # share of stop words a good line needs (jusText: 0.30 for English)
    max_chrome_words: int = 30  # a furniture phrase marks a line as chrome only if the line is this short
    max_weak_words: int = 15  # … and a weaker hint ("subscribe", "log in", "read more") only if this short
    max_heading_run: int = 2  # at most this many short lines before good text are a heading, not a menu
    split_glued: bool = True  # "end.Start" -> two lines (paragraphs glued when the markup was removed)
    # the standard cleaner passes articles its HTML reader extracted (trafilatura already took the page's chrome
    # out, and its headings and list items are article) through untouched; true: clean them here too
    extracted_html: bool = False


class Boilerplate(CleaningStep):
    """Removes page chrome line by line (menus, banners, share bars, bylines, scripts) and keeps the article."""

    name = "boilerplate"
    config_class = BoilerplateConfig

    @property
    def skip_extracted(self) -> bool:
        """True: the standard cleaner does not run this step on articles extracted from HTML / WARC pages."""
        return not self.config.extracted_html

    def process(self, text):
        if self.config.split_glued:
            text = split_glued(text)
        lines = text.split("\n")
        keep = classify_lines(lines, self.config)
        if all(keep[i] or not lines[i].strip() for i in range(len(lines))):
            return text
        result = "\n".join(line for line, k in zip(lines, keep) if k)
        result = re.sub(r"\n{3,}", "\n\n", result).strip()
        return result if result else Drop("only_boilerplate")


def line_class(line: str, cfg: BoilerplateConfig) -> str:
    """``bad``, ``good``, ``near`` or ``short`` for one line on its own."""
    stripped = line.strip()
    words = stripped.split()
    if not words:
        return "empty"
    if not any(c.isalpha() for c in stripped):
        return "bad"
    if REFERENCE_SECTION.match(stripped) or (not _prose(words, stripped, cfg) and CODE.search(stripped)):
        return "bad"
    n = len(words)
    if n <= cfg.max_chrome_words and CHROME.search(stripped):
        return "bad"
    if n <= cfg.max_weak_words and WEAK_CHROME.search(stripped):
        return "bad"
    separators = sum(1 for w in words if w in MENU_SEPARATORS)
    if separators >= 2 and n - separators <= 4 * (separators + 1) and stripped[-1] not in TERMINAL_PUNCTUATION:
        return "bad"
    sample = words[:100]  # enough to judge a long line
    stop = stop_words()
    stops = sum(1 for w in sample if w.lower().strip(".,;:!?\"'()") in stop) / len(sample)
    sentence = stripped[-1] in TERMINAL_PUNCTUATION or stripped.endswith(('."', '?"', '!"', ".”", ".)", ":"))
    if n >= cfg.long_words and stops >= cfg.min_stop_density:
        return "good"
    if n >= cfg.good_words and sentence and stops >= cfg.min_stop_density:
        return "good"
    if n >= cfg.near_words and sentence and stops > 0:
        return "near"
    if n >= cfg.good_words and stops >= cfg.min_stop_density:
        return "near"
    return "short"


def _prose(words: list[str], line: str, cfg: BoilerplateConfig) -> bool:
    """A long sentence that merely mentions code-like tokens ("use the print() function; it…") stays prose."""
    symbols = sum(line.count(c) for c in "{}[]();=<>$\\|&")
    return len(words) >= 2 * cfg.good_words and symbols / len(line) < 0.02


def classify_lines(lines: list[str], cfg: BoilerplateConfig) -> list[bool]:
    """Keep (True) or drop for every line: classes on their own, then the context rules above."""
    classes = [line_class(line, cfg) for line in lines]
    decided = [i for i, c in enumerate(classes) if c in ("good", "bad")]

    def neighbours(i: int) -> tuple[str, str]:
        before = next((classes[j] for j in range(i - 1, -1, -1) if classes[j] in ("good", "bad")), "edge")
        after = next((classes[j] for j in range(i + 1, len(classes)) if classes[j] in ("good", "bad")), "edge")
        return before, after

    final = list(classes)
    if not decided:  # nothing is clearly article or chrome: leave the text to the document filters
        return [True] * len(lines)
    for i, c in enumerate(classes):
        if c == "near":
            final[i] = "good" if "good" in neighbours(i) else "bad"
    # short runs: a heading (<= max_heading_run lines) just before good text, or between good texts, stays
    i = 0
    while i < len(lines):
        if final[i] not in ("short",):
            i += 1
            continue
        j = i
        while j < len(lines) and final[j] in ("short", "empty"):
            j += 1
        run = [k for k in range(i, j) if final[k] == "short"]
        after = next((final[k] for k in range(j, len(lines)) if final[k] != "empty"), "edge")
        before = next((final[k] for k in range(i - 1, -1, -1) if final[k] != "empty"), "edge")
        heading = len(run) <= cfg.max_heading_run and after == "good" and before in ("good", "edge", "bad")
        inside = len(run) <= cfg.max_heading_run and before == "good" and after == "good"
        for k in run:
            final[k] = "good" if heading or inside else "bad"
        i = j
    return [c in ("good", "empty") for c in final]
