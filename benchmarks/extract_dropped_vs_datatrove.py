"""The pages the default cleaner drops end to end in bench_extract.py, each given to datatrove's filter for
the same rule with FineWeb's settings: does datatrove drop them too?

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--extract", required=True, type=Path)
    args = parser.parse_args()
    theirs = {"c4_quality": C4QualityFilter(filter_no_terminal_punct=False), "gopher_repetition": GopherRepetitionFilter(),
              "gopher_quality": GopherQualityFilter(), "fineweb_quality": FineWebQualityFilter()}
    pages = [p for p in json.loads(args.extract.read_text())["per_page"]
             if p["language"] == "en" and p["default_cleaner_removed"]]
    rows = []
    for page in pages:
        html = gzip.decompress((args.data / "html" / f"{page['id']}.html.gz").read_bytes())
        text = extract_article(html, page["url"])["text"]
        step = page["default_cleaner_removed"].split(":")[0]
        verdict = theirs[step].filter(Document(text=text, id=page["id"])) if step in theirs else None
        rows.append({"url": page["url"], "gold_tokens": page["gold_tokens"], "lmforge": page["default_cleaner_removed"],
                     "datatrove_same_rule": "keep" if verdict is True else
                     ("no datatrove rule" if verdict is None else f"{step}:{verdict[1]}")})
    root = Path(__file__).resolve().parent.parent
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": " ".join(platform.uname()),
           "versions": {k: md.version(k) for k in ("datatrove", "trafilatura", "lmforge")},
           "lmforge_commit": subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True, check=False).stdout.strip(),
           "what": "English pages of the scrapinghub article-extraction benchmark that the default cleaner drops end "
                   "to end, each text (lmforge's HTML reader) given to datatrove's filter for the same rule with "
                   "FineWeb's settings",
           "pages": rows, "datatrove_drops_too": sum(r["datatrove_same_rule"] not in ("keep", "no datatrove rule")
                                                     for r in rows)}
    path = RESULTS / f"extract_dropped_vs_datatrove_{datetime.date.today()}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['datatrove_drops_too']} of {len(rows)} pages dropped by datatrove's same rule -> {path}")


if __name__ == "__main__":
    main()
