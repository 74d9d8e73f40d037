"""Trackers in their offline modes: wandb (offline run file) and trackio (local database) get every stage's
metrics with an increasing run step, each stage's own step beside it, and the resolved run config; tracker
parameters are validated like stage parameters."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmforge
import pytest
from lmforge.plugins.tracking import RunSteps

TESTS = Path(__file__).resolve().parent


def _cfg(root, trackers) -> dict:
    return {"run": {"root": str(root), "name": "tracked", "report": False, "quiet": True, "trackers": trackers},
            "hardware": {"device": "cpu"}, "pipeline": {"stages": {"one": {}, "two": {}}},
            "one": {"kind": "sampler", "plugin": "curvy_test"},
            "two": {"kind": "sampler", "plugin": "curvy_test", "lr": 0.002}}


@pytest.fixture(scope="module")
def curvy():
    sys.path.insert(0, str(TESTS))
    from test_report import Curvy

    with lmforge.registered("sampler", "curvy_test", Curvy):
        yield
    sys.path.remove(str(TESTS))


def test_run_steps_put_stages_one_after_another():
    steps = RunSteps()
    assert [steps("one", s) for s in (1, 2, 6)] == [1, 2, 6]
    assert steps("one", None) == 6  # a summary sits at the stage's last step
    assert [steps("two", s) for s in (0, 1, 3)] == [7, 8, 10]
    assert steps("three", None) == 11


def _wandb_records(path: Path):
    """The records of an offline wandb run file (W&B's LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunk = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def test_wandb_offline_gets_steps_and_config(curvy, tmp_path, monkeypatch, capfd):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    lmforge.run(_cfg(tmp_path, [{"name": "wandb", "project": "lmtest", "tags": ["ci"]}]))
    assert capfd.readouterr().err == ""  # wandb's own chatter stays off the console
    [run_file] = (tmp_path / "tracked" / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.time() + 60  # wandb's service writes the file behind finish(); wait for its exit record
    while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(run_file)):
        assert time.time() < deadline, "wandb never finished its offline run file"
        time.sleep(0.2)
    history, run, metrics = [], None, []
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            history.append((record.history.step.num, items))
        elif kind == "run":
            run = record.run
        elif kind == "metric":
            metrics.append((record.metric.glob_name, record.metric.step_metric))
    assert run.project == "lmtest" and run.display_name == "tracked" and list(run.tags) == ["ci"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["two"] == {"kind": "sampler", "plugin": "curvy_test", "lr": 0.002}
    steps = [step for step, _ in history]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one increasing run step
    first_two = next((step, items) for step, items in history if "two/loss" in items)
    assert first_two[0] > max(s for s, items in history if "one/loss" in items)  # stage two after stage one
    assert first_two[1]["two/step"] == 1 and first_two[1]["two/loss"] == pytest.approx(2.7)
    assert ("two/*", "two/step") in metrics  # wandb plots each stage against its own step


def test_trackio_local_gets_steps_and_config(curvy, tmp_path):
    pytest.importorskip("trackio")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(TESTS)!r})
        import lmforge
        from test_report import CurvyPlugin
        from test_tracking import _cfg
        lmforge.register_plugin(CurvyPlugin())
        lmforge.run(_cfg({str(tmp_path)!r}, [{{"name": "trackio", "project": "lmtest"}}]))
    """)
    env = {"TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Trackio" not in result.stdout + result.stderr  # its status lines go to the run log
    with sqlite3.connect(tmp_path / "trackio" / "lmtest.db") as db:
        rows = db.execute("SELECT step, metrics FROM metrics WHERE run_name='tracked' ORDER BY id").fetchall()
        [(config,)] = db.execute("SELECT config FROM configs WHERE run_name='tracked'").fetchall()
    logged = [(step, json.loads(metrics)) for step, metrics in rows]
    assert [s for s, _ in logged] == sorted(s for s, _ in logged)
    two = [(s, m) for s, m in logged if "two/loss" in m]
    assert two[0][1]["two/step"] == 1 and two[0][0] > max(s for s, m in logged if "one/loss" in m)
    assert json.loads(config)["two"]["lr"] == 0.002


def test_tracker_parameters_are_validated(curvy, tmp_path):
    with pytest.raises(lmforge.ConfigError, match=r"run.trackers.wandb.projct: unknown key .*did you mean 'project'"):
        lmforge.run(_cfg(tmp_path, [{"name": "wandb", "projct": "x"}]))
    with pytest.raises(lmforge.ConfigError, match="run.trackers.tensorboard.flush: tracker 'tensorboard' takes no"):
        lmforge.run(_cfg(tmp_path, [{"name": "tensorboard", "flush": 1}]))
    assert not (tmp_path / "tracked" / "one").exists()  # refused before any stage ran
