"""Pretraining with a lean ``accelerate`` loop: the nanoGPT training loop, on any transformers causal LM.

Why a second pretrainer beside the HF Trainer one: at small and medium sizes the Trainer's per-step
machinery (callbacks, dataloader workers, logging syncs) costs several percent of the step time, and
reproducing a reference run (nanoGPT's Tiny Shakespeare) wants its exact loop: per-step learning rate
from nanoGPT's warmup + cosine formula, AdamW with decay on matrices only, gradient clipping, gradient
accumulation with DDP's sync skipped on inner micro-steps, random windows of the token stream. The loop
is ``accelerate`` (DDP / FSDP / DeepSpeed come from ``accelerate launch``), bf16 autocast and SDPA on GPU
with optional ``torch.compile``, fp32 on CPU. On a GPU the step is shaped for throughput: the model and
its loss are one compiled module (``model.with_loss``: the logits never leave the graph in fp32), AdamW
is fused, batches go through pinned memory with an asynchronous copy, and nothing in a step waits for the
GPU except the logging step, so the CPU prepares the next batch while the GPU runs.

Checkpoints (``accelerator.save_state``: model as safetensors, optimizer, RNG states) are written every
``save_steps`` to ``checkpoint-N.partial`` and renamed when whole, so a kill never leaves a checkpoint
that looks complete. Sample order is a pure function of (seed, step), so after a SIGKILL the re-run
loads the newest checkpoint and ends bit-for-bit where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from lmforge import Pretrainer
from lmforge.errors import ConfigError
from lmforge.plugins.lib.checkpoints import (
    begin_partial,
    commit_partial,
    latest_checkpoint,
    loop_state,
    stop_if_not_finite,
)
from lmforge.plugins.pretrainers.config import PretrainConfig
from lmforge.plugins.pretrainers.corpus import Corpus, load_corpus, training_summary
from lmforge.plugins.pretrainers.model import (
    build_model_config,
    check_model_config,
    decay_groups,
    flops_per_token,
    initial_model,
    peak_flops,
    with_loss,
    without_loss,
)
from lmforge.plugins.pretrainers.schedule import lr_at
from lmforge.plugins.pretrainers.shard_input import check_shard_input
from lmforge.plugins.pretrainers.windows import SampleOrder, sample_position


@dataclass
class Loop:
    """What every step of the loop uses: the prepared model and optimizer, the data, where it runs."""

    cfg: PretrainConfig
    context: object
    accelerator: object
    model: object  # the language model with its loss, as accelerate prepared it
    forward: object  # ``model``, compiled or not
    optimizer: object
    corpus: Corpus
    order: SampleOrder
    checkpoints: Path
    flops_token: float
    peak: float | None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


class LeanPretrainer(Pretrainer):
    """nanoGPT's loop over a transformers model with accelerate; same data and schedule as ``hf_trainer``."""

    config_class = PretrainConfig
    check_data = check_shard_input  # a directory of token shards is checked before any stage runs

    def preflight(self, context):
        check_model_config(context.model)
        self.config.check_machine()

    def run(self, inputs, output_dir, context):
        cfg = self.config
        accelerator = make_accelerator(context.hardware)
        accelerator.wait_for_everyone()  # the main process prepared the work dir first (lmforge.pipeline)
        tokenizer, corpus = load_corpus(cfg, inputs, context, accelerator.is_main_process)
        loop = prepare_loop(cfg, context, accelerator, tokenizer, corpus)
        start_step = 0
        resume_from = latest_checkpoint(loop.checkpoints)
        if resume_from is not None:
            accelerator.load_state(str(resume_from))
            start_step = loop_state(resume_from)["step"]
        final_loss, val_loss = train_steps(loop, start_step)
        stop_if_not_finite(final_loss, cfg.max_steps, loop.checkpoints)
        if val_loss is None or cfg.eval_steps <= 0 or cfg.max_steps % max(cfg.eval_steps, 1):
            val_loss = evaluate(loop)
        summary = training_summary(corpus, len(corpus.val), val_loss, final_train_loss=final_loss,
                                   steps=cfg.max_steps, resumed_from_step=start_step,
                                   world_size=accelerator.num_processes)
        save_final(loop, tokenizer, summary, Path(output_dir))
        # no accelerator.end_training(): it destroys the process group, and under `accelerate launch` the
        # pipeline's later stages (SFT, alignment) train on the same group
        return output_dir

    @staticmethod
    def _save(accelerator, checkpoints: Path, step: int, keep: int = 2) -> None:
        """Write ``checkpoint-<step>`` atomically (``.partial`` then rename) and keep the newest ``keep``."""
        if accelerator.is_main_process:
            begin_partial(checkpoints, step)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(checkpoints / f"checkpoint-{step}.partial"), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            commit_partial(checkpoints, step, keep=keep)
        accelerator.wait_for_everyone()


