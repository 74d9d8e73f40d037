"""Self-interrogation: find where a model's knowledge ends and write SFT data that says so.

Why: a model fine-tuned only on confident answers learns to answer confidently, also where it is wrong.
This stage asks the model each question of a Q/A file several times (the ``hf_generate`` sampler stage,
so sampling settings mean what they mean everywhere else), grades every sample against the reference,
and sorts the questions into

- **known**: at least ``known_threshold`` of the samples are correct -> the SFT target is the model's own
  most frequent correct answer (it keeps what it knows, in its own words);
- **unknown**: no sample is correct, whether the wrong answers agree or scatter, or the samples agree on a
  wrong answer (at least ``consistency_threshold`` of them) -> the target is ``unknown_reply`` (training it to
  state its most common wrong answer would teach the error);
- **inconsistent**: the model is right only sometimes -> the target is ``inconsistent_reply``, which names
  the right answer it reached and how often it reached it, so the stated doubt matches the measured one.

A sample is correct when its answer matches the reference: as numbers (``answer_type: number``: GSM8K's
``#### n``, else the last number in the text) or as normalised text (``answer_type: text``: case, spacing
and final punctuation ignored). Where the reference shows its steps (GSM8K's ``<<48/2=24>>`` calculator
annotations) and ``require_steps`` is on, a number answer also needs every intermediate result of the
reference: the right answer, not only the right final number.

Replay: probe examples alone teach a model that hedging is the answer to everything. With a ``replay``
input (ordinary SFT data, e.g. what the model was fine-tuned on), ``replay_ratio`` ordinary examples per
probe example are mixed into ``sft.jsonl`` (labelled ``boundary: replay``).

Output (a sampler artifact, so ``completions.jsonl`` holds every graded sample): ``sft.jsonl`` (``messages``
records, what the finetuner reads; each with its ``boundary`` label), ``knowledge_report.json`` / ``.md``
(counts and per-question accuracy and consistency) and the sampler's own artifact under ``samples/``.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lmforge import Hardware, RunContext, Sampler
from lmforge.errors import ConfigError, DataError
from lmforge.plugins.aligners.rewards import NUMBER, final_answer, normalise_number
from lmforge.plugins.lib.data import read_records

ANSWER_TYPES = ("number", "text")


@dataclass
class ProbeConfig:
    samples: int = 8  # answers drawn per question
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    batch_size: int = 8
    seed: int | None = None  # None: the run's seed
    system_prompt: str | None = None  # also put into the SFT examples, so they match what was probed
    question_key: str = "question"
    answer_key: str = "answer"
    answer_type: str = "number"  # number: GSM8K '#### n' or the last number | text: normalised exact match
    max_questions: int | None = None
    known_threshold: float = 0.75  # share of correct samples for "known"
    consistency_threshold: float = 0.75  # share of samples agreeing on a wrong answer for "unknown"
    require_steps: bool = True  # number answers also need the reference's <<…=v>> intermediate results
    replay_ratio: float = 1.0  # ordinary SFT examples (the `replay` input) per probe example
    unknown_reply: str = ("I'm not sure about this one. I don't think I know the answer, and I'd rather say so "
                          "than guess.")
    inconsistent_reply: str = ("I'm not sure. When I work this out I don't always get the same result: I think "
                               "it is {guess}, but I reached that in only {agree} of {samples} tries, so please "
                               "double-check it.")


def extract_answer(text: str, answer_type: str) -> str | None:
    """The final answer in a text: a number (``#### n`` first, else the last number) or normalised text."""
    if answer_type == "number":
        return final_answer(text)  # the one extractor, shared with the gsm8k_answer reward
    cleaned = " ".join(text.lower().split()).rstrip(".!? ")
    return cleaned or None


STEP = re.compile(r"<<[^<>=]*=\s*(-?[\d,]*\.?\d+)\s*>>")


def reference_steps(reference_text: str) -> list[str]:
    """The intermediate results a reference solution shows (GSM8K calculator annotations ``<<a*b=c>>``)."""
    return [n for n in (normalise_number(v) for v in STEP.findall(reference_text)) if n is not None]


def has_steps(text: str, steps: list[str]) -> bool:
    found = {normalise_number(n) for n in NUMBER.findall(text)}
    return all(step in found for step in steps)


def classify(answers: list[str | None], reference: str, known_threshold: float,
             consistency_threshold: float, correct_flags: list[bool] | None = None) -> dict:
    """Accuracy, consistency, the majority answer and the boundary label of one question's samples.

    ``correct_flags`` (default: answer == reference) lets a stricter grader decide what counts as correct.
    Never correct is "unknown" however the wrong answers spread; sometimes correct is "inconsistent", and
    its ``guess`` is then the right answer (with ``agree`` = how often it was reached), never a wrong one.
    """
    total = len(answers)
    flags = correct_flags if correct_flags is not None else [answer == reference for answer in answers]
    correct = sum(flags)
    majority, agree = Counter(answers).most_common(1)[0]
    accuracy, consistency = correct / total, agree / total
    if accuracy >= known_threshold:
        label = "known"
    elif correct == 0 or (consistency >= consistency_threshold and majority != reference):
        label = "unknown"  # never right, or confidently wrong
    else:
        label = "inconsistent"
    guess, reached = (reference, correct) if correct else (majority, agree)
    return {"label": label, "accuracy": accuracy, "consistency": consistency, "guess": guess, "agree": reached,
            "majority": majority, "correct": correct, "samples": total}


class SelfInterrogation(Sampler):
    """Probes a model on Q/A data; writes "answer where known, say 'not sure' where not" SFT data + a report."""

    config_class = ProbeConfig
    inputs: ClassVar[dict[str, str]] = {"model": "a model directory",
                                        "prompts": "questions with reference answers (.jsonl/.json, e.g. "
                                                   "GSM8K {question, answer})"}
    optional_inputs: ClassVar[dict[str, str]] = {"replay": "ordinary SFT data mixed into sft.jsonl (replay), so "
                                                           "the model does not learn to hedge everything"}

    def __init__(self, config=None, **params):
        super().__init__(config, **params)
        cfg = self.config
        if cfg.answer_type not in ANSWER_TYPES:
            raise ConfigError(f"sampler.answer_type: '{cfg.answer_type}' is not one of {', '.join(ANSWER_TYPES)}")
        for key in ("known_threshold", "consistency_threshold"):
            if not 0 < getattr(cfg, key) <= 1:
                raise ConfigError(f"sampler.{key}: {getattr(cfg, key)} must be in (0, 1]")
        if cfg.samples < 2:
            raise ConfigError(f"sampler.samples: {cfg.samples}; consistency needs at least 2 samples per question")
        try:
            cfg.inconsistent_reply.format(guess="", agree=0, samples=0)
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"sampler.inconsistent_reply: unknown placeholder {exc}; use {{guess}}, {{agree}}, "
                              "{samples}") from None

    def _questions(self, path: Path) -> list[dict]:
        cfg = self.config
        questions = []
        for index, record in enumerate(read_records(path)[: cfg.max_questions]):
            for key in (cfg.question_key, cfg.answer_key):
                if not isinstance(record.get(key), str) and not (key == cfg.answer_key
                                                                 and isinstance(record.get(key), (int, float))):
                    raise DataError(f"{path}: record {index + 1}: needs '{key}' (a string; set question_key / "
                                    f"answer_key for other names), keys: {', '.join(sorted(record))}")
            reference = extract_answer(str(record[cfg.answer_key]), cfg.answer_type)
            if reference is None:
                raise DataError(f"{path}: record {index + 1}: no {cfg.answer_type} answer found in "
                                f"'{cfg.answer_key}'")
            steps = reference_steps(str(record[cfg.answer_key])) if cfg.answer_type == "number" and \
                cfg.require_steps else []
            questions.append({"question": record[cfg.question_key], "reference": reference, "steps": steps})
        return questions

    def run(self, inputs, output_dir, context):
        import lmforge
        from lmforge.plugins.samplers.hf_generate import HFGenerateSampler

        cfg = self.config
        output_dir = Path(output_dir)
        questions = self._questions(inputs["prompts"])
        prompts_file = output_dir / "questions.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": q["question"]}, ensure_ascii=False) + "\n"
                                        for q in questions), encoding="utf-8")
        sampler = HFGenerateSampler(n=cfg.samples, do_sample=True, max_new_tokens=cfg.max_new_tokens,
                                    temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                    batch_size=cfg.batch_size, system_prompt=cfg.system_prompt,
                                    seed=context.seed if cfg.seed is None else cfg.seed,
                                    format="prompt_completion")
        inner = RunContext(stage_name=f"{context.stage_name}.sampling", hardware=context.hardware or Hardware(),
                           seed=context.seed, quiet=context.quiet, model=context.model)
        samples_dir, _ = lmforge.run_stage(sampler, {"model": inputs["model"], "prompts": prompts_file},
                                           output_dir / "samples", inner)
        rows = [json.loads(line) for line in (samples_dir / "completions.jsonl").read_text("utf-8").splitlines()]
        by_question: dict[int, list[dict]] = {}
        for row in rows:
            row["answer"] = extract_answer(row["completion"], cfg.answer_type)
            question = questions[row["index"]]
            row["correct"] = row["answer"] == question["reference"] and has_steps(row["completion"], question["steps"])
            by_question.setdefault(row["index"], []).append(row)

        examples, details = [], []
        for index, question in enumerate(questions):
            samples = by_question[index]
            verdict = classify([s["answer"] for s in samples], question["reference"], cfg.known_threshold,
                               cfg.consistency_threshold, [s["correct"] for s in samples])
            if verdict["label"] == "known":
                correct = Counter(s["completion"] for s in samples if s["correct"])
                reply = correct.most_common(1)[0][0]
            elif verdict["label"] == "unknown":
                reply = cfg.unknown_reply
            else:
                reply = cfg.inconsistent_reply.format(guess=verdict["guess"] if verdict["guess"] is not None
                                                      else "no clear answer", agree=verdict["agree"],
                                                      samples=verdict["samples"])
            messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []) + [
                {"role": "user", "content": question["question"]}, {"role": "assistant", "content": reply}]
            examples.append({"messages": messages, "boundary": verdict["label"],
                             "accuracy": verdict["accuracy"], "consistency": verdict["consistency"]})
            details.append({"index": index, "question": question["question"], "reference": question["reference"],
                            **verdict, "answers": [s["answer"] for s in samples]})
        replayed = self._replay(inputs.get("replay"), len(examples), context.seed)
        examples += replayed

        with open(output_dir / "completions.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        with open(output_dir / "sft.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(example, ensure_ascii=False) + "\n" for example in examples)
        counts = Counter(d["label"] for d in details)
        summary = {label: counts.get(label, 0) for label in ("known", "unknown", "inconsistent")}
        report = {"questions": len(questions), **summary, "replayed": len(replayed), "samples_per_question": cfg.samples,
                  "mean_accuracy": sum(d["accuracy"] for d in details) / len(details),
                  "known_threshold": cfg.known_threshold, "consistency_threshold": cfg.consistency_threshold,
                  "per_question": details}
        (output_dir / "knowledge_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False),
                                                          encoding="utf-8")
        (output_dir / "knowledge_report.md").write_text(markdown_report(report), encoding="utf-8")
        context.log_metrics({"questions": len(questions), **summary, "replayed": len(replayed),
                             "mean_accuracy": report["mean_accuracy"]})
        return output_dir

    def _replay(self, path, probe_examples: int, seed: int) -> list[dict]:
        """``replay_ratio`` x ``probe_examples`` ordinary SFT conversations (seeded draw, repeats if short)."""
        if not path or self.config.replay_ratio <= 0:
            return []
        from lmforge.plugins.lib.formats import load_conversations

        conversations = load_conversations(path)
        if not conversations:
            raise DataError(f"{path}: the replay input holds no conversations")
        wanted = round(self.config.replay_ratio * probe_examples)
        rng = random.Random(seed)
        order: list[int] = []
        while len(order) < wanted:
            order += rng.sample(range(len(conversations)), len(conversations))
        return [{"messages": conversations[i], "boundary": "replay"} for i in order[:wanted]]


def markdown_report(report: dict) -> str:
    lines = ["# Knowledge boundary", "",
             (f"{report['questions']} questions, {report['samples_per_question']} samples each; mean accuracy "
              f"{report['mean_accuracy']:.2f}."), "",
             "| known | unknown | inconsistent |", "|---|---|---|",
             f"| {report['known']} | {report['unknown']} | {report['inconsistent']} |", "",
             "| # | boundary | accuracy | consistency | majority answer | reference | question |",
             "|---|---|---|---|---|---|---|"]
    for d in report["per_question"]:
        question = d["question"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {d['index']} | {d['label']} | {d['accuracy']:.2f} | {d['consistency']:.2f} | "
                     f"{d['guess']} | {d['reference']} | {question[:80]} |")
    return "\n".join(lines) + "\n"
