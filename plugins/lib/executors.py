"""datatrove's executors (local processes, Ray, Slurm) for lmforge's work that runs as tasks: the cleaner's
steps (``cleaner.executor``, cleaners/executors.py) and the pretrainer's token-shard build
(``pretrainer.tokenize_executor``, pretrainers/shard_build.py).

Why datatrove's executors rather than a scheduler of our own: they already run tasks as local processes,
Slurm array jobs and Ray tasks, keep a completion file per finished task (a rerun redoes only the rest) and
per-task stats and logs. This module holds what both uses share: the options (``SlurmConfig``,
``RayConfig``, checked when a run is planned), building an executor, running executor stages to the end with
a failed task named in one line with its log file, a Slurm dry run that writes the sbatch scripts, a line per
tenth of the tasks done, and datatrove's console lines kept in a log file while the run's display keeps the
terminal. datatrove and Ray are optional extras (``pip install "lmforge[datatrove,ray]"``): they are imported
when an executor is used, not with this module (the options are part of every cleaner's config).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lmforge.errors import ConfigError, LmforgeError

EXECUTORS = ("in_process", "local", "ray", "slurm")


@dataclass
class SlurmConfig:
    """``executor=slurm``: datatrove's SlurmPipelineExecutor (one array job per executor stage)."""

    partition: str = ""
    time: str = "24:00:00"
    account: str = ""
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0
    env_command: str = ""  # run in each job before the task, e.g. "source /shared/venv/bin/activate"
    sbatch_args: dict[str, str] = field(default_factory=dict)  # more #SBATCH directives, e.g. {qos: high}
    dry_run: bool = False  # write the sbatch scripts under the work dir, submit nothing, stop the run


@dataclass
class RayConfig:
    """``executor=ray``: datatrove's RayPipelineExecutor on the cluster at ``address``."""

    address: str = ""  # "" = a Ray on this machine (started for the run); "auto" = the one `ray start` runs
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0


@dataclass
class ExecutorChoice:
    """Which executor a stage asked for, with its options and the config keys that name them in messages."""

    name: str  # local | ray | slurm
    workers: int  # tasks at once; 0 = every core (local) or no limit (Ray, Slurm)
    slurm: SlurmConfig
    ray: RayConfig
    key: str  # e.g. "cleaner.executor"
    slurm_key: str  # e.g. "cleaner.slurm"
    job: str  # Slurm job names: lmforge-<job>-<stage>


def check_executor(choice: ExecutorChoice) -> None:
    """Plan-time checks of the executor options (one line naming the key)."""
    try:
        import datatrove  # noqa: F401 - only whether it is installed
    except ImportError:
        raise ConfigError(f"{choice.key}={choice.name}: datatrove is not installed; "
                          "pip install 'lmforge[datatrove,ray]'") from None
    if choice.name == "ray":
        try:
            import ray  # noqa: F401 - only whether it is installed
        except ImportError:
            raise ConfigError(f"{choice.key}=ray: Ray is not installed; pip install 'lmforge[datatrove,ray]'") from None
    if choice.name == "slurm" and not choice.slurm.dry_run:
        if not choice.slurm.partition:
            raise ConfigError(f"{choice.slurm_key}.partition: required by {choice.key}=slurm")
        if shutil.which("sbatch") is None:
            raise ConfigError(f"{choice.key}=slurm: no `sbatch` on PATH (run on a Slurm login node, "
                              f"or set {choice.slurm_key}.dry_run=true to write the scripts only)")


def make_executor(choice: ExecutorChoice, pipeline: list, tasks: int, logs: Path, stage: str, depends=None):
    """datatrove's executor of ``choice`` for ``pipeline`` over ``tasks`` tasks, logging under ``logs``."""
    from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor

    workers = choice.workers or -1
    if choice.name == "local":
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=choice.workers or os.cpu_count() or 1,
                                     logging_dir=str(logs), depends=depends, start_method="spawn")
    if choice.name == "ray":
        return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logs),
                                   depends=depends, cpus_per_task=choice.ray.cpus_per_task,
                                   mem_per_cpu_gb=choice.ray.mem_per_cpu_gb)
    slurm = choice.slurm
    sbatch_args = dict(slurm.sbatch_args)
    if slurm.account:
        sbatch_args["account"] = slurm.account
    return SlurmPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logs),
                                 depends=depends, job_name=f"lmforge-{choice.job}-{stage}", time=slurm.time,
                                 partition=slurm.partition or "PARTITION", cpus_per_task=slurm.cpus_per_task,
                                 mem_per_cpu_gb=slurm.mem_per_cpu_gb, env_command=slurm.env_command or None,
                                 sbatch_args=sbatch_args, slurm_logs_folder=str(logs / "slurm_logs"))


