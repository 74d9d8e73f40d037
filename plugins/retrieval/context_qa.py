"""Teach a small model to answer from passages in its context, and measure what retrieval buys.

Why a made-up world: to measure retrieval honestly the held-out questions must have answers that exist ONLY in
the document collection — no pretraining text can leak them. So the data is a seeded world of invented places
(names built from syllables), each described by a short document ("Velmora is an island nation. The capital of
Velmora is Drestholm. …"). From it come:

- ``documents/``: one .txt per place — the collection the ``bm25`` retriever indexes;
- ``sft.jsonl``: conversations in the layout retrieval produces (:data:`CONTEXT_TEMPLATE`: the place's passage
  among distractors, then the question; the answer copies the fact), plus questions about a few "known" places
  asked WITHOUT context, repeated so the model learns them by heart (what a model already knows);
- ``heldout.jsonl``: questions about places never seen in training, answers only in ``documents/``;
- ``known.jsonl``: the memorised questions, asked bare — retrieval should rarely fire on them.

``lmforge context-qa DIR`` writes the set; ``benchmarks/bench_retrieval.py`` trains a model on it and prints
accuracy with and without retrieval and how often retrieval fires on known vs unknown questions.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lmforge.plugins.retrieval.when_unsure import CONTEXT_TEMPLATE

SYLLABLES = ("vel", "mor", "dra", "ost", "hel", "quar", "ni", "tal", "bre", "on", "ka", "lis", "dun", "sha",
             "ter", "wyn", "gal", "ro", "fen", "zu", "mar", "eth", "ul", "cor", "ith", "an", "pel", "sor")
GOODS = ("salt", "wool", "copper", "tea", "glass", "timber", "silk", "amber", "honey", "iron", "rice", "paper")
COLOURS = ("red", "blue", "green", "white", "black", "gold", "silver", "orange", "purple", "grey")
# (attribute, question template, fact sentence template)
FACTS = (
    ("capital", "What is the capital of {place}?", "The capital of {place} is {value}."),
    ("export", "What does {place} export?", "{place} exports {value}."),
    ("flag", "What colour is the flag of {place}?", "The flag of {place} is {value}."),
    ("founder", "Who founded {place}?", "{place} was founded by {value}."),
)


def invented_name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def make_world(seed: int, places: int) -> list[dict]:
    """Seeded places with a value for every attribute; names are unique."""
    rng = random.Random(seed)
    world, names = [], set()
    while len(world) < places:
        name = invented_name(rng, rng.choice((2, 3)))
        if name in names:
            continue
        names.add(name)
        world.append({"place": name, "capital": invented_name(rng, 2) + rng.choice(("holm", "by", "ford", "ton")),
                      "export": rng.choice(GOODS), "flag": rng.choice(COLOURS),
                      "founder": f"{invented_name(rng, 2)} {invented_name(rng, 2)}"})
    return world


def document(place: dict) -> str:
    return " ".join(sentence.format(place=place["place"], value=place[key]) for key, _, sentence in FACTS)


def questions(place: dict) -> list[dict]:
    """Every question about a place with its answer sentence and the bare value to check."""
    return [{"question": q.format(place=place["place"]), "answer": s.format(place=place["place"], value=place[k]),
             "value": place[k], "place": place["place"]} for k, q, s in FACTS]


def with_context(question: str, passages: list[str]) -> str:
    numbered = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
    return CONTEXT_TEMPLATE.format(passages=numbered, question=question)


def write_context_qa(out_dir: Path, seed: int = 0, train_places: int = 300, heldout_places: int = 40,
                     known_places: int = 8, known_repeats: int = 12, distractors: int = 2) -> dict:
    """Write documents/, sft.jsonl, heldout.jsonl and known.jsonl under ``out_dir``; returns the counts."""
    rng = random.Random(seed + 1)
    world = make_world(seed, train_places + heldout_places + known_places)
    train, heldout, known = (world[:train_places], world[train_places:train_places + heldout_places],
                             world[train_places + heldout_places:])
    out_dir = Path(out_dir)
    (out_dir / "documents").mkdir(parents=True, exist_ok=True)
    for place in world:
        (out_dir / "documents" / f"{place['place'].lower()}.txt").write_text(document(place) + "\n")
    rows = []
    for place in train:
        others = rng.sample([p for p in train if p is not place], distractors)
        for qa in questions(place):
            passages = [document(p) for p in [place, *others]]
            rng.shuffle(passages)
            rows.append({"messages": [{"role": "user", "content": with_context(qa["question"], passages)},
                                      {"role": "assistant", "content": qa["answer"]}]})
    for place in known:
        for qa in questions(place):
            rows += [{"messages": [{"role": "user", "content": qa["question"]},
                                   {"role": "assistant", "content": qa["answer"]}]}] * known_repeats
    rng.shuffle(rows)
    _write_jsonl(out_dir / "sft.jsonl", rows)
    _write_jsonl(out_dir / "heldout.jsonl", [qa for place in heldout for qa in questions(place)])
    _write_jsonl(out_dir / "known.jsonl", [qa for place in known for qa in questions(place)])
    return {"sft": len(rows), "heldout": len(heldout) * len(FACTS), "known": len(known) * len(FACTS),
            "documents": len(world)}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def answered(completion: str, value: str) -> bool:
    """Right when the expected value appears in the answer (case-insensitive)."""
    return value.lower() in completion.lower()


def context_qa_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge context-qa", description=(
        "write the context-QA set: documents/ to retrieve from, sft.jsonl teaching answers from passages, "
        "heldout.jsonl (answers only in documents/) and known.jsonl (memorised facts)"))
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-places", type=int, default=300)
    parser.add_argument("--heldout-places", type=int, default=40)
    args = parser.parse_args(argv)
    counts = write_context_qa(Path(args.out_dir), seed=args.seed, train_places=args.train_places,
                              heldout_places=args.heldout_places)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0
