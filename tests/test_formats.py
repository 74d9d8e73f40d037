"""Data-format adapters on real files (subsets in tests/data), and their one-line errors on bad records."""

from __future__ import annotations

import gzip
import json

import pytest
from lmforge.errors import DataError
from lmforge.plugins.lib.formats import (
    load_conversations,
    load_preferences,
    load_prompt_completions,
    load_prompts,
    read_format,
)

GSM8K_COLUMNS = {"question": "prompt", "answer": "completion"}


def _raw(path):
    if path.suffix == ".gz":
        return [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in open(path, encoding="utf-8")]
    return json.load(open(path, encoding="utf-8"))


def _write(path, records):
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.mark.parametrize("name, expected", [
    ("alpaca_en_demo.json", "alpaca"), ("identity.json", "alpaca"), ("dpo_en_demo.json", "sharegpt"),
    ("kto_en_demo.json", "messages"), ("hh_rlhf_harmless_test.jsonl.gz", "dialogue"),
])
def test_real_files_are_detected(real_data, name, expected):
    adapter, records = read_format(real_data / name)
    assert adapter.name == expected and len(records) == len(_raw(real_data / name))


def test_alpaca_instruction_and_input_become_one_user_turn(real_data):
    raw = _raw(real_data / "alpaca_en_demo.json")
    conversations = load_conversations(real_data / "alpaca_en_demo.json")
    assert len(conversations) == len(raw) == 120
    index = next(i for i, r in enumerate(raw) if r["input"])
    user, assistant = conversations[index]
    assert user == {"role": "user", "content": f"{raw[index]['instruction']}\n\n{raw[index]['input']}"}
    assert assistant == {"role": "assistant", "content": raw[index]["output"]}


def test_identity_placeholders_and_system_prompt(real_data):
    conversations = load_conversations(real_data / "identity.json", system_prompt="You are {{name}}.",
                                       placeholders={"name": "Forge", "author": "Ada"})
    assert len(conversations) == 91
    assert all(c[0] == {"role": "system", "content": "You are Forge."} for c in conversations)
    text = json.dumps(conversations)
    assert "{{" not in text and "Forge" in text and "Ada" in text


def test_unfilled_placeholder_warns(real_data):
    with pytest.warns(UserWarning, match=r"unfilled placeholders \{\{author\}\}"):
        load_conversations(real_data / "identity.json", placeholders={"name": "Forge"})


def test_sharegpt_preference_file_gives_sft_on_chosen_and_pairs(real_data):
    raw = _raw(real_data / "dpo_en_demo.json")
    conversations = load_conversations(real_data / "dpo_en_demo.json")
    assert len(conversations) == len(raw) == 45
    assert conversations[0][-1] == {"role": "assistant", "content": raw[0]["chosen"]["value"]}
    assert conversations[0][0] == {"role": "user", "content": raw[0]["conversations"][0]["value"]}
    pairs = load_preferences(real_data / "dpo_en_demo.json")
    assert pairs[0]["rejected"][0]["content"] == raw[0]["rejected"]["value"]


def test_messages_with_labels_skip_negative(real_data):
    raw = _raw(real_data / "kto_en_demo.json")
    everything = load_conversations(real_data / "kto_en_demo.json")
    good = load_conversations(real_data / "kto_en_demo.json", skip_negative=True)
    assert len(everything) == len(raw)
    assert len(good) == sum(r["label"] is True for r in raw) and 0 < len(good) < len(raw)
    assert all(c[-1]["role"] == "assistant" for c in good)


def test_dialogue_strings_become_multi_turn(real_data):
    conversations = load_conversations(real_data / "hh_rlhf_harmless_test.jsonl.gz")
    assert len(conversations) == 45
    first = conversations[0]
    assert len(first) >= 4 and [m["role"] for m in first[:4]] == ["user", "assistant", "user", "assistant"]
    assert first[0]["content"] == "what are some pranks with a pen i can do?"
    prompts = load_prompts(real_data / "hh_rlhf_harmless_test.jsonl.gz")
    assert prompts[0] == first[:-1]


