"""Token shards made elsewhere as the pretrainer's input (``pipeline=pretrain_shards``): datatrove's real
``DocumentTokenizer`` output (LocalPipelineExecutor, 2 tasks) and lmforge's own shard directory train the
pretrainer without tokenising again; a vocabulary mismatch, mixed formats and damaged files fail in one line.

datatrove (base and ``io`` extra) is part of the ``test`` extra; without it the datatrove test is skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lmforge
import numpy as np
import pytest
from lmforge.cli import main
from lmforge.plugins.pretrainers import shard_input, token_shards
from lmforge.sources import resolve_data

MICRO = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64,
         "tie_word_embeddings": True}
TRAIN = ["pretrainer.max_steps=4", "pretrainer.batch_size=4", "pretrainer.block_size=32", "pretrainer.eval_steps=0",
         "pretrainer.logging_steps=1", "pretrainer.save_steps=0", "pretrainer.val_fraction=0.1"]


def run_args(tmp_path: Path, shards: Path, tokenizer: Path, *extra: str) -> list[str]:
    return ["run", "pipeline=pretrain_shards", f"data.token_shards={shards}", f"data.tokenizer={tokenizer}",
            f"run.root={tmp_path / 'runs'}", "run.quiet=true", "run.report=false", "hardware=cpu",
            "evaluation.pretrainer=[language_map]", *TRAIN, *[f"model.{k}={v}" for k, v in MICRO.items()], *extra]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two JSON-lines files of the bundled raw text (one per datatrove task)."""
    lines = Path(lmforge.sample_data_path("raw_text.jsonl")).read_text().splitlines()
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "a.jsonl").write_text("\n".join(lines[:30]) + "\n")
    (folder / "b.jsonl").write_text("\n".join(lines[30:60]) + "\n")
    return folder


@pytest.fixture(scope="module")
def datatrove_shards(corpus, tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """datatrove's own DocumentTokenizer over the corpus, with the tokenizer trained for this session."""
    pytest.importorskip("datatrove", reason="needs datatrove (pip install -e '.[test]' installs it)")
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    root = tmp_path_factory.mktemp("datatrove")
    LocalPipelineExecutor([JsonlReader(str(corpus)),
                           DocumentTokenizer(str(root / "tokens"), str(tiny_tokenizer_dir / "tokenizer.json"),
                                             eos_token="<|eos|>", seed=0)],
                          tasks=2, workers=1, logging_dir=str(root / "logs")).run()
    return root / "tokens"


def test_datatrove_token_shards_train_the_pretrainer(datatrove_shards, tiny_tokenizer_dir, tmp_path):
    files = sorted(datatrove_shards.glob("*.ds"))
    assert len(files) == 2  # one per task
    total = sum(f.stat().st_size // 2 for f in files)  # a 1,024-token vocabulary: uint16 tokens
    assert total == sum(int(f.with_name(f.name + ".metadata").read_text().splitlines()[1]) for f in files)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    stream, meta = shard_input.open_shards(datatrove_shards, tokenizer)
    assert np.array_equal(np.asarray(stream), np.concatenate([np.fromfile(f, dtype="<u2") for f in files]))
    assert meta["documents"] == 60 and meta["bytes"] is None
    eos = np.asarray(stream) == tokenizer.eos_token_id
    assert eos.sum() == 60  # datatrove's eos after every document

    main(run_args(tmp_path, datatrove_shards, tiny_tokenizer_dir))
    out = tmp_path / "runs" / "default" / "pretrainer"
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["corpus_tokens"] == total == metrics["train_tokens"] + metrics["val_tokens"]
    assert metrics["token_shards"] == "datatrove" and "bits_per_byte" not in metrics  # datatrove keeps no bytes
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["val_loss"])
    assert "eval/language_map/words" in metrics  # its words come from the shards, decoded
    assert lmforge.is_complete(out)


def test_lmforge_shard_dir_trains_the_pretrainer(tiny_tokenizer_dir, tmp_path, tiny_context):
    from lmforge.plugins.pretrainers.lean_loop import LeanPretrainer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    shards = tmp_path / "made_elsewhere"
    index = token_shards.build_shards(lmforge.sample_data_path("raw_text.jsonl"), tokenizer, "text", shards,
                                      workers=1, shard_chars=50_000)
    assert len(index["shards"]) > 1
    stage = LeanPretrainer(max_steps=4, batch_size=4, block_size=32, eval_steps=0, logging_steps=1,
                           val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    context = lmforge.RunContext(stage_name="pretrainer", hardware=tiny_context.hardware, quiet=True,
                                 model=dict(MICRO), work_dir=tmp_path / "work")
    out, _ = lmforge.run_stage(stage, {"text": shards, "tokenizer": tiny_tokenizer_dir}, tmp_path / "out", context)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["corpus_tokens"] == index["tokens"] and summary["token_shards"] == token_shards.FORMAT
    assert summary["bytes_per_token"] == pytest.approx(index["bytes"] / index["tokens"])
    assert math.isfinite(summary["final_train_loss"]) and math.isfinite(summary["val_loss"])
    assert not (tmp_path / "cache").exists()  # read as it is: nothing tokenised into the cache


def test_token_ids_outside_the_vocab_fail_in_one_line(tiny_tokenizer_dir, tmp_path, capsys):
    shards = tmp_path / "other_tokenizer"
    shards.mkdir()
    np.arange(0, 3000, dtype="<u2").tofile(shards / "00000_unshuffled.ds")  # ids up to 2999; the vocab is 1,024
    (shards / "00000_unshuffled.ds.metadata").write_text("gpt2|2\n3000\n3.0 kT")
    with pytest.raises(SystemExit) as exit_info:
        main(run_args(tmp_path, shards, tiny_tokenizer_dir))
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(shards) in err[0] and "2999" in err[0] and "1024 tokens" in err[0], err
    assert "gpt2" in err[0]  # the tokenizer the shards' metadata names
    assert not (tmp_path / "runs" / "default" / "pretrainer").exists()


def _ds(folder: Path, name: str, tokens, token_size: int = 2, metadata: int | None = None, ends=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.asarray(tokens, dtype="<u2" if token_size == 2 else "<u4").tofile(folder / name)
    count = len(tokens) if metadata is None else metadata
    (folder / f"{name}.metadata").write_text(f"tok|{token_size}\n{count}\n{count} T")
    np.asarray(ends if ends is not None else [len(tokens)], dtype="<u8").tofile(folder / f"{name}.index")


@pytest.mark.parametrize("damage, message", [
    ("both_formats", "mixes two token shard formats"),
    ("with_text", "mixes token shards (a.ds) with text files (notes.jsonl)"),
    ("metadata_token_size", "b.ds: 20 bytes, but its .metadata says 10 tokens of 4 bytes"),
    ("index_ends", "a.ds.index: documents end at token 7, but a.ds holds 10 tokens"),
    ("token_sizes_differ", "b.ds: 4-byte tokens, but a.ds has 2-byte ones"),
    ("truncated_lmforge", "shard_000000.bin: 6 bytes, but index.json says 10 tokens of 2 bytes"),
])
def test_damaged_or_mixed_shard_dirs_fail_in_one_line(damage, message, tiny_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "shards"
    tokens = list(range(10, 20))
    if damage == "truncated_lmforge":
        folder.mkdir()
        np.asarray(tokens[:3], dtype="<u2").tofile(folder / "shard_000000.bin")
        (folder / "index.json").write_text(json.dumps({
            "format": token_shards.FORMAT, "dtype": "uint16", "eos_token_id": 0, "tokens": 10, "bytes": 10,
            "documents": 1, "shards": [{"file": "shard_000000.bin", "tokens": 10, "bytes": 10, "documents": 1}]}))
    else:
        _ds(folder, "a.ds", tokens, ends=[7] if damage == "index_ends" else None)
        if damage == "both_formats":
            (folder / "index.json").write_text(json.dumps({"format": token_shards.FORMAT}))
        elif damage == "with_text":
            (folder / "notes.jsonl").write_text('{"text": "hello"}\n')
        elif damage == "metadata_token_size":
            _ds(folder, "b.ds", tokens, metadata=10)
            (folder / "b.ds.metadata").write_text("tok|4\n10\n10 T")
        elif damage == "token_sizes_differ":
            _ds(folder, "b.ds", tokens, token_size=4)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    with pytest.raises(lmforge.DataError) as error:
        resolve_data(str(folder))
        shard_input.open_shards(folder, tokenizer)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_shards_are_read_in_path_order_and_not_as_text(tiny_tokenizer_dir, tmp_path):
    from lmforge.plugins.lib.data import iter_texts
    from transformers import AutoTokenizer

    folder = tmp_path / "shards"
    _ds(folder / "node1", "00000_x.ds", [5, 6])  # written on two machines, gathered in one folder
    _ds(folder / "node0", "00001_x.ds", [3, 4])
    _ds(folder / "node0", "00000_x.ds", [1, 2])
    stream, meta = shard_input.open_shards(folder, AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)))
    assert np.asarray(stream).tolist() == [1, 2, 3, 4, 5, 6] and meta["documents"] == 3
    assert resolve_data(str(folder)).parts[0].kind == "tokens"
    with pytest.raises(lmforge.DataError, match="a directory of token shards, not text"):
        next(iter_texts(folder))


def test_the_overlap_check_says_it_did_not_read_the_shards(datatrove_shards, tiny_tokenizer_dir, tmp_path):
    """Token ids are not text: the plan-time overlap check names the shard input as not compared, so no
    "0 of N overlap" claims a check that did not happen."""
    from lmforge.plugins.evaluators.overlap import check_overlap

    cfg = lmforge.resolve_config(lmforge.compose(["pipeline=pretrain_shards", f"data.token_shards={datatrove_shards}",
                                                  f"data.tokenizer={tiny_tokenizer_dir}"]))
    result = check_overlap(cfg)["pretrainer"]
    assert result["items"] > 0 and result["overlapping"] == 0
    assert result["not_read"] == {"pipeline.stages.pretrainer.text": "token shards"}
