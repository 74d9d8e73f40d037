"""Look it up when unsure (retrievers, the uncertainty trigger, chat/sampler records), the token view and the
language map — each through its real parts: a BM25 index, a search service on 127.0.0.1, real models."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import lmforge
import pytest

FACTS = {
    "velmora.txt": "Velmora is an island nation in the northern sea. The capital of Velmora is Drestholm.\n\n"
                   "Velmora exports salt and wool.",
    "quarn.txt": "The river Quarn flows through the valley of Esk. Its source is the glacier of Tolle.",
    "baking.txt": "Bread rises because yeast makes gas. Bakers knead dough to build gluten.",
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    for name, text in FACTS.items():
        (root / name).write_text(text)
    return root


def test_bm25_finds_the_passage_with_the_answer(collection):
    from lmforge.plugins.retrieval.when_unsure import build_retriever

    retriever = build_retriever({"name": "bm25", "collection": str(collection), "passage_chars": 120})
    top = retriever.search("What is the capital of Velmora?", k=2)
    assert top and "Drestholm" in top[0].text and top[0].source.endswith("velmora.txt:1")  # file:line
    assert "Tolle" in retriever.search("where does the Quarn river start", k=1)[0].text
    assert retriever.search("the of and", k=3) == []  # only stop words: nothing to rank


def test_bad_retriever_settings_fail_in_one_line(collection):
    from lmforge.errors import ConfigError
    from lmforge.plugins.retrieval.when_unsure import build_retriever

    with pytest.raises(ConfigError, match="did you mean 'bm25'"):
        build_retriever({"name": "bm52", "collection": str(collection)})
    with pytest.raises(ConfigError, match="retriever.url"):
        build_retriever({"name": "http", "url": "ftp://x"})
    with pytest.raises(ConfigError, match="unknown key"):
        build_retriever({"name": "bm25", "colection": "x"})


class _Search(BaseHTTPRequestHandler):
    """A search service as a user would run one: GET ?q=…&k=… -> {"results": [{"text", "url"}]}."""

    def do_GET(self):
        from urllib.parse import parse_qs, urlparse

        query = parse_qs(urlparse(self.path).query)
        self.server.queries.append(query["q"][0])
        body = json.dumps({"results": [{"text": f"Result {i} for {query['q'][0]}", "url": f"http://example/{i}"}
                                       for i in range(int(query["k"][0]))]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def search_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Search)
    server.queries = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_http_retriever_against_a_local_service(search_service):
    from lmforge.plugins.retrieval.when_unsure import build_retriever

    url = f"http://127.0.0.1:{search_service.server_port}/search"
    passages = build_retriever({"name": "http", "url": url}).search("tallest tree", k=2)
    assert [p.source for p in passages] == ["http://example/0", "http://example/1"]
    assert passages[0].text == "Result 0 for tallest tree" and search_service.queries == ["tallest tree"]


def test_retrieval_fires_above_the_threshold_only_and_passages_reach_the_prompt(varied_model_dir, collection):
    from lmforge.plugins.lib.generation import GenerateConfig, sample
    from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer
    from lmforge.plugins.retrieval.when_unsure import RetrievalConfig, build_retriever, sample_when_unsure

    tokenizer, model = load_tokenizer(varied_model_dir), load_causal_lm(varied_model_dir).eval()
    prompts = [[{"role": "user", "content": "What is the capital of Velmora?"}]]
    gen = GenerateConfig(do_sample=False, max_new_tokens=8)
    retriever = build_retriever({"name": "bm25", "collection": str(collection)})
    probe = sample_when_unsure(model, tokenizer, prompts, gen, RetrievalConfig(retriever="unused", threshold=1e9),
                               retriever)
    uncertainty = probe[0]["retrieval"]["uncertainty"]
    assert uncertainty > 0 and not probe[0]["retrieval"]["fired"] and "prompt_with_context" not in probe[0]

    below = RetrievalConfig(retriever="unused", threshold=uncertainty - 1e-3, k=2)
    fired = sample_when_unsure(model, tokenizer, prompts, gen, below, retriever)[0]
    assert fired["retrieval"]["fired"] and fired["retrieval"]["query"] == "What is the capital of Velmora?"
    assert "Drestholm" in fired["retrieval"]["passages"][0]["text"]
    seen = fired["prompt_with_context"][-1]["content"]
    assert seen.startswith("Context:\n[1] ") and "Drestholm" in seen and seen.endswith(
        "Question: What is the capital of Velmora?")
    assert fired["prompt"] == prompts[0]  # the user's prompt is kept as asked
    # The completion is what the model says to the prompt WITH the passages (greedy, so reproducible).
    assert fired["completion"] == sample(model, tokenizer, [fired["prompt_with_context"]], gen)[0]["completion"]
    above = RetrievalConfig(retriever="unused", threshold=uncertainty + 1e-3)
    assert not sample_when_unsure(model, tokenizer, prompts, gen, above, retriever)[0]["retrieval"]["fired"]


def test_sampler_stage_records_retrieval(varied_model_dir, collection, tmp_path, tiny_context):
    from lmforge.plugins.samplers.hf_generate import HFGenerateSampler

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in
                               ("What is the capital of Velmora?", "Why does bread rise?")))
    sampler = HFGenerateSampler(do_sample=False, max_new_tokens=4, retrieval={
        "retriever": {"name": "bm25", "collection": str(collection)}, "threshold": 0.0})
    out, manifest = lmforge.run_stage(sampler, {"model": varied_model_dir, "prompts": prompts}, tmp_path / "s",
                                      tiny_context)
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert all(r["retrieval"]["fired"] for r in rows)
    assert "Drestholm" in rows[0]["prompt_with_context"][-1]["content"]
    assert "yeast" in rows[1]["prompt_with_context"][-1]["content"]
    assert manifest["metrics"]["retrieval_fired_share"] == 1.0
    with pytest.raises(lmforge.errors.ConfigError, match="retrieval.signal"):
        HFGenerateSampler(retrieval={"retriever": "bm25", "signal": "vibes"})


def test_chat_shows_whether_it_looked_it_up(varied_model_dir, collection):
    from lmforge.plugins.samplers.chat import chat_main

    for threshold, expected in (("0", "looked it up"), ("1e9", "answering from memory")):
        lines = iter(["What is the capital of Velmora?", "/quit"])
        out = io.StringIO()
        chat_main([str(varied_model_dir), "--greedy", "--max-new-tokens", "4", "--retrieve", str(collection),
                   "--threshold", threshold], input_fn=lambda _prompt, lines=lines: next(lines), output=out)
        text = out.getvalue()
        assert f"({expected}: entropy " in text
        assert ("Drestholm" in text) == (threshold == "0")  # the passage is shown only when used


def test_token_view_covers_the_text_exactly(tiny_tokenizer_dir, capsys):
    from lmforge.cli import main
    from lmforge.plugins.inspect.tokens import load_any_tokenizer, plain_view, token_spans

    tokenizer = load_any_tokenizer(str(tiny_tokenizer_dir))
    for text in ("I have a headache.", "naïve café 東京 🙂", "  two  spaces\nnewline"):
        spans = token_spans(tokenizer, text)
        assert "".join(s.text for s in spans) == text
        assert [s.token_id for s in spans] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert plain_view(token_spans(tokenizer, "a b")).count("|") == len(token_spans(tokenizer, "a b")) - 1
    try:
        code = main(["tokenize", str(tiny_tokenizer_dir), "I have a headache"])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code in (0, None)
    printed = capsys.readouterr().out
    ids = tokenizer("I have a headache", add_special_tokens=False)["input_ids"]
    assert "ids: " + " ".join(map(str, ids)) in printed and "tokens/word" in printed and " 4 words " in printed
    main(["tokenize", str(tiny_tokenizer_dir), "headache"])
    assert " 1 word (" in capsys.readouterr().out


def test_tokenizer_report_has_fertility_and_token_views(tiny_tokenizer_dir):
    report = json.loads((tiny_tokenizer_dir / "tokenizer_report.json").read_text())
    assert 1.0 < report["fertility"] < 5.0
    view = report["token_view"]["I have a headache, so I stayed at home today."]
    assert view.replace("|", "").replace("·", " ") == "I have a headache, so I stayed at home today."
    assert "fertility" in (tiny_tokenizer_dir / "tokenizer_report.md").read_text()


def test_language_map_of_a_trained_model_differs_from_random(tiny_model_dir, tiny_context, tmp_path):
    """A random model's neighbours equal its random init's (overlap 1.0); after training they do not."""
    from lmforge.plugins.inspect.language_map import LanguageMapConfig, language_map
    from lmforge.plugins.pretrainers.lean_loop import LeanPretrainer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    random_model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    cfg = LanguageMapConfig(words=80, probes=["the", "of", "and", "was", "in"])
    # tiny_model_dir was made with set_seed(0) from the same config: its own random-init twin
    same = language_map(random_model, tokenizer, cfg, tmp_path, seed=0)
    assert same["neighbour_overlap_with_random"] == 1.0

    context = lmforge.RunContext(stage_name="pretrainer", hardware=tiny_context.hardware, quiet=True,
                                 model=dict(tiny_context.model), work_dir=tmp_path / "work", seed=0)
    trained_dir, _ = lmforge.run_stage(
        LeanPretrainer(max_steps=60, batch_size=8, block_size=64, learning_rate=3e-3, warmup_steps=5,
                       eval_steps=0, logging_steps=10),
        {"text": lmforge.sample_data_path("raw_text.jsonl"), "tokenizer": tiny_model_dir}, tmp_path / "pre",
        context)
    trained = AutoModelForCausalLM.from_pretrained(str(trained_dir))
    summary = language_map(trained, tokenizer, cfg, tmp_path, seed=0)
    assert summary["neighbour_overlap_with_random"] < 0.5
    assert (tmp_path / "language_map.png").stat().st_size > 10_000
    assert set(summary["neighbours"]) <= set(cfg.probes) and summary["neighbours"]


# ------------------------------------------------------------ questions for self-interrogation from documents

def test_cloze_questions_come_from_fact_sentences():
    from lmforge.plugins.feedback.question_writer import checked_pair, cloze_questions

    found = cloze_questions(FACTS["velmora.txt"])
    assert {"question": "Complete the sentence: The capital of Velmora is ___.", "answer": "Drestholm"} in found
    assert all(q["answer"] in FACTS["velmora.txt"] for q in found)
    assert cloze_questions("Bread rises because yeast makes gas.") == []  # no named fact to blank out
    passage = FACTS["quarn.txt"]
    assert checked_pair(passage, "Q: Where does the Quarn start?\nA: the glacier of Tolle")[0] == {
        "question": "Where does the Quarn start?", "answer": "the glacier of Tolle"}
    assert checked_pair(passage, "Q: Where does it start?\nA: Mount Doom") == (None, "answer not found in the passage")
    assert checked_pair(passage, "The Quarn is a river.")[1].startswith("no 'Q:")


def test_probe_documents_pipeline_writes_questions_probes_and_fine_tunes(varied_model_dir, collection, tmp_path,
                                                                         monkeypatch):
    from lmforge.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["run", "pipeline=probe_documents", f"probe_model={varied_model_dir}", f"documents={collection}",
                 "probe.samples=2", "probe.max_new_tokens=6", "probe.batch_size=4", "finetuner.max_steps=2",
                 "finetuner.save_steps=0", "run.report=false", "run.quiet=true", "run.name=probe_docs",
                 "evaluation={}"])
    assert code in (0, None)
    run = tmp_path / "runs" / "probe_docs"
    questions = [json.loads(x) for x in (run / "questions" / "questions.jsonl").read_text().splitlines()]
    assert {"question": "Complete the sentence: The capital of Velmora is ___.", "answer": "Drestholm",
            "source": questions[0]["source"]} in [q for q in questions]
    sft = [json.loads(x) for x in (run / "probe" / "sft.jsonl").read_text().splitlines()]
    # A random model knows none of it: every probed question becomes an "I'm not sure" target.
    assert sft and all("not sure" in row["messages"][-1]["content"] for row in sft)
    assert (run / "finetuner" / "model.safetensors").is_file()


def _post(url: str, payload: dict):
    """POST JSON with the standard library (the test needs no HTTP client package)."""
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=60)


def test_server_returns_the_retrieval_record_in_its_extension_field(varied_model_dir, collection):
    from lmforge.plugins.retrieval.when_unsure import RetrievalConfig
    from lmforge.plugins.serve.cli import running_server

    retrieval = RetrievalConfig(retriever={"name": "bm25", "collection": str(collection)}, threshold=0.0, k=2)
    question = {"model": "forge-tiny", "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "What is the capital of Velmora?"}]}
    with running_server(varied_model_dir, retrieval=retrieval) as served:
        body = json.loads(_post(f"{served.url}/chat/completions", question).read())
        record = body["lmforge_retrieval"]
        assert record["fired"] and "Drestholm" in record["passages"][0]["text"]
        assert body["choices"][0]["message"]["role"] == "assistant"
        with _post(f"{served.url}/chat/completions", {**question, "stream": True}) as response:
            lines = (raw.decode().strip() for raw in response)
            first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        assert first["lmforge_retrieval"]["fired"] and first["choices"][0]["delta"]["role"] == "assistant"
    served_without = RetrievalConfig(retriever={"name": "bm25", "collection": str(collection)}, threshold=1e9)
    with running_server(varied_model_dir, retrieval=served_without) as served:
        body = json.loads(_post(f"{served.url}/chat/completions", question).read())
        assert body["lmforge_retrieval"]["fired"] is False and body["lmforge_retrieval"]["passages"] == []
