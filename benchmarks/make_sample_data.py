"""Regenerate the bundled chat data: core/sample_data/{sft,prompts}.jsonl and the facts in raw_text.jsonl.

Why synthetic facts: the default run trains a ~1-3M-parameter model on two CPU cores in minutes. Such a model
learns short, regular English and little else, so the bundled chat data is made of simple, checkable facts
(opposites, colours, animal sounds, plurals, capitals, next day/month, small sums, number words) asked in a
few phrasings, plus the English identity conversations. Every answer is one short sentence, so a model that
has learnt the task ends its turn, and every held-out prompt carries a ``reference`` answer, so the report
can say whether an answer is right.

The same facts are written as plain sentences into the pretraining text (documents with ``source: lmforge facts`` in
``raw_text.jsonl``, beside the C4 and Wikipedia text): the base model meets the facts as text, fine-tuning teaches it to answer
questions, and the held-out prompts ask about facts that neither the fine-tuning data nor the preference
questions ask about. The facts are split by fact, not by phrasing: every phrasing of a fact lands on one side,
and so does a symmetric fact in either order (3 + 1 and 1 + 3 are one sum; see ``fact_key``). Identity and
small talk are trained behaviours: the evaluation prompts ask them too, marked ``held_out: false``, and the
report counts them apart from the held-out facts.

    python benchmarks/make_sample_data.py [--identity ../shared/data/identity.json] [--fact-rounds 16] [--phrasings 1] [--out DIR]

Deterministic (seeded); the table data is written here and is part of the project (same licence).
The identity conversations come from identity.json (Apache-2.0, see ATTRIBUTION.md): English ones only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from lmforge.plugins.feedback.judged_pairs import JudgedPairsConfig

BUNDLED = Path(__file__).resolve().parents[1] / "core" / "sample_data"
OUT = BUNDLED
FACTS_SOURCE = "lmforge facts"

# The facts the chats ask about (sample_facts.json: word pairs, colours, sounds, young animals, plurals,
# capitals, days, months, number words, small talk and the identity questions), as tuples and lists; and
# RELATIONS: relation -> (question templates, answer template); PHRASINGS: relation -> the sentences that state a
# fact in the pretraining text, ``sentence`` first, then its ``also`` (``--phrasings``).
_TABLES = json.loads(Path(__file__).with_name("sample_facts.json").read_text(encoding="utf-8"))
RELATIONS = {name: (r["questions"], r["answer"]) for name, r in _TABLES["relations"].items()}
PHRASINGS = {name: [r["sentence"], *r.get("also", [])] for name, r in _TABLES.pop("relations").items()}
FACTS = {name: [tuple(x) if isinstance(x, list) else x for x in rows] for name, rows in _TABLES.items()}
OPPOSITES, COLOURS, SOUNDS, YOUNG = FACTS["opposites"], FACTS["colours"], FACTS["sounds"], FACTS["young"]
PLURALS, CAPITALS, DAYS, MONTHS = FACTS["plurals"], FACTS["capitals"], FACTS["days"], FACTS["months"]
NUMBER_WORDS, CHAT, IDENTITY_QUESTIONS = FACTS["number_words"], FACTS["chat"], FACTS["identity_questions"]


def items() -> dict[str, list[dict]]:
    """Each relation's items as {a, b, (c, n)} dicts."""
    table = {
        "opposite": [{"a": a, "b": b} for a, b in OPPOSITES],
        "colour": [{"a": a, "b": b} for a, b in COLOURS],
        "sound": [{"a": a, "b": b} for a, b in SOUNDS],
        "young": [{"a": a, "b": b, "n": a.split(" ", 1)[1]} for a, b in YOUNG],
        "plural": [{"a": a, "b": b} for a, b in PLURALS],
        "capital": [{"a": a, "b": b} for a, b in CAPITALS],
        "next_day": [{"a": d, "b": DAYS[(i + 1) % 7]} for i, d in enumerate(DAYS)],
        "next_month": [{"a": m, "b": MONTHS[(i + 1) % 12]} for i, m in enumerate(MONTHS)],
        "sum": [{"a": str(x), "c": str(y), "b": str(x + y)} for x in range(10) for y in range(10)],
        "number_word": [{"a": str(i), "b": w} for i, w in enumerate(NUMBER_WORDS)],
    }
    return table


# relations whose facts read the same in either order: a sum is one fact whichever operand comes first
SYMMETRIC = {"sum": ("a", "c"), "opposite": ("a", "b")}


