"""nanoGPT's Tiny Shakespeare CPU reference through lmforge's `lean` loop, beside nanoGPT's own `train.py`.

    python benchmarks/shakespeare_reference.py [--nanogpt DIR] [--models nanogpt_char nanogpt_char_gpt2]

For each model preset: `lmforge run pipeline=shakespeare_char model=<preset>` in a temporary directory (the
`char` tokenizer, the `lean` loop for 2000 steps, the whole held-out 10% every 250 steps), its validation
losses by step read from the pretrainer's metrics.jsonl. With `--nanogpt DIR` (a checkout of
karpathy/nanoGPT) also nanoGPT's `train.py` with its README's CPU command (block 64, batch 12, 4 layers,
4 heads, 128 wide, 2000 iterations, dropout 0) on the same text, float32, its validation losses parsed from
its log (nanoGPT estimates them on 20 random batches, lmforge evaluates every held-out window). Writes
benchmarks/results/shakespeare_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import Recorder

TEXT = Path(__file__).resolve().parents[1] / "core" / "sample_data" / "tinyshakespeare.txt"
NANOGPT_CPU = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
               "--log_interval=50", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
               "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0", "--dtype=float32"]


def lmforge_run(preset: str, where: Path, env: dict) -> dict:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmforge.cli", "run", "pipeline=shakespeare_char", f"model={preset}",
                    f"run.name={preset}", "run.report=false"], cwd=where, env=env, check=True)
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (where / "runs" / preset / "pretrainer" / "metrics.jsonl").open()]
    key = next(k for k in ("val_loss", "eval_loss") if any(k in r for r in rows))
    manifest = json.loads((where / "runs" / preset / "pretrainer" / "manifest.json").read_text())
    return {"val_loss_by_step": {int(r["step"]): round(r[key], 4) for r in rows if key in r},
            "metrics": manifest.get("metrics", {}), "seconds": round(seconds, 1)}


def nanogpt_run(checkout: Path, where: Path, env: dict) -> dict:
    copy = where / "nanoGPT"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git"))
    data = copy / "data" / "shakespeare_char"
    shutil.copy(TEXT, data / "input.txt")  # prepare.py downloads it only when absent
    subprocess.run([sys.executable, "prepare.py"], cwd=data, env=env, check=True)
    started = time.perf_counter()
    log = subprocess.run([sys.executable, "train.py", *NANOGPT_CPU, f"--out_dir={where / 'out'}"], cwd=copy, env=env,
                         check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    losses = {int(step): round(float(val), 4)
              for step, val in re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", log)}
    return {"val_loss_by_step": losses, "seconds": round(seconds, 1), "command": ["train.py", *NANOGPT_CPU]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["nanogpt_char", "nanogpt_char_gpt2"])
    parser.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT, to run its train.py too")
    args = parser.parse_args()
    recorder = Recorder("shakespeare", packages=("lmforge", "torch", "transformers", "accelerate", "numpy"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    results = {}
    for preset in args.models:
        with tempfile.TemporaryDirectory() as where:
            results[preset] = lmforge_run(preset, Path(where), env)
        print(f"{preset}: {results[preset]['val_loss_by_step']}", flush=True)
    if args.nanogpt:
        with tempfile.TemporaryDirectory() as where:
            results["nanoGPT train.py"] = nanogpt_run(args.nanogpt, Path(where), env)
        print(f"nanoGPT: {results['nanoGPT train.py']['val_loss_by_step']}")
    recorder.write({"models": args.models, "text": TEXT.name, "threads": 1,
                    "nanogpt": str(args.nanogpt) if args.nanogpt else None}, results)


if __name__ == "__main__":
    main()
