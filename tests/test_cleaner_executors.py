"""``cleaner.executor``: the standard cleaner on datatrove's real executors keeps the in-process documents.

The local executor runs its tasks in spawned processes, the Ray executor on a Ray this test starts on
127.0.0.1 (``ray.init``), and the Slurm executor is composed for real and its sbatch scripts written in a
dry run (no Slurm here). Each runs ``lmforge run pipeline=clean_only`` on the bundled raw text.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import lmforge
import pytest
from test_reliability import cli
from test_reliability import one_error_line as error_line

pytest.importorskip("datatrove")  # the `test` extra installs it; the suite runs it in CI


def clean(capsys, root: Path, name: str, *overrides: str) -> Path:
    code, err = cli(capsys, "run", "pipeline=clean_only", f"run.root={root}", f"run.name={name}", "run.report=false",
                    *overrides)
    assert code == 0, err
    return root / name / "cleaner"


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("in_process")
    cfg = lmforge.compose(["pipeline=clean_only", f"run.root={root}", "run.name=ref", "run.report=false",
                           "run.quiet=true"])
    return lmforge.run(cfg).artifacts["cleaner"]


def same_output(reference: Path, other: Path) -> dict:
    """The two artifacts hold byte-identical documents and removals; ``other``'s report."""
    files = sorted(p.name for p in reference.glob("data-*.parquet"))
    assert files and files == sorted(p.name for p in other.glob("data-*.parquet"))
    for name in files + ["removed.jsonl"]:
        assert (reference / name).read_bytes() == (other / name).read_bytes(), name
    ours, theirs = (json.loads((d / "report.json").read_text()) for d in (reference, other))
    for key in ("docs_in", "docs_out", "chars_out", "removed", "bad_records"):
        assert ours[key] == theirs[key], key
    return theirs


def test_local_executor_keeps_the_in_process_documents(capsys, tmp_path, in_process):
    out = clean(capsys, tmp_path, "local", "cleaner.executor=local", "cleaner.tasks=3", "cleaner.workers=2")
    report = same_output(in_process, out)
    executor = report["executor"]
    assert executor["name"] == "local" and executor["tasks"] == 3
    counts = executor["map"][0]["counts"]  # datatrove's stats, summed over the 3 tasks
    assert counts["documents"] == report["docs_in"]
    assert sum(v for k, v in counts.items() if k.startswith("dropped_")) + counts["forwarded"] == report["docs_in"]
    assert not (tmp_path / "local" / ".work" / "cleaner").exists()  # a complete stage leaves no work behind


def test_web_pages_on_the_local_executor_keep_the_in_process_documents(capsys, tmp_path):
    """WARC input: the shard step extracts the articles (the in-process reader), the tasks clean them."""
    warc = Path(__file__).parent / "data" / "web" / "pages.warc.gz"
    reference = clean(capsys, tmp_path, "web_ref", f"data.raw_text={warc}")
    report = same_output(reference, clean(capsys, tmp_path, "web_local", f"data.raw_text={warc}",
                                          "cleaner.executor=local", "cleaner.tasks=3"))
    assert report["docs_in"] > 20 and report["executor"]["tasks"] == 3


def test_ray_executor_keeps_the_in_process_documents(capsys, tmp_path, in_process):
    pytest.importorskip("ray")
    out = clean(capsys, tmp_path, "ray", "cleaner.executor=ray", "cleaner.tasks=2", "cleaner.ray.cpus_per_task=1")
    report = same_output(in_process, out)
    assert report["executor"]["name"] == "ray" and report["executor"]["decide"][0]["counts"]["documents"] == \
        report["docs_in"]


class Failing(lmforge.CleaningStep):
    """Fails on one document (of task 2 of 4) while ``armed``; counts the documents it sees."""

    name = "fails_once"
    armed = True
    seen = 0

    def process(self, text):
        type(self).seen += 1
        if type(self).armed and "Skywalker" in text:
            raise RuntimeError("a broken task")
        return text


class FailingPlugin:
    @lmforge.hookimpl
    def lmforge_register(self, registry):
        registry.add("cleaning_step", "fails_once", Failing)


