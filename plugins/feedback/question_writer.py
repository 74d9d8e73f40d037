"""Write the questions for self-interrogation from a document collection, by rule or by a second model.

"Self interrogation can be automated using another AI model, which generates questions to probe knowledge
gaps." A fixed Q/A file only probes what someone thought to ask; this stage makes the questions from the text
the model should know (its pretraining corpus, a domain's documents) and checks every answer against its source:

- ``method: cloze`` (no model needed): sentences that state a fact about a named thing become fill-in-the-blank
  questions — "The capital of Velmora is Drestholm." -> "Complete the sentence: The capital of Velmora is ___."
  with the answer "Drestholm" (the sentence's last capitalised phrase or number: the part a model must *know*).
  This is how knowledge probes such as LAMA are built, and it needs nothing but the text.
- ``method: model``: a second model (any chat model dir or Hub id in the local cache — usually a larger one
  than the model being probed) reads each passage and writes ``Q: … / A: …``; a pair is kept only when its
  answer occurs in the passage (normalised), so a hallucinated question never becomes a training target.

Output: ``questions.jsonl`` (``{question, answer, source}``, the ``text`` answer type of the
``self_interrogation`` stage) and ``questions_report.json`` (passages read, pairs written, pairs rejected and
why). ``pipeline=probe_documents`` chains it: questions -> self-interrogation -> SFT with "I'm not sure" data.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lmforge import Sampler
from lmforge.errors import ConfigError, DataError
from lmforge.params import at_least, one_of

METHODS = ("cloze", "model")
SENTENCE = re.compile(r"[^.!?\n]{20,240}[.!?]")
# The blank: a final capitalised phrase (1-3 words) or a number, right before the sentence's end.
FINAL_FACT = re.compile(r"^(?P<stem>.*\b(?:is|was|are|were|by|in|of|called|named)\s+(?:the\s+)?)"
                        r"(?P<answer>(?:[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+){0,2})|\d[\d,.]*)\s*[.!?]$")
WRITER_PROMPT = ("Read the passage and write one question that the passage answers, and its short answer.\n"
                 "Passage: {passage}\n\nReply exactly as:\nQ: <question>\nA: <answer>")
QA_REPLY = re.compile(r"Q:\s*(?P<q>.+?)\s*\n+\s*A:\s*(?P<a>.+)", re.DOTALL)


@dataclass
class QuestionWriterConfig:
    method: str = "cloze"  # cloze: fill-in-the-blank from fact sentences | model: a second model writes Q/A
    max_questions: int = 200
    per_document: int = 2  # at most this many questions from one document
    text_field: str = "text"
    seed: int | None = None  # None: the run's seed (which documents and sentences are picked)
    max_new_tokens: int = 64  # method=model: the writer's reply length
    max_passage_chars: int = 600  # method=model: the passage shown to the writer

    def __post_init__(self):
        one_of(self, "method", METHODS)
        at_least(self, 1, "max_questions", "per_document", "max_new_tokens", "max_passage_chars")


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def cloze_questions(text: str) -> list[dict]:
    """Fill-in-the-blank questions from the fact-stating sentences of one document."""
    found = []
    for sentence in SENTENCE.findall(text):
        match = FINAL_FACT.match(sentence.strip())
        if match and len(match["stem"].split()) >= 3:
            found.append({"question": f"Complete the sentence: {match['stem'].strip()} ___.",
                          "answer": match["answer"].rstrip(".,")})
    return found


def model_questions(model, tokenizer, passages: list[str], max_new_tokens: int) -> list[tuple[dict | None, str]]:
    """Ask the writer model for one Q/A per passage; (pair or None, why rejected) for each, answer checked."""
    from lmforge.plugins.lib.generation import GenerateConfig, sample

    prompts = [[{"role": "user", "content": WRITER_PROMPT.format(passage=p)}] for p in passages]
    rows = sample(model, tokenizer, prompts, GenerateConfig(do_sample=False, max_new_tokens=max_new_tokens))
    return [checked_pair(passage, row["completion"]) for passage, row in zip(passages, rows)]


def checked_pair(passage: str, reply: str) -> tuple[dict | None, str]:
    """The writer's ``Q: … A: …`` reply as a pair, kept only when the answer occurs in the passage."""
    match = QA_REPLY.search(reply)
    if not match:
        return None, "no 'Q: … A: …' in the reply"
    question, answer = match["q"].strip(), match["a"].strip().splitlines()[0].strip()
    if not normalise(answer) or normalise(answer) not in normalise(passage):
        return None, "answer not found in the passage"
    return {"question": question, "answer": answer}, ""


class QuestionWriter(Sampler):
    """Questions with checked answers from documents: cloze by rule, or written by a second model."""

    config_class = QuestionWriterConfig
    inputs: ClassVar[dict[str, str]] = {"text": "the documents to ask about (any data input)"}
    optional_inputs: ClassVar[dict[str, str]] = {"model": "method=model: the writer model (dir or Hub id)"}

    def run(self, inputs, output_dir, context):
        from lmforge.plugins.lib.data import iter_texts

        cfg = self.config
        if cfg.method == "model" and not inputs.get("model"):
            raise ConfigError("sampler.method: 'model' needs a 'model' input (the writer model)")
        rng = random.Random(context.seed if cfg.seed is None else cfg.seed)
        documents = [(i, t) for i, t in enumerate(t for batch in iter_texts(inputs["text"], cfg.text_field)
                                                   for t in batch)]
        if not documents:
            raise DataError(f"{inputs['text']}: no documents to write questions from")
        rng.shuffle(documents)
        rejected: dict[str, int] = {}
        if cfg.method == "cloze":
            pairs = []
            for index, text in documents:
                candidates = cloze_questions(text)
                rng.shuffle(candidates)
                pairs += [{**c, "source": f"document {index}"} for c in candidates[:cfg.per_document]]
                if len(pairs) >= cfg.max_questions:
                    break
        else:
            pairs = self._written_by_model(inputs["model"], documents, rejected, context)
        pairs = pairs[:cfg.max_questions]
        if not pairs:
            raise DataError(f"{inputs['text']}: no questions could be written ({cfg.method}); "
                            f"rejected: {rejected or 'no fact sentences found'}")
        with open(Path(output_dir) / "questions.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
        report = {"method": cfg.method, "documents": len(documents), "questions": len(pairs), "rejected": rejected}
        (Path(output_dir) / "questions_report.json").write_text(json.dumps(report, indent=2))
        context.log_metrics({"questions": len(pairs), "rejected": sum(rejected.values())})
        return output_dir

    def _written_by_model(self, model_ref, documents, rejected: dict[str, int], context) -> list[dict]:
        from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer

        cfg = self.config
        tokenizer, model = load_tokenizer(model_ref), load_causal_lm(model_ref, context, inference=True).eval()
        passages = [(index, text[:cfg.max_passage_chars]) for index, text in documents[:cfg.max_questions * 2]]
        pairs = []
        for (index, _), (pair, why) in zip(passages, model_questions(model, tokenizer, [p for _, p in passages],
                                                                     cfg.max_new_tokens)):
            if pair is None:
                rejected[why] = rejected.get(why, 0) + 1
            else:
                pairs.append({**pair, "source": f"document {index}"})
        return pairs
