"""Run a pipeline's pretrainer under ``accelerate launch``: DDP, FSDP or DeepSpeed, one node or many.

    accelerate launch --config_file conf/accelerate/ddp.yml -m lmforge.plugins.pretrainers.launch \\
        pipeline=shakespeare_char tokenizer=char pretrainer=shakespeare_char model=nanogpt_char

Why a launcher: the pipeline runner writes each artifact atomically, and under N processes only one may
write. Here the main process runs the pipeline up to and including the pretrainer (``lmforge.run`` with
the later stages cut off, so the artifact, manifest and fingerprint are exactly what ``lmforge run``
makes); every other process waits for the stages before it, then trains with the main one (its output
goes to a scratch dir it deletes). Later stages then run with plain ``lmforge run``, which finds the
pretrainer's artifact complete and skips it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import lmforge
    from lmforge.pipeline import STAGE_REF, resolve_config

    argv = sys.argv[1:] if argv is None else argv
    cfg = resolve_config(lmforge.compose(argv))
    stages = dict((cfg.get("pipeline") or {}).get("stages") or {})
    names = [n for n in stages if dict(cfg.get(n) or {}).get("kind", n) == "pretrainer"]
    if not names:
        raise lmforge.ConfigError("pipeline.stages: no pretrainer stage to launch")
    target = names[0]
    keep = list(stages)[:list(stages).index(target) + 1]
    cfg["pipeline"]["stages"] = {name: stages[name] for name in keep}

    from accelerate import PartialState

    hardware = lmforge.build_params(lmforge.Hardware, cfg.get("hardware") or {}, where="hardware")
    state = PartialState(cpu=not hardware.use_cuda())  # joins the process group (gloo on CPU, nccl on GPU)
    if state.is_main_process:
        lmforge.run(cfg)
        return 0
    run_cfg = cfg.get("run") or {}
    run_dir = Path(run_cfg.get("root", "runs")) / str(run_cfg.get("name", "default"))
    inputs = {key: (run_dir / value[len(STAGE_REF):] if isinstance(value, str) and value.startswith(STAGE_REF)
                    else Path(value)) for key, value in dict(stages[target]).items()}
    context = lmforge.RunContext(stage_name=target, run_dir=run_dir, work_dir=run_dir / ".work" / target,
                                 hardware=hardware, seed=int(run_cfg.get("seed", 0)), model=dict(cfg.get("model") or {}),
                                 config=cfg, quiet=True)
    hardware.apply_threads()
    scratch = Path(tempfile.mkdtemp(prefix=f"lmforge-rank{state.process_index}-"))
    try:
        lmforge.stage(target, cfg).run(inputs, scratch, context)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # one line, as the CLI does
        from lmforge import LmforgeError

        if isinstance(exc, LmforgeError):
            print(f"lmforge: error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise
