"""Extraction quality and speed on the labelled web pages (tests/data/web): article recall, chrome leak and
script/style lines kept, per reader/extractor, side by side with trafilatura and jusText run directly.

    python benchmarks/bench_extract.py            # prints the table; --json for machine-readable rows

Two inputs per page: its HTML (readers: lmforge's HTML reader, trafilatura.extract with its defaults,
jusText) and its text with the markup already gone (every visible line plus inline script/style source, as
"save as text" gives; cleaners: none, the old menu-line rule, the `boilerplate` step, jusText on the lines).

Scores, over all pages (character-weighted):
- article recall: share of the labelled article lines' characters found in the output;
- chrome leak: share of the output's characters on lines that are not article text;
- script lines: labelled script/style lines found in the output (the target is zero).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "tests" / "data" / "web"


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
    """Character counts for one page's output against its labelled lines."""
    article = [norm(t) for label, t in lines if label == "article"]
    article_joined = "\n".join(article)
    out_lines = [norm(line) for line in output.splitlines() if line.strip()]
    out_joined = " ".join(out_lines)
    found = sum(len(a) for a in article if a and a in out_joined)
    chrome = sum(len(o) for o in out_lines if o not in article_joined)
    scripts = sum(1 for label, t in lines if label == "script" and len(norm(t)) >= 8 and norm(t) in out_joined)
    return {"article_chars": sum(map(len, article)), "article_found": found,
            "output_chars": sum(map(len, out_lines)), "chrome_chars": chrome, "script_lines": scripts}


def summarise(name: str, outputs: list[str], pages: list[dict], seconds: float) -> dict:
    totals: dict[str, int] = {}
    worst = []
    for output, page in zip(outputs, pages):
        s = score(output, page["lines"])
        for key, value in s.items():
            totals[key] = totals.get(key, 0) + value
        worst.append((s["article_found"] / max(1, s["article_chars"]), page["page"]))
    mb = sum(len(p["html"]) for p in pages) / 1e6
    return {"system": name, "recall": totals["article_found"] / max(1, totals["article_chars"]),
            "chrome_leak": totals["chrome_chars"] / max(1, totals["output_chars"]),
            "script_lines": totals["script_lines"], "pages_per_s": len(pages) / max(seconds, 1e-9),
            "html_mb_per_s": mb / max(seconds, 1e-9), "worst_page": min(worst)}


def timed(function, items):
    for item in items[:2]:  # warm up: imports, caches
        function(item)
    started = time.perf_counter()
    outputs = [function(item) for item in items]
    return outputs, time.perf_counter() - started


def html_systems():
    import justext
    import trafilatura
    from lmforge.plugins.cleaners.web import extract_article

    stoplist = justext.get_stoplist("English")
    return {
        "lmforge HTML reader (trafilatura, tables, no comments)": lambda p: extract_article(p["html"])["text"],
        "trafilatura.extract (its defaults)": lambda p: trafilatura.extract(p["html"]) or "",
        "trafilatura.extract(fast=True)": lambda p: trafilatura.extract(p["html"], fast=True) or "",
        "jusText (English stoplist)": lambda p: "\n".join(
            x.text for x in justext.justext(p["html"], stoplist) if not x.is_boilerplate),
    }


def text_systems():
    import justext
    from lmforge.plugins.cleaners.boilerplate import Boilerplate
    from lmforge.plugins.cleaners.heuristics import BoilerplateLines

    stoplist = justext.get_stoplist("English")
    new, old = Boilerplate(), BoilerplateLines()

    def keep(result):
        return result if isinstance(result, str) else ""

    def as_html(text):
        import html

        return "<html><body>" + "".join(f"<p>{html.escape(line)}</p>" for line in text.splitlines()) + "</body></html>"

    return {
        "no line cleaning (cleaner=basic)": lambda t: t,
        "menu-line rule (old `boilerplate`)": lambda t: keep(old.process(t)),
        "lmforge `boilerplate` (line classifier)": lambda t: keep(new.process(t)),
        "jusText on the lines (<p> each)": lambda t: "\n".join(
            x.text for x in justext.justext(as_html(t), stoplist) if not x.is_boilerplate),
    }


def run(pages: list[dict]) -> list[dict]:
    rows = []
    for name, function in html_systems().items():
        outputs, seconds = timed(function, pages)
        rows.append({"input": "html", **summarise(name, outputs, pages, seconds)})
    texts = ["\n".join(t for _, t in p["lines"]) for p in pages]
    for name, function in text_systems().items():
        outputs, seconds = timed(function, texts)
        row = summarise(name, outputs, pages, seconds)
        row["text_mb_per_s"] = sum(map(len, texts)) / 1e6 / max(seconds, 1e-9)
        rows.append({"input": "text", **row})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    pages = load_pages()
    rows = run(pages)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{len(pages)} labelled pages, {sum(len(p['html']) for p in pages) / 1e6:.2f} MB of HTML, "
          f"{sum(1 for p in pages for l, _ in p['lines'] if l == 'article')} article lines, "
          f"{sum(1 for p in pages for l, _ in p['lines'] if l != 'article')} chrome lines")
    print(f"{'input':5} {'system':48} {'recall':>7} {'leak':>6} {'script':>6} {'pages/s':>8}  worst page (recall)")
    for r in rows:
        print(f"{r['input']:5} {r['system']:48} {r['recall']:7.3f} {r['chrome_leak']:6.3f} {r['script_lines']:6d} "
              f"{r['pages_per_s']:8.1f}  {r['worst_page'][1]} ({r['worst_page'][0]:.2f})")


if __name__ == "__main__":
    main()
