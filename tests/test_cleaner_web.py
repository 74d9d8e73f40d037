"""HTML and WARC inputs: the article comes out of the page with its URL and metadata, menus, footers and
scripts stay behind; WARC responses that are not HTML pages are skipped; extraction in parallel gives
the same documents in the same order; a broken WARC is a bad record naming file and record."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from lmforge.errors import DataError
from lmforge.plugins.cleaners.standard import StandardCleaner
from lmforge.plugins.cleaners.web import iter_html_documents, iter_warc_documents

ARTICLE = [
    "The river authority published its yearly report on water quality along the northern valley.",
    ("Samples taken at twelve stations show that nitrate levels fell for the third year in a row, "
     "which the authors attribute to new rules on fertiliser use and to the wet spring."),
    ("Fish counts rose at every station but one, where a broken weir still blocks the salmon run; "
     "repairs are planned for the autumn, once the water is low enough for the work to begin."),
]
CHROME = ["Home", "News", "Sport", "Weather", "Share on Facebook", "Tweet this",
          "We use cookies to improve your experience. Accept all cookies",
          "Related posts", "Ten walks along the river", "© 2024 Valley Gazette. All rights reserved."]
SCRIPT = "window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);}"


def page(title: str, paragraphs: list[str], url: str = "https://gazette.example/river-report") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title} | Valley Gazette</title>
<link rel="canonical" href="{url}"><style>body {{ font-family: serif; }} .nav a {{ color: red; }}</style>
<script>{SCRIPT}</script></head><body>
<header><nav class="nav"><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li>
<li><a href="/sport">Sport</a></li><li><a href="/weather">Weather</a></li></ul></nav></header>
<div class="cookie-banner">We use cookies to improve your experience. <button>Accept all cookies</button></div>
<main><article><h1>{title}</h1>{body}
<div class="share"><a href="#">Share on Facebook</a> <a href="#">Tweet this</a></div></article>
<aside class="related"><h3>Related posts</h3><ul><li><a href="/walks">Ten walks along the river</a></li></ul></aside>
</main><footer><p>© 2024 Valley Gazette. All rights reserved.</p></footer>
<script>var config = {{"ads": true, "slots": ["top", "side"]}}; console.log("loaded");</script></body></html>"""


def write_warc(path, pages: list[tuple[str, str, bytes, str]]) -> None:
    """pages: (url, content type, body, status) -> a gzipped WARC with a request before each response."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=str(path).endswith(".gz"))
        for url, kind, body, status in pages:
            request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "gazette.example")], is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", http_headers=request))
            headers = StatusAndHeaders(status, [("Content-Type", kind)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))


def assert_article_only(text: str) -> None:
    for line in ARTICLE:
        assert line in text
    for line in CHROME:
        assert line not in text, line
    assert "dataLayer" not in text and "font-family" not in text and "console.log" not in text


def test_html_file_gives_the_article_and_its_metadata(tmp_path):
    path = tmp_path / "river.html"
    path.write_text(page("River report", ARTICLE))
    [document] = list(iter_html_documents(path))
    assert_article_only(document["text"])
    assert document["url"] == "https://gazette.example/river-report"
    assert document["title"].startswith("River report")
    assert document["text"].splitlines()[1:] == ARTICLE or all(p in document["text"].splitlines() for p in ARTICLE)


def test_warc_responses_in_order_non_html_skipped_and_parallel_is_identical(tmp_path):
    path = tmp_path / "crawl.warc.gz"
    pages = [(f"https://gazette.example/story-{i}", "text/html; charset=utf-8",
              page(f"Story {i}", [f"Story {i} begins here. " + p for p in ARTICLE],
                   f"https://gazette.example/story-{i}").encode(), "200 OK") for i in range(5)]
    pages.insert(2, ("https://gazette.example/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64), "200 OK"))
    pages.insert(4, ("https://gazette.example/gone", "text/html", b"<html><body>Not found</body></html>",
                     "404 Not Found"))
    write_warc(path, pages)
    serial = list(iter_warc_documents(path, workers=1))
    assert [d["url"] for d in serial] == [f"https://gazette.example/story-{i}" for i in range(5)]
    assert all(d["warc_record_id"].startswith("<urn:uuid:") and d["warc_date"] for d in serial)
    for i, document in enumerate(serial):
        assert f"Story {i} begins here." in document["text"]
        assert "Share on Facebook" not in document["text"] and "dataLayer" not in document["text"]
    assert list(iter_warc_documents(path, workers=2)) == serial


def test_standard_cleaner_reads_a_directory_of_pages_and_warcs(tmp_path, tiny_context):
    web = tmp_path / "web"
    web.mkdir()
    (web / "a.html").write_text(page("River report", ARTICLE))
    write_warc(web / "b.warc", [("https://gazette.example/other", "text/html",
                                 page("Other", [p.replace("river", "canal") for p in ARTICLE]).encode(), "200 OK")])
    out = tmp_path / "out"
    out.mkdir()
    StandardCleaner(workers=2, steps=["normalize", "exact_dedup"]).run({"text": str(web)}, out, tiny_context)
    rows = pq.read_table(out / "data-00000.parquet").to_pylist()
    assert [r["url"] for r in rows] == ["https://gazette.example/river-report", "https://gazette.example/other"]
    assert_article_only(rows[0]["text"])
    assert "canal authority" in rows[1]["text"]
    report = json.loads((out / "report.json").read_text())
    assert report["docs_in"] == 2 and report["bad_records"] == 0


def test_a_broken_warc_is_a_bad_record_naming_the_file(tmp_path, tiny_context):
    good = tmp_path / "in" / "a.warc"
    good.parent.mkdir()
    write_warc(good, [("https://gazette.example/x", "text/html", page("X", ARTICLE).encode(), "200 OK")])
    (tmp_path / "in" / "b.warc").write_bytes(b"this is not a warc file at all\r\n\r\n")
    out = tmp_path / "out"
    out.mkdir()
    StandardCleaner(workers=1, steps=["normalize"]).run({"text": str(tmp_path / "in")}, out, tiny_context)
    report = json.loads((out / "report.json").read_text())
    assert report["docs_out"] == 1 and report["bad_records"] == 1
    assert "b.warc:record 1" in report["bad_record_lines"][0]
    with pytest.raises(DataError, match=r"b\.warc:record 1: not a readable WARC"):
        list(iter_warc_documents(tmp_path / "in" / "b.warc"))
