"""Issue 15's tables, row by row, through the real CLI: every bad input or fault ends in one line.

Each row asserts the exit code, that stderr is exactly one ``lmforge: error:`` line (no traceback) naming
the key or file, and that nothing looks complete (no manifest, no sealed stage directory). Most rows call
``lmforge.cli.main`` in-process (the same code path as the console script, without ~8 s of imports per
subprocess); the rows that need a real process (a lock held by another pid, SIGKILL, Ctrl-C) spawn one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmforge
import pytest
from lmforge.cli import main
from lmforge.plugins.cleaners.basic import BasicCleaner


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run ``lmforge *args`` in-process; (exit code, stderr)."""
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lmforge: error: ")]
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    assert "Traceback" not in err, err
    return errors[0]


def assert_nothing_complete(root: Path, started: bool = False) -> None:
    """No manifest (no sealed stage); unless the run got past its checks, not even its config.json."""
    if not root.exists():
        return
    manifests = list(root.rglob("manifest.json"))
    assert not manifests, f"a failed run left complete-looking artifacts: {manifests}"
    if not started:
        assert not list(root.rglob("config.json")), "a run that failed its checks wrote config.json"


# Rows of the table that must fail before anything runs, with the words the one line must contain.
CONFIG_ROWS = [
    (["run.force=maybe"], ["run.force", "true or false", "maybe"]),
    (["run.seed=abc"], ["run.seed", "integer", "abc"]),
    (["run.seed=-1"], ["run.seed", "2**32"]),
    (["run.name=../../x"], ["run.name", "'../../x'", "inside run.root"]),
    (["run.name=/etc/x"], ["run.name", "relative"]),
    (["-m", "run.name=../../x", "aligner=dpo,orpo"], ["run.name", "inside run.root"]),  # a sweep, checked too
    (["run.nme=x"], ["run.nme", "unknown key", "did you mean 'name'"]),
    (["aligner=dpp"], ["aligner=dpp", "no such aligner option", "available"]),
    (["model.hidden_size=65"], ["model", "hidden size (65)", "attention heads (4)"]),
    (["pretrainer.lr_scheduler=cosin"], ["pretrainer.lr_scheduler", "did you mean 'cosine'"]),
    (["pretrainer.batch_size=0"], ["pretrainer.batch_size", ">= 1"]),
    (["hardware.device=gpu"], ["hardware.device", "one of: auto, cpu, cuda"]),
    (["hardware.threads=0"], ["hardware.threads", ">= 1"]),
    (["finetuner.max_steps=-1"], ["finetuner.max_steps", "-1"]),
    (["finetuner.batch_size=0"], ["finetuner.batch_size", "> 0"]),
    (["aligner.batch_size=0"], ["aligner.batch_size", "> 0"]),
    (["finetuner.learning_rate=-1.0"], ["finetuner.learning_rate", "> 0"]),
    (["aligner=orpo", "aligner.max_prompt_length=999"], ["aligner.max_prompt_length", "999", "max_length"]),
    (["aligner=grpo", "aligner.rewards=[brevty]"], ["aligner.rewards", "'brevty' is not a reward function"]),
    (["aligner=grpo", "aligner.rewards=[lenght]"], ["aligner.rewards", "did you mean 'length'"]),
    (["aligner=grpo", "aligner.rewards=[length]", "aligner.reward_params={length: {target_chars: [1]}}"],
     ["aligner.reward_params", "length.target_chars", "expected int"]),
    (["aligner=ppo", "aligner.kl_estimator=k2"], ["aligner.kl_estimator", "'k2'", "one of: k1, k3"]),
    (["aligner=ppo", "aligner.rewards=[brevty]"], ["aligner.rewards", "'brevty' is not a reward function"]),
    (["aligner=ppo", "aligner.rewards={length: 1.0}"], ["aligner.rewards", "expected a list, got a mapping"]),
    (["aligner=ppo", "aligner.rewards=[length]", "aligner.reward_params={length: {target_chars: abc}}"],
     ["aligner.reward_params", "length.target_chars", "expected int", "'abc'"]),
    (["tokenizer.vocab_size=0"], ["tokenizer.vocab_size", ">= 1"]),
    (["tokenizer=char", "tokenizer.chat_tokens=[a]"], ["tokenizer.chat_tokens", "expected 4"]),
    (["sampler.top_p=0"], ["sampler.top_p", "(0, 1]"]),
    (["cleaner.steps=[normalise]"], ["unknown cleaning_step 'normalise'", "did you mean 'normalize'"]),
    (["cleaner=basic", "cleaner.steps=[{name: quality, min_words: 500, max_words: 100}]"],
     ["cleaning_step.quality.min_words", "above max_words"]),
    (["data.sft=/nonexistent/sft.jsonl"], ["finetuner", "data", "not found", "/nonexistent/sft.jsonl"]),
]


