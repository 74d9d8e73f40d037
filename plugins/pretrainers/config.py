"""The pretrainers' settings (``pretrainer.*``), shared by the HF-Trainer plugin and the lean loop, checked
when the stage is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.errors import ConfigError, close_match
from lmforge.plugins.lib.executors import EXECUTORS, ExecutorChoice, RayConfig, SlurmConfig, check_executor

SCHEDULERS = ("cosine", "wsd", "linear", "constant")


@dataclass
class PretrainConfig:
    max_steps: int = 200
    batch_size: int = 8  # sequences per device per micro-step
    grad_accum: int = 1
    block_size: int = 128  # tokens of context per sequence
    stride: int | None = None  # training window start every `stride` tokens; None = block_size (packing)
    val_fraction: float = 0.05  # tail share of the token stream held out for validation
    learning_rate: float = 1e-3
    min_lr: float = 0.0  # where cosine / wsd / linear decay ends
    lr_scheduler: str = "cosine"  # cosine | wsd | linear | constant
    warmup_steps: int = 20
    decay_steps: int | None = None  # wsd: length of the final decay (None = 20% of max_steps)
    weight_decay: float = 0.1  # on matrices only, not norms / biases
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = no clipping
    eval_steps: int = 100
    eval_batches: int | None = None  # None = the whole validation split
    eval_batch_size: int | None = None  # None = batch_size
    save_steps: int = 50
    logging_steps: int = 10
    text_field: str = "text"
    cache_dir: str | None = None  # token cache; None = $LMFORGE_CACHE_DIR or ~/.cache/lmforge/tokens
    tokenize_workers: int | None = None  # processes that tokenise the corpus into shards; None = every core
    # the token-shard build on datatrove's executors (its DocumentTokenizer; shard_build.py): in_process = the
    # workers above; local | ray | slurm with the cleaner's options (tokenize_workers = tasks at once there)
    tokenize_executor: str = "in_process"
    tokenize_tasks: int = 0  # executor tasks; 0 = one per input file, at most one per core
    tokenize_slurm: SlurmConfig = field(default_factory=SlurmConfig)
    tokenize_ray: RayConfig = field(default_factory=RayConfig)
    peak_tflops: float | None = None  # for MFU; None = known GPUs only
    compile: bool | None = None  # torch.compile the model; None = hardware.compile
    init_from: str | None = None  # continued pretraining: a model dir or Hub id (its weights and tokenizer)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        if self.lr_scheduler not in SCHEDULERS:
            raise ConfigError(f"pretrainer.lr_scheduler: unknown '{self.lr_scheduler}'"
                              f"{close_match(self.lr_scheduler, SCHEDULERS)}; one of {', '.join(SCHEDULERS)}")
        for key in ("max_steps", "batch_size", "grad_accum", "block_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"pretrainer.{key}: must be >= 1, got {getattr(self, key)}")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"pretrainer.stride: must be >= 1 or null, got {self.stride}")
        if self.tokenize_workers is not None and self.tokenize_workers < 1:
            raise ConfigError(f"pretrainer.tokenize_workers: must be >= 1 or null, got {self.tokenize_workers}")
        if self.tokenize_executor not in EXECUTORS:
            raise ConfigError(f"pretrainer.tokenize_executor: unknown '{self.tokenize_executor}'"
                              f"{close_match(self.tokenize_executor, EXECUTORS)}; one of {', '.join(EXECUTORS)}")
        if self.tokenize_tasks < 0:
            raise ConfigError(f"pretrainer.tokenize_tasks: must be >= 0, got {self.tokenize_tasks}")
        if self.tokenize_executor == "slurm" and not (self.tokenize_slurm.partition or self.tokenize_slurm.dry_run):
            raise ConfigError("pretrainer.tokenize_slurm.partition: required by pretrainer.tokenize_executor=slurm")

    def check_machine(self) -> None:
        """Checks of this machine, when the run is planned (``preflight``): the executor's packages, ``sbatch``."""
        if self.tokenize_executor != "in_process":
            check_executor(self.tokenize_choice())

    def tokenize_choice(self) -> ExecutorChoice:
        """The executor of the token-shard build (``shard_build.py``), with the keys that name its options."""
        return ExecutorChoice(self.tokenize_executor, self.tokenize_workers or 0, self.tokenize_slurm,
                              self.tokenize_ray, key="pretrainer.tokenize_executor",
                              slurm_key="pretrainer.tokenize_slurm", job="tokenize")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"pretrainer.val_fraction: must be in [0, 1), got {self.val_fraction}")
