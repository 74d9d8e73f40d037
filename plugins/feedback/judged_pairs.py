"""Judged pairs: the model samples several answers per question, a judge ranks them, pairs come out.

Why: preference data is worth most when it is about the model being aligned -- its own answers, on questions
it was not taught (the way the RLHF documents describe collecting it, and what "on-policy" means in DPO
papers). Pairs bundled with a framework were made by some other model; this stage makes them from the run's
own fine-tuned model, so the aligner and the reward model learn about what this model does.

The judge knows each question's reference answer and prefers what a person asks of an assistant: answer what
you know, say so where your knowledge ends (the rule judge of plugins/evaluators/stage_effects.py: the right answer beats
``unsure_reply``, which beats a wrong answer). Per question, from ``samples`` answers at ``temperature``:

- answered right at least once: its most frequent right answer is chosen over up to ``wrong_per_question`` of
  its distinct wrong answers and over ``unsure_reply`` (it should not hedge what it knows);
- never answered right: ``unsure_reply`` is chosen over up to ``wrong_per_question`` of its wrong answers.

With ``greedy`` (the default) each question is also answered once greedily, the way the evaluators ask: a
right greedy answer is the chosen one, paired against ``unsure_reply`` ``unsure_pairs`` times over (also on
taught questions), so that the aligned model keeps answering what it already answers right -- without
it, pairs that choose ``unsure_reply`` outnumber those that reject it and the policy learns to hedge where it
knew.

Questions come from ``prompts`` ({prompt, reference} records: questions the model was not fine-tuned on) and,
optionally, ``known`` (chat data the model was fine-tuned on: ``known_questions`` of its questions, the last
answer as the reference), so that answering what it was taught stays preferred -- half of those also get the
pair against ``unsure_reply``. With ``anchors`` each rejected answer that is the taught answer of another
question adds that question's pair choosing it over ``unsure_reply`` (:func:`anchor_pairs`). The ranking page
(``lmforge rank``) is the human alternative to this judge.

Output (a sampler artifact): ``preferences.jsonl`` ({prompt, chosen, rejected} conversations, what the
aligners and the reward model read: ``stage:<name>/preferences.jsonl``), ``completions.jsonl`` (every judged
sample) and metrics: questions, pairs, share answered right at least once, pairs that choose ``unsure_reply``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from lmforge import Sampler
from lmforge.errors import DataError
from lmforge.params import ParamError, at_least, one_of


@dataclass
class JudgedPairsConfig:
    samples: int = 8  # answers drawn per question
    temperature: float = 1.0  # high enough that a question's answers differ
    max_new_tokens: int = 40
    batch_size: int = 64
    system_prompt: str | None = None  # the sampler's, so pairs look like the conversations it will have
    placeholders: dict[str, str] | None = None  # fills {{name}} in references and known answers (the finetuner's)
    unsure_reply: str = "I am not sure about that."
    wrong_per_question: int = 3  # distinct wrong answers paired per question
    known_questions: int = 200  # questions drawn from the `known` input
    greedy: bool = True  # also answer each question greedily; a right greedy answer is chosen over unsure_reply
    unsure_pairs: int = 2  # (right greedy answer, unsure_reply) pairs per question the model answers right greedily
    knows: str = "sampled"  # known question: sampled = a sample was right; greedy = its greedy answer is right
    anchors: bool = False  # a rejected answer that is another taught question's answer: that pair, chosen over unsure
    seed: int | None = None  # None: the run's seed

    def __post_init__(self):
        at_least(self, 2, "samples")  # ranking needs at least two answers per question
        at_least(self, 1, "max_new_tokens", "batch_size", "wrong_per_question")
        at_least(self, 0, "known_questions", "unsure_pairs")
        at_least(self, 0, "temperature", exclusive=True)  # sampled answers differ only above 0
        one_of(self, "knows", ("sampled", "greedy"))
        if self.knows == "greedy" and not self.greedy:
            raise ParamError("knows: greedy needs greedy: true (the greedy answer is what says it knows)")
        if not self.unsure_reply.strip():
            raise ParamError("unsure_reply: empty; it is the answer chosen where the model is never right")


def ranked_pairs(question: str, reference: str, completions: list[tuple[str, bool]], unsure_reply: str,
                 wrong_per_question: int, against_unsure: bool, greedy: tuple[str, bool] | None = None,
                 unsure_pairs: int = 1, knows_greedy_only: bool = False) -> tuple[list[tuple[str, str]], bool]:
    """(chosen, rejected) answers to one question from its sampled (completion, ended its turn) answers and its
    greedy answer, if asked; and whether any answer was right. A right greedy answer is the chosen one, paired
    with ``unsure_reply`` ``unsure_pairs`` times whatever ``against_unsure`` says. With ``knows_greedy_only`` a
    question whose greedy answer is not right is one the model does not know: ``unsure_reply`` is chosen over its
    wrong answers, and its right samples are in no pair."""
    from lmforge.plugins.evaluators.stage_effects import abstains, is_correct

    def is_right(text: str, ended: bool) -> bool:
        return ended and is_correct(text, reference, question)

    completions = completions + ([greedy] if greedy else [])
    right = [text for text, ended in completions if is_right(text, ended)]
    wrong = list(dict.fromkeys(text for text, _ in completions
                               if text.strip() and text not in right and not abstains(text)))
    known = bool(greedy) and is_right(*greedy)
    if not right or (knows_greedy_only and not known):
        return [(unsure_reply, text) for text in wrong[:wrong_per_question]], bool(right)
    best = greedy[0] if known else Counter(right).most_common(1)[0][0]
    times = unsure_pairs if known else 1 if against_unsure else 0
    unsure = [(best, unsure_reply)] * times if not abstains(reference) else []
    return unsure + [(best, text) for text in wrong[:wrong_per_question]], True


def anchor_pairs(pairs: list[dict], taught: dict[str, str], unsure_reply: str) -> list[dict]:
    """For each pair whose rejected answer is what the SFT data taught for another question, that question's pair
    with the same answer chosen over ``unsure_reply``. A small model answers an unknown question with an answer it
    was taught for another ("What is the opposite of wide?" -> "The opposite of wet is dry."); rejecting it lowers
    that answer everywhere, the question it belongs to included, and the aligned model hedges on what it knew.
    The anchor says "wrong here, right there", so the preference is about the question, not the answer."""
    by_answer: dict[str, list[str]] = {}
    for question, answer in taught.items():
        by_answer.setdefault(answer, []).append(question)
    used: Counter = Counter()
    anchored = []
    for pair in pairs:
        rejected, question = pair["rejected"][0]["content"], pair["prompt"][-1]["content"]
        owners = [q for q in by_answer.get(rejected, []) if q != question]
        if owners:
            owner = owners[used[rejected] % len(owners)]
            used[rejected] += 1
            anchored.append({"prompt": pair["prompt"][:-1] + [{"role": "user", "content": owner}],
                             "chosen": [{"role": "assistant", "content": rejected}],
                             "rejected": [{"role": "assistant", "content": unsure_reply}]})
    return anchored


def questions_with_references(source) -> list[dict]:
    """The {prompt, reference} records of a questions input; one line naming the file:line that is not one."""
    from lmforge.plugins.lib.data import read_rows

    rows = read_rows(source)
    for row in rows:
        if not (isinstance(row.fields.get("prompt"), str) and isinstance(row.fields.get("reference"), str)):
            raise DataError(f"{row.where}: needs 'prompt' and 'reference' strings (a question and its right "
                            f"answer); fields: {', '.join(map(str, row.fields)) or 'none'}")
    return [row.fields for row in rows]


class JudgedPairs(Sampler):
    """Samples answers from a model, ranks them against reference answers, writes preference pairs."""

    config_class = JudgedPairsConfig
    inputs: ClassVar[dict[str, str]] = {"model": "a model directory (the fine-tuned model to align)",
                                        "prompts": "questions with reference answers: {prompt, reference} records"}
    optional_inputs: ClassVar[dict[str, str]] = {"known": "chat data the model was fine-tuned on: some of its "
                                                          "questions are asked too, so answering stays preferred"}

    def check_data(self, inputs):
        if "prompts" in inputs:  # before the stages ahead of this one train
            questions_with_references(inputs["prompts"])

    def questions(self, inputs, seed: int, taught: dict[str, str]) -> list[tuple[str, str, bool]]:
        """(question, reference, fine-tuned on) for every question to ask; ``taught``: the ``known`` chats'
        question -> answer."""
        from lmforge.plugins.evaluators.stage_effects import fill_placeholders, seeded_draw

        placeholders = self.config.placeholders or {}
        asked = [(r["prompt"], fill_placeholders(r["reference"], placeholders), False)
                 for r in questions_with_references(inputs["prompts"])]
        if taught and self.config.known_questions > 0:
            asked += [(q, a, True) for q, a in seeded_draw(taught, self.config.known_questions, seed)]
        return asked

    def run(self, inputs, output_dir, context):
        from lmforge.plugins.evaluators.stage_effects import is_correct, taught_answers
        from lmforge.plugins.lib.generation import GenerateConfig, sample
        from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, seed_everything

        cfg = self.config
        seed = context.seed if cfg.seed is None else cfg.seed
        known = taught_answers(inputs["known"], cfg.placeholders) if inputs.get("known") else {}
        asked = self.questions(inputs, seed, known)
        seed_everything(seed)
        model = load_causal_lm(inputs["model"], context, inference=True).eval()
        params = GenerateConfig(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0, n=cfg.samples,
                                max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                system_prompt=cfg.system_prompt)
        tokenizer, chats = load_tokenizer(inputs["model"]), [[{"role": "user", "content": q}] for q, _, _ in asked]
        rows = sample(model, tokenizer, chats, params, progress=not context.quiet)
        by_question: dict[int, list[tuple[str, bool]]] = {}
        for row in rows:
            by_question.setdefault(row["index"], []).append((row["completion"], row["finish_reason"] == "stop"))
        greedy: dict[int, tuple[str, bool]] = {}
        if cfg.greedy:
            plain = replace(params, do_sample=False, n=1)
            greedy = {row["index"]: (row["completion"], row["finish_reason"] == "stop")
                      for row in sample(model, tokenizer, chats, plain, progress=False)}
        system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        pairs, right_once, greedy_right = [], 0, 0
        for index, (question, reference, taught) in enumerate(asked):
            ranked, answered = ranked_pairs(question, reference, by_question.get(index, []), cfg.unsure_reply,
                                            cfg.wrong_per_question, against_unsure=not taught or index % 2 == 0,
                                            greedy=greedy.get(index), unsure_pairs=cfg.unsure_pairs,
                                            knows_greedy_only=cfg.knows == "greedy")
            right_once += answered
            greedy_right += index in greedy and greedy[index][1] and is_correct(greedy[index][0], reference, question)
            pairs += [{"prompt": system + [{"role": "user", "content": question}],
                       "chosen": [{"role": "assistant", "content": chosen}],
                       "rejected": [{"role": "assistant", "content": rejected}]} for chosen, rejected in ranked]
        anchored = anchor_pairs(pairs, known, cfg.unsure_reply) if cfg.anchors else []
        pairs += anchored
        if not pairs:
            raise DataError(f"{inputs['prompts']}: no preference pairs: every answer of the model was right "
                            "(nothing to prefer against) or empty")
        random.Random(seed).shuffle(pairs)
        output_dir = Path(output_dir)
        with open(output_dir / "completions.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        with open(output_dir / "preferences.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs)
        context.log_metrics({"questions": len(asked), "pairs": len(pairs), "answered_right": right_once / len(asked),
                             "greedy_right": greedy_right, "anchor_pairs": len(anchored),
                             "unsure_chosen": sum(p["chosen"][0]["content"] == cfg.unsure_reply for p in pairs)})
        return output_dir
