"""Run a pipeline up to and including its pretrainer under ``accelerate launch`` (DDP, FSDP, DeepSpeed).

    accelerate launch --config_file conf/accelerate/ddp.yml -m lmforge.plugins.pretrainers.launch \\
        pipeline=shakespeare_char tokenizer=char pretrainer=shakespeare_char model=nanogpt_char

Why a launcher beside ``accelerate launch -m lmforge.cli run``: pretraining is the stage that wants many
processes or machines; the later ones (SFT, alignment, sampling) often do not. This runs the pipeline with
the stages after the pretrainer cut off, on every process, with the same coordination as a whole run
(``lmforge.distributed``: the main process alone runs the single-process stages and writes artifacts); the
later stages then run with plain ``lmforge run``, which finds the pretrainer's artifact complete and skips it.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import lmforge
    from lmforge.pipeline import resolve_config

    argv = sys.argv[1:] if argv is None else argv
    cfg = resolve_config(lmforge.compose(argv))
    stages = dict((cfg.get("pipeline") or {}).get("stages") or {})
    names = [n for n in stages if dict(cfg.get(n) or {}).get("kind", n) == "pretrainer"]
    if not names:
        raise lmforge.ConfigError("pipeline.stages: no pretrainer stage to launch")
    keep = list(stages)[:list(stages).index(names[0]) + 1]
    cfg["pipeline"]["stages"] = {name: stages[name] for name in keep}
    lmforge.run(cfg)
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
