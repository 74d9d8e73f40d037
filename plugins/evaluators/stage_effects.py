"""What each stage did to the model: the same held-out prompts answered by every model, and the numbers.

Why: a run that only logs losses leaves a newcomer guessing whether pretraining, fine-tuning and alignment
did anything. The documents this project follows say what each should do: pretraining gives a model that
continues English text, fine-tuning turns it into an assistant that answers and ends its turn, alignment
moves it toward what the judge prefers. So every model artifact is asked the same held-out questions (the
base model as a plain continuation, the others through the chat template), and the report puts the answers
side by side with the numbers that say whether each stage worked.

Two evaluator plugins (kind ``evaluator``, registered by plugins/evaluators.py) put the numbers in the manifests:

* ``answers``: greedy answers to the held-out prompts (written to ``<artifact>/answers.jsonl``) plus
  ``samples`` sampled answers per prompt. Metrics: ``identity`` (identity prompts whose greedy answer names
  the configured identity), ``correct`` (greedy answers holding the reference's answer words), ``not_sure``
  (greedy answers that are not right and say so: "I am not sure about that."), ``ends_turn``
  (sampled answers that stop with an end-of-turn token), ``english`` (sampled answers that the cleaner's
  language ID calls English), ``alpha_words`` (share of words made of letters: English words, not digit soup).
* ``win_rate``: this model against a baseline model (an input such as the aligner's ``model``, a model dir or
  a cached Hub id) on held-out prompts, judged by a reward model that did not train the policy (e.g. the run's
  ``reward_model`` stage for a DPO policy) or by the reference rule judge (``judge: reference``), ties
  counting half; sampled answers paired by index, or greedy ones with ``temperature: 0``.

``markdown_section(run_dir, manifests)`` returns the report section (plugins/report.py calls it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lmforge import Evaluator
from lmforge.config import sample_data_path
from lmforge.errors import ConfigError, MissingArtifact
from lmforge.plugins.lib.models import seed_everything

ANSWERS_FILE = "answers.jsonl"
WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
STOP = {"a", "an", "the", "is", "of", "called", "written", "after", "day", "month", "says", "plus", "i", "am"}
QUESTION_WORDS = {"what", "what's", "which", "who", "how", "tell", "me", "give", "do", "does", "you", "your", "are",
                  "word", "in", "words", "as", "write", "number", "make", "sound", "colour", "color", "opposite",
                  "plural", "capital", "city", "baby", "young", "call", "comes", "much", "add", "and", "say"}


def _run_config(context, group: str) -> dict:
    return dict((getattr(context, "config", None) or {}).get(group) or {})


def fill_placeholders(text: str, placeholders: dict[str, str]) -> str:
    for key, value in placeholders.items():
        text = text.replace("{{" + key + "}}", str(value))
    return text


def answer_words(reference: str) -> list[str]:
    """The words of a reference answer that the question does not already give away (its last content words)."""
    words = [w.lower() for w in WORD.findall(reference)]
    return [w for w in words if w not in STOP][-1:]


def is_correct(answer: str, reference: str, question: str = "") -> bool:
    """The reference's answer word appears in the answer (and, when the question holds it too, beyond it)."""
    words = answer_words(reference)
    found = [w.lower() for w in WORD.findall(answer)]
    asked = [w.lower() for w in WORD.findall(question)]
    return bool(words) and all(found.count(w) > asked.count(w) or (w in found and w not in asked) for w in words)


ABSTAINING = ("not sure", "don't know", "do not know")


def abstains(answer: str) -> bool:
    """The answer says it does not know ("I am not sure about that.")."""
    return any(phrase in answer.lower() for phrase in ABSTAINING)


_LANGUAGE = None


def english_share(texts: list[str], threshold: float = 0.5) -> float:
    """Share of non-empty texts whose top language under the cleaner's language ID is English."""
    global _LANGUAGE
    from lmforge.plugins.cleaners.content import LanguageFilter

    if _LANGUAGE is None:
        _LANGUAGE = LanguageFilter({"languages": ["en"], "threshold": threshold, "annotate": False})
    if not texts:
        return 0.0
    return sum(bool(t.strip()) and isinstance(_LANGUAGE.process(t), str) for t in texts) / len(texts)


def alpha_word_share(texts: list[str]) -> float:
    tokens = [t for text in texts for t in text.split()]
    return sum(bool(re.fullmatch(r"[A-Za-z][A-Za-z'-]*[.,!?;:]?", t)) for t in tokens) / max(len(tokens), 1)


