"""The pages the default cleaner drops end to end in bench_extract.py, each given to datatrove's filter for
the same rule with FineWeb's settings, and their gold article text too: does datatrove drop them as well?

    python benchmarks/extract_dropped_vs_datatrove.py --data <benchmark checkout> \
        --extract benchmarks/results/extract_<date>.json

``--data``: the scrapinghub article-extraction-benchmark checkout bench_extract.py fetched (its cache dir).
Needs ``pip install "lmforge[datatrove]"``. Writes benchmarks/results/extract_dropped_vs_datatrove_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.metadata as md
import json
import platform
import subprocess
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from lmforge.plugins.cleaners.web import extract_article

RESULTS = Path(__file__).parent / "results"


def judged(rule, step: str, text: str, doc_id: str) -> str:
    """datatrove's verdict on one text: keep, the step and its reason, or that datatrove has no such rule."""
    if rule is None:
        return "no datatrove rule"
    verdict = rule.filter(Document(text=text, id=doc_id))
    return "keep" if verdict is True else f"{step}:{verdict[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--extract", required=True, type=Path)
    args = parser.parse_args()
    theirs = {"c4_quality": C4QualityFilter(filter_no_terminal_punct=False), "gopher_repetition": GopherRepetitionFilter(),
              "gopher_quality": GopherQualityFilter(), "fineweb_quality": FineWebQualityFilter()}
    pages = [p for p in json.loads(args.extract.read_text())["per_page"]
             if p["language"] == "en" and p["default_cleaner_removed"]]
    gold = {key: value["articleBody"] for key, value in json.loads((args.data / "ground-truth.json").read_text()).items()}
    rows = []
    for page in pages:
        html = gzip.decompress((args.data / "html" / f"{page['id']}.html.gz").read_bytes())
        text = extract_article(html, page["url"])["text"]
        step = page["default_cleaner_removed"].split(":")[0]
        rule = theirs.get(step)
        rows.append({"url": page["url"], "gold_tokens": page["gold_tokens"], "lmforge": page["default_cleaner_removed"],
                     "datatrove_same_rule": judged(rule, step, text, page["id"]),
                     "datatrove_same_rule_on_gold_text": judged(rule, step, gold[page["id"]], page["id"])})
    root = Path(__file__).resolve().parent.parent
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": " ".join(platform.uname()),
           "versions": {k: md.version(k) for k in ("datatrove", "trafilatura", "lmforge")},
           "lmforge_commit": subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True, check=False).stdout.strip(),
           "what": "English pages of the scrapinghub article-extraction benchmark that the default cleaner drops end "
                   "to end, each text (lmforge's HTML reader) and the page's gold article text given to datatrove's "
                   "filter for the same rule with FineWeb's settings",
           "pages": rows, "datatrove_drops_too": sum(r["datatrove_same_rule"] not in ("keep", "no datatrove rule")
                                                     for r in rows),
           "gold_text_dropped_too": sum(r["datatrove_same_rule_on_gold_text"] not in ("keep", "no datatrove rule")
                                        for r in rows)}
    path = RESULTS / f"extract_dropped_vs_datatrove_{datetime.date.today()}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['datatrove_drops_too']} of {len(rows)} pages dropped by datatrove's same rule "
          f"({out['gold_text_dropped_too']} on their gold text too) -> {path}")


if __name__ == "__main__":
    main()