def make_accelerator(hardware):
    """An ``Accelerator`` for the hardware (bf16/fp16 autocast on GPU); DeepSpeed is refused with the way out."""
    from accelerate import Accelerator

    precision = hardware.dtype_name()
    accelerator = Accelerator(cpu=not hardware.use_cuda(),
                              mixed_precision={"bf16": "bf16", "fp16": "fp16"}.get(precision, "no"))
    if accelerator.state.deepspeed_plugin is not None:
        raise ConfigError("pretrainer=lean drives DDP and FSDP; DeepSpeed owns its own step and accumulation, "
                          "so launch DeepSpeed with pretrainer=hf_trainer")
    return accelerator


def prepare_loop(cfg: PretrainConfig, context, accelerator, tokenizer, corpus: Corpus) -> Loop:
    """Seeded model init, fused AdamW with decay on matrices only, accelerate's prepare, optional compile."""
    import torch
    from accelerate.utils import set_seed

    hardware = context.hardware
    set_seed(context.seed)
    lm = initial_model(cfg, tokenizer, context)
    flops_token = flops_per_token(lm, cfg.block_size)
    if hardware.use_cuda():
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 leftovers (norms, loss) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    # fused AdamW (one kernel per step, CPU and CUDA) is ~5x faster than the per-tensor default at small sizes
    optimizer = torch.optim.AdamW(decay_groups(lm, cfg.weight_decay), lr=cfg.learning_rate,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, fused=True)
    # the model and its loss as one module: compiled together, the logits never leave the graph in fp32
    model, optimizer = accelerator.prepare(with_loss(lm), optimizer)
    compile_model = hardware.compile if cfg.compile is None else cfg.compile
    return Loop(cfg, context, accelerator, model, torch.compile(model) if compile_model else model, optimizer,
                corpus, SampleOrder(len(corpus.train), context.seed), Path(context.checkpoint_dir()), flops_token,
                peak_flops(cfg.peak_tflops, hardware.use_cuda()))


def loss_of(loop: Loop, batch):
    """The mean next-token loss of a batch of windows."""
    accelerator = loop.accelerator
    # pinned host memory: the copy is truly asynchronous, so the CPU prepares the next batch while
    # the GPU still runs this step (a pageable copy would wait for the GPU to drain first)
    batch = (batch.pin_memory() if accelerator.device.type == "cuda" else batch).to(accelerator.device,
                                                                                   non_blocking=True)
    with accelerator.autocast():
        return loop.forward(batch)


def evaluate(loop: Loop) -> float | None:
    """Validation loss over (the first ``eval_batches`` of) the validation windows, shared across processes."""
    import torch

    val, cfg, accelerator = loop.corpus.val, loop.cfg, loop.accelerator
    if len(val) == 0:
        return None
    loop.model.eval()
    size = cfg.eval_batch_size or cfg.batch_size
    starts = list(range(0, len(val), size))
    starts = starts[:cfg.eval_batches] if cfg.eval_batches else starts
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    with torch.no_grad():
        for start in starts[accelerator.process_index::accelerator.num_processes]:
            batch = val.batch(range(start, min(start + size, len(val))))
            total[0] += loss_of(loop, batch).double() * batch.shape[0]
            total[1] += batch.shape[0]
    total = accelerator.reduce(total, reduction="sum")
    loop.model.train()
    return float(total[0] / total[1])