def fact_key(relation: str, item: dict) -> tuple:
    """What makes two items one fact: the relation and its operands, unordered for a symmetric relation."""
    fields = SYMMETRIC.get(relation)
    if fields:
        return relation, tuple(sorted(item[f].lower() for f in fields))
    return relation, item["a"].lower()


def by_fact(relation: str, rows: list[dict]) -> list[list[dict]]:
    """The items grouped by :func:`fact_key`, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for item in rows:
        groups.setdefault(fact_key(relation, item), []).append(item)
    return list(groups.values())


def fill(template: str, item: dict) -> str:
    text = template.format(a=item["a"], b=item["b"], c=item.get("c", ""), n=item.get("n", ""),
                           A=item["a"][:1].upper() + item["a"][1:], B=item["b"][:1].upper() + item["b"][1:])
    return text[:1].upper() + text[1:]


def spell_numbers(text: str) -> str:
    """0-20 as words ("9 plus 2 is 11." -> "nine plus two is eleven.")."""
    return re.sub(r"\b(1?\d|20)\b", lambda m: NUMBER_WORDS[int(m.group(1))], text)


def turn(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


# Questions in the facts' own phrasings about things no table holds (countries without a capital here, objects
# without a colour, two-digit sums...): the model cannot know these, so the answer is NOT_SURE. Fine-tuning on
# them teaches the reply; the preference pairs then teach *when* (the `preferences` stage, plugins/feedback/
# judged_pairs.py: on questions the model never answers right, its unsure reply -- this one -- is chosen over
# its wrong answers; where it does, its right answer over the unsure reply).
NOT_SURE = JudgedPairsConfig.unsure_reply
UNKNOWABLE = {
    "capital": ["Bolivia", "Nepal", "Mongolia", "Ghana", "Laos", "Fiji", "Oman", "Chad", "Mali", "Latvia", "Estonia",
                "Iceland", "Jamaica", "Panama", "Uruguay"],
    "colour": ["a chair", "a car", "a book", "a cup", "a shirt", "a door", "a ball", "a box", "a bag", "a pen"],
    "sound": ["a fish", "a rabbit", "a turtle", "a crab", "a spider", "a worm", "a butterfly", "a giraffe"],
    "young": ["a snake", "a bee", "an owl", "a mouse", "a wolf", "a donkey", "a crab"],
    "opposite": ["table", "river", "cat", "apple", "chair", "pencil", "cloud", "garden", "window", "bread"],
}


def unknowable_turns(rng: random.Random) -> list[dict]:
    """Every phrasing of each UNKNOWABLE question, 60 sums of two-digit numbers and 30 number words past twenty,
    all answered NOT_SURE."""
    rows = [turn(fill(q, {"a": a, "b": "", "n": a.split(" ", 1)[-1]}), NOT_SURE)
            for relation, subjects in UNKNOWABLE.items() for a in subjects for q in RELATIONS[relation][0]]
    for _ in range(60):
        numbers = {"a": str(rng.randint(10, 60)), "c": str(rng.randint(1, 60)), "b": ""}
        rows.append(turn(fill(rng.choice(RELATIONS["sum"][0]), numbers), NOT_SURE))
    rows += [turn(fill(rng.choice(RELATIONS["number_word"][0]), {"a": str(n), "b": ""}), NOT_SURE)
             for n in rng.sample(range(21, 100), 30)]
    return rows


def english_identity(path: Path) -> list[dict]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [turn(r["instruction"] + (f"\n{r['input']}" if r.get("input") else ""), r["output"])
            for r in rows if (r["instruction"] + r["output"]).isascii()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identity", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "identity.json")
    parser.add_argument("--heldout", type=float, default=0.15, help="share of each relation's items held out")
    parser.add_argument("--preference-share", type=float, default=0.15,
                        help="share of each relation's items asked only when making preference pairs")
    parser.add_argument("--fact-rounds", type=int, default=16, help="times each fact appears in the pretraining text")
    parser.add_argument("--phrasings", type=int, default=1,
                        help="each round writes each fact in one of its first N phrasings (sample_facts.json: "
                             "`sentence`, then `also`), drawn at random; 1: the `sentence` only")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="where the four files go (the web text is always read from core/sample_data)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.phrasings < 1:
        parser.error("--phrasings: at least 1")
    phrasing_rng = random.Random(args.seed + 2)  # its own stream: the split and the shuffles stay as they are
    rng = random.Random(args.seed)

    sft, prompts, preference_prompts, sentences = [], [], [], []  # sentences: each fact's phrasings, relation
    for relation, rows in items().items():
        questions, answer = RELATIONS[relation]
        facts = by_fact(relation, rows)
        rng.shuffle(facts)
        held = max(2, round(len(facts) * args.heldout))
        for_preferences = held + max(1, round(len(facts) * args.preference_share))
        for k, fact in enumerate(facts):
            for item in fact:
                sentences.append(([fill(s, item) for s in PHRASINGS[relation][:args.phrasings]], relation))
                if k < held:  # asked only at evaluation time; known only from the pretraining text
                    prompts.append({"prompt": fill(rng.choice(questions), item), "reference": fill(answer, item),
                                    "kind": relation, "held_out": True})
                elif k < for_preferences:  # asked only when the SFT model's answers are ranked (preferences stage)
                    preference_prompts += [{"prompt": fill(q, item), "reference": fill(answer, item),
                                            "kind": relation} for q in questions]
                else:
                    for q in questions:
                        sft.append(turn(fill(q, item), fill(answer, item)))
    identity = english_identity(args.identity)
    # the demo's first questions, in the phrasings people use, all answered with the configured identity
    identity += [turn(q, "I am {{name}}, an AI assistant developed by {{author}}.") for q in IDENTITY_QUESTIONS]
    for q, a in CHAT:
        sft.append(turn(q, a))
    sft += unknowable_turns(random.Random(args.seed + 1))
    # identity and chat are weighted up: they are few, and the identity answer is the demo's first test
    sft = sft + identity * 4 + [turn(q, a) for q, a in CHAT] * 2
    rng.shuffle(sft)
    # trained behaviours, asked too but not held out: the identity questions are in the fine-tuning data word for
    # word, the small talk in other words; the report counts them apart from the held-out facts
    identity_answer = "I am {{name}}, an AI assistant developed by {{author}}."
    held_chat = [{"prompt": "Who are you?", "reference": identity_answer, "kind": "identity", "held_out": False},
                 {"prompt": "What is your name?", "reference": identity_answer, "kind": "identity", "held_out": False},
                 {"prompt": "Thank you so much!", "reference": "You are welcome!", "kind": "chat", "held_out": False},
                 {"prompt": "Hello there, how are you today?", "reference": "I am fine, thank you. How can I help you?",
                  "kind": "chat", "held_out": False}]
    prompts = held_chat + prompts
    # the pretraining text: paragraphs of 24 fact sentences, each fact in `--fact-rounds` differently shuffled
    # paragraphs so that a small model can learn it. Written as prose the default cleaner (web-quality rules)
    # keeps: numbers as words (words must be mostly alphabetic), sentences joined in pairs with "and" (enough
    # stop words), facts of every kind mixed (no dominating n-gram)
    facts = []
    for _ in range(args.fact_rounds):
        rng.shuffle(sentences)
        written = [(ways[0] if len(ways) == 1 else phrasing_rng.choice(ways), relation) for ways, relation in sentences]
        for i in range(0, len(written), 24):
            # the number words themselves keep their digit ("The number 8 is written eight.")
            chunk = [x if relation == "number_word" else spell_numbers(x) for x, relation in written[i:i + 24]]
            pairs = [a[:-1] + ", and " + b[:1].lower() + b[1:] if b else a
                     for a, b in zip(chunk[::2], chunk[1::2] + [""] * (len(chunk) % 2))]
            pairs = [x[:1].upper() + x[1:] for x in pairs]
            facts.append({"text": " ".join(pairs), "source": FACTS_SOURCE})
    raw = [json.loads(line) for line in (BUNDLED / "raw_text.jsonl").read_text(encoding="utf-8").splitlines()]
    web = [r for r in raw if r.get("source") != FACTS_SOURCE]
    # interleaved, so that the pretrainer's held-out tail is web text and facts alike
    order = sorted([((k + 0.5) / len(web), 0, k) for k in range(len(web))] +
                   [((k + 0.5) / len(facts), 1, k) for k in range(len(facts))])
    raw = [(web, facts)[which][k] for _, which, k in order]

    args.out.mkdir(parents=True, exist_ok=True)

    def write(name, rows):
        with open(args.out / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{name}: {len(rows)} rows")

    write("sft.jsonl", sft)
    write("prompts.jsonl", prompts)
    write("preference_prompts.jsonl", preference_prompts)
    write("raw_text.jsonl", raw)


if __name__ == "__main__":
    main()