def test_columns_map_question_answer_to_prompt_completion(real_data):
    adapter, _ = read_format(real_data / "gsm8k_test.jsonl.gz", columns=GSM8K_COLUMNS)
    assert adapter.name == "prompt_completion"
    raw = _raw(real_data / "gsm8k_test.jsonl.gz")
    text = load_prompt_completions(real_data / "gsm8k_test.jsonl.gz", columns=GSM8K_COLUMNS, text=True)
    assert text[0] == {"prompt": raw[0]["question"], "completion": raw[0]["answer"]}
    chat = load_prompt_completions(real_data / "gsm8k_test.jsonl.gz", columns=GSM8K_COLUMNS,
                                   system_prompt="Be exact.")
    assert chat[0]["prompt"] == [{"role": "system", "content": "Be exact."},
                                 {"role": "user", "content": raw[0]["question"]}]
    assert chat[0]["completion"] == [{"role": "assistant", "content": raw[0]["answer"]}]
    with pytest.raises(DataError, match=r"alpaca_en_demo\.json: record 1 has no 'question'"):
        read_format(real_data / "alpaca_en_demo.json", columns=GSM8K_COLUMNS)


def test_malformed_alpaca_record_names_file_and_index(real_data, tmp_path):
    records = _raw(real_data / "alpaca_en_demo.json")[:40]
    records[17]["output"] = 42
    path = _write(tmp_path / "alpaca_bad.json", records)
    with pytest.raises(DataError) as info:
        load_conversations(path)
    message = str(info.value)
    assert message == (f"{path}: record 18: 'output' is an int (42); an alpaca record needs 'instruction' and 'output' "
                       "(text); this record has instruction, input, output (int)")


def test_malformed_sharegpt_role_names_file_and_index(real_data, tmp_path):
    records = _raw(real_data / "dpo_en_demo.json")[:10]
    records[5]["conversations"][0]["from"] = "humna"
    path = _write(tmp_path / "sharegpt_bad.json", records)
    expected = rf"^{path}: record 6: unknown role 'humna' \(did you mean 'human'\?\)"
    with pytest.raises(DataError, match=expected):
        load_conversations(path)


def test_conversation_without_assistant_turn_is_rejected(real_data, tmp_path):
    records = _raw(real_data / "kto_en_demo.json")[:6]
    records[3]["messages"] = records[3]["messages"][:1]
    path = _write(tmp_path / "messages_bad.json", records)
    with pytest.raises(DataError, match=rf"^{path}: record 4: no assistant turn"):
        load_conversations(path)


def test_misplaced_system_turn_is_rejected(tmp_path):
    path = _write(tmp_path / "m.json", [{"messages": [{"role": "user", "content": "a"},
                                                      {"role": "system", "content": "b"},
                                                      {"role": "assistant", "content": "c"}]}])
    with pytest.raises(DataError, match=r"m\.json: record 1: a system message is only allowed first"):
        load_conversations(path)


def test_ambiguous_records_ask_for_format(tmp_path):
    record = {"instruction": "hi", "output": "hello", "conversations": [{"from": "human", "value": "hi"},
                                                                         {"from": "gpt", "value": "hello"}]}
    path = _write(tmp_path / "both.json", [record, record])
    with pytest.raises(DataError) as info:
        load_conversations(path)
    message = str(info.value)
    assert message.startswith(f"{path}: record 1: ambiguous")
    assert "alpaca" in message and "sharegpt" in message
    assert "format=" in message
    assert load_conversations(path, fmt="alpaca")[0][0] == {"role": "user", "content": "hi"}


def test_mixed_formats_name_the_odd_record(real_data, tmp_path):
    records = _raw(real_data / "alpaca_en_demo.json")[:5] + _raw(real_data / "kto_en_demo.json")[:1]
    path = _write(tmp_path / "mixed.json", records)
    expected = rf"^{path}: record 6: mixed formats: .* is messages, earlier records are alpaca"
    with pytest.raises(DataError, match=expected):
        load_conversations(path)


def test_unrecognised_record_lists_its_keys(tmp_path):
    path = _write(tmp_path / "odd.json", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"odd\.json: record 1: unrecognised record \(keys: answer, question\)"):
        load_conversations(path)


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON line"):
        load_conversations(path)


def test_skip_invalid_skips_and_warns(real_data):
    # the subset: HH-RLHF's first 40 test pairs, then its 5 whose chosen and rejected prompts differ (lines 41-45)
    path = real_data / "hh_rlhf_harmless_test.jsonl.gz"
    with pytest.raises(DataError, match=rf"^{path}:41: chosen and rejected dialogues differ"):
        load_preferences(path)
    with pytest.warns(UserWarning, match=r"skipped 5 malformed record\(s\) of 45; first: .*:41: "):
        pairs = load_preferences(path, skip_invalid=True)
    assert len(pairs) == 40


# ------------------------------------------------------------------ locations are 1-based; the bad field is named

def test_csv_record_names_its_file_line_the_empty_field_and_the_keys(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text('prompt,completion\nhello,\n"two\nlines",there\nthird,\n', encoding="utf-8")
    expected = (f"{path}:2: 'completion' is empty; a prompt_completion record needs 'prompt' and 'completion' "
                "(text or messages); this record has prompt, completion (empty)")
    with pytest.raises(DataError) as info:
        load_conversations(path)
    assert str(info.value) == expected
    with pytest.warns(UserWarning, match=r"skipped 2 malformed record\(s\) of 3; first: .*short\.csv:2: "):
        assert len(load_conversations(path, skip_invalid=True)) == 1
    tsv = tmp_path / "rows.tsv"
    tsv.write_text('prompt\tcompletion\nfirst\tone\n\n"a\nb"\ttwo\nlast\t\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{tsv}:6: 'completion' is empty; .* this record has prompt, "
                                        r"completion \(empty\)$"):
        load_conversations(tsv)  # a blank line and a quoted line break before it still count


def test_csv_rows_carry_their_file_lines(tmp_path):
    from lmforge.plugins.lib.data import read_rows

    path = tmp_path / "rows.csv"
    path.write_text('prompt,completion\r\na,b\r\n\r\n"c\r\nd",e\r\nf,\r\n', encoding="utf-8")
    assert [row.where for row in read_rows(path)] == [f"{path}:2", f"{path}:4", f"{path}:6"]


def test_json_list_records_are_numbered_from_one(tmp_path):
    path = _write(tmp_path / "alpaca_int.json", [{"instruction": "a", "output": "b"}, {"instruction": 3, "output": "c"}])
    with pytest.raises(DataError) as info:
        load_conversations(path)
    assert str(info.value) == (f"{path}: record 2: 'instruction' is an int (3); an alpaca record needs 'instruction' "
                               "and 'output' (text); this record has instruction (int), output")


def test_prompt_completion_record_without_an_answer_lists_its_keys(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "answer": "d"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: 'completion' is missing; .* this record has prompt, answer$"):
        load_conversations(path)


def test_bad_preference_record_names_what_the_pair_lacks(tmp_path):
    good = json.dumps({"prompt": "x", "chosen": "yes", "rejected": "no"})
    path = tmp_path / "badprefs.jsonl"
    path.write_text("\n".join([good] * 3 + [json.dumps({"prompt": "x", "chosen": 5})]) + "\n", encoding="utf-8")
    expected = (f"{path}:4: a preference pair needs 'chosen' and 'rejected' (text or messages): 'chosen' is an int "
                "(5) and 'rejected' is missing; this record has prompt, chosen (int)")
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value) == expected
    with pytest.raises(DataError, match=rf"^{path}:4: plain-text preferences need .*: 'chosen' is an "
                                        r"int \(5\) and 'rejected' is missing; this record has prompt, chosen \(int\)$"):
        load_preferences(path, text=True)
    messages = _write(tmp_path / "m.json", [{"messages": [{"role": "user", "content": "q"}], "chosen": "a"}])
    with pytest.raises(DataError, match=r"m\.json: record 1: a preference pair .*'rejected' is missing; this "
                                        r"record has messages, chosen$"):
        load_preferences(messages)
    sft = _write(tmp_path / "sft.json", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(DataError, match=r"sft\.json: record 1: a preference pair .*: 'chosen' is missing and "
                                        r"'rejected' is missing; this record has prompt, completion$"):
        load_preferences(sft)


def test_preference_record_of_no_format_gets_a_message_about_the_pair(tmp_path):
    path = _write(tmp_path / "pairs.json", [{"chosen": 5, "rejected": "b"}])
    with pytest.raises(DataError, match=r"pairs\.json: record 1: unrecognised preference record: a pair needs "
                                        r".* this record has chosen \(int\), rejected$"):
        load_preferences(path)