@pytest.mark.parametrize(("overrides", "words"), CONFIG_ROWS, ids=lambda v: " ".join(v) if isinstance(v, list) and
                         "=" in v[0] else None)
def test_bad_config_fails_in_one_line_before_anything_runs(capsys, tmp_path, overrides, words):
    started = time.time()
    code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", *overrides)
    line = one_error_line(err)
    assert code == 2, err
    for word in words:
        assert word in line, f"{word!r} missing from: {line}"
    assert_nothing_complete(tmp_path / "runs")
    assert not (tmp_path.parent / "x").exists() and not Path("/etc/x").exists()
    assert time.time() - started < 30  # checked up front: no stage ran


def test_empty_directory_as_data_input(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for key in ("raw_text", "sft", "preferences", "prompts"):
        code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", f"data.{key}={empty}")
        line = one_error_line(err)
        assert code == 2 and "empty" in line and str(empty) in line, line
    assert_nothing_complete(tmp_path / "runs")


def test_run_root_is_a_file(capsys, tmp_path):
    root = tmp_path / "runs"
    root.write_text("not a directory")
    code, err = cli(capsys, "run", f"run.root={root}", "pipeline=clean_only")
    line = one_error_line(err)
    assert code == 2 and "run.root" in line and "is a file" in line, line
    assert root.read_text() == "not a directory"


def test_disk_full_is_one_line_with_the_file(capsys, tmp_path):
    """A real ENOSPC (writing to /dev/full) reaching the CLI's error path: one line naming the file, exit 1."""
    from lmforge.cli import fail_with

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    try:
        with open("/dev/full", "w") as handle:
            handle.write("x" * 10)
            handle.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        exc.filename = exc.filename or "/dev/full"
        with pytest.raises(SystemExit) as exit_info:
            fail_with(exc, run_dir=tmp_path)
    assert exit_info.value.code == 1
    line = one_error_line(capsys.readouterr().err)
    assert "no space left on device" in line and "/dev/full" in line and "traceback in" in line
    assert "OSError" in (tmp_path / "error.log").read_text()


def test_unexpected_error_one_line_log_and_debug(capsys, tmp_path, monkeypatch):
    """An exception lmforge did not foresee: one line with type and place, exit 1, traceback in error.log,
    and on screen with --debug."""
    import lmforge

    class Boom:
        @lmforge.hookimpl
        def lmforge_pipeline_start(self, run_dir, config, context):
            raise RuntimeError("boom from a plugin")

    plugin = Boom()
    lmforge.register_plugin(plugin, name="test-reliability-boom")
    monkeypatch.delenv("LMFORGE_DEBUG", raising=False)
    monkeypatch.delenv("LMFORGE_TRACEBACK", raising=False)
    try:
        root = tmp_path / "runs"
        code, err = cli(capsys, "run", f"run.root={root}", "run.name=b", "pipeline=clean_only")
        line = one_error_line(err)
        assert code == 1
        assert "RuntimeError: boom from a plugin" in line and "test_reliability.py" in line
        assert f"traceback in {root / 'b' / 'error.log'}" in line
        assert "Traceback" in (root / "b" / "error.log").read_text()
        assert_nothing_complete(root, started=True)
        code, err = cli(capsys, "--debug", "run", f"run.root={root}", "run.name=b", "pipeline=clean_only")
        assert code == 1 and "Traceback (most recent call last)" in err and "boom from a plugin" in err
    finally:
        lmforge.unregister_plugin(plugin)
        os.environ.pop("LMFORGE_DEBUG", None)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from lmforge.rundir import run_lock
run_dir = Path(sys.argv[1]); run_dir.mkdir(parents=True, exist_ok=True)
with run_lock(run_dir):
    print("held", flush=True)
    time.sleep(120)
"""


def test_second_run_on_same_name_fails_naming_the_holder_and_a_killed_holder_frees_it(capsys, tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "same"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = cli(capsys, "run", f"run.root={root}", "run.name=same", "pipeline=clean_only")
        line = one_error_line(err)
        assert code == 2 and "in use by another lmforge run" in line and f"pid {holder.pid}" in line, line
        assert_nothing_complete(root)
        os.kill(holder.pid, signal.SIGKILL)  # a stale lock: its holder died without cleaning up
        holder.wait(timeout=30)
    finally:
        holder.kill()
    from lmforge.rundir import run_lock

    with run_lock(run_dir) as info:  # taken over at once, no manual cleanup
        assert info["pid"] == os.getpid()
        assert json.loads((run_dir / ".lock.holder.json").read_text())["pid"] == os.getpid()


SLOW_CLEANER = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C, even if the test process ignores it
import lmforge
from lmforge.cli import main

from lmforge.plugins.cleaners.basic import BasicCleaner

class Slow(lmforge.Cleaner):
    config_class = BasicCleaner.config_class  # takes cleaner=basic's keys, so cleaner.plugin=slow swaps it in

    def run(self, inputs, output_dir, context):
        print("stage started", flush=True)
        time.sleep(120)

class Plugin:
    @lmforge.hookimpl
    def lmforge_register(self, registry):
        registry.add("cleaner", "slow", Slow)

lmforge.register_plugin(Plugin(), name="slow-cleaner")
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                      (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_end_in_one_line_and_leave_nothing_half_written(tmp_path, signum, code, word):
    root = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLEANER, "run", f"run.root={root}", "run.name=c",
                             "pipeline=clean_only", "cleaner=basic", "cleaner.plugin=slow", "run.report=false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LMFORGE_DEBUG": ""})
    try:
        for line in proc.stdout:
            if "stage started" in line:
                break
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=240)  # a loaded machine unwinds slowly
    finally:
        proc.kill()
    assert proc.returncode == code, err
    line = one_error_line(err)
    assert word in line and "resume" in line
    assert not (root / "c" / "cleaner").exists() and not (root / "c" / "cleaner.partial").exists()
    assert not (root / "c" / ".lock.holder.json").exists()  # the lock was released on the way out
    assert ("KeyboardInterrupt" if signum == signal.SIGINT else "Terminated") in (root / "c" / "error.log").read_text()
    assert not list(root.rglob("manifest.json"))


def test_gpu_requested_without_one_fails_before_the_first_stage(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", "hardware=gpu")
    line = one_error_line(err)
    assert code == 2 and "hardware.device" in line and "no CUDA GPU" in line, line
    assert not (tmp_path / "runs" / "default" / "cleaner").exists()


def test_non_utf8_data_names_the_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "a fine first line of text"}\n{"text": "and a second"}\n{"text": "bad \xff\xfe"}\n')
    code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", "pipeline=clean_only", "cleaner=basic",
                    f"data.raw_text={bad}", "run.report=false")
    line = one_error_line(err)
    assert code == 2 and f"{bad}:3" in line and "UTF-8" in line, line
    assert_nothing_complete(tmp_path / "runs", started=True)


def test_run_lock_is_released_after_a_failed_run(capsys, tmp_path):
    """A run that fails after taking the lock leaves it free for the next run (no stale holder file)."""
    root = tmp_path / "runs"
    (tmp_path / "bad.txt").write_bytes(b"")
    code, err = cli(capsys, "run", f"run.root={root}", "run.name=r", "pipeline=clean_only", "cleaner=basic",
                    f"data.raw_text={textwrap.dedent(str(tmp_path / 'bad.txt'))}", "run.report=false")
    assert code != 0
    one_error_line(err)
    assert not (root / "r" / ".lock.holder.json").exists()


# ---------------------------------------------------------------- metrics across resume, report content


class _FlakyCleaner(lmforge.Cleaner):
    """Logs steps 1..5 then dies (first attempt); resumes "from a checkpoint at step 3" and logs 4..8."""

    config_class = BasicCleaner.config_class  # cleaner=basic's keys, so cleaner.plugin=flaky swaps it in
    attempts = 0

    def run(self, inputs, output_dir, context):
        type(self).attempts += 1
        first = type(self).attempts == 1
        for step in range(1, 6) if first else range(4, 9):
            context.log_metrics({"loss": float(10 * type(self).attempts + step)}, step=step)
        if first:
            with open(context.work_dir / "metrics.jsonl", "a") as handle:
                handle.write('{"step": 6, "loss"')  # a line torn by the kill
            raise RuntimeError("killed")
        (output_dir / "data.txt").write_text("ok")
        return output_dir


class _FlakyPlugin:
    @lmforge.hookimpl
    def lmforge_register(self, registry):
        registry.add("cleaner", "flaky", _FlakyCleaner)


def test_metrics_survive_resume_deduplicated_by_step(capsys, tmp_path):
    plugin = _FlakyPlugin()
    lmforge.register_plugin(plugin, name="test-reliability-flaky")
    try:
        args = ["run", f"run.root={tmp_path}", "run.name=m", "pipeline=clean_only", "cleaner=basic", "cleaner.plugin=flaky",
                "run.report=false"]
        code, err = cli(capsys, *args)
        assert code == 1 and "RuntimeError: killed" in one_error_line(err)
        code, err = cli(capsys, *args)
        assert code == 0, err
    finally:
        lmforge.unregister_plugin(plugin)
    rows = [json.loads(line) for line in (tmp_path / "m" / "cleaner" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["loss"] for r in rows] == [11, 12, 13, 24, 25, 26, 27, 28]  # a re-logged step replaces the old one


def test_report_escapes_model_text(tmp_path):
    """A completion that is markdown (an image, a link, raw HTML, a line starting with '![') stays text."""
    from lmforge.plugins.report import build_report

    sampler = tmp_path / "sampler"
    sampler.mkdir()
    hostile = ["![x](http://evil.example/x.png)", "[click](javascript:alert(1))", "<script>alert(1)</script>",
               "# heading\n| a | b |\n|---|---|", "![", "<img src=http://evil.example/y.png>"]
    hostile.append("a lone \ud800 surrogate")  # JSON data may carry one ("\\ud800"): the report must not crash
    with open(sampler / "completions.jsonl", "w") as handle:  # the report shows the first 4 samples
        for start in range(4):
            text = "\n".join(hostile[start::4])
            handle.write(json.dumps({"prompt": "![p](http://evil.example/p.png)", "completion": text}) + "\n")
    (sampler / "manifest.json").write_text(json.dumps({"plugin": "hf_generate", "seconds": 1.0, "metrics": {}}))
    build_report(tmp_path, {"sampler": json.loads((sampler / "manifest.json").read_text())})
    html = (tmp_path / "report.html").read_text()
    assert "evil.example" in html  # the text is there …
    assert "<img" not in html.replace('<img src="report_plots/', "") and "<script" not in html
    assert 'href="javascript' not in html and 'href="http://evil' not in html  # … as text, never markup
    assert "lone \\ud800 surrogate" in (tmp_path / "report.md").read_text()


# ---------------------------------------------------------------- data that cannot teach, reward names


def test_identical_preference_pairs_are_refused_with_counts():
    from lmforge.errors import DataError
    from lmforge.plugins.lib.data_checks import drop_identical_pairs

    same = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"a{i} "} for i in range(10)]
    with pytest.raises(DataError, match=r"prefs.jsonl: 10 of 10 preference pairs have identical"):
        drop_identical_pairs(same, "prefs.jsonl")
    mixed = same[:2] + [{"prompt": "q", "chosen": "good", "rejected": "bad"}] * 8
    kept, identical = drop_identical_pairs(mixed, "prefs.jsonl")
    assert identical == 2 and len(kept) == 8
    conversations = [{"chosen": [{"role": "assistant", "content": "x"}],
                      "rejected": [{"role": "assistant", "content": "x"}]}] * 3
    with pytest.raises(DataError, match="3 of 3"):
        drop_identical_pairs(conversations, "c.jsonl")


@pytest.mark.parametrize(("rewards", "params", "words"), [
    (["brevty"], {}, ["rewards: 'brevty' is not a reward function", "registered:"]),
    (["length:abc"], {}, ["weight of 'length'", "expected a number"]),
    ({"length": 1.0}, {}, ["rewards: expected a list of reward functions as NAME or NAME:WEIGHT", "got a mapping"]),
    (["length"], {"lenght": {}}, ["reward_params: 'lenght' is not one of the rewards"]),
    (["length"], {"length": {"target": 3}}, ["length.target: unknown parameter", "did you mean 'target_chars'"]),
    (["length"], {"length": {"target_chars": "abc"}}, ["length.target_chars: expected int", "'abc'"]),
])
def test_reward_spec_checked_when_params_are_built(rewards, params, words):
    from lmforge.errors import ConfigError
    from lmforge.plugins.aligners.rewards import check_reward_spec

    with pytest.raises(ConfigError) as info:
        check_reward_spec(rewards, params)
    for word in words:
        assert word in str(info.value)
    check_reward_spec(["length:0.5", "format"], {"length": {"target_chars": 120}})


# ---------------------------------------------------------------- lmforge rank: the server survives anything


def _raw_request(port: int, head: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict | None]:
    """Send bytes as they are (headers http.client would refuse) and read the status and JSON answer."""
    import select
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # no half-close: a server that waits for more body than was sent must time out here, not see EOF
        large = len(body) >= 1 << 16  # sent only once the server asks for it, as HTTP clients do
        head += "Connection: close\n" + ("Expect: 100-continue\n" if large else "")
        raw_head = head.replace("\n", "\r\n").encode() + b"\r\n"
        data = b""
        if large:
            sock.sendall(raw_head)
            select.select([sock], [], [], timeout)
            data = sock.recv(65536)
            if data.startswith(b"HTTP/1.1 100"):
                data = data.split(b"\r\n\r\n", 1)[1]
                sock.sendall(body)
        else:
            # head and a small body in one write: a server that refuses the head and closes has then read
            # everything, so its kernel answers with FIN, not with a reset that can drop the answer
            sock.sendall(raw_head + body)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            if not data:
                raise
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None  # e.g. uvicorn's own plain-text 400 for a request it cannot parse


@pytest.fixture
def rank_session(tmp_path):
    from lmforge.plugins.rank.session import RankSession

    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    return RankSession.create(tmp_path / "session", prompts, [["one", "two"]] * 3, {"k": 2})


def test_rank_server_answers_every_malformed_request_and_keeps_serving(rank_session):
    from lmforge.plugins.rank.server import start_server

    server = start_server(rank_session, annotator="ada")
    port = server.server_address[1]
    post = "POST /api/judge HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
    good = json.dumps({"annotator": "ada", "prompt_id": 0, "ranking": [[1], [0]]}).encode()
    try:
        cases = [
            (post + "Content-Length: abc\n", b"{}", 400),
            (post + "Content-Length: -1\n", b"{}", 400),  # used to hang reading to EOF
            (post + f"Content-Length: {10**12}\n", b"{}", 413),  # used to be a MemoryError
            (post + "\n", b"", 411),
            (post + "Content-Length: 5\n", b"[1,2]", 400),  # not an object
            (post + "Content-Length: 4\n", b"\xff\xfe{}", 400),  # not UTF-8
        ]
        for body in ({"annotator": ["x"], "prompt_id": 0, "ranking": [[0], [1]]},
                     {"annotator": "ada", "prompt_id": [0], "ranking": [[0], [1]]},
                     {"annotator": "ada", "prompt_id": 0, "ranking": "0 1"},
                     {"annotator": "ada", "prompt_id": 0, "ranking": [[0], [{"a": 1}]]}):
            raw = json.dumps(body).encode()
            cases.append((post + f"Content-Length: {len(raw)}\n", raw, 400))
        surrogate = b'{"annotator": "\\ud800", "prompt_id": 0, "ranking": [[0], [1]]}'
        cases.append((post + f"Content-Length: {len(surrogate)}\n", surrogate, 400))
        evil = b'{"mode": "../../../evil"}'
        cases.append((post.replace("/api/judge", "/api/export") + f"Content-Length: {len(evil)}\n", evil, 400))
        for head, body, expected in cases:
            status, answer = _raw_request(port, head, body)
            assert status == expected, (head, body, status, answer)
            assert answer and "error" in answer
        assert not list(rank_session.directory.parent.rglob("*evil*"))
        status, answer = _raw_request(port, post + f"Content-Length: {len(good)}\n", good)
        assert status == 200 and answer["ok"]
        status, _ = _raw_request(port, "GET /api/state?annotator=ada HTTP/1.1\nHost: 127.0.0.1\n")
        assert status == 200
        status, _ = _raw_request(port, "GET /api/state HTTP/1.1\nHost: evil.example\n")
        assert status == 403
    finally:
        server.shutdown()


def test_rank_session_repairs_a_torn_last_line_without_losing_acknowledged_judgements(rank_session):
    from lmforge.plugins.rank.session import RankSession

    rank_session.record("ada", 0, [[1], [0]])
    rank_session.record("bob", 1, [[0], [1]])
    with open(rank_session.judgements_path, "a", encoding="utf-8") as handle:
        handle.write('{"annotator": "ada", "prompt_id": 2, "rank')  # killed mid-write: never acknowledged
    reopened = RankSession(rank_session.directory)
    assert reopened.repaired > 0
    reopened.record("ada", 2, [[0, 1]])  # a later judgement is on a line of its own, not glued to the torn one
    again = RankSession(rank_session.directory)
    judged = again.judgements()
    assert judged["ada"][0]["ranking"] == [[1], [0]] and judged["bob"][1]["ranking"] == [[0], [1]]
    assert judged["ada"][2]["ranking"] == [[0, 1]]
    assert all(json.loads(line) for line in again.judgements_path.read_text().splitlines())
    assert "prompt_id\": 2" in (again.directory / "judgements.jsonl.torn").read_text()


# ---------------------------------------------------------------- lmforge serve: 400, never 500


@pytest.fixture(scope="module")
def served_tiny(tiny_model_dir):
    from lmforge.plugins.serve.cli import running_server

    with running_server(tiny_model_dir, batch_wait_s=0.0, max_body_bytes=256 << 10) as server:
        yield server


def _post_json(port: int, path: str, body: bytes, host: str = "127.0.0.1", extra: str = "") -> tuple[int, dict]:
    head = (f"POST {path} HTTP/1.1\nHost: {host}\nContent-Type: application/json\n"
            f"Content-Length: {len(body)}\n{extra}")
    return _raw_request(port, head, body, timeout=60)


def test_serve_answers_every_bad_field_with_400(served_tiny):
    port = int(served_tiny.url.rsplit(":", 1)[1].split("/")[0])
    chat = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, %s}'
    bad = [
        chat % '"seed": %d, "temperature": 1' % 2**70,
        chat % '"temperature": Infinity',
        chat % '"repetition_penalty": NaN',
        chat % '"top_k": %d, "temperature": 1' % 2**70,
        chat % '"max_tokens": %d' % 2**70,
        chat % '"stop": ["\\ud800"]',
        chat % '"model": "\\udfff"',
        '{"messages": [{"role": "user", "content": "\\ud800 lone"}]}',
        '{"messages": [{"role": "robot", "content": "x"}]}',
        '{"messages": []}',
        '[1, 2]',
        '"just a string"',
        '{"messages": [{"role": "user", "content": "hi"}]',
    ]
    for body in bad:
        status, answer = _post_json(port, "/v1/chat/completions", body.encode())
        assert status == 400, (body, status, answer)
        assert answer["error"]["message"], body
    status, answer = _post_json(port, "/v1/completions", b'{"prompt": "\\ud800", "max_tokens": 2}')
    assert status == 400, answer
    status, answer = _post_json(port, "/v1/chat/completions", (chat % '"seed": 123, "temperature": 1').encode())
    assert status == 200, answer  # a 64-bit seed is fine


def test_serve_limits_bodies_refuses_foreign_hosts_and_tokenises_off_the_event_loop(served_tiny):
    import threading

    port = int(served_tiny.url.rsplit(":", 1)[1].split("/")[0])
    huge = json.dumps({"prompt": "word " * 100_000, "max_tokens": 1}).encode()  # ~500 kB > the 256 kB limit
    status, answer = _post_json(port, "/v1/completions", huge)
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:  # a plain client that sends it all gets the 413 too
        urllib.request.urlopen(urllib.request.Request(served_tiny.url + "/completions", data=huge, headers={
            "Content-Type": "application/json"}), timeout=60)
    assert refused.value.code == 413
    head = "POST /v1/completions HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
    for length in ("abc", "-1"):
        status, _ = _raw_request(port, head + f"Content-Length: {length}\n", b"{}")
        assert status == 400  # refused by uvicorn's parser itself, before the app
    status, answer = _raw_request(port, head + f"Content-Length: {10**12}\n", b"{}")
    assert status == 413
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
        status, answer = _raw_request(port, f"GET /v1/models HTTP/1.1\nHost: {host}\n")
        assert status == 403 and answer["error"]["code"] == "host_not_allowed", host
    for host in ("127.0.0.1", f"localhost:{port}", f"[::1]:{port}"):
        assert _raw_request(port, f"GET /health HTTP/1.1\nHost: {host}\n")[0] == 200, host

    # A long prompt (just under the limit) tokenises in a worker thread: /health answers meanwhile.
    long_prompt = json.dumps({"prompt": "many words here " * 15_000, "max_tokens": 1}).encode()
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        answer=_post_json(port, "/v1/completions", long_prompt)))
    thread.start()
    time.sleep(0.05)
    started = time.time()
    assert _raw_request(port, "GET /health HTTP/1.1\nHost: 127.0.0.1\n")[0] == 200
    health_seconds = time.time() - started
    thread.join(timeout=120)
    assert result["answer"][0] == 400 and result["answer"][1]["error"]["code"] == "context_length_exceeded"
    assert health_seconds < 1.0, health_seconds


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_data_that_cannot_teach_is_refused_before_training(capsys, tmp_path, tiny_model_dir):
    """Identical preference sides, and SFT replies that cannot fit max_length: one line with the counts,
    exit 2, before any trainer is built."""
    same = _write_jsonl(tmp_path / "same.jsonl", [{"prompt": f"Question {i}?", "chosen": f"Answer {i}.",
                                                    "rejected": f"Answer {i}."} for i in range(12)])
    started = time.time()
    code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", "pipeline=align_only", "hardware=cpu",
                    f"pipeline.stages.aligner.model={tiny_model_dir}", f"data.preferences={same}")
    line = one_error_line(err)
    assert code == 2 and "12 of 12 preference pairs have identical chosen and rejected sides" in line, line
    long = _write_jsonl(tmp_path / "long.jsonl", [{"messages": [
        {"role": "user", "content": f"Tell me about item {i}."},
        {"role": "assistant", "content": "a very long answer " * 200}]} for i in range(6)])
    code, err = cli(capsys, "run", f"run.root={tmp_path / 'runs'}", "pipeline=sft_only", "hardware=cpu",
                    f"pipeline.stages.finetuner.model={tiny_model_dir}", f"data.sft={long}",
                    "finetuner.max_length=64")
    line = one_error_line(err)
    assert code == 2 and "long.jsonl" in line and "none of the 6 examples" in line and "max_length=64" in line, line
    assert_nothing_complete(tmp_path / "runs", started=True)
    assert time.time() - started < 90
