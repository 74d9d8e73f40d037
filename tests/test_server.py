"""The OpenAI-compatible server, exercised with the official ``openai`` client against a real server on 127.0.0.1.

Greedy decoding (temperature 0) makes answers checkable: the server must give the batch sampler's answer
for the same conversation, streaming must add up to the non-streaming answer, and 20 concurrent requests
must each get the answer their prompt gets alone.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import lmforge
import pytest

API_KEY = "test-key"
QUESTIONS = [f"Question {i}: " + " ".join(["what", "is", "the", "sea", "made", "of"][: i % 6 + 1]) for i in range(20)]


@pytest.fixture(scope="module")
def served(varied_model_dir):
    from lmforge.plugins.serve.cli import running_server

    with running_server(varied_model_dir, api_key=API_KEY, batch_wait_s=0.02) as server:
        yield server


@pytest.fixture(scope="module")
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=served.url, api_key=API_KEY, max_retries=0, timeout=60)


def ask(client, question, **extra):
    response = client.chat.completions.create(model="forge-tiny", messages=[{"role": "user", "content": question}],
                                              max_tokens=12, temperature=0, **extra)
    return response.choices[0].message.content


def ask_streaming(client, question, **extra):
    stream = client.chat.completions.create(model="forge-tiny", messages=[{"role": "user", "content": question}],
                                            max_tokens=12, temperature=0, stream=True, **extra)
    pieces, reasons = [], []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    return pieces, reasons


def test_models_and_api_key(served, client):
    from openai import OpenAI

    assert [m.id for m in client.models.list().data] == ["forge-tiny"]
    assert served.url.startswith("http://127.0.0.1:")
    wrong = OpenAI(base_url=served.url, api_key="wrong", max_retries=0)
    import openai

    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_chat_matches_batch_sampler_and_streaming_adds_up(varied_model_dir, client, tmp_path, tiny_context):
    from lmforge.plugins.samplers.hf_generate import HFGenerateSampler

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": QUESTIONS[3]}]}) + "\n")
    lmforge.run_stage(HFGenerateSampler(max_new_tokens=12, do_sample=False, system_prompt=None),
                      {"model": varied_model_dir, "prompts": prompts}, tmp_path / "out", tiny_context)
    expected = json.loads((tmp_path / "out" / "completions.jsonl").read_text())["completion"]

    response = client.chat.completions.create(model="forge-tiny", max_tokens=12, temperature=0,
                                              messages=[{"role": "user", "content": QUESTIONS[3]}])
    assert response.choices[0].message.content == expected and expected.strip()
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 12 and response.usage.prompt_tokens > 5

    pieces, reasons = ask_streaming(client, QUESTIONS[3], stream_options={"include_usage": True})
    assert len(pieces) > 1 and "".join(pieces) == expected and reasons == ["length"]


def test_completions_endpoint_streaming_and_not(client):
    response = client.completions.create(model="forge-tiny", prompt=["Once upon a time", "The sea"],
                                         max_tokens=10, temperature=0)
    texts = [choice.text for choice in sorted(response.choices, key=lambda c: c.index)]
    assert len(texts) == 2 and texts[0] != texts[1] and all(texts)
    alone = client.completions.create(model="forge-tiny", prompt="The sea", max_tokens=10, temperature=0)
    assert alone.choices[0].text == texts[1]
    stream = client.completions.create(model="forge-tiny", prompt="Once upon a time", max_tokens=10,
                                       temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == texts[0]


def test_stop_strings_cut_exactly_and_never_stream(client):
    full = ask(client, QUESTIONS[5])
    stop = full[4:7]
    cut = full[:full.find(stop)]
    response = client.chat.completions.create(model="forge-tiny", max_tokens=12, temperature=0, stop=[stop],
                                              messages=[{"role": "user", "content": QUESTIONS[5]}])
    assert response.choices[0].message.content == cut and response.choices[0].finish_reason == "stop"
    pieces, reasons = ask_streaming(client, QUESTIONS[5], stop=stop)
    assert "".join(pieces) == cut and reasons == ["stop"]


def test_seeded_sampling_is_reproducible_and_n_choices(client):
    def sample(seed):
        response = client.chat.completions.create(model="forge-tiny", max_tokens=10, temperature=1.0, seed=seed,
                                                  n=3, messages=[{"role": "user", "content": "Say something"}])
        return [c.message.content for c in sorted(response.choices, key=lambda c: c.index)]

    first = sample(11)
    assert len(first) == 3 and len(set(first)) > 1
    assert sample(11) == first and sample(12) != first


def test_twenty_concurrent_requests_get_their_own_answers(served, client):
    alone = [ask(client, question) for question in QUESTIONS]
    assert len(set(alone)) > 15  # the prompts really have different answers
    served.model_server.worker.batch_sizes.clear()

    def one(index):
        if index % 2:
            pieces, _ = ask_streaming(client, QUESTIONS[index])
            return "".join(pieces)
        return ask(client, QUESTIONS[index])

    with ThreadPoolExecutor(max_workers=20) as pool:
        together = list(pool.map(one, range(20)))
    assert together == alone
    assert max(served.model_server.worker.batch_sizes) > 1  # they were decoded in shared batches


def test_a_client_that_disconnects_stops_its_generation(served, client):
    import time

    worker = served.model_server.worker
    messages = [{"role": "user", "content": "Go on and on"}]
    before = len(worker.batch_tokens)
    whole = client.chat.completions.create(model="forge-tiny", messages=messages, max_tokens=200, temperature=0)
    assert whole.usage.completion_tokens == 200  # left alone, this answer runs to its limit
    deadline = time.time() + 30
    while len(worker.batch_tokens) == before and time.time() < deadline:  # its batch's stats land just after
        time.sleep(0.05)
    finished_batches, dropped = len(worker.batch_tokens), worker.dropped
    body = json.dumps({"messages": messages, "max_tokens": 200, "temperature": 0, "stream": True}).encode()
    request = urllib.request.Request(served.url + "/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
    response = urllib.request.urlopen(request, timeout=30)
    assert response.readline().startswith(b"data: ")  # the stream has begun
    response.close()
    deadline = time.time() + 30
    while len(worker.batch_tokens) == finished_batches and worker.dropped == dropped and time.time() < deadline:
        time.sleep(0.05)
    # dropped before it started, or stopped well before its 200 tokens
    assert worker.dropped == dropped + 1 or worker.batch_tokens[finished_batches] < 200
    assert ask(client, QUESTIONS[0])  # and the server carries on


def post(url, body: bytes | str, key=API_KEY, method="POST"):
    request = urllib.request.Request(url, data=body.encode() if isinstance(body, str) else body, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("path, body, status, needle", [
    ("/chat/completions", '{"model": "forge-tiny", "messages": [', 400, "malformed JSON"),
    ("/chat/completions", '{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404, "gpt-9"),
    ("/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "temperature": 7}', 400, "temperature"),
    ("/chat/completions", '{"messages": []}', 400, "messages"),
    ("/chat/completions", '{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    ("/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "n": 0}', 400, "n"),
    ("/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "logprobs": true}', 400, "logprobs"),
    ("/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}', 400,
     "context window"),
    ("/completions", '{"model": "forge-tiny"}', 400, "prompt"),
    ("/completions", '{"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}', 400, "stop"),
    ("/completions", '[1, 2]', 400, "body"),
    ("/nowhere", '{}', 404, "Not Found"),
])
def test_bad_requests_get_4xx_json_and_the_server_lives_on(served, client, path, body, status, needle):
    code, payload = post(served.url + path, body)
    assert code == status
    assert needle in payload["error"]["message"] and payload["error"]["type"]
    assert client.models.list().data  # still serving


def test_missing_key_is_401(served):
    code, payload = post(served.url + "/models", b"", key=None, method="GET")
    assert code == 401 and payload["error"]["code"] == "invalid_api_key"


def test_serve_binds_loopback_by_default():
    from lmforge.plugins.serve.cli import _parser

    args = _parser().parse_args(["some/model"])
    assert args.host == "127.0.0.1" and args.api_key is None


@pytest.mark.slow
def test_serve_command_end_to_end(varied_model_dir, tmp_path):
    """``lmforge serve`` as a user runs it: a separate process, then the openai client, then Ctrl-C."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from openai import OpenAI

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", str(varied_model_dir), "--port",
                                str(port), "--log-level", "warning"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stderr=subprocess.PIPE, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0)
        deadline = time.time() + 90
        while True:
            try:
                models = client.models.list()
                break
            except Exception:
                if time.time() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.5)
        assert models.data[0].id == "forge-tiny"
        answer = client.chat.completions.create(model="forge-tiny", max_tokens=5, temperature=0,
                                                messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
