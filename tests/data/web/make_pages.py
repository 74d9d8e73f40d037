"""Builds the labelled web-page set: real article text (Wikipedia, CC BY-SA; C4, ODC-BY) inside page chrome
written here in six site styles, as HTML and as labelled text. Deterministic; rerun to regenerate:

    python tests/data/web/make_pages.py /work/shared/data

The pages go into one gzip-compressed WARC file, ``pages.warc.gz``, a ``response`` record each (HTTP 200,
text/html) under the URL in ``index.jsonl``: the form crawls come in, so the benchmark reads them as a
crawl is read. Each page NN also gives ``labels/NN.tsv``: every line of the page's visible text (and of its
inline scripts and styles, as a careless "save as text" keeps them) as ``label<TAB>line`` with label
``article``, ``chrome``, or ``script`` (chrome that is script or style source).
"""

from __future__ import annotations

import html
import json
import random
import re
import sys
import uuid
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).parent
CRAWLED = "2024-01-15T12:00:00Z"  # the WARC-Date of every record: a fixed date keeps the file deterministic
PAGES = 24

NAMES = ["Maria Lopez", "James Okafor", "Priya Natarajan", "Tom Becker", "Ana Sousa", "Li Wei"]
HEADLINES = ["Council approves new cycling lanes for the city centre", "What the drought means for farmers",
             "Ten walks along the river this autumn", "Local school wins national science prize",
             "How to keep your garden green in summer", "The history of the old railway bridge",
             "Opinion: why libraries still matter", "Five questions about the new tax rules",
             "Photos: the harvest festival in pictures", "Storm warning issued for the coast"]
JS_LINES = [
    "window.dataLayer = window.dataLayer || [];",
    "function gtag(){dataLayer.push(arguments);}",
    "gtag('js', new Date());",
    "gtag('config', 'G-8XK2L1QZ7P', { 'anonymize_ip': true });",
    "var googletag = googletag || {}; googletag.cmd = googletag.cmd || [];",
    "(function(w,d,s,l,i){w[l]=w[l]||[];w[l].push({'gtm.start': new Date().getTime(),event:'gtm.js'});",
    "var f=d.getElementsByTagName(s)[0],j=d.createElement(s);j.async=true;f.parentNode.insertBefore(j,f);",
    "})(window,document,'script','dataLayer','GTM-K9P3M2');",
    "document.addEventListener('DOMContentLoaded', function () {",
    "  var slots = document.querySelectorAll('.ad-slot');",
    "  for (var i = 0; i < slots.length; i++) { slots[i].innerHTML = '<div class=\"ad\" data-size=\"300x250\"></div>'; }",
    "});",
    "if (typeof window.__consent === 'undefined') { window.__consent = { analytics: false, ads: false }; }",
    "const observer = new IntersectionObserver((entries) => entries.forEach(e => e.isIntersecting && load(e.target)));",
    "window.__INITIAL_STATE__ = {\"user\":null,\"paywall\":{\"limit\":3,\"count\":1},\"ads\":{\"enabled\":true}};",
    "var s = document.createElement('script'); s.src = 'https://cdn.example.net/widgets.js'; document.head.appendChild(s);",
    "try { localStorage.setItem('visited', '1'); } catch (e) { console.warn(e); }",
    "ga('create', 'UA-1234567-1', 'auto'); ga('send', 'pageview');",
]
CSS_LINES = ["body { margin: 0; font-family: Georgia, serif; }", ".nav a { color: #333; text-decoration: none; }",
             ".cookie-banner { position: fixed; bottom: 0; width: 100%; }", "@media (max-width: 600px) { .sidebar { display: none; } }",
             ".share-bar li { display: inline-block; padding: 0 4px; }"]


def wiki_articles(data: Path, count: int) -> list[tuple[str, list[str]]]:
    out = []
    for line in (data / "wiki_demo.txt").read_text().splitlines():
        # the text ends in its reference sections and category names, glued on: not article text
        line = re.split(r"(?<=\S)(?:See also|References|External links|Further reading)(?=[A-Z\s]|$)", line)[0]
        paragraphs = [p.strip() for p in re.split(r"(?<=[a-z0-9\)][.!?])(?=[A-Z])", line) if p.strip()]
        if len(paragraphs) >= 4 and 200 < len(paragraphs[0]) < 1500:
            words = line.split()[:8]
            verb = next((i for i, w in enumerate(words) if w in ("is", "was", "are", "were", "(")), 3)
            title = " ".join(words[:max(1, verb)]).split(" (")[0].split(",")[0].strip(",.")
            out.append((title, paragraphs[:6]))
        if len(out) == count:
            break
    return out


