"""Batch sampling with Hugging Face ``generate``: prompts in, ``completions.jsonl`` out.

Why ``generate``: it implements every sampling control users expect (temperature, top-k, top-p, min-p,
repetition penalty, stop strings, several EOS ids) on any transformers causal LM, CPU or GPU. lmforge
adds the chat template with a system prompt, left-padded batches, ``n`` samples per prompt and seeding,
and stops at the end-of-turn token as well as at end-of-text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge import Sampler

from ..common import load_causal_lm, load_tokenizer, seed_everything
from ..formats import load_prompts


@dataclass
class GenerateParams:
    max_new_tokens: int = 48
    do_sample: bool = True
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    min_p: float | None = None
    repetition_penalty: float = 1.0
    n: int = 1  # samples per prompt
    batch_size: int = 8
    system_prompt: str | None = None
    stop_strings: list[str] = field(default_factory=list)
    stop_tokens: list[str] = field(default_factory=lambda: ["<|end|>"])  # extra EOS tokens (end of turn)
    max_prompts: int | None = None
    format: str = "auto"


class HFGenerateSampler(Sampler):
    """Samples ``n`` completions per prompt in left-padded batches and writes completions.jsonl."""

    config_class = GenerateParams

    def run(self, inputs, output_dir, context):
        import torch

        cfg = self.config
        seed_everything(context.seed)
        tokenizer = load_tokenizer(inputs["model"])
        tokenizer.padding_side = "left"
        model = load_causal_lm(inputs["model"], context).eval()
        if context.hardware.use_cuda():
            model = model.to("cuda")
        prompts = load_prompts(inputs["prompts"], cfg.format)[: cfg.max_prompts]
        if cfg.system_prompt:
            prompts = [p if p[0]["role"] == "system" else [{"role": "system", "content": cfg.system_prompt}] + p
                       for p in prompts]
        eos_ids = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(t) for t in cfg.stop_tokens
                                              if t in tokenizer.get_vocab()]
        generation = dict(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                          eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id,
                          repetition_penalty=cfg.repetition_penalty)
        if cfg.do_sample:
            generation.update(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, min_p=cfg.min_p)
        if cfg.stop_strings:
            generation.update(stop_strings=list(cfg.stop_strings), tokenizer=tokenizer)
        rows = []
        for start in range(0, len(prompts), cfg.batch_size):
            batch = prompts[start:start + cfg.batch_size]
            encoded = tokenizer.apply_chat_template(batch, add_generation_prompt=True, return_tensors="pt",
                                                    padding=True, return_dict=True).to(model.device)
            with torch.no_grad():
                output = model.generate(**encoded, num_return_sequences=cfg.n, **generation)
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for offset, text in enumerate(texts):
                for stop in cfg.stop_strings:
                    text = text.split(stop)[0] if stop in text else text
                prompt_index = start + offset // cfg.n
                rows.append({"index": prompt_index, "sample": offset % cfg.n,
                             "prompt": prompts[prompt_index], "completion": text})
        with open(Path(output_dir) / "completions.jsonl", "w") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        context.log_metrics({"prompts": len(prompts), "completions": len(rows)})
        return output_dir
