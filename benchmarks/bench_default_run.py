"""How long the default pipeline takes: ``lmforge run`` from an empty directory, timed end to end.

    python benchmarks/bench_default_run.py [--threads N] [extra lmforge overrides …]

Runs the README's command (``lmforge run``, the bundled sample data, CPU) in a fresh temporary directory with
``OMP_NUM_THREADS=1`` unless ``--threads`` says otherwise, and writes benchmarks/results/default_run_<date>.json:
the wall-clock seconds of the whole command, each stage's seconds and metrics from its manifest, the machine
(cores, CPU model, load average before and after: a busy machine makes the run slower) and the versions. One run:
it is a duration to quote, not a comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import Recorder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the run")
    parser.add_argument("--keep", type=Path, help="run here and keep the run directory (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="raw result file (default: benchmarks/results/default_run_<date>.json)")
    parser.add_argument("overrides", nargs="*", help="extra `lmforge run` overrides (default: none)")
    args = parser.parse_args()
    recorder = Recorder("default_run", packages=("lmforge", "torch", "transformers", "trl", "datasets", "tokenizers"))
    where = args.keep or Path(tempfile.mkdtemp(prefix="bench_default_run_"))
    where.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lmforge.cli", "run", *args.overrides]
    print(f"running {' '.join(command[2:])} in {where} (load average {os.getloadavg()[0]:.2f})", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=where, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        print(f"lmforge run failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    stages = {}
    for manifest in sorted((where / "runs" / "default").glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        stages[manifest.parent.name] = {"seconds": data.get("seconds"), "metrics": data.get("metrics")}
    print(f"whole run: {seconds:.0f} s; stages: " + ", ".join(f"{name} {info['seconds']:.0f} s"
                                                            for name, info in stages.items() if info["seconds"]))
    recorder.write({"command": "lmforge run " + " ".join(args.overrides), "OMP_NUM_THREADS": args.threads,
                    "device": "cpu"}, {"whole_run_seconds": round(seconds, 1), "stages": stages}, args.out)
    if not args.keep:
        shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