def c4_articles(data: Path, count: int) -> list[tuple[str, list[str]]]:
    out = []
    for raw in (data / "c4_demo.jsonl").read_text().splitlines():
        text = json.loads(raw)["text"]
        lines = [x.strip() for x in text.split("\n") if x.strip()]
        if 5 <= len(lines) <= 14 and 1200 < len(text) < 4000:
            title = " ".join(lines[0].split()[:7]).rstrip(".,:;!?")
            out.append((title, lines))
        if len(out) == count:
            break
    return out


class Page:
    """HTML and labelled lines, built block by block."""

    def __init__(self):
        self.head: list[str] = []
        self.body: list[str] = []
        self.lines: list[tuple[str, str]] = []

    def block(self, label: str, markup: str, lines: list[str], head: bool = False):
        (self.head if head else self.body).append(markup)
        self.lines.extend((label, line) for line in lines)

    def links(self, label, tag, cls, items):
        anchors = "".join(f'<li><a href="/{i}">{html.escape(t)}</a></li>' for i, t in enumerate(items))
        self.block(label, f'<{tag} class="{cls}"><ul>{anchors}</ul></{tag}>', list(items))


def script(page: Page, rng: random.Random, lines: int, head=False, json_ld=False):
    if json_ld:
        data = json.dumps({"@context": "https://schema.org", "@type": "NewsArticle", "headline": "x",
                           "author": {"@type": "Person", "name": rng.choice(NAMES)}})
        page.block("script", f'<script type="application/ld+json">{data}</script>', [data], head)
        return
    body = [rng.choice(JS_LINES) for _ in range(lines)]
    page.block("script", "<script>\n" + "\n".join(body) + "\n</script>", body, head)


def style(page: Page, rng: random.Random):
    body = rng.sample(CSS_LINES, 3)
    page.block("script", "<style>\n" + "\n".join(body) + "\n</style>", body, head=True)


def article(title: str, paragraphs: list[str], rng: random.Random, headings: bool):
    parts = [f"<h1>{html.escape(title)}</h1>"]
    lines = [title]
    names = rng.sample(["Background", "What happens next", "History", "Details", "Reaction",
                        "How it works", "Early years", "Results"], 2)
    for index, paragraph in enumerate(paragraphs):
        if headings and index in (2, 4):
            heading = names.pop()
            parts.append(f"<h2>{heading}</h2>")
            lines.append(heading)
        parts.append(f"<p>{html.escape(paragraph)}</p>")
        lines.append(paragraph)
    return parts, lines


def footer(page: Page, rng: random.Random, links: list[str], notice) -> None:
    """Footer links, then a notice paragraph. ``notice(rng)`` is called for the markup and again for the label,
    as when the set was generated: a number in it (a year, a company number) is drawn twice and may differ."""
    page.links("chrome", "footer", "footer", links)
    page.block("chrome", f"<p>{notice(rng)}</p>", [notice(rng)])


