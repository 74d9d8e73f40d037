"""The default cleaner does not undo good extraction: an article read from an HTML page keeps its headings and
list items through every default step, while the same page saved as text still loses its chrome; and the
recipe's options that keep real articles (alpha share over words, closing quotes at line ends).

Pages: tests/data/web_articles (written for this repository, see its README)."""

from __future__ import annotations

import json
from pathlib import Path

import lmforge
import lxml.html
import pyarrow.parquet as pq
import pytest
from lmforge import Drop
from lmforge.plugins.cleaners.basic import build_steps
from lmforge.plugins.cleaners.heuristics import FineWebQuality, GopherQuality
from lmforge.plugins.cleaners.standard import StandardCleaner
from lmforge.plugins.cleaners.web import extract_article, tidy_text
from omegaconf import OmegaConf

PAGES = Path(__file__).resolve().parent / "data" / "web_articles"
# Headings and list items of the two articles (each of at least three words: C4's line rule, which FineWeb
# keeps, drops shorter lines whatever their source).
STRUCTURE = {
    "harbour.html": ["Harbour town opens its new ferry terminal", "What changes for passengers",
                     "Years of planning and delay", "Ferries leave every forty minutes",
                     "Bicycles travel free of charge", "Season tickets cost less for residents",
                     "The last boat leaves at eleven"],
    "bread.html": ["How to bake a simple loaf of bread at home", "You will need these ingredients",
                   "Five hundred grams of strong flour", "Seven grams of dried yeast", "Ten grams of fine salt",
                   "Three hundred millilitres of warm water", "Mixing and kneading the dough",
                   "Rising, shaping and baking", "Leave the dough covered for one hour",
                   "Shape it into a tight oval loaf", "Let it rise again on a tray",
                   "Bake it for thirty minutes at 220 degrees"],
}
CHROME = ["cookies", "Subscribe", "Share on Facebook", "newsletter", "©", "Log in", "Cart (0)", "Posted on",
          "You may also like", "Related stories", "Powered by", "Leave a reply"]


def default_cleaner() -> StandardCleaner:
    """The cleaner exactly as ``lmforge run pipeline=clean_only`` configures it (conf/cleaner/standard.yaml)."""
    config = OmegaConf.to_container(lmforge.compose(["pipeline=clean_only"]).cleaner, resolve=True)
    assert config.pop("plugin") == "standard"
    return StandardCleaner(**{**config, "keep_source": True, "workers": 1})


def cleaned(directory: Path, out: Path, context) -> dict[str, str]:
    out.mkdir()
    default_cleaner().run({"text": str(directory)}, out, context)
    rows = [row for file in sorted(out.glob("data-*.parquet")) for row in pq.read_table(file).to_pylist()]
    return {Path(row["source"].rsplit(":", 1)[0]).name: row["text"] for row in rows}


def page_as_text(html: bytes) -> str:
    """The page's visible text, one line per block, as "save as text" gives it (markup gone, chrome kept)."""
    document = lxml.html.fromstring(html)
    for element in document.xpath("//script|//style|//head"):
        element.drop_tree()
    for element in document.iter("p", "h1", "h2", "h3", "li", "div", "nav", "header", "footer", "button"):
        element.tail = "\n" + (element.tail or "")
    lines = (" ".join(line.split()) for line in document.text_content().splitlines())
    return "\n".join(line for line in lines if line)


@pytest.fixture(scope="module")
def pages() -> dict[str, bytes]:
    return {name: (PAGES / name).read_bytes() for name in STRUCTURE}


def test_extracted_articles_keep_their_headings_and_list_items(pages, tmp_path, tiny_context):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, html in pages.items():
        (raw / name).write_bytes(html)
        extracted = extract_article(html)["text"]
        assert all(line in extracted for line in STRUCTURE[name])  # the reader got them (trafilatura)
        assert not [c for c in CHROME if c in extracted]
    kept = cleaned(raw, tmp_path / "out", tiny_context)
    assert sorted(kept) == sorted(pages)  # no article dropped as low quality
    for name, text in kept.items():
        lines = text.splitlines()
        assert [line for line in STRUCTURE[name] if not any(line in kept_line for kept_line in lines)] == []
        assert text == extract_article(pages[name])["text"]  # nothing the reader kept was taken out


def test_the_same_pages_saved_as_text_still_lose_their_chrome(pages, tmp_path, tiny_context):
    raw = tmp_path / "raw"
    raw.mkdir()
    texts = {name: page_as_text(html) for name, html in pages.items()}
    with open(raw / "pages.jsonl", "w") as handle:
        for name, text in texts.items():
            assert [c for c in CHROME if c in text]  # the chrome is there to remove
            handle.write(json.dumps({"text": text, "page": name}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    default_cleaner().run({"text": str(raw)}, out, tiny_context)
    rows = [row for file in sorted(out.glob("data-*.parquet")) for row in pq.read_table(file).to_pylist()]
    assert sorted(row["page"] for row in rows) == sorted(pages)
    for row in rows:
        assert [c for c in CHROME if c in row["text"]] == []
        paragraphs = [line for line in extract_article(pages[row["page"]])["text"].splitlines() if len(line) > 120]
        assert paragraphs and all(p in row["text"] for p in paragraphs)


def test_the_python_default_is_the_configured_recipe():
    """``StandardCleaner()`` in Python runs the same steps, with the same settings, as conf/cleaner/standard.yaml."""
    def settings(cleaner):
        return [(step.name, step.config) for step in build_steps(cleaner.config.steps)]

    assert settings(StandardCleaner()) == settings(default_cleaner())


def test_the_reader_drops_lines_without_words_and_unwraps_layout_tables():
    lines = ["Title of the story", "    ", "- ", "|  |  |", "|  | The whole article sits in one cell. | ",
             "| Pos | Player | Plays |", "| DE | Garrett | 61 |", "\t", "Last line."]
    assert tidy_text("\n".join(lines)).splitlines() == ["Title of the story", "The whole article sits in one cell.",
                                                 "Pos | Player | Plays", "DE | Garrett | 61", "Last line."]


def reason(result) -> str:
    return result.reason if isinstance(result, Drop) else "kept"


NEWS = ("The council met on Tuesday, 3 March, to discuss the new library (which cost £4.2m), and members agreed - "
        "after a long debate - that the reading rooms should stay open later; “students need it,” one said. ") * 4


def test_alpha_share_over_words_keeps_punctuated_prose_and_still_drops_numbers():
    datatrove_like, recipe = GopherQuality(), GopherQuality(alpha_ratio_skip_punctuation=True)
    assert reason(datatrove_like.process(NEWS)) == "gopher_below_alpha_threshold"  # its commas and dashes count
    assert recipe.process(NEWS) == NEWS
    numbers = NEWS + " ".join(str(n) for n in range(1000, 1200))
    assert reason(recipe.process(numbers)) == "gopher_below_alpha_threshold"


def test_line_end_looks_through_closing_quotes():
    quoted = "\n".join(["“We will open the new reading rooms on Monday,” she said.”", "a short caption"] * 4)
    assert reason(FineWebQuality().process(quoted)) == "line_punct_ratio"
    assert FineWebQuality(look_through_closing_marks=True, char_duplicates_ratio=1).process(quoted) == quoted
