"""What each stage did to the model: the same held-out prompts answered by every model, and the numbers.

Why: a run that only logs losses leaves a newcomer guessing whether pretraining, fine-tuning and alignment
did anything. The documents this project follows say what each should do: pretraining gives a model that
continues English text, fine-tuning turns it into an assistant that answers and ends its turn, alignment
moves it toward what the judge prefers. So every model artifact is asked the same held-out questions (the
base model as a plain continuation, the others through the chat template), and the report puts the answers
side by side with the numbers that say whether each stage worked.

Two evaluator plugins (kind ``evaluator``, registered by plugins/evaluators/__init__.py) put the numbers in the manifests:

* ``answers``: greedy answers to the evaluation prompts (written to ``<artifact>/answers.jsonl``, each row with
  ``held_out: true|false``) plus ``samples`` sampled answers per prompt. Metrics: ``right``, ``not_sure``,
  ``wrong`` and ``n`` (counts of the greedy answers to held-out prompts with a reference: holding the reference's
  answer word; not right and saying so, "I am not sure about that."; the rest), ``correct`` (right / n),
  ``held_out_n`` (held-out prompts), ``trained_right`` / ``trained_not_sure`` / ``trained_wrong`` / ``trained_n``
  (the same for trained behaviours, prompts marked ``held_out: false``), ``identity`` (identity prompts whose
  greedy answer names the configured identity), ``ends_turn`` (sampled answers that stop with an end-of-turn
  token), ``english`` (sampled answers that the cleaner's language ID calls English), ``alpha_words`` (share of
  words made of letters: English words, not digit soup). With ``taught`` (the chat data the model was fine-tuned
  on) it also asks ``taught_questions`` of that data's single-turn questions greedily (the same draw for every
  model), written to ``<artifact>/taught_answers.jsonl``: ``taught_right`` / ``taught_not_sure`` /
  ``taught_wrong`` / ``taught_n`` say what a later stage kept of what fine-tuning taught. With ``as_text`` (on by
  default) each held-out reference is also completed as plain text from the text before its answer words ("The
  opposite of wide is" -> "narrow"?), greedily: ``known_as_text`` on the row and as a count of
  ``known_as_text_n`` facts with text before their answer, and for chat models
  ``known_right`` / ``known_not_sure`` / ``known_wrong``, the verdicts of the answers to the facts it completes --
  whether a model hedges what it knows or only what it does not.
* ``win_rate``: this model against a baseline model (an input such as the aligner's ``model``, a model dir or
  a cached Hub id) on held-out prompts, judged by a reward model that did not train the policy (e.g. the run's
  ``reward_model`` stage for a DPO policy) or by the reference rule judge (``judge: reference``), ties
  counting half; sampled answers paired by index, or greedy ones with ``temperature: 0``. Held-out prompts only.
  What the judge learned from goes to ``<artifact>/win_rate.json``: a reward model trained on the same pairs
  file as the policy (by content) is marked ``independent: false``, and the report says so beside the number.

``markdown_section(run_dir, manifests)`` returns the report section (through the ``lmforge_report_sections``
hook): first what each chat model answers -- right / not sure / wrong on held-out prompts with 95% Wilson
intervals, trained behaviours apart, win rates with their judge's provenance -- then what each stage did.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from lmforge import Evaluator
from lmforge.config import sample_data_path
from lmforge.errors import ConfigError, MissingArtifact
from lmforge.params import ParamError, at_least
from lmforge.plugins.lib.models import pad_token_id, seed_everything

ANSWERS_FILE = "answers.jsonl"
TAUGHT_FILE = "taught_answers.jsonl"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".gz")
WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
STOP = {"a", "an", "the", "is", "of", "called", "written", "after", "day", "month", "says", "plus", "i", "am"}
QUESTION_WORDS = {"what", "what's", "which", "who", "how", "tell", "me", "give", "do", "does", "you", "your", "are",
                  "word", "in", "words", "as", "write", "number", "make", "sound", "colour", "color", "opposite",
                  "plural", "capital", "city", "baby", "young", "call", "comes", "much", "add", "and", "say"}
FILLER = {"it", "its", "it's", "that", "this", "that's", "yes", "so", "sure", "be", "are", "was"}


def _run_config(context, group: str) -> dict:
    return dict((getattr(context, "config", None) or {}).get(group) or {})


def fill_placeholders(text: str, placeholders: dict[str, str]) -> str:
    for key, value in placeholders.items():
        text = text.replace("{{" + key + "}}", str(value))
    return text


def answer_words(reference: str, question: str = "") -> list[str]:
    """The words of a reference answer that the question does not already give away: its last content word or, when
    the question holds that word too, the content words that end the reference ("Which city is the capital of
    Mexico?" -> "... is Mexico City." -> mexico city)."""
    words = [w.lower() for w in WORD.findall(reference)]
    last = [w for w in words if w not in STOP][-1:]
    if not last or last[0] not in {w.lower() for w in WORD.findall(question)}:
        return last
    tail = list(itertools.takewhile(lambda w: w not in STOP, reversed(words)))
    return tail[::-1] or words[-1:]  # "The opposite of before is after.": the last word, though a stop word


def _occurrences(words: list[str], run: list[str]) -> int:
    """How often ``run`` occurs in ``words`` as consecutive words."""
    return sum(words[i:i + len(run)] == run for i in range(len(words) - len(run) + 1))


def is_correct(answer: str, reference: str, question: str = "") -> bool:
    """The reference's answer words appear in the answer, together and more often than in the question, and an
    answer that says more than them keeps to the subject asked about: every word the reference shares with
    the question is in it. "The day after Wednesday is Thursday." names "Wednesday" but is not an answer to
    "What is the day after Tuesday?"; "Milk is white." is not one to "What colour is salt?". An answer of the answer
    word and filler alone must end with that word: "The month after March is" (cut off) does not answer "What month
    comes after February?"."""
    words = answer_words(reference, question)
    found = [w.lower() for w in WORD.findall(answer)]
    asked = [w.lower() for w in WORD.findall(question)]
    if not words or _occurrences(found, words) <= _occurrences(asked, words):
        return False
    if found[-1] in words and not [w for w in found if w not in STOP | QUESTION_WORDS | FILLER and w not in words]:
        return True  # the answer word alone, ending the answer ("Warsaw.", "It is Warsaw.")
    subject = {w.lower() for w in WORD.findall(reference)} & set(asked) - STOP - set(words)
    return subject <= set(found)


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
    written = [t for t in texts if t.strip()]
    if not written:
        return 0.0
    return sum(isinstance(_LANGUAGE.process(t), str) for t in written) / len(written)


def alpha_word_share(texts: list[str]) -> float:
    tokens = [t for text in texts for t in text.split()]
    return sum(bool(re.fullmatch(r"[A-Za-z][A-Za-z'-]*[.,!?;:]?", t)) for t in tokens) / max(len(tokens), 1)


def load_eval_prompts(path) -> list[dict]:
    """Evaluation prompts: {prompt, reference?, kind?, held_out?} records (a plain prompt file gives prompts without
    references). ``held_out: false`` marks a trained behaviour (a question the training data asks too, such as
    the identity questions): answered and reported, never counted as held out. Default: held out."""
    from lmforge.plugins.lib.data import read_records
    from lmforge.plugins.lib.formats import load_prompts

    records = read_records(str(path))
    prompts = load_prompts(str(path))
    return [{"messages": p, "reference": r.get("reference") if isinstance(r, dict) else None,
             "kind": r.get("kind", "") if isinstance(r, dict) else "",
             "held_out": bool(r.get("held_out", True)) if isinstance(r, dict) else True}
            for p, r in zip(prompts, records)]


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
    taught: str | None = None  # the chat data the model was fine-tuned on: also ask some of its questions
    taught_questions: int = 100  # how many of them (single-turn chats, drawn with a fixed seed)
    as_text: bool = True  # also complete each held-out reference as plain text: does the model know the fact?

    def __post_init__(self):
        at_least(self, 1, "taught_questions")
        if self.taught and self.taught.startswith("stage:"):
            raise ParamError(f"taught: {self.taught}: expected the fine-tuning data (a file or Hub id), not a stage")
        if self.taught and self.taught.endswith(DATA_SUFFIXES):
            if not Path(self.taught).exists():
                raise ParamError(f"taught: {self.taught}: no such file")
            with warnings.catch_warnings():  # placeholders are filled when the questions are asked
                warnings.filterwarnings("ignore", message=".*unfilled placeholders")
                asked = taught_answers(self.taught, single_turn=True) if self.mode == "chat" else True
            if not asked:  # checked when the run is planned, not after the model it evaluates has trained
                raise ParamError(f"taught: {self.taught}: no single-turn chat to ask")


def taught_answers(path, placeholders: dict[str, str] | None = None, single_turn: bool = False) -> dict[str, str]:
    """question -> taught answer of fine-tuning chats ending with the assistant: the last user turn and the answer
    to it, first seen wins; ``single_turn``: only chats of one user turn."""
    from lmforge.plugins.lib.formats import load_conversations

    taught: dict[str, str] = {}
    for chat in load_conversations(str(path), placeholders=placeholders or None):
        users = [m["content"] for m in chat if m["role"] == "user"]
        if users and chat[-1]["role"] == "assistant" and (len(users) == 1 or not single_turn):
            taught.setdefault(users[-1], chat[-1]["content"])
    return taught


def taught_questions(path, n: int, seed: int = 1,
                     placeholders: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(question, taught answer) of a fine-tuning data file's single-turn chats, ``n`` of them drawn with ``seed``."""
    return seeded_draw(taught_answers(path, placeholders, single_turn=True), n, seed)


def seeded_draw(taught: dict[str, str], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (question, answer) items of ``taught``, the same draw for the same items and seed."""
    items = sorted(taught.items())
    random.Random(seed).shuffle(items)
    return items[:n]


@dataclass
class Asking:
    """The held-out prompts as one evaluator asks them: under the run's system prompt, stopped where the
    sampler stops, references filled with the run's placeholders."""

    prompts: list[dict]
    system_prompt: str | None
    placeholders: dict[str, str]
    stop_tokens: list[str]


def held_out_asking(cfg: HeldOutAsking, context, held_out_only: bool = False) -> Asking:
    sampler = _run_config(context, "sampler")
    system = sampler.get("system_prompt") if cfg.system_prompt == "auto" else cfg.system_prompt
    placeholders = cfg.placeholders if cfg.placeholders is not None else \
        dict(_run_config(context, "finetuner").get("placeholders") or {})
    prompts = load_eval_prompts(cfg.prompts or sample_data_path("prompts.jsonl"))
    if held_out_only:
        prompts = [p for p in prompts if p["held_out"]]
    return Asking(prompts=prompts[: cfg.limit],
                  system_prompt=fill_placeholders(system, placeholders) if system else None,
                  placeholders=placeholders, stop_tokens=list(sampler.get("stop_tokens") or ["<|end|>"]))


def model_for_answers(model_dir, context):
    """(model in eval mode on the run's device, tokenizer) of a model dir, as every evaluator here asks it."""
    from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer

    return load_causal_lm(model_dir, context, inference=True).eval(), load_tokenizer(model_dir)


def continuation(model, tokenizer, texts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy plain-text continuations (no chat template): what a base model does with a prompt."""
    return _greedy(model, tokenizer, [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
                   max_new_tokens, batch_size)


def fact_prompt(reference: str, question: str = "") -> tuple[str, str]:
    """(text up to the answer, answer) of a reference sentence, the answer as the judge reads it
    (``answer_words``): "The opposite of wide is narrow." -> ("The opposite of wide is", "narrow"); "The capital
    of Mexico is Mexico City." asked "Which city is the capital of Mexico?" -> (".. is", "Mexico City")."""
    words = answer_words(reference, question)
    spans = [(m.start(), m.end(), m.group().lower()) for m in WORD.finditer(reference)]
    for start in range(len(spans) - len(words), -1, -1) if words else ():
        if [w for _, _, w in spans[start:start + len(words)]] == words:
            begin, end = spans[start][0], spans[start + len(words) - 1][1]
            return reference[:begin].rstrip(), reference[begin:end]
    return reference, ""


def document_start(tokenizer) -> list[int]:
    """The token(s) a document starts after in pretraining: the tokenizer's own start token when it adds one
    (Llama's BOS), else the end-of-text token that joins documents in a packed stream (lmforge's token shards,
    GPT-2); none when it has neither."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    added = tokenizer("a", add_special_tokens=True)["input_ids"]
    if len(added) > len(plain) and added[-len(plain):] == plain:
        return added[: len(added) - len(plain)]
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def known_as_text(model, tokenizer, facts: list[tuple[str, str]], batch_size: int = 64) -> list[bool | None]:
    """Whether the model completes each fact (reference, question) as plain text: the reference up to its answer
    (``fact_prompt``), as a document starts (``document_start``), continued greedily, is right when the
    continuation's first words are the answer's. What the model knows, whatever it answers when asked. None for a
    fact with no text before its answer ("Warsaw.") or no answer words: nothing to complete."""
    prompts = [fact_prompt(reference, question) for reference, question in facts]
    probed = [i for i, (head, answer) in enumerate(prompts) if WORD.search(head) and WORD.search(answer)]
    out: list[bool | None] = [None] * len(facts)
    if not probed:
        return out
    start = document_start(tokenizer)
    encoded = [start + tokenizer(prompts[i][0], add_special_tokens=False)["input_ids"] for i in probed]
    longest = max(len(tokenizer(" " + prompts[i][1], add_special_tokens=False)["input_ids"]) for i in probed)
    got = _greedy(model, tokenizer, encoded, longest + 2, batch_size, text=False)  # room for the whole answer
    for i, ids, new in zip(probed, encoded, got):
        # decoded with the text before it, so that a continuation glued to the last word ("is" -> "isnarrow") is
        # not a new word, whatever the tokenizer does with leading spaces
        head = tokenizer.decode(ids, skip_special_tokens=True)
        whole = tokenizer.decode(ids + new, skip_special_tokens=True)
        text = whole[len(head):] if whole.startswith(head) else ""
        words = [w.lower() for w in WORD.findall(prompts[i][1])]
        out[i] = not WORD.match(text) and [w.lower() for w in WORD.findall(text)][: len(words)] == words
    return out


def _greedy(model, tokenizer, encoded: list[list[int]], max_new_tokens: int, batch_size: int,
            text: bool = True) -> list:
    """Greedy continuations of token id lists, batched and left-padded: the new text only (``text``), or the new
    token ids."""
    import torch
    from lmforge.plugins.lib.generation import left_padded, within_positions

    pad = pad_token_id(tokenizer)
    out = []
    for start in range(0, len(encoded), batch_size):
        input_ids, attention = left_padded(encoded[start:start + batch_size], pad, model.device)
        input_ids, attention, new_tokens = within_positions(model, input_ids, attention, max_new_tokens)
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False,
                                       max_new_tokens=new_tokens, pad_token_id=pad)
        new = [row[input_ids.shape[1]:] for row in generated.tolist()]
        out += [tokenizer.decode(ids, skip_special_tokens=True) for ids in new] if text else new
    return out


class Answers(Evaluator):
    """Greedy and sampled answers to held-out prompts: identity, correctness, end of turn, English."""

    name = "answers"
    config_class = AnswersConfig

    def evaluate(self, artifact, inputs, context):
        from lmforge.plugins.lib.generation import GenerateConfig, sample

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
                                 GenerateConfig(do_sample=False, **common))
            sample_rows = sample(model, tokenizer, [p["messages"] for p in prompts],
                                 GenerateConfig(do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k,
                                                top_p=1.0, n=cfg.samples, **common))
            greedy = [r["completion"] for r in greedy_rows]
            sampled = [r["completion"] for r in sample_rows]
            ends = [r["finish_reason"] == "stop" for r in sample_rows]
        for prompt, question, answer in zip(prompts, questions, greedy):
            reference = fill_placeholders(prompt["reference"], placeholders) if prompt["reference"] else None
            rows.append({"prompt": question, "kind": prompt["kind"], "held_out": prompt["held_out"], "answer": answer,
                         "reference": reference, "correct": is_correct(answer, reference, question) if reference else None})
        metrics = {"english": english_share(sampled), "alpha_words": alpha_word_share(sampled),
                   "empty": sum(not t.strip() for t in sampled) / max(len(sampled), 1), "prompts": len(rows)}
        if ends:
            metrics["ends_turn"] = sum(ends) / len(ends)
        metrics["held_out_n"] = sum(r["held_out"] for r in rows)
        if cfg.as_text:
            facts = [r for r in rows if r["held_out"] and r["reference"]]
            probes = known_as_text(model, tokenizer, [(r["reference"], r["prompt"]) for r in facts], cfg.batch_size)
            for row, known in zip(facts, probes):
                if known is not None:
                    row["known_as_text"] = known
            probed = [r for r in facts if "known_as_text" in r]
            metrics.update(known_as_text=sum(r["known_as_text"] for r in probed), known_as_text_n=len(probed))
            if cfg.mode == "chat":
                known = verdict_counts([r for r in probed if r["known_as_text"]])
                metrics.update({f"known_{v}": known[v] for v in VERDICTS})
        if cfg.mode == "chat":
            metrics.update(verdict_counts([r for r in rows if r["held_out"]]))
            trained = verdict_counts([r for r in rows if not r["held_out"]])
            metrics.update({f"trained_{k}": v for k, v in trained.items()})
            if metrics["n"]:
                metrics["correct"] = metrics["right"] / metrics["n"]
        with open(Path(artifact) / ANSWERS_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({**r, "mode": cfg.mode}, ensure_ascii=False) + "\n" for r in rows)
        if cfg.taught and cfg.mode == "chat":
            items = taught_questions(cfg.taught, cfg.taught_questions, placeholders=placeholders)
            if not items:
                raise ConfigError(f"evaluation.answers.taught: {cfg.taught}: no single-turn chat to ask")
            got = sample(model, tokenizer, [[{"role": "user", "content": q}] for q, _ in items],
                         GenerateConfig(do_sample=False, **common))
            taught = [{"prompt": q, "answer": row["completion"], "reference": a,
                       "correct": is_correct(row["completion"], a, q)} for (q, a), row in zip(items, got)]
            with open(Path(artifact) / TAUGHT_FILE, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in taught)
            metrics.update({f"taught_{k}": v for k, v in verdict_counts(taught).items()})
        asked = [r for r in rows if r["kind"] == "identity"]
        if asked and identity and cfg.mode == "chat":
            metrics["identity"] = sum(identity.lower() in r["answer"].lower() for r in asked) / len(asked)
        return metrics


VERDICTS = ("right", "not_sure", "wrong")


def verdict(row: dict) -> str | None:
    """right / not_sure / wrong for an answers row with a reference (None without one)."""
    if row.get("correct") is None:
        return None
    return "right" if row["correct"] else "not_sure" if abstains(row["answer"]) else "wrong"


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    """{right, not_sure, wrong, n}: counts of the rows with a reference (n: their number)."""
    verdicts = [v for v in map(verdict, rows) if v is not None]
    return {**{v: verdicts.count(v) for v in VERDICTS}, "n": len(verdicts)}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% at the default z); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


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


WIN_RATE_FILE = "win_rate.json"


def _file_digest(path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def judge_provenance(setting: str, judge: str, policy_data) -> dict:
    """What the win rate's judge learned from, beside what the policy learned from: a reward model trained on the
    same labels as the policy (the same pairs file, by content) is not an independent judge."""
    if judge == "reference":
        return {"judge": setting, "kind": "rule judge", "learned_from": "the reference answers of the held-out prompts",
                "independent": True}
    manifest = Path(judge) / "manifest.json"
    data = None
    if manifest.is_file():
        data = ((json.loads(manifest.read_text(encoding="utf-8")).get("inputs") or {}).get("data") or {}).get("path")
    record = {"judge": setting, "kind": "reward model", "learned_from": data, "policy_learned_from":
              str(Path(policy_data).resolve()) if policy_data else None, "independent": None}
    if data and policy_data:
        same = Path(data).resolve() == Path(policy_data).resolve()
        if not same:  # the same pairs under another path: compare contents (each file hashed once)
            digest = _file_digest(data)
            same = digest is not None and digest == _file_digest(policy_data)
        record["independent"] = not same
    return record


class WinRate(Evaluator):
    """Win rate of this model over a baseline on held-out prompts, by a judge that did not train it."""

    name = "win_rate"
    config_class = WinRateConfig

    def evaluate(self, artifact, inputs, context):
        from lmforge.plugins.lib.generation import (
            GenerateConfig,
            sample,
            score_with_reward_model,
            with_system_prompt,
        )

        cfg = self.config
        baseline = _resolve_model(cfg.baseline, inputs, context, "baseline")
        judge = cfg.judge if cfg.judge == "reference" else _resolve_model(cfg.judge, inputs, context, "judge")
        asking = held_out_asking(cfg, context, held_out_only=True)
        prompts, placeholders, system = asking.prompts, asking.placeholders, asking.system_prompt
        if not prompts:
            raise ConfigError("evaluation.win_rate.prompts: no held-out prompt (every one is marked held_out: false)")
        drawn = {"do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0, "n": cfg.samples} \
            if cfg.temperature > 0 else {"do_sample": False}  # temperature 0: one greedy answer per prompt
        params = GenerateConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, system_prompt=system,
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
        provenance = judge_provenance(cfg.judge, judge, inputs.get("data"))
        (Path(artifact) / WIN_RATE_FILE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
        return {"win_rate": sum(outcome) / len(outcome), "pairs": len(outcome),
                "score": sum(scores[0]) / len(outcome), "baseline_score": sum(scores[1]) / len(outcome)}