def news(page, title, paragraphs, rng, site):
    script(page, rng, 4, head=True)
    script(page, rng, 0, head=True, json_ld=True)
    page.links("chrome", "nav", "nav", ["Home", "News", "World", "Business", "Sport", "Culture", "Weather"])
    page.block("chrome", '<div class="cookie-banner"><p>We use cookies to give you the best experience on our '
               'website. By continuing you agree to our use of cookies.</p><button>Accept all</button>'
               '<button>Manage preferences</button></div>',
               [("We use cookies to give you the best experience on our website. By continuing you agree to "
                 "our use of cookies."), "Accept all", "Manage preferences"])
    parts, lines = article(title, paragraphs, rng, headings=rng.random() < 0.5)
    author = rng.choice(NAMES)
    byline = f"By {author} | Published {rng.randint(1, 28)} March 20{rng.randint(15, 24)}, {rng.randint(6, 22)}:{rng.randint(10, 59)}"
    page.body.append('<main><article>' + parts[0] + f'<p class="byline">{byline}</p>')
    page.lines.append(("article", lines[0]))
    page.lines.append(("chrome", byline))
    share = ["Share on Facebook", "Share on X", "Email", "Copy link"]
    page.block("chrome", '<ul class="share-bar">' + "".join(f"<li><a href='#'>{s}</a></li>" for s in share) + "</ul>", share)
    page.body.append("".join(parts[1:]))
    page.lines.extend(("article", line) for line in lines[1:])
    page.block("chrome", f"<p class='tags'>Topics: {site.title()}, Local news, Environment</p>",
               [f"Topics: {site.title()}, Local news, Environment"])
    page.body.append("</article>")
    related = rng.sample(HEADLINES, 4)
    page.block("chrome", "<aside class='related'><h3>Related posts</h3><ul>" +
               "".join(f"<li><a href='/r{i}'>{h}</a></li>" for i, h in enumerate(related)) + "</ul></aside></main>",
               ["Related posts", *related])
    page.block("chrome", "<div class='newsletter'><h3>Get the morning briefing</h3><p>Sign up for our newsletter and "
               "never miss a story.</p><input placeholder='Your email'><button>Subscribe</button></div>",
               ["Get the morning briefing", "Sign up for our newsletter and never miss a story.", "Subscribe"])
    footer(page, rng, ["About us", "Contact", "Advertise", "Privacy policy", "Terms of use"],
           lambda rng: f"© 20{rng.randint(18, 24)} {site}. All rights reserved.")
    script(page, rng, rng.randint(3, 8))


def blog(page, title, paragraphs, rng, site):
    page.block("chrome", f"<header><p class='site'>{site}</p><p>Notes on food, travel and everything in between</p></header>",
               [site, "Notes on food, travel and everything in between"])
    page.links("chrome", "nav", "menu", ["Home", "About me", "Recipes", "Travel", "Contact"])
    parts, lines = article(title, paragraphs, rng, headings=rng.random() < 0.5)
    posted = f"Posted on {rng.choice(['May', 'June', 'July'])} {rng.randint(1, 28)}, 20{rng.randint(12, 23)} by {rng.choice(NAMES).split()[0].lower()}"
    page.body.append("<div class='post'>" + parts[0] + f"<p class='meta'>{posted}</p>" + "".join(parts[1:]))
    page.lines.append(("article", lines[0]))
    page.lines.append(("chrome", posted))
    page.lines.extend(("article", line) for line in lines[1:])
    footer_meta = f"Posted in {rng.choice(['Food', 'Travel', 'Garden', 'Books'])} | Tagged {rng.choice(['autumn', 'family', 'notes'])}, {rng.choice(['tips', 'weekend', 'home'])} | {rng.randint(2, 40)} Comments"
    page.block("chrome", f"<p class='postmeta'>{footer_meta}</p></div>", [footer_meta])
    page.block("chrome", "<div class='nav-links'><a href='/p'>« Previous post</a> <a href='/n'>Next post »</a></div>",
               ["« Previous post", "Next post »"])
    comments = [(rng.choice(NAMES), rng.choice(["Lovely post, thank you for sharing!", "Great read.",
                                                "I tried this last weekend and it worked perfectly.",
                                                "Where did you buy the materials?"])) for _ in range(2)]
    markup = "<div class='comments'><h3>2 thoughts on this post</h3>" + "".join(
        f"<div class='comment'><p class='author'>{n} says:</p><p>{c}</p><a href='#'>Reply</a></div>" for n, c in comments) + "</div>"
    clines = ["2 thoughts on this post"]
    for n, c in comments:
        clines += [f"{n} says:", c, "Reply"]
    page.block("chrome", markup, clines)
    page.block("chrome", "<div class='respond'><h3>Leave a Reply</h3><p>Your email address will not be published. "
               "Required fields are marked *</p></div>",
               ["Leave a Reply", "Your email address will not be published. Required fields are marked *"])
    side = ["Categories", "Food (12)", "Travel (8)", "Garden (5)", "Archives", "June 2023", "May 2023", "April 2023"]
    page.links("chrome", "aside", "sidebar", side)
    page.block("chrome", f"<footer><p>Proudly powered by WordPress | Theme: Twenty Twenty by {site}.</p></footer>",
               [f"Proudly powered by WordPress | Theme: Twenty Twenty by {site}."])
    script(page, rng, rng.randint(2, 5))


