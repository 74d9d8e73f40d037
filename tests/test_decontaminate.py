"""The `decontaminate` cleaning step: documents holding an evaluation item's 13-gram are dropped (or flagged),
and it flags the same documents as datatrove's n-gram decontamination filter on a shared test set."""

from __future__ import annotations

import json
import types

import lmforge
import pyarrow.parquet as pq
import pytest
from lmforge.plugins.cleaners.basic import BasicCleaner
from lmforge.plugins.cleaners.decontaminate import Decontaminate
from lmforge.plugins.cleaners.standard import StandardCleaner

FILLER = "Nothing is so painful to the human mind as a great and sudden change."
TAIL = "Beware; for I am fearless, and therefore powerful."
# the evaluation items: a question and its reference, as an evaluation file holds them
ITEMS = [
    {"question": "A lady walks to a barbell. She bends down and grabs the pole.",
     "reference": "She lifts the barbell over her head and then drops it on the mat."},
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
     "answer": "Natalia sold 48/2 = 24 clips in May. #### 72"},
]
# (document middle, flagged by a 13-gram of question + answer)
DOCUMENTS = [
    ("A lady walks to a barbell. She bends down and grabs the pole.", True),  # 0: the question (13 words)
    ("SHE LIFTS THE BARBELL over her head,   and then drops it on the mat!!", True),  # 1: the answer, recased
    ("She bends down and grabs the pole. She lifts the barbell over her", True),  # 2: question -> answer n-gram
    ("lifts the barbell over her head and then drops it on the floor", False),  # 3: 12 of its words, then not
    ("Natália sold clips to 48 of her friends in April,\n\nand then she", True),  # 4: diacritics, line breaks
    ("Natalia sold clips to 47 of her friends in April, and then she", False),  # 5: another number
    ("", False),  # 6: nothing of an item
    ("she sold half as many clips in May. Natalia sold 48/2 = 24 clips", True),  # 7: across into the answer
]


def _documents() -> list[str]:
    return [f"{FILLER} {middle} {TAIL}" for middle, _ in DOCUMENTS]


@pytest.fixture
def evals(tmp_path):
    path = tmp_path / "evals.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    return path


def test_flags_documents_holding_a_13_gram_of_question_and_answer(evals):
    step = Decontaminate(against=[str(evals)])
    flagged = [not isinstance(step.process(doc), str) for doc in _documents()]
    assert flagged == [expected for _, expected in DOCUMENTS]
    # numbers as datatrove's default normalises them: 47 and 48 are both 0, so document 5 matches too
    zeroed = Decontaminate(against=[str(evals)], norm_numbers=True)
    assert not isinstance(zeroed.process(_documents()[5]), str)


def _datatrove_words():
    """datatrove's English word tokenizer (spaCy) when spaCy is installed, else a datatrove ``WordTokenizer`` that
    splits on whitespace (the ``test`` extra has no spaCy): on datatrove's simplified text, which holds no
    punctuation, the two split this test set alike."""
    from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer

    try:
        import spacy  # noqa: F401

        return load_word_tokenizer("en")
    except ImportError:
        class SplitWords(WordTokenizer):
            def word_tokenize(self, text):
                return text.split()

            def sent_tokenize(self, text):
                return [text]

            def span_tokenize(self, text):
                return [(0, len(text))]

        return SplitWords()


def test_same_documents_as_datatrove_ngram_filter(evals, tmp_path):
    """datatrove's own code side by side: its indexer's n-grams of each item (query + gold, with query and
    query-to-gold n-grams on; or the gold alone) in an index file, its filter over the same documents, n = 13."""
    pytest.importorskip("datatrove", reason="datatrove is not installed (it is in the test extra)")
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
    from datatrove.utils.hashing import HashConfig, create_hash_func
    from datatrove.utils.text import TextNormConfig

    words = _datatrove_words()
    for norm_numbers in (False, True):
        for query_ngrams, fields in ((True, []), (False, ["reference", "answer"])):
            # sha1 hashes: datatrove's xxhash helper needs xxhash < 4 (it hashes str); the hash only names n-grams
            config = NGramsDecontConfig(n_grams=13, find_query_ngrams=query_ngrams, find_overlap_ngrams=query_ngrams,
                                        norm_config=TextNormConfig(norm_numbers=norm_numbers),
                                        hash_config=HashConfig(hash_fc="sha1"))
            # the indexer's compute_hashes on its own attributes (its run() loads lighteval tasks; these items are ours)
            indexer = types.SimpleNamespace(config=config, tokenizer=words, hash_func=create_hash_func(config.hash_config))
            hashes = {h for item in ITEMS for h in NGramsDecontIndexer.compute_hashes(
                indexer, item.get("reference") or item["answer"], item["question"])}
            index = tmp_path / f"index-{norm_numbers}-{query_ngrams}"
            index.mkdir()
            np.array(sorted(hashes), dtype=config.hash_config.np_descr).tofile(index / "items.index.hashes")
            datatrove_filter = NGramsDecontFilter(str(index), config=config, language=words)
            theirs = [datatrove_filter.filter(Document(text=doc, id=str(i))) is not True
                      for i, doc in enumerate(_documents())]
            step = Decontaminate(against=[str(evals)], norm_numbers=norm_numbers, fields=fields)
            ours = [not isinstance(step.process(doc), str) for doc in _documents()]
            assert ours == theirs, (norm_numbers, query_ngrams)
            assert any(theirs) and not all(theirs)
            if query_ngrams and not norm_numbers:
                assert ours == [expected for _, expected in DOCUMENTS]


