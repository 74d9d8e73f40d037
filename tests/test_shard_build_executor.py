"""``pretrainer.tokenize_executor``: the token-shard build as datatrove DocumentTokenizer tasks on the cleaner's
executors, read back as datatrove shards; the same tokens as the in-process build, plus the eos datatrove puts
after the last document."""

from __future__ import annotations

import json

import lmforge
import pytest
from test_reliability import cli, one_error_line

pytest.importorskip("datatrove")  # the `test` extra installs it

TINY = ["hardware=cpu", "run.quiet=true", "run.report=false", "evaluation=null", "pipeline=pretrain_only",
        "pretrainer=lean", "pretrainer.block_size=32", "tokenizer.vocab_size=384", "model.hidden_size=32",
        "model.intermediate_size=64", "model.num_hidden_layers=1", "model.num_attention_heads=2",
        "model.num_key_value_heads=2", "pretrainer.max_steps=2", "pretrainer.save_steps=0", "pretrainer.eval_steps=0"]


def metrics(run_dir):
    return json.loads((run_dir / "pretrainer" / "manifest.json").read_text())["metrics"]


def test_local_executor_builds_the_same_tokens(tmp_path):
    base = [*TINY, f"run.root={tmp_path}", f"pretrainer.cache_dir={tmp_path / 'cache'}"]
    in_process = metrics(lmforge.run(lmforge.compose(base)).run_dir)
    on_executor = lmforge.run(lmforge.compose([*base, "pretrainer.tokenize_executor=local",
                                               "pretrainer.tokenize_tasks=2"]))  # cleaner, tokenizer reused
    ours = metrics(on_executor.run_dir)
    assert ours["token_shards"] == "datatrove" and "token_shards" not in in_process
    # the same documents, tokenised the same way: datatrove ends every document with eos, lmforge puts it between
    assert ours["corpus_tokens"] == in_process["corpus_tokens"] + 1
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    built = [p for p in entries if list(p.glob("*.ds"))]
    assert len(built) == 1 and not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith((".partial", ".logs"))]
    assert (built[0] / f"{min(built[0].glob('*.ds')).name}.metadata").is_file()


def test_tokenize_executor_needs_files_datatrove_reads(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("One document of plain text.\n" * 50)
    code, err = cli(capsys, "run", *TINY, f"run.root={tmp_path}", f"pipeline.stages.pretrainer.text={corpus}",
                    "pretrainer.tokenize_executor=local")
    assert code != 0
    assert "pretrainer.tokenize_executor: the text input must be JSONL or Parquet files" in one_error_line(err)
    assert not (tmp_path / "default" / "cleaner").exists()  # before any stage ran


@pytest.mark.parametrize("overrides, message", [
    (["pretrainer.tokenize_executor=spark"], "pretrainer.tokenize_executor: unknown 'spark'"),
    (["pretrainer.tokenize_executor=slurm"], ("pretrainer.tokenize_slurm.partition: required by "
                                              "pretrainer.tokenize_executor=slurm")),
])
def test_bad_tokenize_executor_options_fail_when_planned(capsys, tmp_path, overrides, message):
    code, err = cli(capsys, "run", *TINY, f"run.root={tmp_path}", *overrides)
    assert code != 0 and message in one_error_line(err)
    assert not (tmp_path / "default" / "cleaner").exists()


def test_slurm_dry_run_writes_the_tokenizer_job(capsys, tmp_path):
    cache = tmp_path / "cache"
    code, err = cli(capsys, "run", *TINY, f"run.root={tmp_path}", f"pretrainer.cache_dir={cache}",
                    "pretrainer.tokenize_executor=slurm", "pretrainer.tokenize_slurm.dry_run=true",
                    "pretrainer.tokenize_slurm.partition=cpu", "pretrainer.tokenize_slurm.time=01:00:00")
    assert code != 0 and "pretrainer.tokenize_slurm.dry_run: wrote 2 sbatch scripts" in one_error_line(err)
    script = next(cache.glob("*.logs/sbatch-0.slurm")).read_text()
    assert "#SBATCH --partition=cpu" in script and "#SBATCH --time=01:00:00" in script
    assert "#SBATCH --job-name=lmforge-tokenize-shards" in script and "launch_pickled_pipeline" in script
    assert not lmforge.is_complete(tmp_path / "default" / "pretrainer")
