"""The datatrove adapter in datatrove's own LocalPipelineExecutor (its local mode): lmforge's steps run as a
datatrove pipeline step and keep exactly the documents lmforge's own cleaner keeps.

datatrove (base and ``io`` extra) is part of the ``test`` extra, so this runs in the environment the README's
install makes; the executor runs in a child interpreter of that environment (its workers are processes)."""

from __future__ import annotations

import json
import subprocess
import sys

import lmforge
import pyarrow.parquet as pq
import pytest
from lmforge.plugins.cleaners.standard import StandardCleaner

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


@pytest.mark.slow
def test_lmforge_steps_inside_datatrove_local_executor(tmp_path, tiny_context):
    pytest.importorskip("datatrove", reason="needs datatrove (pip install -e '.[test]' installs it)")
    with open(lmforge.sample_data_path("raw_text.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    source = tmp_path / "in"
    source.mkdir()
    for shard in range(2):
        with open(source / f"part-{shard}.jsonl", "w") as handle:
            handle.writelines(json.dumps({"text": record["text"], "id": f"{shard}-{index}"}) + "\n" for index, record in enumerate(records[shard::2]))
    run = subprocess.run([sys.executable, "-c", DRIVER, str(source), str(tmp_path / "dt_out"), str(tmp_path / "logs"),
                          json.dumps(STEPS)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
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
