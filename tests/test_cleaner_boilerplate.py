"""Line-level boilerplate removal on the labelled web pages (tests/data/web: real article text in page chrome
written for the set, a fixture rather than a benchmark): the article stays, menus, banners, bylines and script
lines go. Extraction on real pages is measured by benchmarks/bench_extract.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from lmforge import Drop
from lmforge.plugins.cleaners.boilerplate import Boilerplate

WEB = Path(__file__).resolve().parent / "data" / "web"

PARAGRAPH = ("The council met on Tuesday to discuss the new library building, and members agreed that the "
             "reading rooms should stay open later in the evening for students.")


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def load_pages(directory: Path = WEB) -> list[dict]:
    """The pages of ``index.jsonl``, their HTML from the ``response`` records of ``pages.warc.gz`` (by URL)
    and their labelled lines from ``labels/``."""
    from warcio.archiveiterator import ArchiveIterator

    with open(directory / "pages.warc.gz", "rb") as handle:
        html_by_url = {record.rec_headers.get_header("WARC-Target-URI"): record.content_stream().read()
                       for record in ArchiveIterator(handle) if record.rec_type == "response"}
    pages = []
    for row in (directory / "index.jsonl").read_text().splitlines():
        meta = json.loads(row)
        labelled = [line.split("\t", 1) for line in (directory / "labels" / f"{meta['page']}.tsv").read_text().splitlines()]
        pages.append({**meta, "html": html_by_url[meta["url"]], "lines": [(label, text) for label, text in labelled]})
    return pages


def score(output: str, lines: list[tuple[str, str]]) -> dict[str, int]:
    """Character counts for one page's output against its labelled lines: article characters found, output
    characters on lines that are not article text (chrome), labelled script lines kept."""
    article = [norm(t) for label, t in lines if label == "article"]
    article_joined = "\n".join(article)
    out_lines = [norm(line) for line in output.splitlines() if line.strip()]
    out_joined = " ".join(out_lines)
    found = sum(len(a) for a in article if a and a in out_joined)
    chrome = sum(len(o) for o in out_lines if o not in article_joined)
    scripts = sum(1 for label, t in lines if label == "script" and len(norm(t)) >= 8 and norm(t) in out_joined)
    return {"article_chars": sum(map(len, article)), "article_found": found,
            "output_chars": sum(map(len, out_lines)), "chrome_chars": chrome, "script_lines": scripts}


def totals(outputs, pages):
    sums = {}
    for output, page in zip(outputs, pages):
        for key, value in score(output, page["lines"]).items():
            sums[key] = sums.get(key, 0) + value
    return sums["article_found"] / sums["article_chars"], sums["chrome_chars"] / sums["output_chars"], sums["script_lines"]


@pytest.fixture(scope="module")
def pages():
    return load_pages()


def test_labelled_set_is_whole(pages):
    assert len(pages) >= 20
    for page in pages:
        labels = {label for label, _ in page["lines"]}
        assert labels <= {"article", "chrome", "script"} and "article" in labels and "chrome" in labels


def test_line_classifier_meets_the_targets_on_text_without_markup(pages):
    step = Boilerplate()
    texts = ["\n".join(text for _, text in page["lines"]) for page in pages]
    recall, leak, scripts = totals([step.process(t) for t in texts], pages)
    assert recall >= 0.95 and leak <= 0.05 and scripts == 0, (recall, leak, scripts)
    unchanged = totals(texts, pages)  # what cleaner=basic keeps: every chrome and script line
    assert unchanged[1] > 0.4 and unchanged[2] > 500


def test_html_reader_meets_the_targets(pages):
    from lmforge.plugins.cleaners.web import extract_article

    recall, leak, scripts = totals([extract_article(p["html"])["text"] for p in pages[:8]], pages[:8])
    assert recall >= 0.95 and leak <= 0.05 and scripts == 0, (recall, leak, scripts)


def test_article_with_heading_kept_menus_banners_and_scripts_dropped():
    text = "\n".join(["Home", "News", "Sport", "Weather", "We use cookies to improve your experience.",
                      "By Maria Lopez | 3 March 2021", PARAGRAPH, "Background", PARAGRAPH.replace("Tuesday", "Monday"),
                      "Share on Facebook", "Related posts", "Ten walks along the river",
                      "window.dataLayer = window.dataLayer || [];", "function gtag(){dataLayer.push(arguments);}",
                      "© 2024 Valley Gazette. All rights reserved."])
    kept = Boilerplate().process(text).splitlines()
    assert kept == [PARAGRAPH, "Background", PARAGRAPH.replace("Tuesday", "Monday")]


def test_clean_prose_is_left_alone_and_all_chrome_is_a_drop(real_data):
    with gzip.open(real_data / "c4_demo.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line)["text"] for line in handle]
    step = Boilerplate()
    before = sum(map(len, docs))
    after = sum(len(r) for r in map(step.process, docs) if isinstance(r, str))
    assert after > 0.99 * before  # C4 is already cleaned: under 1% of its characters look like page furniture
    assert isinstance(step.process("Home\nAbout\nContact\nwindow.x = 1;"), Drop)


def test_wikipedia_reference_sections_and_categories_go(real_data):
    with gzip.open(real_data / "wiki_demo.txt.gz", "rt", encoding="utf-8") as handle:
        article = handle.readline().rstrip("\n")
    cleaned = Boilerplate().process(article)
    assert "Far-left politics" in article[-40:] and "Far-left politics" not in cleaned
    assert "socialism.\nHumans lived" in cleaned  # glued paragraphs put on lines of their own
    assert len(cleaned) > 0.9 * len(article)
