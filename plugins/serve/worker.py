"""The generation worker: one thread owns the model and decodes waiting requests as batches.

Why a worker of our own: ``generate`` runs one batch at a time and is not thread-safe, so every request goes
onto a queue that one worker thread drains. Requests waiting together with the same sampling settings are
decoded as one left-padded batch (greedy answers do not depend on the batch they ride in), a per-row tracker
ends each row at its own length / stop string / end-of-turn token and streams its text as its tokens arrive,
so concurrent requests never see each other's output. A seeded sampling request runs in a batch of its own,
so the same seed gives the same answer. A request whose client disconnects is dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from lmforge.plugins.lib.generation import cut_at_stop, left_padded, sampling_kwargs
from lmforge.plugins.lib.models import pad_token_id
from transformers import StoppingCriteriaList, set_seed


@dataclass(frozen=True)
class Delta:
    """New text of one choice of a streaming job."""

    choice: int
    text: str


@dataclass(frozen=True)
class Done:
    """One choice finished: its whole text, why it stopped (stop | length) and how many tokens it took."""

    choice: int
    text: str
    reason: str
    tokens: int


@dataclass(frozen=True)
class Failed:
    """The batch this job rode in failed; the job's request answers 500 with ``message``."""

    message: str


Event = Delta | Done | Failed


@dataclass(frozen=True)
class Sampling:
    """A request's sampling knobs (named as :func:`~lmforge.plugins.lib.generation.sampling_kwargs` reads
    them); requests with equal ones can share a batch."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float | None
    repetition_penalty: float


@dataclass
class Job:
    """One HTTP request's generation: ``n`` rows of the same prompt; events go to ``emit`` (thread-safe)."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling
    stop: tuple[str, ...]
    n: int
    stream: bool
    seed: int | None
    emit: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def batch_key(self) -> tuple:
        # Rows share a generate call only when the logits processors are the same; a seeded job runs alone.
        return (self.sampling, id(self) if self.seed is not None else None)


class RowTracker:
    """A ``StoppingCriteria`` that follows every row of a batch: its own limit, stop strings, EOS ids.

    Called by ``generate`` after each new token; streams text deltas for streaming rows, holding back what
    could be the start of a stop string (or half a UTF-8 character) so that no stop text ever leaks.
    """

    def __init__(self, rows: list[tuple[Job, int]], tokenizer, eos_ids: set[int]):
        self.rows, self.tokenizer, self.eos_ids = rows, tokenizer, eos_ids
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.shown = ["" for _ in rows]
        self.done = [False for _ in rows]

    def __call__(self, input_ids, scores, **kwargs):
        for row, token in enumerate(input_ids[:, -1].tolist()):
            if self.done[row]:
                continue
            job, _ = self.rows[row]
            if job.cancelled.is_set():
                self.done[row] = True
                continue
            if token in self.eos_ids:
                self.finish(row, "stop")
                continue
            self.tokens[row].append(token)
            if job.stop or job.stream:
                text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
                text, stopped = cut_at_stop(text, job.stop)
                if stopped:
                    self.finish(row, "stop", text)
                    continue
                if job.stream:
                    self.show(row, text[:self.safe_length(text, job.stop)])
            if len(self.tokens[row]) >= job.max_new_tokens:
                self.finish(row, "length")
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    @staticmethod
    def safe_length(text: str, stops) -> int:
        safe = len(text.rstrip("\ufffd"))
        for stop in stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    safe = min(safe, len(text) - size)
                    break
        return safe

    def show(self, row: int, text: str) -> None:
        job, choice = self.rows[row]
        if len(text) > len(self.shown[row]) and text.startswith(self.shown[row]):
            job.emit(Delta(choice, text[len(self.shown[row]):]))
            self.shown[row] = text

    def finish(self, row: int, reason: str, text: str | None = None) -> None:
        job, choice = self.rows[row]
        if text is None:
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        self.done[row] = True
        if job.stream:
            self.show(row, text)
        job.emit(Done(choice, text, reason, len(self.tokens[row])))

    def finish_all(self) -> None:
        for row in range(len(self.rows)):
            if not self.done[row] and not self.rows[row][0].cancelled.is_set():
                self.finish(row, "length")


class GenerationWorker:
    """One thread that owns the model: takes jobs off a queue and decodes compatible ones as one batch."""

    def __init__(self, model, tokenizer, eos_ids: list[int], max_batch_size: int = 16,
                 batch_wait_s: float = 0.005):
        self.model, self.tokenizer, self.eos_ids = model, tokenizer, eos_ids
        self.pad_id = pad_token_id(tokenizer)
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.jobs: queue.Queue = queue.Queue()
        self.waiting: list[Job] = []
        self.batch_sizes: list[int] = []  # rows of every generate call, for tests and benchmarks
        self.batch_tokens: list[int] = []  # tokens generated by every generate call
        self.dropped = 0  # jobs whose client went away before they started
        self.thread = threading.Thread(target=self._loop, name="lmforge-generate", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _take(self, block: bool) -> bool:
        try:
            job = self.jobs.get(block=block, timeout=None if block else 0)
        except queue.Empty:
            return True
        if job is None:
            return False
        self.waiting.append(job)
        return True

    def _loop(self) -> None:
        while True:
            if not self._take(block=not self.waiting):
                return
            time.sleep(self.batch_wait_s)  # let requests that arrive together share a batch
            while not self.jobs.empty():
                if not self._take(block=False):
                    return
            live = [job for job in self.waiting if not job.cancelled.is_set()]
            self.dropped += len(self.waiting) - len(live)
            self.waiting = live
            if not self.waiting:
                continue
            key, batch, rows = self.waiting[0].batch_key(), [], 0
            for job in self.waiting:
                if job.batch_key() == key and (not batch or rows + job.n <= self.max_batch_size):
                    batch.append(job)
                    rows += job.n
            self.waiting = [job for job in self.waiting if job not in batch]
            self._generate(batch)

    def _generate(self, batch: list[Job]) -> None:
        rows = [(job, choice) for job in batch for choice in range(job.n)]
        tracker = RowTracker(rows, self.tokenizer, set(self.eos_ids))
        kwargs = sampling_kwargs(batch[0].sampling)
        try:
            if batch[0].seed is not None:
                set_seed(batch[0].seed % 2**32)  # numpy takes 32-bit seeds; OpenAI's are 64-bit
            input_ids, attention_mask = left_padded([job.prompt_ids for job, _ in rows], self.pad_id,
                                                    self.model.device)
            with torch.no_grad():
                self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    max_new_tokens=max(job.max_new_tokens for job in batch),
                                    eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                                    stopping_criteria=StoppingCriteriaList([tracker]), **kwargs)
            self.batch_sizes.append(len(rows))
            self.batch_tokens.append(sum(len(tokens) for tokens in tracker.tokens))
            tracker.finish_all()
        except Exception as exc:  # noqa: BLE001 - one failed batch answers its own requests with 500; the worker lives on
            for job in batch:
                job.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))
