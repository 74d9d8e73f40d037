"""What a training step reads: the train/validation split of the token stream, windows of ``block_size + 1``
tokens, and the seeded order in which samples visit them.

- **Split**: the first ``1 - val_fraction`` of the token stream trains, the rest validates — a contiguous
  split, as nanoGPT does (for Tiny Shakespeare with the char tokenizer it is exactly its 90/10 split).
- **Windows**: training windows of ``block_size + 1`` tokens start every ``stride`` tokens (stride 1 is
  nanoGPT's random offsets, stride = block_size is plain packing); validation windows never overlap.
  Sample order is a seeded permutation per epoch, a pure function of (seed, step), so a resumed run
  sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch


def split_tokens(tokens, val_fraction: float):
    """nanoGPT's contiguous split: the first int(n * (1 - val_fraction)) tokens train, the rest validate."""
    cut = int(len(tokens) * (1.0 - val_fraction)) if val_fraction > 0 else len(tokens)
    return tokens[:cut], tokens[cut:]


class Windows:
    """Windows of ``block_size + 1`` tokens starting every ``stride`` tokens of a token array."""

    def __init__(self, tokens, block_size: int, stride: int):
        self.tokens, self.block_size, self.stride = tokens, block_size, stride
        span = block_size + 1
        self.count = (len(tokens) - span) // stride + 1 if len(tokens) >= span else 0

    def __len__(self) -> int:
        return self.count

    def batch(self, indices):
        """(len(indices), block_size + 1) int64 tensor."""
        starts = np.asarray(indices, dtype=np.int64) * self.stride
        rows = starts[:, None] + np.arange(self.block_size + 1)[None, :]
        return torch.from_numpy(np.asarray(self.tokens[rows], dtype=np.int64))


class SampleOrder:
    """Which window each training sample reads: a seeded permutation per epoch, a pure function of position."""

    def __init__(self, n_windows: int, seed: int):
        self.n, self.seed = n_windows, seed
        self._epoch, self._perm = -1, None

    def windows(self, first: int, count: int):
        out = []
        for position in range(first, first + count):
            epoch, offset = divmod(position, self.n)
            if epoch != self._epoch:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perm, self._epoch = torch.randperm(self.n, generator=generator).tolist(), epoch
            out.append(self._perm[offset])
        return out


def sample_position(step: int, micro: int, rank: int, *, grad_accum: int, world: int, batch_size: int) -> int:
    """First global sample index of (step, micro-step, rank); one process with world x batch reads the same."""
    return ((step * grad_accum + micro) * world + rank) * batch_size