def run_stages(choice: ExecutorChoice, stages: list[tuple[str, Any]], work: Path, where: str) -> None:
    """Run executor stages (each ``depends`` on the one before) to the end; Slurm: submit them all, then wait
    for the completion files. A task that did not finish raises one line naming it and its log file."""
    if choice.name == "slurm":
        run_on_slurm(choice, stages[-1][1], work)
    else:
        with ray_cluster(choice.ray.address) if choice.name == "ray" else contextlib.nullcontext():
            for stage, executor in stages:
                try:
                    executor.run()
                except LmforgeError:
                    raise
                except Exception as exc:
                    raise_if_incomplete(executor, stage, where, exc)
                    raise
                raise_if_incomplete(executor, stage, where)
    for stage, executor in stages:
        raise_if_incomplete(executor, stage, where)


def raise_if_incomplete(executor, stage: str, where: str, exc: BaseException | None = None) -> None:
    missing = executor.get_incomplete_ranks(skip_completed=True)
    if not missing:
        return
    logs = Path(executor.logging_dir.path) / "logs"
    why = f" ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})" if exc else ""
    raise LmforgeError(f"{where}: {len(missing)} of {executor.world_size} {stage} task(s) did not finish, first "
                       f"task {missing[0]}{why}; its log: {logs / f'task_{missing[0]:05d}.log'}; a rerun keeps "
                       "the finished tasks")


@contextlib.contextmanager
def ray_cluster(address: str):
    """Connect to the Ray at ``address``, or start one on this machine (127.0.0.1) for the run."""
    import ray

    started = False
    if not ray.is_initialized():
        options = {"address": address} if address else {"include_dashboard": False, "num_cpus": os.cpu_count()}
        ray.init(log_to_driver=False, logging_level="ERROR", **options)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_on_slurm(choice: ExecutorChoice, last, work: Path) -> None:
    """Submit the last stage's job and, through ``depends``, every stage before it; wait for them (or, dry
    run: write the scripts and stop)."""
    import datatrove.executor.slurm as datatrove_slurm

    if choice.slurm.dry_run:
        scripts = []

        def write_only(contents, _retriever, *args):
            head, _, body = contents.partition("\n")
            scripts.append(f"{head}\n# submitted as: sbatch {' '.join(args)} <this file>\n{body}")
            return f"dry-run-{len(scripts)}"

        with _replaced(datatrove_slurm, "launch_slurm_job", write_only):
            last.launch_job()
        paths = []
        for number, script in enumerate(scripts):
            path = work / f"sbatch-{number}.slurm"
            path.write_text(script)
            paths.append(str(path))
        raise LmforgeError(f"{choice.slurm_key}.dry_run: wrote {len(paths)} sbatch scripts, nothing submitted: "
                           f"{', '.join(paths)}")
    last.launch_job()
    while last.get_incomplete_ranks(skip_completed=True):
        jobs = [str(j) for j in (last.depends_job_id, last.job_id) if j not in (None, -1)]
        alive = subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], check=False, capture_output=True,
                               text=True).stdout
        if jobs and not alive.strip() and last.get_incomplete_ranks(skip_completed=True):
            break
        time.sleep(30)


@contextlib.contextmanager
def _replaced(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def task_progress(stages: list[tuple[str, Any]], quiet: bool, every: float = 5.0):
    """A line each time another tenth of a stage's tasks has finished (read from datatrove's completion
    files, so it works for every executor); on stdout, which the run's live display prints above itself."""
    stop = threading.Event()

    def watch():
        shown: dict[str, int] = {}
        while not stop.wait(every):
            for stage, executor in stages:
                total = executor.world_size
                done = total - len(executor.get_incomplete_ranks(skip_completed=True))
                if done and done * 10 // total > shown.get(stage, 0):
                    shown[stage] = done * 10 // total
                    print(f"  {stage} tasks done: {done} of {total}", flush=True)

    thread = threading.Thread(target=watch, name="lmforge-task-progress", daemon=True)
    if not quiet:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


@contextlib.contextmanager
def console_to(path: Path):
    """datatrove's console lines go to ``path``: its task processes' (they inherit file descriptor 2, pointed
    at ``path``) and this process's (datatrove's stderr sinks, through its logging module's ``sys``); lmforge's
    own output (the run's display on ``sys.stderr``, lines on stdout) still reaches the terminal."""
    import datatrove.utils.logging as datatrove_logging

    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a", encoding="utf-8") as log, os.fdopen(os.dup(saved), "w", buffering=1) as terminal:
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stderr(terminal), \
                    _replaced(datatrove_logging, "sys", SimpleNamespace(stderr=log, stdout=sys.stdout)):
                yield
        finally:
            log.flush()
            terminal.flush()
            os.dup2(saved, 2)
            os.close(saved)


def merged_stats(logs: Path) -> list[dict]:
    """datatrove's per-task stats of one executor stage, summed: per step, its seconds and counts."""
    from datatrove.utils.stats import PipelineStats

    files = sorted((logs / "stats").glob("*.json"))
    total = sum((PipelineStats.from_json(json.loads(f.read_text())) for f in files), start=PipelineStats())
    return [{"step": step.name, "seconds": round(getattr(step.time_stats, "total", 0.0), 3),
             "counts": {key: getattr(metric, "total", metric) for key, metric in step.stats.items()}}
            for step in total.stats]
