"""Data sources: every form a data input takes reaches every stage that reads data (issue 13, item 2).

The forms: a file (json, jsonl, csv, tsv, parquet, arrow, txt; gzip), a glob, a directory of such files, a
``save_to_disk`` directory, a Hub dataset id (``org/name``, ``org/name:subset``, ``split=``) from a Hub cache
the test builds itself, and a mixture (a list of sources with ``weight`` / ``limit``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import lmforge
import pytest
from lmforge.errors import ConfigError, DataError, MissingArtifact

# karpathy/char-rnn data/tinyshakespeare/input.txt: 1,115,394 bytes with this SHA-256
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_tiny_shakespeare_ships_in_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the worked example must not depend on where the repo is
    cfg = lmforge.compose(["pipeline=shakespeare_char"])
    text = Path(cfg.data.shakespeare)
    assert text.is_file() and os.path.isabs(text)
    data = text.read_bytes()
    assert len(data) == 1_115_394 and hashlib.sha256(data).hexdigest() == TINY_SHAKESPEARE_SHA256
    assert "tinyshakespeare.txt" in (text.parent / "ATTRIBUTION.md").read_text()


# ------------------------------------------------------------------ every data kind, read by every consumer

TEXTS = [f"Document {i}: the quick brown fox jumps over the lazy dog, number {i}." for i in range(6)]
ROWS = [{"text": t, "prompt": f"Question {i}?", "completion": f"Answer {i}.", "chosen": f"Good {i}.",
         "rejected": f"Bad {i}."} for i, t in enumerate(TEXTS)]
KINDS = ["json", "jsonl", "csv", "tsv", "parquet", "arrow", "txt", "jsonl.gz", "txt.gz", "glob", "directory",
         "save_to_disk", "hub", "hub_subset_split", "mixture"]
TEXT_ONLY = {"txt", "txt.gz"}  # text files hold documents (and prompts, a line each), not records


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """The same six rows written in every form a data input takes; returns kind -> spec."""
    import datasets
    import pandas as pd

    root = tmp_path_factory.mktemp("kinds")
    frame = pd.DataFrame(ROWS)
    (root / "rows.json").write_text(json.dumps(ROWS))
    jsonl = "".join(json.dumps(r) + "\n" for r in ROWS)
    (root / "rows.jsonl").write_text(jsonl)
    frame.to_csv(root / "rows.csv", index=False)
    frame.to_csv(root / "rows.tsv", index=False, sep="\t")
    frame.to_parquet(root / "rows.parquet")
    dataset = datasets.Dataset.from_list(ROWS)
    dataset.save_to_disk(str(root / "saved"))
    (root / "rows.arrow").write_bytes(next((root / "saved").glob("*.arrow")).read_bytes())
    (root / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    with gzip.open(root / "rows.jsonl.gz", "wt") as handle:
        handle.write(jsonl)
    with gzip.open(root / "docs.txt.gz", "wt") as handle:
        handle.write("\n".join(TEXTS) + "\n")
    shards = root / "shards"
    shards.mkdir()
    for start in (0, 3):
        (shards / f"part-{start}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[start:start + 3]))
    (shards / "manifest.json").write_text("{}")  # bookkeeping beside data is not read as rows
    return root, {
        "json": str(root / "rows.json"), "jsonl": str(root / "rows.jsonl"), "csv": str(root / "rows.csv"),
        "tsv": str(root / "rows.tsv"), "parquet": str(root / "rows.parquet"), "arrow": str(root / "rows.arrow"),
        "txt": str(root / "docs.txt"), "jsonl.gz": str(root / "rows.jsonl.gz"),
        "txt.gz": str(root / "docs.txt.gz"), "glob": str(shards / "part-*.jsonl"), "directory": str(shards),
        "save_to_disk": str(root / "saved"),
        "hub": "org/rows", "hub_subset_split": {"path": "org/rows:second", "split": "test"},
        "mixture": [{"path": str(root / "rows.csv"), "limit": 2}, {"path": str(shards / "part-3.jsonl")},
                    {"path": str(root / "rows.parquet"), "limit": 1}],
    }


def _hub_files(root: Path) -> dict[str, str]:
    """A Hub dataset repo with a default config (train split) and a 'second' subset with a test split."""
    card = ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train.jsonl\n"
            "- config_name: second\n  data_files:\n  - split: train\n    path: second/train.jsonl\n"
            "  - split: test\n    path: second/test.jsonl\n---\n# rows\n")
    jsonl = (root / "rows.jsonl").read_text()
    return {"README.md": card, "data/train.jsonl": jsonl, "second/train.jsonl": jsonl.splitlines()[0] + "\n",
            "second/test.jsonl": jsonl}


@pytest.fixture
def spec_of(kinds, fake_hub):
    root, specs = kinds
    fake_hub.add_dataset("org/rows", _hub_files(root))
    return specs


def _expected(kind: str) -> list[dict]:
    if kind == "mixture":  # csv limit 2 + the second shard + parquet limit 1, interleaved by their shares
        from lmforge.plugins.lib.data import interleave

        parts = [ROWS[:2], ROWS[3:], ROWS[:1]]
        return list(interleave([iter(p) for p in parts], [len(p) for p in parts]))
    return ROWS


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reaches_every_consumer(kind, spec_of):
    from lmforge.plugins.cleaners.basic import iter_texts as cleaner_texts
    from lmforge.plugins.lib.data import iter_rows
    from lmforge.plugins.lib.formats import load_conversations, load_preferences, load_prompts
    from lmforge.plugins.tokenizers.subword import stream_texts

    spec = spec_of[kind]
    expected = _expected(kind)
    texts = [r["text"] for r in expected]
    if kind in TEXT_ONLY:
        whole = "\n".join(TEXTS) + "\n"
        assert [t for b in cleaner_texts(spec) for t in b] == [whole]  # basic cleaner, pretrainer: a document
        assert "".join(t for b in stream_texts(spec) for t in b) == whole  # tokenizer: streamed pieces
        lines = [r.fields["text"] for r in iter_rows(spec, "text", txt_mode="line")]  # standard cleaner
        assert lines == TEXTS
        assert [p[-1]["content"] for p in load_prompts(spec)] == TEXTS  # sampler prompts: one a line
        return
    # cleaner (basic and standard), tokenizer and pretrainer read texts through the same reader
    assert [t for b in cleaner_texts(spec) for t in b] == texts
    assert [r.fields["text"] for r in iter_rows(spec, "text")] == texts
    assert [t for b in stream_texts(spec) for t in b] == texts
    # SFT data, preference data and sampler prompts: records through the format adapters
    sft = load_conversations(spec)
    assert [c[-1]["content"] for c in sft] == [r["completion"] for r in expected]
    pairs = load_preferences(spec)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == \
        [(r["chosen"], r["rejected"]) for r in expected]
    assert [p[-1]["content"] for p in load_prompts(spec)] == [r["prompt"] for r in expected]


def test_hub_dataset_resolves_to_its_commit_and_subset(kinds, fake_hub):
    from lmforge.sources import resolve_data

    root, _ = kinds
    commit = fake_hub.add_dataset("org/rows", _hub_files(root))
    source = resolve_data({"path": "org/rows:second", "split": "train"})
    part = source.parts[0]
    assert (part.kind, part.subset, part.split, part.commit) == ("hub", "second", "train", commit)
    assert source.hash() == resolve_data({"path": "org/rows:second", "split": "train"}).hash()
    assert source.hash() != resolve_data("org/rows").hash()
    from lmforge.plugins.lib.data import read_records

    assert len(read_records(source)) == 1 and len(read_records("org/rows")) == len(ROWS)
    with pytest.raises(DataError, match=r"^org/rows:second: no split 'nope'; splits: train, test"):
        read_records({"path": "org/rows:second", "split": "nope"})
    with pytest.raises(MissingArtifact, match="org/missing.*not in the Hugging Face cache"):
        resolve_data("org/missing")


def test_weights_repeat_or_thin_rows_deterministically(kinds):
    from lmforge.plugins.lib.data import read_records

    root, specs = kinds
    doubled = read_records([{"path": specs["jsonl"], "weight": 2}])
    assert len(doubled) == 2 * len(ROWS)
    many = root / "many.jsonl"
    many.write_text("".join(json.dumps({"text": str(i)}) + "\n" for i in range(1000)))
    half = read_records([{"path": str(many), "weight": 0.5}])
    assert 430 < len(half) < 570 and half == read_records([{"path": str(many), "weight": 0.5}])
    assert len(read_records([{"path": str(many), "limit": 10, "weight": 3}])) == 30


def test_bad_sources_fail_in_one_line(kinds, tmp_path):
    from lmforge.plugins.lib.data import iter_texts, read_records
    from lmforge.plugins.lib.formats import load_conversations
    from lmforge.sources import resolve_data

    root, _ = kinds
    with pytest.raises(DataError, match=r"nothing-\*\.jsonl: the pattern matches no files"):
        resolve_data(str(tmp_path / "nothing-*.jsonl"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: the directory holds no data files"):
        resolve_data(str(empty))
    with pytest.raises(MissingArtifact, match="missing.jsonl: not found"):
        resolve_data(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match=r"data\[1\]\.wieght: unknown key \(did you mean 'weight'\?\)"):
        resolve_data([str(root / "rows.jsonl"), {"path": str(root / "rows.csv"), "wieght": 2}])
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(DataError, match=rf"^{bad}:2: invalid JSON line"):
        load_conversations([str(root / "rows.jsonl"), str(bad)])  # inside a mixture, too
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=rf"^{latin}:2: invalid UTF-8"):
        list(iter_texts(latin))
    with pytest.raises(DataError, match=rf"^{root / 'rows.csv'}:2: no 'body' field \(fields: text, prompt"):
        list(iter_texts(str(root / "rows.csv"), "body"))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"^{broken}: cannot read as parquet"):
        read_records(broken)


# ------------------------------------------------------------------ through `lmforge run`

def _prose(i: int) -> str:
    words = ["the", "river", "keeps", "its", "own", "counsel", "while", "the", "town", "sleeps", "and", "the", "lamps", "burn", "low", "along", "the", "quay", "where", "boats", "knock", "softly", "against", "the", "stones", "of", "the", "old", "harbour", "wall"]
    return " ".join(words[(i + k) % len(words)] for k in range(70)) + f". Page {i}."


def test_basic_cleaner_on_a_folder_of_txt_and_a_glob(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    for i in range(4):
        (folder / f"book{i}.txt").write_text(_prose(i) + "\n")
    (folder / "notes.bin").write_bytes(b"\x00\x01")  # not a data file: ignored in a folder
    base = [f"run.root={tmp_path / 'runs'}", "pipeline=clean_only", "cleaner=basic", "run.quiet=true",
            "run.report=false"]
    result = lmforge.run(lmforge.compose([*base, "run.name=folder", f"data.raw_text={folder}"]))
    manifest = lmforge.read_manifest(result.artifacts["cleaner"])
    assert manifest["metrics"]["docs_out"] == 4
    assert manifest["inputs"]["text"]["path"] == str(folder.resolve())
    globbed = lmforge.run(lmforge.compose([*base, "run.name=glob", f"data.raw_text='{folder}/book[01].txt'"]))
    inputs = lmforge.read_manifest(globbed.artifacts["cleaner"])["inputs"]["text"]
    assert inputs["sources"] == [{"ref": f"{folder}/book[01].txt", "kind": "files", "files": 2}]
    assert lmforge.read_manifest(globbed.artifacts["cleaner"])["metrics"]["docs_out"] == 2


def _sft_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(n)]


@pytest.mark.slow
def test_run_fine_tunes_on_a_mixture_and_samples_hub_prompts(tiny_model_dir, fake_hub, tmp_path):
    import pandas as pd

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps(r) + "\n" for r in _sft_rows(6)))
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame([{"prompt": f"Say {w}.", "completion": w} for w in ("yes", "no", "maybe")]).to_csv(pairs,
                                                                                                   index=False)
    commit = fake_hub.add_dataset("org/prompts", {"prompts.jsonl": "".join(
        json.dumps({"prompt": f"Count to {i}."}) + "\n" for i in range(3))})
    base = [f"run.root={tmp_path / 'runs'}", "run.quiet=true", "run.report=false"]
    sft = lmforge.run(lmforge.compose([
        *base, "run.name=sft", "pipeline=sft_only", f"pipeline.stages.finetuner.model={tiny_model_dir}",
        f"data.sft=[{chats},{{path:{pairs},weight:2}}]", "finetuner.max_steps=1", "finetuner.batch_size=2",
        "finetuner.system_prompt=null", "finetuner.save_steps=0"]))
    manifest = lmforge.read_manifest(sft.artifacts["finetuner"])
    data = manifest["inputs"]["data"]
    assert [s["ref"] for s in data["sources"]] == [str(chats), str(pairs)] and data["sources"][1]["weight"] == 2
    assert data["hash"].startswith("sources:")
    sample = lmforge.run(lmforge.compose([
        *base, "run.name=sample", "pipeline=sample_only", f"pipeline.stages.sampler.model={sft.artifacts['finetuner']}",
        "data.prompts=org/prompts", "sampler.max_new_tokens=2", "sampler.do_sample=false"]))
    rows = [json.loads(line) for line in (sample.artifacts["sampler"] / "completions.jsonl").open()]
    assert len(rows) == 3
    prompts = lmforge.read_manifest(sample.artifacts["sampler"])["inputs"]["prompts"]
    assert prompts["sources"][0]["commit"] == commit and prompts["hash"] == f"sources:{prompts['hash'][8:]}"


def test_cli_takes_lists_globs_and_fails_in_one_line(tmp_path):
    import subprocess
    import sys

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for i in range(2):
        (crawl / f"part{i}.jsonl").write_text(json.dumps({"text": _prose(i)}) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lmforge.cli", "run", f"run.root={tmp_path / 'runs'}",
                               "pipeline=clean_only", "cleaner=basic", "run.quiet=true", "run.report=false", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)

    ok = cli("run.name=glob", "data.raw_text=crawl/*.jsonl")
    assert ok.returncode == 0, ok.stderr[-2000:]
    listed = cli("run.name=list", "data.raw_text=[crawl/part0.jsonl,crawl/part1.jsonl]")
    assert listed.returncode == 0, listed.stderr[-2000:]
    for run_name in ("glob", "list"):
        manifest = lmforge.read_manifest(tmp_path / "runs" / run_name / "cleaner")
        assert manifest["metrics"]["docs_in"] == 2
    missing = cli("run.name=missing", "data.raw_text=crawl/*.parquet")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    errors = [line for line in missing.stderr.splitlines() if line.startswith("lmforge: error:")]
    assert errors == ["lmforge: error: cleaner: input 'text': crawl/*.parquet: the pattern matches no files"]
    assert not (tmp_path / "runs" / "missing" / "cleaner").exists()


def test_model_inputs_take_a_hub_id_and_the_manifest_records_its_commit(tiny_model_dir, fake_hub, kinds):
    from lmforge.sources import input_hash, input_record

    _, specs = kinds
    commit = fake_hub.add_model("org/tiny", tiny_model_dir)
    checked = lmforge.Finetuner().check_inputs({"model": "org/tiny", "data": specs["mixture"]})
    model = checked["model"]
    assert Path(model).is_dir() and (Path(model) / "config.json").is_file()
    assert input_hash(model) == f"hub:org/tiny@{commit}"
    assert input_record(model, input_hash(model))["commit"] == commit
    assert type(checked["data"]).__name__ == "DataSource"
    with pytest.raises(MissingArtifact, match=r"^finetuner: input 'model': .*org/absent.*not in the Hugging Face"):
        lmforge.Finetuner().check_inputs({"model": "org/absent", "data": specs["jsonl"]})
    with pytest.raises(MissingArtifact, match=r"^finetuner: input 'model' not found: /no/such/model$"):
        lmforge.Finetuner().check_inputs({"model": "/no/such/model", "data": specs["jsonl"]})


@pytest.mark.parametrize(("key", "lines", "message"), [
    ("data.sft", [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
                  {"foo": 1}], r"sft.jsonl:2: unrecognised record \(keys: foo\)"),
    ("data.preferences", [{"prompt": "a", "chosen": "b", "rejected": "b"}] * 2,
     r"2 of 2 preference pairs have identical chosen and rejected sides"),
    ("data.preferences", [{"prompt": "a", "chosen": "b"}],
     (r"pairs.jsonl:1: a preference pair needs 'chosen' and 'rejected' \(text or messages\): 'rejected' is "
      r"missing; this record has prompt, chosen$")),
    ("data.preferences", [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 3 + [{"prompt": "x", "chosen": 5}],
     (r"pairs.jsonl:4: a preference pair needs .*: 'chosen' is an int \(5\) and 'rejected' is missing; "
      r"this record has prompt, chosen \(int\)$")),
    ("data.sft", [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}],
     r"sft.jsonl:2: 'completion' is empty; .* this record has prompt, completion \(empty\)$"),
])
def test_bad_chats_or_pairs_fail_before_any_stage_trains(tmp_path, key, lines, message):
    """The finetuner's and the pairwise aligners' check_data read the user's file when the run is planned: a
    bad record at the end of the SFT data fails before cleaning, tokenizer training and pretraining."""
    path = tmp_path / ("sft.jsonl" if key == "data.sft" else "pairs.jsonl")
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataError, match=message):
        lmforge.run(lmforge.compose([f"run.root={tmp_path}", "run.quiet=true", f"{key}={path}"]))
    assert not list(tmp_path.rglob("manifest.json"))