def load_eval_prompts(path) -> list[dict]:
    """Held-out prompts: {prompt, reference?, kind?} records (a plain prompt file gives prompts without references)."""
    from lmforge.plugins.lib.data import read_records
    from lmforge.plugins.lib.formats import load_prompts

    records = read_records(str(path))
    prompts = load_prompts(str(path))
    return [{"messages": p, "reference": r.get("reference") if isinstance(r, dict) else None,
             "kind": r.get("kind", "") if isinstance(r, dict) else ""} for p, r in zip(prompts, records)]


@dataclass
class HeldOutAsking:
    """How both evaluators ask the held-out prompts (one set of settings, so their answers compare)."""

    prompts: str | None = None  # held-out {prompt, reference, kind} jsonl; default: the bundled prompts
    limit: int = 64
    max_new_tokens: int = 40
    samples: int = 2  # sampled answers per prompt (answers: for ends_turn / english; win rate: pairs by index)
    temperature: float = 0.8
    batch_size: int = 64
    system_prompt: str | None = "auto"  # auto: the sampler's system_prompt, so every stage is asked alike
    placeholders: dict[str, str] | None = None  # fills {{name}} in references; null: finetuner.placeholders


@dataclass
class AnswersConfig(HeldOutAsking):
    mode: str = "chat"  # chat: through the chat template | continuation: the prompt text as plain text
    top_k: int = 50
    identity: str | None = None  # the name identity answers must hold; null: placeholders' name


@dataclass
class Asking:
    """The held-out prompts as one evaluator asks them: under the run's system prompt, stopped where the
    sampler stops, references filled with the run's placeholders."""

    prompts: list[dict]
    system_prompt: str | None
    placeholders: dict[str, str]
    stop_tokens: list[str]


def held_out_asking(cfg: HeldOutAsking, context) -> Asking:
    sampler = _run_config(context, "sampler")
    system = sampler.get("system_prompt") if cfg.system_prompt == "auto" else cfg.system_prompt
    placeholders = cfg.placeholders if cfg.placeholders is not None else \
        dict(_run_config(context, "finetuner").get("placeholders") or {})
    return Asking(prompts=load_eval_prompts(cfg.prompts or sample_data_path("prompts.jsonl"))[: cfg.limit],
                  system_prompt=fill_placeholders(system, placeholders) if system else None,
                  placeholders=placeholders, stop_tokens=list(sampler.get("stop_tokens") or ["<|end|>"]))


def model_for_answers(model_dir, context):
    """(model in eval mode on the run's device, tokenizer) of a model dir, as every evaluator here asks it."""
    from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer

    return load_causal_lm(model_dir, context, inference=True).eval(), load_tokenizer(model_dir)


