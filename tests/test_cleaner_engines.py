"""The datatrove adapter in datatrove's own LocalPipelineExecutor (its local mode): lmforge's steps run as a
datatrove pipeline step and keep exactly the documents lmforge's own cleaner keeps.

datatrove pins numpy/huggingface-hub versions of its own, so it lives in a separate virtual environment
(the one benchmarks/bench_cleaner.py creates, ~/.cache/lmforge/datatrove-venv, with lmforge installed
there ``--no-deps`` plus pluggy/omegaconf/hydra-core); the test is skipped when that is absent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import lmforge
import pyarrow.parquet as pq
import pytest
from lmforge.plugins.cleaners.standard import StandardCleaner

VENV_PYTHON = Path.home() / ".cache" / "lmforge" / "datatrove-venv" / "bin" / "python"
STEPS = ["normalize", "boilerplate", "gopher_repetition", "gopher_quality",
         {"name": "c4_quality", "filter_no_terminal_punct": False}, "fineweb_quality", "pii"]

DRIVER = r"""
import json, sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from lmforge.plugins.cleaners.engines import LmforgeSteps
source, out, logs, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
LocalPipelineExecutor(pipeline=[JsonlReader(source), LmforgeSteps(steps), JsonlWriter(out, compression=None)],
                      tasks=2, workers=2, logging_dir=logs).run()
"""


def datatrove_ready() -> bool:
    if not VENV_PYTHON.exists():
        return False
    probe = subprocess.run([str(VENV_PYTHON), "-c", "import datatrove, lmforge.plugins.cleaners.engines"],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.slow
def test_lmforge_steps_inside_datatrove_local_executor(tmp_path, tiny_context):
    if not datatrove_ready():
        pytest.skip(f"no datatrove environment with lmforge at {VENV_PYTHON}")
    with open(lmforge.sample_data_path("raw_text.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    source = tmp_path / "in"
    source.mkdir()
    for shard in range(2):
        with open(source / f"part-{shard}.jsonl", "w") as handle:
            handle.writelines(json.dumps({"text": record["text"], "id": f"{shard}-{index}"}) + "\n" for index, record in enumerate(records[shard::2]))
    subprocess.run([str(VENV_PYTHON), "-c", DRIVER, str(source), str(tmp_path / "dt_out"), str(tmp_path / "logs"),
                    json.dumps(STEPS)], check=True, capture_output=True)
    through_datatrove = sorted(json.loads(line)["text"] for file in sorted((tmp_path / "dt_out").glob("*.jsonl"))
                               for line in file.read_text().splitlines())
    out = tmp_path / "ours"
    out.mkdir()
    StandardCleaner(steps=STEPS, workers=1).run({"text": str(source)}, out, tiny_context)
    ours = sorted(pq.read_table(sorted(out.glob("*.parquet"))).column("text").to_pylist())
    assert 0 < len(ours) < len(records)
    assert through_datatrove == ours
    stats = json.loads((tmp_path / "logs" / "stats.json").read_text())
    assert "dropped_gopher_quality" in json.dumps(stats)  # drops are visible in datatrove's own stats
