"""The K candidates per prompt that people rank, drawn with the ``hf_generate`` sampler stage."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmforge
from lmforge.errors import ConfigError
from lmforge.hub import resolve_model_ref
from lmforge.plugins.rank.session import RankSession
from lmforge.plugins.samplers.hf_generate import HFGenerateSampler


@dataclass
class SamplingSettings:
    """How the K candidate answers of each prompt are drawn for people to rank (``lmforge rank --k …``)."""

    k: int = 4  # candidates per prompt: every pair of them can become a preference pair
    max_new_tokens: int = 128
    temperature: float = 1.0  # the model's own distribution: candidates differ enough to be worth ranking
    top_p: float = 0.95  # but no tail tokens that make every candidate obviously broken
    seed: int = 0  # the same candidates when a session is restarted
    system_prompt: str | None = None
    max_prompts: int | None = None


def sample_candidates(model_dir, prompts_file: Path, session_dir: Path, settings: SamplingSettings,
                      device: str = "auto") -> RankSession:
    """Draw K candidates per prompt with the ``hf_generate`` sampler stage and start a session."""
    if settings.k < 2:
        raise ConfigError(f"--k: {settings.k}; ranking needs at least 2 candidates per prompt")
    sampler = HFGenerateSampler(n=settings.k, max_new_tokens=settings.max_new_tokens, do_sample=True,
                                temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                                system_prompt=settings.system_prompt, max_prompts=settings.max_prompts)
    context = lmforge.RunContext(stage_name="rank.sampler", hardware=lmforge.Hardware(device=device),
                                 seed=settings.seed)
    samples_dir, _ = lmforge.run_stage(sampler, {"model": model_dir, "prompts": prompts_file},
                                       session_dir / "samples", context)
    by_prompt: dict[int, dict[str, Any]] = {}
    with open(samples_dir / "completions.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            entry = by_prompt.setdefault(row["index"], {"prompt": row["prompt"], "texts": []})
            entry["texts"].append(row["completion"])
    order = sorted(by_prompt)
    meta = {"model": str(resolve_model_ref(model_dir).path.resolve()),
            "prompts": str(Path(prompts_file).resolve()),
            "sampling": settings.__dict__, "created": time.time()}
    return RankSession.create(session_dir, [by_prompt[i]["prompt"] for i in order],
                              [by_prompt[i]["texts"] for i in order], meta)


def open_or_create(args) -> RankSession:
    session_dir = Path(args.session)
    if (session_dir / "candidates.jsonl").is_file():
        session = RankSession(session_dir)
        meta = json.loads((session_dir / "session.json").read_text(encoding="utf-8"))
        if args.model_dir and resolve_model_ref(args.model_dir).path.resolve() != Path(meta["model"]):
            raise ConfigError(f"--session {session_dir}: holds candidates of {meta['model']}, not "
                              f"{args.model_dir}; pick another --session directory")
        if args.prompts and Path(args.prompts).resolve() != Path(meta["prompts"]):
            raise ConfigError(f"--session {session_dir}: holds prompts from {meta['prompts']}, not "
                              f"{args.prompts}; pick another --session directory")
        print(f"lmforge rank: resuming {session_dir} ({len(session.prompts)} prompts)", file=sys.stderr)
        return session
    if not args.model_dir or not args.prompts:
        raise ConfigError(f"--session {session_dir}: no session there yet; give <model_dir> and --prompts to "
                          "sample candidates")
    settings = SamplingSettings(k=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed, system_prompt=args.system_prompt,
                                max_prompts=args.max_prompts)
    return sample_candidates(args.model_dir, Path(args.prompts), session_dir, settings, args.device)
