"""The pipeline runner: the configured stages in order, each skipped when already complete.

``cfg.pipeline.stages`` maps stage names to their inputs, in order. An input is ``stage:<name>`` (the
artifact of an earlier stage of the same run), ``stage:<name>/<file>`` (a file in it), or whatever the
input's kind takes (:mod:`lmforge.sources`): a path; for data also a glob, a Hub dataset id or a list
(mixture); for a model also a Hub id::

    pipeline:
      stages:
        cleaner:   {text: ${data.raw_text}}
        tokenizer: {text: "stage:cleaner"}

Each stage's option (``cfg.<stage name>``) names its ``plugin`` (and ``kind`` when the stage name is not
a kind, e.g. a second aligner stage) plus its parameters.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import artifacts, sources
from .config import RESERVED_KEYS, build_params, without_other_plugins_keys
from .errors import ConfigError, MissingArtifact, close_match
from .registry import plugin_manager, registry
from .rundir import RunSettings, prepare_run_dir, run_dir_of, run_lock, run_settings
from .stages import Hardware, RunContext, Stage

STAGE_REF = "stage:"


@dataclass
class RunResult:
    run_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def resolve_config(cfg) -> dict[str, Any]:
    """A composed config as plain, fully resolved Python dicts; a missing mandatory value is a ConfigError."""
    from omegaconf import DictConfig

    if isinstance(cfg, DictConfig):
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from .config import one_line

        try:
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", "")
            raise ConfigError(f"{key}: {one_line(getattr(exc, 'msg', exc))}") from None
    return dict(cfg)


def stage(name: str, cfg) -> Stage:
    """The configured stage ``name`` of a composed config (``lmforge.stage("aligner", cfg)``)."""
    cfg = resolve_config(cfg)
    if name not in cfg or not isinstance(cfg[name], dict):
        raise ConfigError(f"{name}: no such stage in the config{close_match(name, cfg)}")
    node = dict(cfg[name])
    kind = node.get("kind", name)
    if "plugin" not in node:
        raise ConfigError(f"{name}.plugin: not set; say which {kind} implementation to use")
    cls = registry().get(kind, node["plugin"])
    params = {k: v for k, v in node.items() if k not in RESERVED_KEYS}
    params = without_other_plugins_keys(kind, node["plugin"], params, cls.config_class)
    config = build_params(cls.config_class, params, where=name, plugin=f"{kind} '{node['plugin']}'")
    return cls(config)


def context_for(cfg: dict[str, Any], stage_name: str, run_dir: Path | None) -> RunContext:
    hardware = build_params(Hardware, cfg.get("hardware") or {}, where="hardware")
    settings = run_settings(cfg.get("run"))
    return RunContext(stage_name=stage_name, run_dir=run_dir, hardware=hardware, seed=settings.seed,
                      model=dict(cfg.get("model") or {}), config=cfg, quiet=settings.quiet)


def run_stage(stage_obj: Stage, inputs: dict[str, Any], output_dir, context: RunContext | None = None,
              fingerprint: str | None = None, extra_manifest: dict | None = None,
              input_hashes: dict[str, str] | None = None) -> tuple[Path, dict]:
    """Run one stage atomically: write into ``<output_dir>.partial``, add the manifest, rename into place."""
    output_dir = Path(output_dir)
    context = context or RunContext(stage_name=stage_obj.kind)
    checked = stage_obj.check_inputs(inputs)
    if input_hashes is None:
        input_hashes = {name: sources.input_hash(value) for name, value in checked.items()}
    params = _params_dict(stage_obj)
    if fingerprint is None:
        fingerprint = artifacts.fingerprint({"kind": stage_obj.kind, "class": type(stage_obj).__qualname__,
                                             "params": params, "inputs": input_hashes, "seed": context.seed})
    # Checkpoints of a context without a work dir go beside the output (<output_dir>.work, kept for the config
    # that wrote them): a killed call resumes there, and no other run's checkpoints are ever picked up.
    own_work_dir = context.work_dir is None
    if own_work_dir:
        context.work_dir = output_dir.with_name(output_dir.name + ".work")
    try:
        if context.world_size > 1:
            return _run_stage_with_ranks(stage_obj, checked, output_dir, context, fingerprint, params,
                                         extra_manifest, input_hashes)
        return _write_stage(stage_obj, checked, output_dir, context, fingerprint, params, extra_manifest,
                            input_hashes)
    finally:
        if own_work_dir:
            context.work_dir = None


def _write_stage(stage_obj: Stage, checked: dict[str, Path], output_dir: Path, context: RunContext,
                 fingerprint: str, params: dict, extra_manifest: dict | None,
                 input_hashes: dict[str, str]) -> tuple[Path, dict]:
    """Run the stage here into ``<output_dir>.partial`` and rename it into place with its manifest."""
    partial = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    context.metrics = {}
    if context.work_dir is not None:
        _prepare_work_dir(context.work_dir, fingerprint)
        # Beside the checkpoints, so a killed and resumed stage keeps the steps logged before the kill.
        context._metrics_file = context.work_dir / "metrics.jsonl"
    else:
        context._metrics_file = partial / "metrics.jsonl"
    pm = plugin_manager()
    pm.hook.lmforge_stage_start(stage_name=context.stage_name, stage=stage_obj, inputs=checked, context=context)
    started = time.time()
    try:
        context.hardware.apply_threads()
        pm.hook.lmforge_run_stage(stage=stage_obj, inputs=checked, output_dir=partial, context=context)
        if context.work_dir is not None:
            merge_metrics(context.work_dir / "metrics.jsonl", partial / "metrics.jsonl")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        context._metrics_file = None  # a context may be reused for another stage run
    manifest = {
        "stage": context.stage_name,
        "kind": stage_obj.kind,
        "implementation": f"{type(stage_obj).__module__}:{type(stage_obj).__qualname__}",
        **(extra_manifest or {}),
        "params": params,
        "inputs": {name: sources.input_record(value, input_hashes[name]) for name, value in checked.items()},
        "fingerprint": fingerprint,
        "started": started,
        "seconds": round(time.time() - started, 3),
        "metrics": context.metrics,
        "versions": artifacts.package_versions(),
        "config": context.config,
    }
    artifacts.write_json_atomic(partial / artifacts.MANIFEST, manifest)
    artifacts.replace_dir(partial, output_dir)
    if context.work_dir is not None:
        shutil.rmtree(context.work_dir, ignore_errors=True)
    pm.hook.lmforge_artifact_written(stage_name=context.stage_name, path=output_dir, manifest=manifest,
                                     context=context)
    pm.hook.lmforge_stage_end(stage_name=context.stage_name, stage=stage_obj, artifact=output_dir,
                              manifest=manifest, context=context)
    return output_dir, manifest


def _run_stage_with_ranks(stage_obj: Stage, checked: dict[str, Path], output_dir: Path, context: RunContext,
                          fingerprint: str, params: dict, extra_manifest: dict | None,
                          input_hashes: dict[str, str]) -> tuple[Path, dict]:
    """One process of several (``accelerate launch``): rank 0 writes the artifact; the others wait for it.

    A training stage (``Stage.distributed``) runs on every rank, the others into a private scratch dir
    (in the stage's work dir, which goes when the stage completes) they drop; any other stage runs on rank 0 alone. Either way the other ranks then block on rank 0's
    broadcast of the manifest (``lmforge.distributed``), not on polling files; if rank 0 fails in a
    single-process stage they stop with its message. (A failure inside a collective stage ends that
    process, and ``accelerate launch`` stops the rest.)
    """
    from . import distributed

    distributed.join(cpu=not context.hardware.use_cuda())
    collective = bool(getattr(stage_obj, "distributed", False))
    if collective and context.work_dir is not None:  # checkpoints kept or cleared before any rank looks
        if context.is_main_process:
            _prepare_work_dir(context.work_dir, fingerprint)
        distributed.from_main()
    if context.is_main_process:
        try:
            result = _write_stage(stage_obj, checked, output_dir, context, fingerprint, params, extra_manifest,
                                  input_hashes)
        except Exception as exc:
            if not collective:  # the others wait in the broadcast below; tell them, so they stop too
                distributed.from_main({"error": f"{type(exc).__name__}: {exc}"})
            raise
        distributed.from_main({"manifest": result[1]})
        return result
    if collective:
        scratch = (context.work_dir / f"rank{context.rank}.scratch" if context.work_dir is not None  # a kill
                   else output_dir.with_name(f"{output_dir.name}.rank{context.rank}.scratch"))  # leaves it in .work
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        context.hardware.apply_threads()
        try:
            plugin_manager().hook.lmforge_run_stage(stage=stage_obj, inputs=checked, output_dir=scratch,
                                                    context=context)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    answer = distributed.from_main()
    if "error" in answer:
        raise distributed.MainFailed(f"{context.stage_name}: the main process failed: {answer['error']}")
    return output_dir, answer["manifest"]


def _params_dict(stage_obj: Stage) -> dict[str, Any]:
    import dataclasses

    if stage_obj.config is not None and dataclasses.is_dataclass(stage_obj.config):
        return dataclasses.asdict(stage_obj.config)
    return {}


def merge_metrics(source: Path, target: Path) -> None:
    """Copy a stage's metrics log into its artifact, one record per (step, metric names): a step logged
    again after a resume replaces the earlier record; a line torn by a kill is dropped."""
    import json

    records: dict[tuple, dict] = {}
    if source.is_file():
        with open(source, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                key = (record.get("step"), tuple(sorted(k for k in record if k not in ("step", "time"))))
                records.pop(key, None)  # re-insert: the later record wins, at its later position
                records[key] = record
    with open(target, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records.values())


def _prepare_work_dir(work_dir: Path, fingerprint: str) -> None:
    """Keep checkpoints only if they belong to the same stage config; a changed config starts afresh."""
    stamp = work_dir / "FINGERPRINT"
    if work_dir.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def _resolve_input(value, done: dict[str, Path]):
    """``stage:<name>`` -> that stage's artifact; ``stage:<name>/<file>`` -> a file inside it; else as given
    (inside a mixture list or a source's ``path`` too)."""
    if isinstance(value, list):
        return [_resolve_input(item, done) for item in value]
    if isinstance(value, dict) and "path" in value:
        return {**value, "path": _resolve_input(value["path"], done)}
    if not (isinstance(value, str) and value.startswith(STAGE_REF)):
        return value
    name, _, inside = value[len(STAGE_REF):].partition("/")
    return done[name] / inside if inside else done[name]


def stage_fingerprint(name: str, stage_obj: Stage, plugin: str, cfg: dict, input_hashes: dict[str, str],
                      run_dir: Path | None = None) -> str:
    """What a stage's artifact depends on: its plugin and parameters, the config sections it declares it
    reads (``Stage.reads``: the pretrainer's ``model``), its evaluators and the artifacts they name
    (``judge: stage:reward_model``: a retrained judge re-judges), the seed and its inputs' hashes."""
    evaluators = (cfg.get("evaluation") or {}).get(name) or []
    judged_by = {ref: _artifact_fingerprint(run_dir, ref) for ref in _strings_naming_stages(evaluators)}
    return artifacts.fingerprint({
        "plugin": plugin, "params": _params_dict(stage_obj),
        "reads": {section: cfg.get(section) for section in stage_obj.reads},
        "evaluation": evaluators, **({"evaluation_artifacts": judged_by} if judged_by else {}),
        "seed": (cfg.get("run") or {}).get("seed", 0), "inputs": input_hashes,
    })


def _artifact_fingerprint(run_dir: Path | None, ref: str) -> str | None:
    """The fingerprint of the run's artifact that ``stage:<name>[/file]`` names; None before it exists."""
    artifact = Path(run_dir) / ref[len(STAGE_REF):].partition("/")[0] if run_dir else None
    return artifacts.read_manifest(artifact).get("fingerprint") if artifact and artifacts.is_complete(artifact) else None


def _strings_naming_stages(value) -> list[str]:
    """Every ``stage:<name>`` string anywhere in a config value."""
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _strings_naming_stages(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _strings_naming_stages(item)]
    return [value] if isinstance(value, str) and value.startswith(STAGE_REF) else []


def _plan_stage(name: str, stage_obj: Stage, node: dict, checked: dict[str, Path], output_dir: Path, cfg: dict,
                force: bool) -> dict[str, Any]:
    """Input hashes, fingerprint, and the manifest of an already complete artifact (skip) or None (run)."""
    input_hashes = {k: sources.input_hash(v) for k, v in checked.items()}
    fingerprint = stage_fingerprint(name, stage_obj, node["plugin"], cfg, input_hashes, output_dir.parent)
    done = (not force and artifacts.is_complete(output_dir)
            and artifacts.read_manifest(output_dir).get("fingerprint") == fingerprint)
    return {"hashes": input_hashes, "fingerprint": fingerprint,
            "manifest": artifacts.read_manifest(output_dir) if done else None}


def _stage_refs(value) -> list[str]:
    if isinstance(value, list):
        return [ref for item in value for ref in _stage_refs(item)]
    if isinstance(value, dict):
        return _stage_refs(value.get("path"))
    return [value] if isinstance(value, str) and value.startswith(STAGE_REF) else []


def run(cfg) -> RunResult:
    """Run the configured pipeline (``cfg`` from :func:`lmforge.compose` or ``lmforge run``).

    Everything is checked before anything runs (run.* types, every stage's parameters, the wiring, the
    model config, the inputs on disk); then the run directory is locked for the whole run.
    """
    cfg = resolve_config(cfg)
    settings = run_settings(cfg.get("run"))
    held: list = []  # warnings raised while planning (a stage's check_data): shown once the run's console is up
    try:
        with warnings.catch_warnings(record=True) as held:
            planned = plan(cfg)
        main = context_for(cfg, "pipeline", None)
        if not main.is_main_process:
            return _run_planned(cfg, settings, planned, run_dir_of(settings), main, held)
        run_dir = prepare_run_dir(settings)
        with run_lock(run_dir):
            return _run_planned(cfg, settings, planned, run_dir, main, held)
    except BaseException:
        _show_warnings(held)  # not shown yet when the run stopped before its start hook (a bad plan, a locked run …)
        raise


def _show_warnings(held: list) -> None:
    """Show warnings recorded earlier (the filters already passed them) through ``warnings.showwarning`` as it
    is now: after ``lmforge_pipeline_start`` that is the run console's (run.log), else the terminal."""
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def plan(cfg: dict[str, Any]) -> dict[str, tuple[Stage, dict[str, Any]]]:
    """Every configured stage constructed and validated, with its wiring; raises on the first problem."""
    stages_cfg = (cfg.get("pipeline") or {}).get("stages") or {}
    if not stages_cfg:
        raise ConfigError("pipeline.stages: empty; name at least one stage")
    planned: dict[str, tuple[Stage, dict[str, Any]]] = {}
    for name, wiring in stages_cfg.items():
        stage_obj = stage(name, cfg)
        wiring = dict(wiring or {})
        given = {}  # inputs that exist before the run, resolved: the stage's check_data reads them now
        for key, value in wiring.items():
            references = _stage_refs(value)
            for reference in references:
                ref = reference[len(STAGE_REF):].split("/", 1)[0]
                if ref not in planned:
                    raise ConfigError(f"pipeline.stages.{name}.{key}: '{reference}' is not an earlier stage of this "
                                      f"pipeline{close_match(ref, planned)}; earlier: {', '.join(planned) or '(none)'}")
            known = key in stage_obj.inputs or key in stage_obj.optional_inputs
            if known and not references and value not in (None, "", []):  # a glob matching nothing fails now
                given[key] = sources.resolve_input(sources.input_kind(type(stage_obj), key), value,
                                                   f"{stage_obj.kind}: input '{key}'")
        for required in stage_obj.inputs:
            if wiring.get(required) in (None, ""):
                raise MissingArtifact(f"pipeline.stages.{name}.{required}: required input "
                                      f"({stage_obj.inputs[required]}) is not set")
        stage_obj.check_data(given)
        planned[name] = (stage_obj, wiring)
    check_plan(cfg, planned)
    return planned


def check_plan(cfg: dict[str, Any], planned: dict[str, tuple[Stage, dict[str, Any]]]) -> None:
    """Checks that need the run's context, for every stage before any runs: :meth:`~Stage.preflight`
    (e.g. the pretrainer's model preset against its model type)."""
    for name, (stage_obj, _) in planned.items():
        context = context_for(cfg, name, None)
        if context.hardware.device == "cuda":
            context.hardware.use_cuda()  # hardware=gpu on a machine without one fails now, not at the first GPU stage
        stage_obj.preflight(context)


def _run_planned(cfg, settings: RunSettings, planned, run_dir: Path, main: RunContext,
                 held: list | None = None) -> RunResult:
    force = settings.force
    main.run_dir = run_dir
    if main.is_main_process:
        artifacts.write_json_atomic(run_dir / "config.json", cfg)
    result = RunResult(run_dir=run_dir)
    pm = plugin_manager()
    try:
        pm.hook.lmforge_pipeline_start(run_dir=run_dir, config=cfg, context=main)
    finally:
        _show_warnings(held or [])
        if held:
            held.clear()  # shown once
    node_of = {name: dict(cfg[name]) for name in planned}
    if main.world_size > 1:
        from . import distributed

        distributed.join(cpu=not main.hardware.use_cuda())
    for name, (stage_obj, wiring) in planned.items():
        inputs = {key: _resolve_input(value, result.artifacts) for key, value in wiring.items()}
        checked = stage_obj.check_inputs(inputs)
        node = node_of[name]
        entry = registry().entry(node.get("kind", name), node["plugin"])
        output_dir = run_dir / name
        context = context_for(cfg, name, run_dir)
        context.work_dir = run_dir / ".work" / name

        args = (name, stage_obj, node, checked, output_dir, cfg, force)
        if main.world_size > 1:  # decided (inputs hashed) once, by the main process
            decided = None
            if main.is_main_process:
                try:
                    decided = _plan_stage(*args)
                except Exception as exc:
                    distributed.from_main({"error": f"{type(exc).__name__}: {exc}"})
                    raise
            decided = distributed.from_main(decided)
            if "error" in decided:
                raise distributed.MainFailed(f"{name}: the main process failed: {decided['error']}")
        else:
            decided = _plan_stage(*args)
        input_hashes, fingerprint = decided["hashes"], decided["fingerprint"]
        if decided["manifest"] is not None:
            manifest = decided["manifest"]
            result.artifacts[name], result.manifests[name] = output_dir, manifest
            result.skipped.append(name)
            pm.hook.lmforge_stage_skipped(stage_name=name, artifact=output_dir, manifest=manifest, context=context)
            continue
        path, manifest = run_stage(stage_obj, checked, output_dir, context, fingerprint=fingerprint,
                                   extra_manifest={"plugin": node["plugin"], "origin": entry.origin},
                                   input_hashes=input_hashes)
        result.artifacts[name], result.manifests[name] = path, manifest
        result.ran.append(name)
    pm.hook.lmforge_pipeline_end(run_dir=run_dir, manifests=result.manifests, context=main)
    return result