def test_short_items_are_matched_whole(tmp_path):
    """An item shorter than n words (which datatrove's index leaves out) is matched as a whole word sequence."""
    evals = tmp_path / "short.jsonl"
    evals.write_text(json.dumps({"prompt": "Who are you?", "reference": "I am Forge."}) + "\n")
    step = Decontaminate(against=str(evals))
    assert isinstance(step.process("Hello. Who are you? I am Forge. Nice to meet you."), lmforge.Drop)
    assert isinstance(step.process("who ARE you -- i am forge"), lmforge.Drop)
    assert step.process("Who are you? I am Ada.") == "Who are you? I am Ada."  # the whole item, not a part
    questions_only = Decontaminate(against=str(evals), fields=["prompt"])
    assert isinstance(questions_only.process("So, who are you?"), lmforge.Drop)


def test_items_from_chats_csv_and_text_lines(tmp_path):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Name the largest planet."},
                                              {"role": "assistant", "content": "Jupiter."}]}) + "\n")
    table = tmp_path / "items.csv"
    table.write_text("question,answer\nWhat colour is the sky?,Blue.\n")
    lines = tmp_path / "items.txt"
    lines.write_text("the quick brown fox\njumps over the lazy dog\n")
    step = Decontaminate(against=[str(chats), str(table), str(lines)], ngram=13)
    assert len(step.index) == 4
    for text in ("Name the largest planet: Jupiter!", "what colour is the sky? blue", "A lazy dog: jumps over the lazy dog."):
        assert isinstance(step.process(text), lmforge.Drop), text
    assert step.process("Be brief. Name the largest planet.") == "Be brief. Name the largest planet."


def test_bad_against_fails_in_one_line_naming_the_key(tmp_path):
    cfg = lmforge.compose(["pipeline=clean_only", f"run.root={tmp_path}",
                           f"cleaner.add=[{{name: decontaminate, against: [{tmp_path / 'missing.jsonl'}]}}]"])
    with pytest.raises(lmforge.LmforgeError, match=r"^cleaning_step\.decontaminate\.against.*missing\.jsonl") as info:
        lmforge.run(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "default" / "cleaner").exists()  # before any work
    with pytest.raises(lmforge.ConfigError, match=r"cleaning_step\.decontaminate\.action: unknown 'remove'"):
        Decontaminate(against=str(tmp_path), action="remove")


def test_cleaner_add_drops_and_reports_or_flags(evals, tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in _documents()))
    expected = sum(flag for _, flag in DOCUMENTS)
    result = lmforge.run(lmforge.compose([
        "pipeline=clean_only", "cleaner=basic", f"data.raw_text={raw}", f"run.root={tmp_path}", "run.report=false",
        "cleaner.steps=[normalize]", f"cleaner.add=[{{name: decontaminate, against: [{evals}]}}]"]))
    report = json.loads((result.artifacts["cleaner"] / "report.json").read_text())
    assert report["removed"] == {"decontaminate:contaminated": expected}
    assert report["docs_out"] == len(DOCUMENTS) - expected

    out = tmp_path / "flagged"
    out.mkdir()
    StandardCleaner(steps=["normalize", {"name": "decontaminate", "against": str(evals), "action": "flag"}],
                    workers=1).run({"text": str(raw)}, out, lmforge.RunContext(quiet=True))
    report = json.loads((out / "report.json").read_text())
    assert report["flagged"] == {"decontaminate": expected} and not report["removed"]
    column = pq.read_table(out / "data-00000.parquet").column("contaminated").to_pylist()
    assert [bool(phrase) for phrase in column] == [flag for _, flag in DOCUMENTS]
    assert column[0].startswith("a lady walks to a barbell")

    basic = tmp_path / "basic"
    basic.mkdir()
    BasicCleaner(steps=[{"name": "decontaminate", "against": str(evals), "action": "flag"}]).run(
        {"text": str(raw)}, basic, lmforge.RunContext(quiet=True))
    assert json.loads((basic / "report.json").read_text())["flagged"] == {"decontaminate": expected}
