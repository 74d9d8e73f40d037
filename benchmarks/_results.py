"""What every benchmark here shares: interleaved rounds, medians, and the raw result file it leaves behind.

Each benchmark writes ``benchmarks/results/<bench>_<YYYY-MM-DD>.json`` (``_2``, ``_3`` … when that day's
file exists, so no raw result is overwritten) holding the command line, the date, the machine (cores, CPU
model, load average before and after), Python and package versions, and the benchmark's own per-round
numbers and medians. The documentation quotes numbers from these files only.

Rounds are interleaved (every contender once per round, the order rotated each round) so that a slow spell
of a shared machine hits every contender alike, and the median over rounds is what is compared.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("lmforge", "torch", "transformers", "tokenizers", "datasets", "numpy", "xxhash")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(packages=PACKAGES) -> dict[str, str | None]:
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_state() -> dict:
    """The commit measured, whether core/ or plugins/ differed from it (uncommitted edits), and whether the
    benchmark scripts did (an edited or new script)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=RESULTS.parent, capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""
    return {"lmforge_commit": git("rev-parse", "HEAD") or None,
            "lmforge_uncommitted_changes": bool(git("status", "--porcelain", "--", ":/core", ":/plugins")),
            "benchmark_scripts_uncommitted": bool(git("status", "--porcelain", "--", ":/benchmarks/*.py"))}


def median(values) -> float:
    return statistics.median(values)


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int, log=print) -> dict[str, list]:
    """Every contender once per round, the order rotated each round (a b c, b c a, …); their return values
    (a float or a tuple starting with one is shown in the log line as seconds)."""
    names = list(contenders)
    results: dict[str, list] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(contenders[name]())
            if log:
                value = results[name][-1]
                seconds = value[0] if isinstance(value, tuple) and value and isinstance(value[0], float) else value
                log(f"round {index + 1}/{rounds}: {name}" + (f": {seconds:.3f}" if isinstance(seconds, float) else ""))
    return results


class Recorder:
    """Notes the machine's state at the start; ``write`` adds the end state and saves the raw result."""

    def __init__(self, bench: str, packages=PACKAGES, extra_versions: dict | None = None):
        self.bench = bench
        self.packages = packages
        self.extra_versions = dict(extra_versions or {})
        self.started = time.time()
        self.load_before = os.getloadavg()
        self.git = git_state()  # the code measured: the commit when the run starts

    def write(self, settings: dict, results: dict, out: Path | None = None) -> Path:
        today = datetime.date.today().isoformat()
        if out is None:
            RESULTS.mkdir(exist_ok=True)
            out, number = RESULTS / f"{self.bench}_{today}.json", 2
            while out.exists():
                out, number = RESULTS / f"{self.bench}_{today}_{number}.json", number + 1
        record = {
            "benchmark": self.bench,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            **self.git,
            "machine": {
                "cores": os.cpu_count(),
                "cpu_model": cpu_model(),
                "platform": platform.platform(),
                "load_average_before": [round(x, 2) for x in self.load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "note": "shared machine: other jobs may run; the rounds are interleaved so load hits both sides",
            },
            "python": platform.python_version(),
            "versions": {**versions(self.packages), **self.extra_versions},
            "wall_seconds": round(time.time() - self.started, 1),
            "settings": settings,
            "results": results,
        }
        out.write_text(json.dumps(record, indent=1, default=_plain) + "\n")
        print(f"raw result: {out}")
        return out


def _plain(value):
    """numpy scalars and paths in results -> JSON."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
