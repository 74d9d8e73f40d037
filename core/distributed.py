"""How the processes of one ``accelerate launch`` run agree on a pipeline.

Why: under ``accelerate launch --num_processes N`` every process runs ``lmforge run``. Training stages
are collective (all N train together); cleaning, tokenizer training and sampling are single-process by
nature, and only the main process writes artifacts. The processes therefore need to (1) let the main
process decide what to skip and hash the inputs once, (2) wait while it runs a single-process stage, and
(3) learn that the artifact is written (or that the main process failed, with its message). All three
are one ``broadcast_object_list`` from rank 0 on the process group accelerate starts (joined through
``accelerate.PartialState``: gloo on CPU, NCCL on GPU).

The waits use a separate gloo group with its own timeout (``LMFORGE_RANK_WAIT`` seconds, default a day):
a rank that waits for an hours-long cleaning step holds no GPU collective, so NCCL's watchdog (10-30
minutes) never fires for it, and the training stages keep accelerate's default group and timeout.

Nothing here imports torch until a run has more than one process.
"""

from __future__ import annotations

import os

from .errors import LmforgeError

DEFAULT_WAIT_SECONDS = 24 * 3600.0
_GROUP: dict = {}
_LEAVE_REGISTERED = False


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank under ``accelerate launch`` (0: the main process, or a run of one)."""
    return int(os.environ.get("RANK", "0"))


def wait_seconds() -> float:
    return float(os.environ.get("LMFORGE_RANK_WAIT", DEFAULT_WAIT_SECONDS))


def join(cpu: bool) -> None:
    """Join the launch's process group through accelerate (a no-op when already joined or alone)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist
    from accelerate import PartialState

    if not dist.is_initialized():
        PartialState._reset_state()  # a stage may have torn the group down; join afresh
        _GROUP.clear()
    PartialState(cpu=cpu)
    global _LEAVE_REGISTERED
    if not _LEAVE_REGISTERED:
        import atexit

        atexit.register(_leave)
        _LEAVE_REGISTERED = True


def _leave() -> None:
    """Tear the process group down before the interpreter does: a gloo group left to the C++ static
    destructors at exit can abort the process ("terminate called without an active exception") while its
    peer is still closing the connection — a run that succeeded would then exit with SIGABRT."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _wait_group():
    import torch.distributed as dist

    if not dist.is_initialized():
        raise LmforgeError("distributed run: no process group; start lmforge with `accelerate launch`")
    key = id(dist.group.WORLD)
    if key not in _GROUP:
        from datetime import timedelta

        _GROUP.clear()
        _GROUP[key] = dist.new_group(backend="gloo", timeout=timedelta(seconds=wait_seconds()))
    return _GROUP[key]


def from_main(value=None):
    """Rank 0's ``value`` on every rank (the others pass None and block until rank 0 gets here)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_wait_group())
    return box[0]


class MainFailed(LmforgeError):
    """Raised on the other ranks when the main process failed in a stage they were waiting on."""
