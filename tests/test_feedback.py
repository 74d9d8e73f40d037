"""Ranking sampled responses (lmforge rank): the session store, the HTTP server, the terminal mode, agreement,
and the export, which the reward-model aligner trains on."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import lmforge
import pytest
from lmforge.errors import DataError
from lmforge.plugins.lib.formats import load_preferences
from lmforge.plugins.rank.agreement import agreement, export_preferences, implied_pairs, pair_agreement
from lmforge.plugins.rank.sampling import SamplingSettings, sample_candidates
from lmforge.plugins.rank.server import start_server
from lmforge.plugins.rank.session import RankSession
from lmforge.plugins.rank.terminal import parse_terminal_ranking, rank_in_terminal


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, tiny_model_dir):
    """A session whose candidates the tiny model sampled for three bundled prompts (k=3)."""
    directory = tmp_path_factory.mktemp("rank") / "session"
    sample_candidates(tiny_model_dir, lmforge.sample_data_path("prompts.jsonl"), directory,
                      SamplingSettings(k=3, max_new_tokens=12, max_prompts=3), device="cpu")
    return directory


@pytest.fixture
def session(sampled, tmp_path):
    """A fresh copy of the sampled session (no judgements yet)."""
    import shutil

    target = tmp_path / "session"
    shutil.copytree(sampled, target)
    return RankSession(target)


def test_sampling_writes_k_distinct_candidates_per_prompt(session):
    assert len(session.prompts) == 3
    for prompt in session.prompts:
        assert [c["id"] for c in prompt["candidates"]] == [0, 1, 2]
        assert prompt["prompt"][-1]["role"] == "user"
        assert len({c["text"] for c in prompt["candidates"]}) > 1  # sampled, not one greedy answer thrice
    assert (session.directory / "samples" / "completions.jsonl").is_file()


def test_pairs_implied_by_a_ranking_with_ties():
    ranking = [[2], [0, 3], [1]]
    assert sorted(implied_pairs(ranking)) == [(0, 1), (2, 0), (2, 1), (2, 3), (3, 1)]
    assert implied_pairs(ranking, "best_vs_worst") == [(2, 1)]
    assert implied_pairs([[0, 1]], "best_vs_worst") == []  # one tie group: no preference


def test_agreement_scores():
    assert pair_agreement([[0], [1], [2]], [[0], [1], [2]]) == (1.0, 1.0)
    assert pair_agreement([[0], [1], [2]], [[2], [1], [0]]) == (0.0, -1.0)
    agree, tau = pair_agreement([[0], [1], [2]], [[1], [0], [2]])  # one of three pairs swapped
    assert agree == pytest.approx(2 / 3) and tau == pytest.approx(1 / 3)


def test_judgements_append_latest_wins_and_survive_a_torn_line(session):
    session.record("ann", 0, [[1], [0], [2]])
    session.record("ann", 0, [[2], [1, 0]])  # re-ranked: a new line, the old one stays on disk
    session.record("ann", 1, skipped=True)
    with open(session.judgements_path, "a") as handle:  # a kill in the middle of writing the next one
        handle.write('{"annotator": "ann", "prompt_id": 2, "rank')
    reopened = RankSession(session.directory)
    latest = reopened.judgements()["ann"]
    assert latest[0]["ranking"] == [[2], [1, 0]] and latest[1]["skipped"] and 2 not in latest
    assert reopened.rankings() == {"ann": {0: [[2], [1, 0]]}}
    for bad, message in [([[0], [1]], "exactly once"), ([[0], [0], [1], [2]], "exactly once"),
                         ("0 1 2", "non-empty list"), ([[0], ["1"], [2]], "integers")]:
        with pytest.raises(DataError, match=message):
            session.record("ann", 2, bad)
    with pytest.raises(DataError, match="annotator"):
        session.record("", 2, [[0], [1], [2]])
    with pytest.raises(DataError, match="no such prompt"):
        session.record("ann", 99, [[0], [1], [2]])


def test_export_votes_across_annotators_and_loads_as_preferences(session, tmp_path):
    texts = {p["prompt_id"]: [c["text"] for c in p["candidates"]] for p in session.prompts}
    session.record("ada", 0, [[0], [1], [2]])
    session.record("bob", 0, [[0], [2], [1]])  # agrees on 0 best, splits 1 vs 2
    session.record("ada", 1, [[2], [0, 1]])
    session.record("bob", 2, skipped=True)
    out = tmp_path / "prefs.jsonl"
    result = export_preferences(session, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    got = {(r["prompt_id"], r["chosen_id"], r["rejected_id"]): r["votes"] for r in rows}
    expected = {(0, 0, 1): 2, (0, 0, 2): 2, (1, 2, 0): 1, (1, 2, 1): 1}
    expected = {k: v for k, v in expected.items() if texts[k[0]][k[1]] != texts[k[0]][k[2]]}
    assert got == expected
    assert result["conflicts_dropped"] == 1  # ada 1>2, bob 2>1
    pairs = load_preferences(out)
    assert len(pairs) == len(rows)
    first = rows[0]
    assert pairs[0]["prompt"] == first["prompt"] and pairs[0]["chosen"][0]["content"] == first["chosen"]
    report = agreement(session)
    assert report["annotators"] == {"ada": 2, "bob": 1}
    (pair,) = report["pairs"]
    assert pair["shared_prompts"] == 1 and pair["pairwise_agreement"] == pytest.approx(2 / 3)
    assert pair["kendall_tau"] == pytest.approx(1 / 3)
    best = tmp_path / "best.jsonl"
    export_preferences(session, best, "best_vs_worst", annotators=["ada"])
    assert {(r["prompt_id"], r["chosen_id"], r["rejected_id"])
            for r in map(json.loads, best.read_text().splitlines())} <= {(0, 0, 2), (1, 2, 0), (1, 2, 1)}


def test_export_treats_identical_texts_as_one_candidate(tmp_path):
    """One ranking put two copies of a text at different ranks: no pair of a text with itself, and not both
    "2" > "4" (first copy over the other text) and "4" > "2" (the other text over the second copy)."""
    prompt = [{"role": "user", "content": "What is 2 plus 2?"}]
    texts = ["2 plus 2 is 2.", "2 plus 2 is 4.", "2 plus 2 is 2.", "2 plus 2 is 5."]
    session = RankSession.create(tmp_path / "session", [prompt], [texts], {"k": 4})
    session.record("ada", 0, [[2], [1], [0], [3]])  # the copy of "is 2" at rank 1 and rank 3
    out = tmp_path / "prefs.jsonl"
    result = export_preferences(session, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    pairs = {(r["chosen"], r["rejected"]) for r in rows}
    assert all(chosen != rejected for chosen, rejected in pairs)
    assert not any((rejected, chosen) in pairs for chosen, rejected in pairs)
    assert pairs == {("2 plus 2 is 2.", "2 plus 2 is 4."), ("2 plus 2 is 2.", "2 plus 2 is 5."),
                     ("2 plus 2 is 4.", "2 plus 2 is 5.")}
    assert len(rows) == result["pairs"] == 3 and result["identical_dropped"] == 3
    best = tmp_path / "best.jsonl"
    export_preferences(session, best, "best_vs_worst")
    assert [(r["chosen"], r["rejected"]) for r in map(json.loads, best.read_text().splitlines())] == \
        [("2 plus 2 is 2.", "2 plus 2 is 5.")]


def test_exported_rankings_train_a_reward_model(session, tmp_path, tiny_model_dir, tiny_context):
    from lmforge.plugins.aligners.reward_model import RewardModelTrainer

    for pid in range(3):
        session.record("ada", pid, [[0], [1], [2]])
    out = tmp_path / "prefs.jsonl"
    export_preferences(session, out)
    model, manifest = lmforge.run_stage(
        RewardModelTrainer(max_steps=2, batch_size=4, eval_fraction=0.0, save_steps=0),
        {"model": tiny_model_dir, "data": out}, tmp_path / "reward_model", tiny_context)
    assert (model / "model.safetensors").is_file() and manifest["metrics"]


def _request(url, body=None, content_type="application/json", host=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", content_type)
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_server_saves_judgements_and_exports(session):
    server = start_server(session, annotator="ada")
    try:
        assert server.server_address[0] == "127.0.0.1"
        base = server.url
        status, page = _request(base)
        assert status == 200 and b"lmforge rank" in page and b"http" not in page.split(b"<script>")[0].lower()
        status, body = _request(base + "api/judge", {"annotator": "ada", "prompt_id": 1, "ranking": [[1], [0], [2]]})
        assert status == 200 and json.loads(body)["ok"]
        state = json.loads(_request(base + "api/state?annotator=ada")[1])
        assert state["judgements"]["1"]["ranking"] == [[1], [0], [2]] and state["progress"] == {"ada": 1}
        assert RankSession(session.directory).judgements()["ada"][1]["ranking"] == [[1], [0], [2]]  # on disk now
        status, body = _request(base + "api/judge", {"annotator": "ada", "prompt_id": 1, "ranking": [[1]]})
        assert status == 400 and "exactly once" in json.loads(body)["error"]
        status, _ = _request(base + "api/judge", b'{"annotator": "x"}', content_type="text/plain")
        assert status == 415  # a cross-site form post cannot write judgements
        status, _ = _request(base + "api/state", host="evil.example:80")
        assert status == 403  # DNS rebinding
        status, body = _request(base + "api/export", {"mode": "best_vs_worst"})
        result = json.loads(body)
        assert status == 200 and result["mode"] == "best_vs_worst"
        assert len(load_preferences(result["path"])) == result["pairs"]
    finally:
        server.shutdown()
        server.server_close()


def test_terminal_mode_ranks_resumes_and_parses_ties(session):
    assert parse_terminal_ranking("2=1 3", 4) == [[1, 0], [2], [3]]
    with pytest.raises(DataError, match="1..3"):
        parse_terminal_ranking("4", 3)
    answers = iter(["9", "3 1 2", "q"])  # a bad line is answered with help, then a ranking, then quit
    shown = []
    assert rank_in_terminal(session, "cy", read=lambda _: next(answers), write=shown.append) == 1
    assert any("1..3" in line for line in shown)
    answers = iter(["s", "2=3"])
    assert rank_in_terminal(session, "cy", read=lambda _: next(answers), write=shown.append) == 1
    latest = session.judgements()["cy"]
    assert latest[0]["ranking"] == [[2], [0], [1]] and latest[1]["skipped"]
    assert latest[2]["ranking"] == [[1, 2], [0]]


def test_rank_command_resumes_a_session_in_the_terminal(session, monkeypatch, capsys):
    import io

    from lmforge.cli import main

    session.record("zed", 0, [[0], [1], [2]])
    monkeypatch.setattr("sys.stdin", io.StringIO("3 2 1\n"))  # prompt 0 is done: this ranks prompt 1
    main(["rank", "--session", str(session.directory), "--annotator", "zed", "--terminal"])
    assert "1/3 judged by zed" in capsys.readouterr().out
    assert session.judgements()["zed"][1]["ranking"] == [[2], [1], [0]]


def test_rank_export_command(session, capsys):
    from lmforge.cli import main

    session.record("ada", 0, [[0], [1], [2]])
    session.record("bob", 0, [[0], [1], [2]])
    main(["rank-export", "--session", str(session.directory)])
    printed = capsys.readouterr().out
    assert "ada vs bob: 1 shared prompts, pairwise agreement 1.00, Kendall tau 1.00" in printed
    assert (session.directory / "preferences.all_pairs.jsonl").is_file()
    assert json.loads((session.directory / "agreement.json").read_text())["pairs"][0]["kendall_tau"] == 1.0
    with pytest.raises(SystemExit):
        main(["rank-export", "--session", str(session.directory / "nope")])
    assert "not a ranking session" in capsys.readouterr().err


def _serve_in_subprocess(directory):
    import re
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from lmforge.cli import main; main(sys.argv[1:])", "rank", "--session",
         str(directory), "--port", "0", "--no-browser", "--annotator", "ada"],
        stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        if found:
            return process, found.group(1)
    process.kill()
    raise AssertionError("lmforge rank did not print its address")


def test_judgements_survive_killing_the_server(session):
    import signal

    process, base = _serve_in_subprocess(session.directory)
    try:
        status, _ = _request(base + "api/judge", {"annotator": "ada", "prompt_id": 0, "ranking": [[2], [1], [0]]})
        assert status == 200
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    process, base = _serve_in_subprocess(session.directory)  # reopened: resumes
    try:
        state = json.loads(_request(base + "api/state?annotator=ada")[1])
        assert list(state["judgements"]) == ["0"] and state["judgements"]["0"]["ranking"] == [[2], [1], [0]]
        assert state["default_annotator"] == "ada"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
