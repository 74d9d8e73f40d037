"""PPO RLHF: optimise a policy against a reward, on a KL leash to the model it started from.

Why lmforge has its own: TRL removed its PPO trainer (1.13), and RLHF with PPO is the classic alignment
recipe the project's sources describe. This file follows "The N Implementation Details of RLHF with PPO"
(Huang et al., 2024), in one loop a reader can follow top to bottom. Each iteration:

1. **Rollout.** Sample a response per prompt from the policy (full distribution, ``temperature`` scaled,
   no top-k/top-p, so the log-probabilities used below are those of the sampling distribution). A
   response ends at its first stop token (end of turn / end of text) or at ``max_response_length``.
2. **Score.** The task reward comes from a reward model dir (input ``reward_model``, e.g. the output of
   ``aligner=reward_model``) and/or named ``reward_function`` plugins, weighted and summed. Reward-model
   scores are first normalised (``normalize_reward_model``: z-scores under running mean and variance over all
   rollouts so far, resumed with the checkpoint), because a reward model's raw scale is arbitrary: a raw
   score of ±0.15 beside a missing-EOS penalty of 1.0 lets the penalty dominate the signal. Responses that
   never emitted a stop token then lose ``missing_eos_penalty``.
3. **Per-token reward.** ``-kl_coef * KL`` at every response token, plus the score on the last one; the KL
   estimator is ``kl_estimator`` (k1 = ``logp_policy - logp_reference``, or k3), and ``kl`` is logged with
   that same estimator (``kl_k1`` and ``kl_k3`` both also logged). The reference is a frozen copy of the input model. ``kl_coef`` is fixed or
   adapted towards ``target_kl`` (Ziegler et al., 2019).
4. **Advantages.** Generalised advantage estimation (``gamma``, ``lam``) against the value model's per-token
   estimates; returns = advantages + values; advantages whitened over the batch's response tokens.
5. **Optimise.** ``ppo_epochs`` passes over shuffled minibatches: clipped policy-ratio loss, clipped value
   loss (``vf_coef``), gradient clipping, Adam (eps 1e-5). Dropout stays off throughout, so the ratio
   compares like with like.

The value model is either a separate network (a sequence-classification model read per token,
initialised from the reward model as Huang et al. do, or from the policy when the reward is a function) or
a scalar head on the policy's own last hidden state (``value_model: shared``). Logged per iteration:
reward, score, KL, entropy, clip fractions, value loss, approximate KL, response length, EOS fraction.

Prompts (with ``system_prompt`` in front, fitted to ``max_prompt_length``) and ``rewards`` (NAME or
NAME:WEIGHT) are read as every online-RL aligner reads them (``online_rl``), so PPO, GRPO and RLOO take
the same data and the same config form.

Resume: every ``save_steps`` iterations the policy and value weights (safetensors), the optimizer state,
the step and the current ``kl_coef`` go into the stage's checkpoint dir. Randomness (prompt order,
sampling) is derived from (seed, step, process), so a resumed run replays the exact draws the
uninterrupted run would have made and ends with the same weights. Works in one CPU process and under
``accelerate launch`` (each process rolls out its own share of the prompts; gradients are averaged).
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmforge import Aligner
from lmforge.errors import ConfigError
from lmforge.plugins.aligners.online_rl import (
    PromptsAndRewards,
    check_prompts_and_rewards,
    check_rewards,
    online_prompts,
)
from lmforge.plugins.aligners.rewards import CombinedReward, last_user_text, reward_components
from lmforge.plugins.lib.checkpoints import latest_checkpoint, loop_state, save_atomic
from lmforge.plugins.lib.models import load_causal_lm, load_tokenizer, pad_token_id, save_model_dir

STATE_FILE = "ppo_state.json"


@dataclass
class PPOConfig(PromptsAndRewards):  # rewards, reward_params, reward_model_weight, system_prompt, prompt_field,
    #                                  format, max_prompt_length: the keys every online-RL aligner takes
    max_steps: int = 20  # PPO iterations, each one rollout batch and its optimisation
    rollout_batch_size: int = 8  # prompts per iteration (per process)
    num_mini_batches: int = 2  # optimiser steps per PPO epoch
    micro_batch_size: int | None = None  # forward/backward chunk within a minibatch (None: the whole minibatch)
    ppo_epochs: int = 4
    learning_rate: float = 1e-5
    adam_eps: float = 1e-5
    max_grad_norm: float = 1.0
    max_response_length: int = 48  # new tokens per response
    temperature: float = 0.7
    stop_tokens: list[str] = field(default_factory=lambda: ["<|end|>"])  # besides the tokenizer's EOS
    missing_eos_penalty: float | None = 1.0  # subtracted from the score of a response with no stop token
    normalize_reward_model: bool = True  # reward-model scores -> running z-scores before weights and penalties
    kl_coef: float = 0.05
    adaptive_kl: bool = False
    target_kl: float = 6.0  # per-sequence KL the adaptive controller aims at
    kl_horizon: int = 10000
    kl_estimator: str = "k1"  # k1: logp - logp_ref; k3: (r - 1) - log r, r = p_ref / p (non-negative); the
    #                            penalty, the logged `kl` and the adaptive controller all use this one
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_rewards: bool = False
    value_model: str = "separate"  # separate | shared (scalar head on the policy's last hidden state)
    reward_batch_size: int = 16
    save_steps: int = 10
    logging_steps: int = 1

    def __post_init__(self):  # checked when the params are built, so a typo fails before any stage runs
        from lmforge.params import at_least, in_range, one_of

        one_of(self, "kl_estimator", ("k1", "k3"))
        one_of(self, "value_model", ("separate", "shared"))
        at_least(self, 1, "max_steps", "rollout_batch_size", "num_mini_batches", "micro_batch_size", "ppo_epochs",
                 "max_response_length", "reward_batch_size", "logging_steps")
        at_least(self, 0, "learning_rate", "temperature", "adam_eps", exclusive=True)
        at_least(self, 0, "kl_coef", "max_grad_norm", "vf_coef", "cliprange", "cliprange_value", "save_steps")
        in_range(self, "gamma", 0.0, 1.0)
        in_range(self, "lam", 0.0, 1.0)
        check_prompts_and_rewards(self)


@dataclass
class PPORun:
    """What one PPO run works with, built once by :meth:`PPOAligner._setup` and read by every step."""

    accelerator: Any
    model: Any  # policy and value in one module (``_policy_and_value``), prepared by the accelerator
    optimizer: Any
    reference: Any  # the frozen input model
    tokenizer: Any
    rows: list[dict[str, Any]]  # prompt records (``online_rl.online_prompts``) with their token ``ids``
    columns: list[str]  # the records' other fields, handed to reward functions
    stop_ids: list[int]
    pad_id: int
    scorer: Any  # the reward model (``reward_model.RewardScorer``) or None
    reward_functions: list  # ``(name, callable, weight)`` of the configured reward functions
    checkpoint_root: Path
    state: dict[str, Any]  # step and kl_coef: the start values, or the resumed checkpoint's


def _policy_and_value(policy, value_model=None, hidden_size: int | None = None):
    """One module holding policy and value, so one optimizer and one DDP wrapper cover both."""
    import torch

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy
            self.value_model = value_model
            self.value_head = None
            if value_model is None:
                self.value_head = torch.nn.Linear(hidden_size, 1).to(policy.dtype)
                _zero_(self.value_head)

        def forward(self, input_ids, attention_mask, position_ids):
            shared = self.value_head is not None
            out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False, output_hidden_states=shared)
            if shared:
                values = self.value_head(out.hidden_states[-1]).squeeze(-1)
            else:
                backbone = getattr(self.value_model, self.value_model.base_model_prefix)
                hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).last_hidden_state
                values = self.value_model.score(hidden).squeeze(-1)
            return out.logits, values

    return Module()


def _zero_(head) -> None:
    """A new value head starts at 0, so early advantages are the rewards, not the noise of a random head."""
    import torch

    with torch.no_grad():
        for parameter in head.parameters():
            parameter.zero_()


def _token_logprobs(logits, tokens, temperature: float):
    """log p(token) under ``softmax(logits / temperature)``, without materialising the full log-softmax."""
    logits = logits.float() / temperature
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def _masked_mean(values, mask, dim=None):
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def _masked_whiten(values, mask, shift_mean: bool = True):
    mean = _masked_mean(values, mask)
    var = _masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * (var + 1e-8).rsqrt()
    return whitened if shift_mean else whitened + mean


def _generalised_advantages(rewards, values, gamma: float, lam: float):
    """GAE over the response tokens, last to first: advantages and returns (= advantages + values)."""
    import torch

    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + values


class PPOAligner(Aligner):
    """RLHF with PPO against a reward model and/or reward functions, with a frozen reference model."""

    config_class = PPOConfig
    optional_inputs: ClassVar[dict[str, str]] = {"reward_model": "a reward model (sequence classification, 1 label)"}

    # ---- the run ---------------------------------------------------------------------------------------

    def run(self, inputs, output_dir, context):
        import torch

        cfg = self.config
        run = self._setup(inputs, context)
        accelerator, rank, world = run.accelerator, run.accelerator.process_index, run.accelerator.num_processes
        kl_coef = float(run.state["kl_coef"])
        progress = self._progress(accelerator, context, run.state["step"])
        for step in range(run.state["step"] + 1, cfg.max_steps + 1):
            torch.manual_seed(context.seed * 1_000_003 + step * 101 + rank)
            batch = self._batch_rows(run.rows, step, world, rank, context.seed)
            with accelerator.autocast():
                rollout = self._rollout(run, batch, kl_coef)
            stats = self._optimise(accelerator, run.model, run.optimizer, rollout, step)
            stats.update(rollout["stats"])
            stats = {k: accelerator.reduce(torch.tensor(v, device=accelerator.device), "mean").item()
                     for k, v in stats.items()}
            if cfg.adaptive_kl:
                error = max(-0.2, min(0.2, stats["kl"] / cfg.target_kl - 1))
                kl_coef *= 1 + error * cfg.rollout_batch_size * world / cfg.kl_horizon
            stats["kl_coef"] = kl_coef
            if accelerator.is_main_process and (step % cfg.logging_steps == 0 or step == cfg.max_steps):
                context.log_metrics(stats, step=step)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.3f}")
            if cfg.save_steps > 0 and step % cfg.save_steps == 0 and step < cfg.max_steps:
                self._save_checkpoint(run, step, kl_coef)
        if progress is not None:
            progress.close()
        if accelerator.is_main_process:
            save_model_dir(accelerator.unwrap_model(run.model).policy, run.tokenizer, Path(output_dir))
        accelerator.wait_for_everyone()
        return output_dir

    # ---- setup: config, prompts, rewards, models, resume ------------------------------------------------

    def _check_config(self, inputs):
        cfg = self.config
        if "reward_model" not in inputs and not cfg.rewards:
            raise ConfigError("aligner.rewards: ppo needs a reward: give the 'reward_model' input (a reward model "
                              "dir) or name reward functions, e.g. 'aligner.rewards=[length]'")
        if cfg.rollout_batch_size % cfg.num_mini_batches:
            raise ConfigError(f"aligner.num_mini_batches: {cfg.num_mini_batches} does not divide "
                              f"aligner.rollout_batch_size={cfg.rollout_batch_size}")

    def _setup(self, inputs, context) -> PPORun:
        """Accelerator, prompts, rewards, the resumed state, models and optimizer, in that order."""
        import torch
        from accelerate import Accelerator

        cfg = self.config
        self._check_config(inputs)
        # Trained weights stay fp32 (bf16 weights would round away small Adam updates); on GPU the forward
        # passes run under bf16/fp16 autocast. The frozen reference and reward model load in that dtype.
        precision = context.hardware.dtype_name()
        accelerator = Accelerator(cpu=not context.hardware.use_cuda(),
                                  mixed_precision=precision if precision in ("bf16", "fp16") else "no")
        tokenizer = load_tokenizer(inputs["model"])
        rows = online_prompts(inputs["data"], cfg, tokenizer)
        reward_functions = reward_components(cfg.rewards, cfg.reward_params) if cfg.rewards else []
        check_rewards(reward_functions, rows[0])
        columns = sorted({key for row in rows for key in row} - {"prompt"})
        for row in rows:
            row["ids"] = list(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                                            tokenize=True, return_dict=False))
        stop_ids = sorted({tokenizer.eos_token_id} | {tokenizer.convert_tokens_to_ids(t) for t in cfg.stop_tokens
                                                      if t in tokenizer.get_vocab()})
        pad_id = pad_token_id(tokenizer)

        checkpoint_root = context.checkpoint_dir() / "ppo"
        resume = latest_checkpoint(checkpoint_root, prefix="step-", marker=STATE_FILE)
        state = loop_state(resume, STATE_FILE) if resume else {"step": 0, "kl_coef": cfg.kl_coef}
        self._moments = list(state.get("score_moments", [0.0, 0.0, 0.0]))  # count, mean, sum of squared deviations

        torch.manual_seed(context.seed)
        reference = load_causal_lm(inputs["model"], context).eval().requires_grad_(False)
        model, scorer = self._policy_value_and_scorer(inputs, context, tokenizer, resume, accelerator.device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                      eps=cfg.adam_eps, weight_decay=0.0)
        model, optimizer = accelerator.prepare(model, optimizer)
        if resume:
            optimizer.load_state_dict(torch.load(resume / "optimizer.pt", map_location="cpu", weights_only=True))
        reference.to(accelerator.device)
        return PPORun(accelerator=accelerator, model=model, optimizer=optimizer, reference=reference,
                      tokenizer=tokenizer, rows=rows, columns=columns, stop_ids=stop_ids, pad_id=pad_id,
                      scorer=scorer, reward_functions=reward_functions, checkpoint_root=checkpoint_root,
                      state=state)

    def _policy_value_and_scorer(self, inputs, context, tokenizer, resume: Path | None, device):
        """The trained module (policy + value, fp32, from the checkpoint when resuming) and the reward model.

        A separate value model starts from the reward model when it reads the policy's vocabulary, else from
        the policy with a zeroed head; a shared one is a zeroed scalar head on the policy."""
        from lmforge.plugins.aligners.reward_model import RewardScorer, load_reward_model

        cfg = self.config
        fp32 = dataclasses.replace(context, hardware=dataclasses.replace(context.hardware, precision="fp32"))
        policy = load_causal_lm(resume / "policy" if resume else inputs["model"], fp32)
        policy.requires_grad_(True)
        scorer = None
        if "reward_model" in inputs:
            scorer = RewardScorer.from_dir(inputs["reward_model"], context, batch_size=cfg.reward_batch_size)
            scorer.model.requires_grad_(False).to(device)
        value_model = None
        if cfg.value_model == "separate":
            value_source = inputs["model"]
            if scorer is not None and scorer.tokenizer.get_vocab() == tokenizer.get_vocab():
                value_source = inputs["reward_model"]
            value_model, _ = load_reward_model(resume / "value" if resume else value_source, fp32)
            if not resume and value_source == inputs["model"]:
                _zero_(value_model.score)
        hidden_size = policy.config.get_text_config().hidden_size
        model = _policy_and_value(policy, value_model, hidden_size)
        if resume and cfg.value_model == "shared":
            from safetensors.torch import load_file

            model.value_head.load_state_dict(load_file(str(resume / "value_head.safetensors")))
        model.eval()  # no dropout anywhere: the PPO ratio must compare the same function
        return model, scorer

    def _progress(self, accelerator, context, done: int):
        if not accelerator.is_main_process or context.quiet:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.max_steps, initial=done, desc="ppo", unit="it")

    def _batch_rows(self, rows, step, world, rank, seed):
        """This process's prompts for ``step``: epochs walk a fresh seeded permutation of all prompts."""
        import torch

        per_step = self.config.rollout_batch_size * world
        start = (step - 1) * per_step
        picked = []
        for position in range(start, start + per_step):
            epoch, offset = divmod(position, len(rows))
            order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            picked.append(rows[int(order[offset])])
        return picked[rank::world]

    # ---- rollout: generate, score, per-token rewards, GAE ----------------------------------------------

    def _forward_chunks(self, module, ids, mask, positions, width):
        """Policy logits for response positions and values, in micro-batch chunks, without gradients."""
        import torch

        size = self.config.micro_batch_size or ids.shape[0]
        logits, values = [], []
        with torch.no_grad():
            for start in range(0, ids.shape[0], size):
                chunk = slice(start, start + size)
                out_logits, out_values = module(ids[chunk], mask[chunk], positions[chunk])
                logits.append(out_logits[:, width - 1:-1])
                values.append(out_values[:, width - 1:-1].float())
        return torch.cat(logits), torch.cat(values)

    def _rollout(self, run: PPORun, batch, kl_coef: float):
        """One rollout batch, ready to optimise: sequences, old log-probabilities and values, advantages."""
        import torch

        cfg = self.config
        sequences = self._generate(run, batch)
        logprobs, ref_logprobs, values = self._logprobs_and_values(run, sequences)
        texts = run.tokenizer.batch_decode(sequences["responses"], skip_special_tokens=True)
        score, reward = self._task_reward(run, batch, texts, sequences["has_stop"])

        response_mask = sequences["response_mask"]
        fmask = response_mask.float()
        log_ratio = (logprobs - ref_logprobs) * fmask
        k3 = ((-log_ratio).exp() - 1 + log_ratio) * fmask
        kl = log_ratio if cfg.kl_estimator == "k1" else k3
        rewards = -kl_coef * kl
        rewards[torch.arange(len(batch), device=reward.device), sequences["last"]] += reward
        if cfg.whiten_rewards:
            rewards = _masked_whiten(rewards, response_mask, shift_mean=False) * fmask
        values = values * fmask
        advantages, returns = _generalised_advantages(rewards, values, cfg.gamma, cfg.lam)
        advantages = _masked_whiten(advantages, response_mask) * fmask

        stats = {
            "reward": reward.mean().item(),
            "score": score.mean().item(),
            "kl": kl.sum(1).mean().item(),  # with the estimator in use (kl_estimator)
            "kl_k1": log_ratio.sum(1).mean().item(),
            "kl_k3": k3.sum(1).mean().item(),
            "non_score_reward": (-kl_coef * kl).sum(1).mean().item(),
            "rlhf_reward": (reward - kl_coef * kl.sum(1)).mean().item(),
            "response_length": response_mask.sum(1).float().mean().item(),
            "eos_fraction": sequences["has_stop"].float().mean().item(),
        }
        return {**sequences, "logprobs": logprobs, "values": values, "returns": returns, "advantages": advantages,
                "stats": stats}

    def _generate(self, run: PPORun, batch):
        """Left-padded prompts, one sampled response each, cut after its first stop token."""
        import torch

        cfg = self.config
        device = run.accelerator.device
        width = max(len(row["ids"]) for row in batch)
        query = torch.full((len(batch), width), run.pad_id, dtype=torch.long)
        query_mask = torch.zeros_like(query)
        for index, row in enumerate(batch):
            query[index, width - len(row["ids"]):] = torch.tensor(row["ids"])
            query_mask[index, width - len(row["ids"]):] = 1
        query, query_mask = query.to(device), query_mask.to(device)
        with torch.no_grad():
            generated = run.accelerator.unwrap_model(run.model).policy.generate(
                input_ids=query, attention_mask=query_mask, max_new_tokens=cfg.max_response_length,
                do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0, eos_token_id=run.stop_ids,
                pad_token_id=run.pad_id)
        responses = generated[:, width:]
        is_stop = torch.isin(responses, torch.tensor(run.stop_ids, device=device))
        has_stop = is_stop.any(1)
        last = torch.where(has_stop, is_stop.int().argmax(1), responses.shape[1] - 1)
        response_mask = torch.arange(responses.shape[1], device=device).unsqueeze(0) <= last.unsqueeze(1)
        responses = responses.masked_fill(~response_mask, run.pad_id)
        mask = torch.cat([query_mask, response_mask.long()], 1)
        return {"ids": torch.cat([query, responses], 1), "mask": mask, "positions": (mask.cumsum(1) - 1).clamp(min=0),
                "responses": responses, "response_mask": response_mask, "has_stop": has_stop, "last": last,
                "width": width}

    def _logprobs_and_values(self, run: PPORun, sequences):
        """Per response token: the policy's and the reference's log-probabilities, and the value estimates."""
        import torch

        ids, mask, positions, width = (sequences[k] for k in ("ids", "mask", "positions", "width"))
        logits, values = self._forward_chunks(run.accelerator.unwrap_model(run.model), ids, mask, positions, width)
        logprobs = _token_logprobs(logits, sequences["responses"], self.config.temperature)
        del logits
        with torch.no_grad():
            ref_logits = run.reference(input_ids=ids, attention_mask=mask, position_ids=positions,
                                       use_cache=False).logits[:, width - 1:-1]
            ref_logprobs = _token_logprobs(ref_logits, sequences["responses"], self.config.temperature)
        return logprobs, ref_logprobs, values

    def _task_reward(self, run: PPORun, batch, texts, has_stop):
        """(score, reward) per response: weighted reward functions plus the (normalised) reward model; the
        reward also loses ``missing_eos_penalty`` where no stop token came."""
        import torch

        cfg = self.config
        device = run.accelerator.device
        prompts = [row["prompt"] for row in batch]
        score = torch.zeros(len(texts))
        if run.reward_functions:  # the one weighted sum of reward functions (rewards.CombinedReward)
            columns = {key: [row.get(key) for row in batch] for key in run.columns}
            score += torch.tensor(CombinedReward(run.reward_functions)(
                list(texts), [last_user_text(p) for p in prompts], prompt_messages=prompts, **columns))
        score = score.to(device)
        if run.scorer is not None:
            model_score = torch.tensor(run.scorer.score(prompts, texts), dtype=torch.float).to(device)
            if cfg.normalize_reward_model:
                model_score = self._normalise(model_score, run.accelerator)
            score = score + cfg.reward_model_weight * model_score
        reward = score.clone()
        if cfg.missing_eos_penalty is not None:
            reward = reward - cfg.missing_eos_penalty * (~has_stop).float()
        return score, reward

    def _normalise(self, scores, accelerator):
        """Reward-model scores as z-scores under the running moments of every score seen so far (all processes)."""

        seen = accelerator.gather(scores.float()).cpu().double()
        count, mean, m2 = self._moments
        for value in seen.tolist():  # Welford: the same numbers on every process, resumable from three floats
            count += 1
            delta = value - mean
            mean += delta / count
            m2 += delta * (value - mean)
        self._moments = [count, mean, m2]
        std = (m2 / max(count - 1, 1)) ** 0.5
        return (scores - mean) / max(std, 1e-6)

    # ---- optimisation: PPO epochs over minibatches -------------------------------------------------------

    def _optimise(self, accelerator, model, optimizer, rollout, step):
        import torch

        cfg = self.config
        n = rollout["ids"].shape[0]
        mini = n // cfg.num_mini_batches
        micro = min(cfg.micro_batch_size or mini, mini)
        width = rollout["width"]
        sums: dict[str, float] = {}
        count = 0
        generator = torch.Generator().manual_seed(step)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=generator)
            for mini_start in range(0, n, mini):
                mini_indices = order[mini_start:mini_start + mini]
                optimizer.zero_grad(set_to_none=True)
                for micro_start in range(0, len(mini_indices), micro):
                    idx = mini_indices[micro_start:micro_start + micro].to(accelerator.device)
                    last_micro = micro_start + micro >= len(mini_indices)
                    sync = accelerator.no_sync(model) if not last_micro else nullcontext()
                    with sync:
                        stats = self._loss(model, rollout, idx, width)
                        accelerator.backward(stats.pop("loss") * len(idx) / len(mini_indices))
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {k: v / count for k, v in sums.items()}

    def _loss(self, model, rollout, idx, width):
        import torch

        cfg = self.config
        mask = rollout["response_mask"][idx]
        logits, values = model(rollout["ids"][idx], rollout["mask"][idx], rollout["positions"][idx])
        logits = logits[:, width - 1:-1]
        new_logprobs = _token_logprobs(logits, rollout["responses"][idx], cfg.temperature)
        new_values = values[:, width - 1:-1].float()

        old_values, returns = rollout["values"][idx], rollout["returns"][idx]
        clipped_values = old_values + (new_values - old_values).clamp(-cfg.cliprange_value, cfg.cliprange_value)
        value_losses = torch.max((new_values - returns) ** 2, (clipped_values - returns) ** 2)
        value_loss = 0.5 * _masked_mean(value_losses, mask)

        log_ratio = new_logprobs - rollout["logprobs"][idx]
        ratio = log_ratio.exp()
        advantages = rollout["advantages"][idx]
        policy_losses = torch.max(-advantages * ratio,
                                  -advantages * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange))
        policy_loss = _masked_mean(policy_losses, mask)
        loss = policy_loss + cfg.vf_coef * value_loss
        with torch.no_grad():
            scaled = logits.float() / cfg.temperature
            entropy = scaled.logsumexp(-1) - (scaled.softmax(-1) * scaled).sum(-1)
            stats = {
                "policy_loss": policy_loss.item(),
                "value_loss": value_loss.item(),
                "clipfrac": _masked_mean(((ratio - 1).abs() > cfg.cliprange).float(), mask).item(),
                "value_clipfrac": _masked_mean(((new_values - old_values).abs() > cfg.cliprange_value).float(),
                                               mask).item(),
                "approxkl": _masked_mean(0.5 * log_ratio ** 2, mask).item(),
                "entropy": _masked_mean(entropy, mask).item(),
                "ratio": _masked_mean(ratio, mask).item(),
            }
        stats["loss"] = loss
        return stats

    # ---- checkpoints -------------------------------------------------------------------------------------

    def _save_checkpoint(self, run: PPORun, step: int, kl_coef: float) -> None:
        """Write ``step-N`` atomically (``checkpoints.save_atomic``), keeping only the newest."""
        import torch

        accelerator = run.accelerator

        def write(partial: Path) -> None:
            unwrapped = accelerator.unwrap_model(run.model)
            unwrapped.policy.save_pretrained(str(partial / "policy"), safe_serialization=True)
            if unwrapped.value_head is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in unwrapped.value_head.state_dict().items()},
                          str(partial / "value_head.safetensors"))
            else:
                unwrapped.value_model.save_pretrained(str(partial / "value"), safe_serialization=True)
                run.tokenizer.save_pretrained(str(partial / "value"))
            torch.save(run.optimizer.state_dict(), partial / "optimizer.pt")

        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_atomic(run.checkpoint_root, step, write, {"kl_coef": kl_coef, "score_moments": self._moments}, keep=1,
                        prefix="step-", marker=STATE_FILE)
        accelerator.wait_for_everyone()