def wiki(page, title, paragraphs, rng, site):
    page.block("chrome", "<div class='top'><a href='#content'>Jump to content</a></div>", ["Jump to content"])
    page.links("chrome", "nav", "sidebar", ["Main page", "Contents", "Current events", "Random article",
                                            "About Wikipedia", "Contact us", "Donate"])
    page.block("chrome", "<div class='tools'><a>Create account</a> <a>Log in</a></div>", ["Create account", "Log in"])
    parts, lines = article(title, paragraphs, rng, headings=True)
    page.body.append("<div id='content'>" + parts[0])
    page.lines.append(("article", lines[0]))
    page.block("chrome", "<div class='tabs'><a>Article</a> <a>Talk</a> <a>Read</a> <a>Edit</a> <a>View history</a></div>",
               ["Article", "Talk", "Read", "Edit", "View history"])
    page.block("chrome", "<p id='siteSub'>From Wikipedia, the free encyclopedia</p>", ["From Wikipedia, the free encyclopedia"])
    body = parts[1:]
    sections = [x for x in lines[1:] if len(x) < 40]
    toc = ["Contents", *(f"{i + 1} {s}" for i, s in enumerate(sections))]
    page.block("chrome", "<div id='toc'>" + "".join(f"<p>{t}</p>" for t in toc) + "</div>", toc)
    page.body.extend(body)
    page.lines.extend(("article", line) for line in lines[1:])
    cats = [title, "Political philosophy", "Articles with short description", "All articles with unsourced statements"]
    cat_line = "Categories: " + " | ".join(cats)
    page.block("chrome", f"<div id='catlinks'><p>{cat_line}</p></div></div>", [cat_line])
    foot = [f"This page was last edited on {rng.randint(1, 28)} April 2023, at {rng.randint(10, 23)}:{rng.randint(10, 59)} (UTC).",
            "Text is available under the Creative Commons Attribution-ShareAlike License 4.0; additional terms may apply.",
            "Privacy policy", "About Wikipedia", "Disclaimers", "Mobile view"]
    page.block("chrome", "<footer>" + "".join(f"<p>{f}</p>" for f in foot) + "</footer>", foot)
    script(page, rng, rng.randint(2, 4))


def shop(page, title, paragraphs, rng, site):
    script(page, rng, 3, head=True)
    page.block("chrome", "<div class='promo'>Free delivery on orders over £30</div>", ["Free delivery on orders over £30"])
    page.links("chrome", "nav", "nav", ["Shop", "Guides", "Offers", "Stores", "Sign in", "Basket (0)"])
    crumbs = f"Home › Guides › {title.split()[0]}"
    page.block("chrome", f"<div class='breadcrumbs'>{crumbs}</div>", [crumbs])
    rating = f"{rng.randint(3, 4)}.{rng.randint(0, 9)} out of 5 stars ({rng.randint(10, 400)} reviews)"
    page.block("chrome", f"<div class='rating'>{rating}</div><div><a>Print</a> <a>Save</a></div>", [rating, "Print", "Save"])
    parts, lines = article(title, paragraphs, rng, headings=rng.random() < 0.5)
    page.block("article", "<div class='guide'>" + "".join(parts) + "</div>", lines)
    page.block("chrome", "<div class='paywall'><p>Subscribe to keep reading. Already a subscriber? Log in</p>"
               "<button>Start your free trial</button></div>",
               ["Subscribe to keep reading. Already a subscriber? Log in", "Start your free trial"])
    also = ["You may also like", *rng.sample(HEADLINES, 3)]
    page.block("chrome", "<div class='also'>" + "".join(f"<p>{a}</p>" for a in also) + "</div>", also)
    footer(page, rng, ["Customer service", "Delivery & returns", "Store finder", "Careers", "Cookie settings"],
           lambda rng: f"Registered in England No. {rng.randint(1000000, 9999999)}. © {site} Ltd")
    script(page, rng, rng.randint(3, 6))