def test_a_failed_task_is_named_and_the_rerun_keeps_the_finished_ones(capsys, tmp_path, in_process):
    plugin = FailingPlugin()
    lmforge.register_plugin(plugin, name="test-executor-failing")
    # workers=1: datatrove runs the tasks one after another in this process, so the test's step is found
    args = ["run", "pipeline=clean_only", f"run.root={tmp_path}", "run.name=f", "run.report=false",
            "cleaner.executor=local", "cleaner.tasks=4", "cleaner.workers=1",
            "cleaner.add=[{name: fails_once, before: normalize}]"]
    try:
        Failing.armed, Failing.seen = True, 0
        code, err = cli(capsys, *args)
        assert code != 0
        line = error_line(err)
        assert "2 of 4 map task(s) did not finish, first task 2 (RuntimeError: a broken task)" in line, line
        work = tmp_path / "f" / ".work" / "cleaner" / "executor"
        assert "task_00002.log" in line and (work / "logs" / "map" / "logs" / "task_00002.log").is_file()
        assert sorted(p.name for p in (work / "logs" / "map" / "completions").iterdir()) == ["00000", "00001"]
        assert not lmforge.is_complete(tmp_path / "f" / "cleaner")
        shard_docs = [len(gzip.decompress((work / "shards" / f"shard-{r:05d}.jsonl.gz").read_bytes()).splitlines())
                      for r in range(4)]
        Failing.armed, Failing.seen = False, 0
        code, err = cli(capsys, *args)
        assert code == 0, err
        assert Failing.seen == shard_docs[2] + shard_docs[3]  # tasks 0 and 1 were not redone
    finally:
        lmforge.unregister_plugin(plugin)
    same_output(in_process, tmp_path / "f" / "cleaner")  # the step keeps every text: the default's result


def test_slurm_dry_run_writes_the_sbatch_scripts(capsys, tmp_path):
    code, err = cli(capsys, "run", "pipeline=clean_only", f"run.root={tmp_path}", "run.name=s", "run.report=false",
                    "cleaner.executor=slurm", "cleaner.tasks=4", "cleaner.slurm.dry_run=true",
                    "cleaner.slurm.partition=cpu", "cleaner.slurm.account=proj", "cleaner.slurm.time=02:00:00",
                    "cleaner.slurm.env_command=source /shared/venv/bin/activate")
    assert code != 0
    line = error_line(err)
    assert "wrote 4 sbatch scripts, nothing submitted" in line
    work = tmp_path / "s" / ".work" / "cleaner" / "executor"
    scripts = [(work / f"sbatch-{n}.slurm").read_text() for n in range(4)]
    mapper, decider = scripts[0], scripts[2]  # 1 and 3 merge each stage's stats
    assert "#SBATCH --array=0-3" in mapper and "#SBATCH --partition=cpu" in mapper
    assert "#SBATCH --account=proj" in mapper and "#SBATCH --time=02:00:00" in mapper
    assert "source /shared/venv/bin/activate" in mapper and "launch_pickled_pipeline" in mapper
    assert str(work / "logs" / "map" / "executor.pik") in mapper and (work / "logs" / "map" / "executor.pik").is_file()
    assert "#SBATCH --array=0-0" in decider and "--dependency=afterok:dry-run-1" in decider  # decide after map
    assert len(list((work / "shards").glob("shard-*.jsonl.gz"))) == 4
    assert not lmforge.is_complete(tmp_path / "s" / "cleaner")


@pytest.mark.parametrize("overrides, message", [
    (["cleaner.executor=dask"], "cleaner.executor: unknown 'dask'"),
    (["cleaner.executor=slurm"], "cleaner.slurm.partition: required by cleaner.executor=slurm"),
    (["cleaner.slurm.partiton=cpu"], "cleaner.slurm.partiton: unknown key (did you mean 'partition'?)"),
    (["cleaner.tasks=-1"], "cleaner.tasks: must be >= 0"),
])
def test_bad_executor_options_fail_when_planned(capsys, tmp_path, overrides, message):
    code, err = cli(capsys, "run", "pipeline=clean_only", f"run.root={tmp_path}", "run.report=false", *overrides)
    assert code != 0 and message in error_line(err)
    assert not (tmp_path / "default" / "cleaner").exists()
