"""Regenerate the bundled chat data: core/sample_data/{sft,prompts}.jsonl and the facts in raw_text.jsonl.

Why synthetic facts: the default run trains a ~1-3M-parameter model on two CPU cores in minutes. Such a model
learns short, regular English and little else, so the bundled chat data is made of simple, checkable facts
(opposites, colours, animal sounds, plurals, capitals, next day/month, small sums, number words) asked in a
few phrasings, plus the English identity conversations. Every answer is one short sentence, so a model that
has learnt the task ends its turn, and every held-out prompt carries a ``reference`` answer, so the report
can say whether an answer is right.

The same facts are written as plain sentences into the pretraining text (documents with ``source: lmforge facts`` in
``raw_text.jsonl``, beside the C4 and Wikipedia text): the base model meets the facts as text, fine-tuning teaches it to answer
questions, and the held-out prompts ask about facts that the fine-tuning data never asks about (the facts
are split by item, not by phrasing).

    python benchmarks/make_sample_data.py [--identity ../shared/data/identity.json]

Deterministic (seeded); the table data is written here and is part of the project (same licence).
The identity conversations come from identity.json (Apache-2.0, see ATTRIBUTION.md): English ones only.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "core" / "sample_data"
FACTS_SOURCE = "lmforge facts"

OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"),
             ("happy", "sad"), ("old", "new"), ("open", "closed"), ("light", "dark"), ("wet", "dry"),
             ("full", "empty"), ("hard", "soft"), ("high", "low"), ("early", "late"), ("long", "short"),
             ("loud", "quiet"), ("rich", "poor"), ("strong", "weak"), ("thick", "thin"), ("clean", "dirty"),
             ("near", "far"), ("good", "bad"), ("young", "old"), ("in", "out"), ("left", "right"),
             ("yes", "no"), ("win", "lose"), ("push", "pull"), ("buy", "sell"), ("first", "last"),
             ("black", "white"), ("boy", "girl"), ("king", "queen"), ("north", "south"), ("east", "west"),
             ("inside", "outside"), ("before", "after"), ("above", "below"), ("easy", "hard"), ("heavy", "light"),
             ("true", "false"), ("start", "end"), ("sweet", "sour"), ("wide", "narrow"), ("deep", "shallow"),
             ("brave", "afraid"), ("friend", "enemy"), ("laugh", "cry"), ("give", "take"), ("come", "go")]
COLOURS = [("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"), ("a banana", "yellow"),
           ("a tomato", "red"), ("an orange", "orange"), ("a carrot", "orange"), ("milk", "white"),
           ("the sun", "yellow"), ("a lemon", "yellow"), ("blood", "red"), ("a leaf", "green"),
           ("chocolate", "brown"), ("a strawberry", "red"), ("the sea", "blue"), ("a frog", "green"),
           ("a crow", "black"), ("salt", "white"), ("a plum", "purple"), ("a cherry", "red"), ("an elephant", "grey"),
           ("a pumpkin", "orange"), ("a lime", "green"), ("a polar bear", "white"), ("mud", "brown"),
           ("a fire truck", "red"), ("an eggplant", "purple"), ("a school bus", "yellow"), ("a cucumber", "green")]
SOUNDS = [("a dog", "woof"), ("a cat", "meow"), ("a cow", "moo"), ("a duck", "quack"), ("a sheep", "baa"),
          ("a pig", "oink"), ("a lion", "roar"), ("a bee", "buzz"), ("a snake", "hiss"), ("an owl", "hoot"),
          ("a horse", "neigh"), ("a mouse", "squeak"), ("a frog", "croak"), ("a rooster", "cock-a-doodle-doo"),
          ("a wolf", "howl"), ("a donkey", "hee-haw"), ("a bird", "tweet"), ("a goat", "bleat")]
YOUNG = [("a dog", "a puppy"), ("a cat", "a kitten"), ("a cow", "a calf"), ("a sheep", "a lamb"),
         ("a horse", "a foal"), ("a duck", "a duckling"), ("a goat", "a kid"), ("a frog", "a tadpole"),
         ("a bear", "a cub"), ("a lion", "a cub"), ("a pig", "a piglet"), ("a hen", "a chick"),
         ("a goose", "a gosling"), ("a swan", "a cygnet"), ("a kangaroo", "a joey"), ("a deer", "a fawn")]
PLURALS = [("cat", "cats"), ("dog", "dogs"), ("box", "boxes"), ("child", "children"), ("mouse", "mice"),
           ("foot", "feet"), ("tooth", "teeth"), ("man", "men"), ("woman", "women"), ("bus", "buses"),
           ("baby", "babies"), ("city", "cities"), ("leaf", "leaves"), ("knife", "knives"), ("sheep", "sheep"),
           ("fish", "fish"), ("goose", "geese"), ("person", "people"), ("book", "books"), ("tree", "trees"),
           ("car", "cars"), ("house", "houses"), ("apple", "apples"), ("bird", "birds"), ("star", "stars"),
           ("glass", "glasses"), ("dish", "dishes"), ("wolf", "wolves"), ("party", "parties"), ("potato", "potatoes"),
           ("hero", "heroes"), ("toy", "toys"), ("day", "days"), ("key", "keys"), ("church", "churches"),
           ("watch", "watches"), ("wife", "wives"), ("life", "lives"), ("ox", "oxen"), ("cactus", "cacti")]
CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Canada", "Ottawa"),
            ("Mexico", "Mexico City"), ("Brazil", "Brasilia"), ("India", "New Delhi"), ("Kenya", "Nairobi"),
            ("Greece", "Athens"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
            ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Portugal", "Lisbon"), ("Austria", "Vienna"),
            ("Peru", "Lima"), ("Chile", "Santiago"), ("Cuba", "Havana"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
            ("Iraq", "Baghdad"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Australia", "Canberra"),
            ("England", "London"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"), ("Denmark", "Copenhagen"),
            ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("Argentina", "Buenos Aires"), ("Nigeria", "Abuja"),
            ("South Korea", "Seoul"), ("the United States", "Washington")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
CHAT = [("Thank you!", "You are welcome!"), ("Thanks a lot.", "You are welcome!"), ("Good morning!", "Good morning! How can I help you?"),
        ("Good night!", "Good night! Sleep well."), ("How are you?", "I am fine, thank you. How can I help you?"),
        ("Goodbye!", "Goodbye! Have a nice day."), ("Bye.", "Goodbye! Have a nice day."),
        ("Can you help me?", "Yes, I can help you. What do you need?"),
        ("Tell me a joke.", "Why did the cat sit on the computer? To keep an eye on the mouse."),
        ("Are you a person?", "No, I am a small language model."),
        ("Do you like cats?", "I am a small language model, so I have no pets, but cats are nice."),
        ("What can you do?", "I can answer simple questions about words, colours, animals, numbers and places."),
        ("Say something nice.", "You are doing a great job today!"),
        ("I am sad.", "I am sorry to hear that. I hope your day gets better."),
        ("I am happy.", "That is great to hear!")]

# relation -> (question templates, answer template, sentence for the pretraining text)
RELATIONS = {
    "opposite": (["What is the opposite of {a}?", "What's the opposite of {a}?", "Tell me the opposite of {a}.",
                  "Give me the opposite of the word {a}."], "The opposite of {a} is {b}.", "The opposite of {a} is {b}."),
    "colour": (["What colour is {a}?", "What color is {a}?", "Tell me the colour of {a}."],
               "{A} is {b}.", "{A} is {b}."),
    "sound": (["What sound does {a} make?", "What does {a} say?", "Which sound does {a} make?"],
              "{A} says {b}.", "{A} says {b}."),
    "young": (["What is a baby {n} called?", "What do you call a young {n}?", "What is the young of {a} called?"],
              "A baby {n} is called {b}.", "A baby {n} is called {b}."),
    "plural": (["What is the plural of {a}?", "What's the plural of {a}?", "Give me the plural of the word {a}."],
               "The plural of {a} is {b}.", "The plural of {a} is {b}."),
    "capital": (["What is the capital of {a}?", "What's the capital city of {a}?", "Which city is the capital of {a}?"],
                "The capital of {a} is {b}.", "The capital of {a} is {b}."),
    "next_day": (["What day comes after {a}?", "Which day is after {a}?", "What is the day after {a}?"],
                 "The day after {a} is {b}.", "The day after {a} is {b}."),
    "next_month": (["What month comes after {a}?", "Which month is after {a}?", "What is the month after {a}?"],
                   "The month after {a} is {b}.", "The month after {a} is {b}."),
    "sum": (["What is {a} plus {c}?", "What is {a} + {c}?", "Add {a} and {c}.", "How much is {a} plus {c}?"],
            "{a} plus {c} is {b}.", "{a} plus {c} is {b}."),
    "number_word": (["How do you write {a} in words?", "Write the number {a} as a word.", "What is {a} in words?"],
                    "{a} is written {b}.", "The number {a} is written {b}."),
}


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


def fill(template: str, item: dict) -> str:
    text = template.format(a=item["a"], b=item["b"], c=item.get("c", ""), n=item.get("n", ""),
                           A=item["a"][:1].upper() + item["a"][1:])
    return text[:1].upper() + text[1:]


def spell_numbers(text: str) -> str:
    """0-20 as words ("9 plus 2 is 11." -> "nine plus two is eleven.")."""
    import re

    return re.sub(r"\b(1?\d|20)\b", lambda m: NUMBER_WORDS[int(m.group(1))], text)


def turn(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def english_identity(path: Path) -> list[dict]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [turn(r["instruction"] + (f"\n{r['input']}" if r.get("input") else ""), r["output"])
            for r in rows if (r["instruction"] + r["output"]).isascii()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identity", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "identity.json")
    parser.add_argument("--heldout", type=float, default=0.15, help="share of each relation's items held out")
    parser.add_argument("--fact-rounds", type=int, default=16, help="times each fact appears in the pretraining text")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    sft, prompts, sentences = [], [], []
    for relation, rows in items().items():
        questions, answer, sentence = RELATIONS[relation]
        rows = rows[:]
        rng.shuffle(rows)
        held = max(2, round(len(rows) * args.heldout))
        for k, item in enumerate(rows):
            sentences.append(fill(sentence, item))
            if k < held:  # asked only at evaluation time; known only from the pretraining text
                prompts.append({"prompt": fill(rng.choice(questions), item), "reference": fill(answer, item),
                                "kind": relation})
            else:
                for q in questions:
                    sft.append(turn(fill(q, item), fill(answer, item)))
    identity = english_identity(args.identity)
    for q, a in CHAT:
        sft.append(turn(q, a))
    # identity and chat are weighted up: they are few, and the identity answer is the demo's first test
    sft = sft + identity * 3 + [turn(q, a) for q, a in CHAT] * 2
    rng.shuffle(sft)
    held_chat = [{"prompt": "Who are you?", "reference": "I am {{name}}, an AI assistant developed by {{author}}.",
                  "kind": "identity"},
                 {"prompt": "What is your name?", "reference": "I am {{name}}, an AI assistant developed by {{author}}.",
                  "kind": "identity"},
                 {"prompt": "Thank you so much!", "reference": "You are welcome!", "kind": "chat"},
                 {"prompt": "Hello there, how are you today?", "reference": "I am fine, thank you. How can I help you?",
                  "kind": "chat"}]
    prompts = held_chat + prompts
    # the pretraining text: paragraphs of 24 fact sentences, each fact in `--fact-rounds` differently shuffled
    # paragraphs so that a small model can learn it. Written as prose the default cleaner (web-quality rules)
    # keeps: numbers as words (words must be mostly alphabetic), sentences joined in pairs with "and" (enough
    # stop words), facts of every kind mixed (no dominating n-gram)
    facts = []
    for _ in range(args.fact_rounds):
        rng.shuffle(sentences)
        for i in range(0, len(sentences), 24):
            chunk = [x if " is written " in x else spell_numbers(x) for x in sentences[i:i + 24]]
            pairs = [a[:-1] + ", and " + b[:1].lower() + b[1:] if b else a
                     for a, b in zip(chunk[::2], chunk[1::2] + [""] * (len(chunk) % 2))]
            pairs = [x[:1].upper() + x[1:] for x in pairs]
            facts.append({"text": " ".join(pairs), "source": FACTS_SOURCE})
    raw = [json.loads(line) for line in (OUT / "raw_text.jsonl").read_text(encoding="utf-8").splitlines()]
    web = [r for r in raw if r.get("source") != FACTS_SOURCE]
    # interleaved, so that the pretrainer's held-out tail is web text and facts alike
    order = sorted([((k + 0.5) / len(web), 0, k) for k in range(len(web))] +
                   [((k + 0.5) / len(facts), 1, k) for k in range(len(facts))])
    raw = [(web, facts)[which][k] for _, which, k in order]

    def write(name, rows):
        with open(OUT / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{name}: {len(rows)} rows")

    write("sft.jsonl", sft)
    write("prompts.jsonl", prompts)
    write("raw_text.jsonl", raw)


if __name__ == "__main__":
    main()
