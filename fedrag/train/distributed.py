"""Data-parallel training across processes (`torchrun --nproc-per-node N -m fedrag train ...`).

Every process holds the whole model and takes its share of each global batch; gradients are
summed across processes with `torch.distributed` before the optimizer step, so every process
takes the same step and the weights stay identical without a broadcast. A loss is weighted by
the share of the global batch's units it averages over (answer tokens for a token-averaged
loss, examples otherwise: [`StepOutput.units`][fedrag.train.protocol.StepOutput]), so the
update is that of one process on the global batch.

The losses call several sub-models' methods rather than one `forward`, which is what
`DistributedDataParallel`'s hooks are attached to; an explicit all-reduce of the trainable
gradients after backward is the same collective DDP issues, without those hooks.

Not equivalent to one process: random streams (dropout) differ per process, and in-batch
negatives of the contrastive stage are those of each process's share of the batch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch


def world_size() -> int:
    """How many processes train together (1 outside `torchrun`)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside `torchrun`)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_writer() -> bool:
    """Whether this process writes outputs, logs and checkpoints (rank 0 only)."""
    return rank() == 0


def init_from_env(device: str) -> str:
    """Join the process group `torchrun` describes in the environment; returns the device
    this process trains on (`cuda:LOCAL_RANK` on GPUs). Outside `torchrun`, `device` as given."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    dist = torch.distributed
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu" if device == "auto" else device


@contextmanager
def process_group(device: str):
    """[`init_from_env`][fedrag.train.distributed.init_from_env] for the block, then leave
    the group. After a block that ended normally every process first waits for the others
    (rank 0 may still be writing): a process that exits with its gloo group alive can abort
    in the group's destructor ("terminate called without an active exception")."""
    joined = init_from_env(device)
    ok = False
    try:
        yield joined
        ok = True
    finally:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            try:
                if ok:
                    dist.barrier()
            finally:
                dist.destroy_process_group()


def shard(batch: list) -> list:
    """This process's share of a global batch (every process draws the same batch order)."""
    return batch[rank() :: world_size()]


def total(value: float) -> float:
    """`value` summed over the processes."""
    if world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item())


def share_of_mean(loss: torch.Tensor, units: int) -> torch.Tensor:
    """This process's `loss` (a mean over its `units`) weighted by its share of the global
    batch's units, so the gradients summed by [`sum_gradients`][fedrag.train.distributed.sum_gradients]
    are those of the global batch's mean (`loss` itself with one process)."""
    if world_size() == 1:
        return loss
    return loss * (units / total(units))


# the work a run's cost counts, which every process does its share of
_SUMMED_COST = ("examples", "retriever_tokens", "generator_tokens", "forward_passes", "backward_passes", "flops")


def total_cost(cost):
    """A stage's `Cost` with the work of every process summed
    (`cost` itself with one process)."""
    if world_size() == 1:
        return cost
    for f in _SUMMED_COST:
        setattr(cost, f, type(getattr(cost, f))(total(getattr(cost, f))))
    return cost.with_throughput()


def broadcast(obj):
    """Rank 0's `obj`, on every process."""
    if world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def sum_gradients(params: dict[str, torch.nn.Parameter]) -> None:
    """Sum each trainable parameter's gradient over the processes (a missing gradient counts as zero)."""
    if world_size() == 1:
        return
    for p in params.values():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