def continuation(model, tokenizer, texts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy plain-text continuations (no chat template): what a base model does with a prompt."""
    import torch
    from lmforge.plugins.lib.generation import left_padded

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in batch]
        input_ids, attention = left_padded(encoded, pad, model.device)
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=pad)
        out += [tokenizer.decode(row[input_ids.shape[1]:], skip_special_tokens=True) for row in generated.tolist()]
    return out


class Answers(Evaluator):
    """Greedy and sampled answers to held-out prompts: identity, correctness, end of turn, English."""

    name = "answers"
    config_class = AnswersConfig

    def evaluate(self, artifact, inputs, context):
        from lmforge.plugins.lib.generation import GenerateParams, sample

        cfg = self.config
        if cfg.mode not in ("chat", "continuation"):
            raise ConfigError(f"evaluation.answers.mode: '{cfg.mode}' is not one of chat, continuation")
        asking = held_out_asking(cfg, context)
        prompts, placeholders = asking.prompts, asking.placeholders
        identity = cfg.identity or placeholders.get("name")
        model, tokenizer = model_for_answers(artifact, context)
        questions = [p["messages"][-1]["content"] for p in prompts]
        seed_everything(context.seed)  # the same draws for every stage's model
        rows = []
        if cfg.mode == "continuation":
            greedy = continuation(model, tokenizer, questions, cfg.max_new_tokens, cfg.batch_size)
            sampled, ends = greedy, []
        else:
            common = {"max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size,
                      "system_prompt": asking.system_prompt, "stop_tokens": asking.stop_tokens}
            greedy_rows = sample(model, tokenizer, [p["messages"] for p in prompts],
                                 GenerateParams(do_sample=False, **common))
            sample_rows = sample(model, tokenizer, [p["messages"] for p in prompts],
                                 GenerateParams(do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k,
                                                top_p=1.0, n=cfg.samples, **common))
            greedy = [r["completion"] for r in greedy_rows]
            sampled = [r["completion"] for r in sample_rows]
            ends = [r["finish_reason"] == "stop" for r in sample_rows]
        for prompt, question, answer in zip(prompts, questions, greedy):
            reference = fill_placeholders(prompt["reference"], placeholders) if prompt["reference"] else None
            rows.append({"prompt": question, "kind": prompt["kind"], "answer": answer, "reference": reference,
                         "correct": is_correct(answer, reference, question) if reference else None})
        with open(Path(artifact) / ANSWERS_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({**r, "mode": cfg.mode}, ensure_ascii=False) + "\n" for r in rows)
        metrics = {"english": english_share(sampled), "alpha_words": alpha_word_share(sampled),
                   "prompts": len(rows)}
        if ends:
            metrics["ends_turn"] = sum(ends) / len(ends)
        scored = [r["correct"] for r in rows if r["correct"] is not None]
        if scored and cfg.mode == "chat":
            metrics["correct"] = sum(scored) / len(scored)
            metrics["not_sure"] = sum(abstains(r["answer"]) for r in rows if r["correct"] is False) / len(scored)
        asked = [r for r in rows if r["kind"] == "identity"]
        if asked and identity and cfg.mode == "chat":
            metrics["identity"] = sum(identity.lower() in r["answer"].lower() for r in asked) / len(asked)
        return metrics


@dataclass
class WinRateConfig(HeldOutAsking):
    baseline: str = "model"  # an input of this stage (the model it started from) or a model dir
    judge: str = "reward_model"  # an input of this stage, "stage:<name>", a reward-model dir or Hub id, or "reference"
    vocabulary: str | None = None  # judge=reference: chat data whose words count as fluent; default bundled sft


def repetition_fraction(text: str, n: int = 3) -> float:
    """Share of the word n-grams of a text that repeat an earlier one (0: none, near 1: a loop)."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def known_words(path, placeholders: dict[str, str] | None = None) -> set[str]:
    """The lower-cased words of every message in a chat data file: what a fluent answer is made of."""
    from lmforge.plugins.lib.formats import load_conversations

    return {w.lower() for conversation in load_conversations(str(path), placeholders=placeholders or None)
            for m in conversation for w in WORD.findall(m["content"])}


def reference_score(answer: str, reference: str | None, question: str, ended: bool,
                    vocabulary: set[str] | None = None) -> float:
    """The rule judge: the right answer word (2), or where a reference exists and the answer is not right,
    saying it is not sure (1: better than a wrong answer, worse than the right one), ended its turn (1), about
    what was asked (0.5: the question's content words are in the answer), fluent (1 x the share of its words in
    ``vocabulary``), minus repetition and length beyond 120 characters."""
    right = bool(reference) and is_correct(answer, reference, question)
    score = (2.0 if right else 1.0 if reference and abstains(answer) else 0.0) + (1.0 if ended else 0.0)
    words = [w.lower() for w in WORD.findall(answer)]
    asked = [w.lower() for w in WORD.findall(question) if w.lower() not in STOP | QUESTION_WORDS]
    if asked:
        score += 0.5 * sum(w in words for w in asked) / len(asked)
    if vocabulary is not None and words:
        score += sum(w in vocabulary for w in words) / len(words)
    return score - repetition_fraction(answer) - 0.002 * max(len(answer) - 120, 0)


def _resolve_model(value: str, inputs: dict, context, key: str) -> str:
    """An input of this stage, ``stage:<name>`` of this run, a model dir or a Hub id in the HF cache."""
    from lmforge.plugins.lib.models import model_path

    if value in inputs:
        return str(inputs[value])
    if value.startswith("stage:"):
        if context.run_dir is None:
            raise ConfigError(f"evaluation.win_rate.{key}: '{value}' needs a pipeline run")
        return str(Path(context.run_dir) / value.removeprefix("stage:"))
    try:
        return str(model_path(value))
    except MissingArtifact:
        raise ConfigError(f"evaluation.win_rate.{key}: '{value}' is neither an input of this stage "
                          f"({', '.join(inputs) or 'none'}) nor a model directory or cached Hub id") from None


class WinRate(Evaluator):
    """Win rate of this model over a baseline on held-out prompts, by a judge that did not train it."""

    name = "win_rate"
    config_class = WinRateConfig

    def evaluate(self, artifact, inputs, context):
        from lmforge.plugins.lib.generation import (
            GenerateParams,
            sample,
            score_with_reward_model,
            with_system_prompt,
        )

        cfg = self.config
        baseline = _resolve_model(cfg.baseline, inputs, context, "baseline")
        judge = cfg.judge if cfg.judge == "reference" else _resolve_model(cfg.judge, inputs, context, "judge")
        asking = held_out_asking(cfg, context)
        prompts, placeholders, system = asking.prompts, asking.placeholders, asking.system_prompt
        drawn = {"do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0, "n": cfg.samples} \
            if cfg.temperature > 0 else {"do_sample": False}  # temperature 0: one greedy answer per prompt
        params = GenerateParams(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, system_prompt=system,
                                stop_tokens=asking.stop_tokens, **drawn)
        scores = []
        vocabulary = known_words(cfg.vocabulary or sample_data_path("sft.jsonl"), placeholders) \
            if judge == "reference" else None
        for model_dir in (artifact, baseline):
            seed_everything(context.seed)
            rows = sample(*model_for_answers(model_dir, context), [p["messages"] for p in prompts], params)
            if judge == "reference":
                scores.append([reference_score(
                    r["completion"], fill_placeholders(prompts[r["index"]]["reference"] or "", placeholders) or None,
                    prompts[r["index"]]["messages"][-1]["content"], r["finish_reason"] == "stop", vocabulary)
                    for r in rows])
            else:
                scores.append(score_with_reward_model(judge, [
                    with_system_prompt(r["prompt"], system) + [{"role": "assistant", "content": r["completion"]}]
                    for r in rows]))
        outcome = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(*scores)]
        return {"win_rate": sum(outcome) / len(outcome), "pairs": len(outcome),
                "score": sum(scores[0]) / len(outcome), "baseline_score": sum(scores[1]) / len(outcome)}


# ---------------------------------------------------------------------------------------------- the report

STAGE_NUMBERS = (  # (manifest metric, label) shown per stage when present
    ("eval/answers/identity", "identity answered (greedy)"),
    ("eval/answers/correct", "held-out answers correct (greedy)"),
    ("eval/answers/not_sure", "held-out answers that say it is not sure (greedy)"),
    ("eval/answers/ends_turn", "sampled answers that end their turn"),
    ("eval/answers/english", "answers in English (language ID)"),
    ("eval/answers/alpha_words", "words made of letters"),
    ("eval_loss", "validation loss"),
    ("bits_per_byte", "bits per byte"),
    ("eval/perplexity/bits_per_byte", "held-out bits per byte"),
    ("pairs", "preference pairs made from its own answers"),
    ("answered_right", "questions it answered right at least once"),
    ("unsure_chosen", "pairs that prefer \"I am not sure\""),
    ("eval_accuracy", "reward model held-out accuracy"),
    ("eval/reward_accuracy/accuracy", "reward model held-out accuracy"),
    ("eval/win_rate/win_rate", "win rate over its input model"),
    ("eval/win_rate/score", "judge score"),
    ("eval/win_rate/baseline_score", "judge score of the input model"),
)


def _cell(text: str, width: int = 90) -> str:
    """Model text as one literal table cell (no markup can come out of it), shortened to ``width``."""
    from lmforge.plugins.report import escape_markdown

    text = " ".join(str(text).split())
    return escape_markdown(text if len(text) <= width else text[: width - 1] + "…")


def markdown_section(run_dir, manifests: dict[str, dict], max_prompts: int = 8) -> str:
    """The report section: per stage the numbers that say it worked, then the held-out answers side by side."""
    run_dir = Path(run_dir)
    lines = []
    numbers = []
    for stage, manifest in manifests.items():
        metrics = manifest.get("metrics") or {}
        for key, label in STAGE_NUMBERS:
            value = metrics.get(key)
            if isinstance(value, (int, float)):
                numbers.append(f"| {stage} | {label} | {value:.3g} |")
    answers = {}
    for stage in manifests:
        path = run_dir / stage / ANSWERS_FILE
        if path.is_file():
            answers[stage] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if not numbers and not answers:
        return ""
    lines += ["## What each stage did", ""]
    if numbers:
        lines += ["| stage | measure | value |", "|---|---|---|", *numbers, ""]
    if answers:
        stages = list(answers)
        first = answers[stages[0]]
        lines += ["Held-out prompts (never trained on), greedy answers; the base model continues the text as is.", "",
                  "| prompt | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
        for index, row in enumerate(first[:max_prompts]):
            cells = [_cell(row["prompt"], 60)]
            for stage in stages:
                rows = answers[stage]
                cells.append(_cell(rows[index]["answer"]) if index < len(rows) else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