def optimizer_step(loop: Loop, step: int):
    """One optimiser step: nanoGPT's lr for ``step``, ``grad_accum`` micro-batches (DDP sync on the last only),
    clipping. Returns (summed loss tensor, grad norm or None, lr)."""
    import torch

    cfg, accelerator = loop.cfg, loop.accelerator
    lr = lr_at(step, cfg)
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    loss = torch.zeros((), device=accelerator.device)
    for micro in range(cfg.grad_accum):
        first = sample_position(step, micro, accelerator.process_index, grad_accum=cfg.grad_accum,
                                world=accelerator.num_processes, batch_size=cfg.batch_size)
        batch = loop.corpus.train.batch(loop.order.windows(first, cfg.batch_size))
        sync = accelerator.no_sync(loop.model) if micro < cfg.grad_accum - 1 else nullcontext()
        with sync:
            micro_loss = loss_of(loop, batch) / cfg.grad_accum
            accelerator.backward(micro_loss)
        loss += micro_loss.detach()
    grad_norm = accelerator.clip_grad_norm_(loop.model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
    loop.optimizer.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, lr


def train_steps(loop: Loop, start_step: int) -> tuple[float, float | None]:
    """Steps ``start_step`` .. ``max_steps`` with logging, evaluation and checkpoints on their intervals.
    Returns the last step's loss and the last validation loss (None when none was taken)."""
    import torch
    from tqdm.auto import tqdm

    cfg, context, accelerator = loop.cfg, loop.context, loop.accelerator
    world = accelerator.num_processes
    tokens_per_step = cfg.batch_size * cfg.grad_accum * world * cfg.block_size
    loop.model.train()
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc="pretraining", unit="step",
               disable=context.quiet or not loop.main)
    window_started, window_steps = time.perf_counter(), 0
    val_loss = None
    loss = torch.zeros((), device=accelerator.device)
    for step in range(start_step, cfg.max_steps):
        loss, grad_norm, lr = optimizer_step(loop, step)
        done = step + 1
        window_steps += 1
        bar.update(1)
        if done % cfg.logging_steps == 0 or done == cfg.max_steps:
            loss_value = float(accelerator.reduce(loss, reduction="mean"))
            stop_if_not_finite(loss_value, done, loop.checkpoints)
            elapsed = time.perf_counter() - window_started
            tokens_per_s = tokens_per_step * window_steps / max(elapsed, 1e-9)
            metrics = {"loss": loss_value, "lr": lr, "tokens_per_s": tokens_per_s,
                       "ms_per_step": 1000 * elapsed / window_steps}
            if grad_norm is not None:
                metrics["grad_norm"] = float(grad_norm)
            if loop.peak:
                metrics["mfu"] = loop.flops_token * tokens_per_s / world / loop.peak
            if loop.main:
                context.log_metrics(metrics, step=done)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            window_started, window_steps = time.perf_counter(), 0
        if cfg.eval_steps > 0 and (done % cfg.eval_steps == 0 or done == cfg.max_steps):
            val_loss = evaluate(loop)
            if val_loss is not None and loop.main:
                context.log_metrics({"val_loss": val_loss}, step=done)
                if not context.quiet:
                    tqdm.write(f"step {done}: val loss {val_loss:.4f}")
            window_started, window_steps = time.perf_counter(), 0
        if cfg.save_steps > 0 and done % cfg.save_steps == 0 and done < cfg.max_steps:
            stop_if_not_finite(float(accelerator.reduce(loss, reduction="mean")), done, loop.checkpoints)
            LeanPretrainer._save(accelerator, loop.checkpoints, done)
            window_started, window_steps = time.perf_counter(), 0
    bar.close()
    return float(accelerator.reduce(loss, reduction="mean")), val_loss


def save_final(loop: Loop, tokenizer, summary: dict, output_dir: Path) -> None:
    """The main process writes the model dir (safetensors), the tokenizer and ``train_summary.json``."""
    accelerator = loop.accelerator
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(loop.model).lm
    state_dict = without_loss(accelerator.get_state_dict(loop.model))
    if loop.main:
        loop.context.log_metrics(summary, step=loop.cfg.max_steps)
        unwrapped.save_pretrained(str(output_dir), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(output_dir))
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()


# Re-exported for callers that build the same model outside a run.
__all__ = ["LeanPretrainer", "build_model_config"]