def docs(page, title, paragraphs, rng, site):
    page.block("chrome", f"<header><p>{site} documentation</p><input placeholder='Search docs'></header>",
               [f"{site} documentation"])
    page.links("chrome", "nav", "lang", ["English", "Deutsch", "Français", "Español", "日本語"])
    page.links("chrome", "aside", "toc", ["Getting started", "Installation", "Tutorials", "Reference", "FAQ"])
    parts, lines = article(title, paragraphs, rng, headings=True)
    page.block("article", "<div role='main'>" + "".join(parts) + "</div>", lines)
    page.block("chrome", "<div class='feedback'><p>Was this page helpful?</p><button>Yes</button><button>No</button></div>",
               ["Was this page helpful?", "Yes", "No"])
    page.block("chrome", "<div class='pager'><a>‹ Previous</a> <a>1</a> <a>2</a> <a>3</a> <a>Next ›</a></div>",
               ["‹ Previous", "1", "2", "3", "Next ›"])
    page.block("chrome", "<p><a>Edit this page on GitHub</a></p>", ["Edit this page on GitHub"])
    page.block("chrome", f"<footer><p>Last updated on {rng.randint(1, 28)} Jan 2024. Built with Sphinx using a theme provided by Read the Docs.</p></footer>",
               [f"Last updated on {rng.randint(1, 28)} Jan 2024. Built with Sphinx using a theme provided by Read the Docs."])
    script(page, rng, rng.randint(2, 4))


def publication(page, title, paragraphs, rng, site):
    """An article followed by hundreds of lines of inline JavaScript (the issue's second page)."""
    page.links("chrome", "nav", "nav", ["Latest", "Magazine", "Podcasts", "Events", "Subscribe"])
    parts, lines = article(title, paragraphs, rng, headings=rng.random() < 0.5)
    page.block("article", "<article>" + "".join(parts) + "</article>", lines)
    page.block("chrome", "<noscript><p>Please enable JavaScript to view the comments.</p></noscript>",
               ["Please enable JavaScript to view the comments."])
    script(page, rng, rng.randint(120, 250))
    page.block("chrome", f"<footer><p>{site} is published by Example Media Group.</p></footer>",
               [f"{site} is published by Example Media Group."])


STYLES = [news, blog, wiki, shop, docs, publication]
SITES = ["Valley Gazette", "The Morning Post", "Northern Courier", "Green Thumb", "Daily Ledger", "Field Notes"]


def write_warc(path: Path, pages: list[tuple[str, str]]) -> None:
    """``(url, html)`` pages as WARC ``response`` records; record ids derive from the URL, so a rerun writes
    the same bytes."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, markup in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            record = writer.create_warc_record(
                url, "response", payload=BytesIO(markup.encode("utf-8")), http_headers=http,
                warc_headers_dict={"WARC-Date": CRAWLED,
                                   "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>"})
            writer.write_record(record)


def main(data: Path) -> None:
    sources = [(t, p, "Wikipedia") for t, p in wiki_articles(data, PAGES // 2)]
    sources += [(t, p, "C4") for t, p in c4_articles(data, PAGES // 2)]
    (HERE / "labels").mkdir(exist_ok=True)
    index, pages = [], []
    for number, (title, paragraphs, origin) in enumerate(sources):
        rng = random.Random(number)
        make = STYLES[number % len(STYLES)] if origin == "C4" or number % 3 else wiki
        site = SITES[number % len(SITES)]
        page = Page()
        style(page, rng)
        make(page, title, paragraphs, rng, site)
        url = f"https://{site.lower().replace(' ', '')}.example/{number:02d}"
        markup = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                  f"<title>{html.escape(title)} - {site}</title><link rel='canonical' href='{url}'>"
                  + "".join(page.head) + "</head>\n<body>\n" + "\n".join(page.body) + "\n</body></html>\n")
        pages.append((url, markup))
        (HERE / "labels" / f"{number:02d}.tsv").write_text(
            "".join(f"{label}\t{' '.join(line.split())}\n" for label, line in page.lines if line.strip()))
        index.append({"page": f"{number:02d}", "style": make.__name__, "source": origin, "url": url, "title": title})
    write_warc(HERE / "pages.warc.gz", pages)
    (HERE / "index.jsonl").write_text("".join(json.dumps(row) + "\n" for row in index))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"))
