"""Data-parallel meta-training: the tasks of each meta-batch sharded over processes, gradients all-reduced by hand.

Under ``torchrun --nproc-per-node N`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``), :func:`from_env` joins the process group: gloo on CPU, NCCL for CUDA tensors (each process on GPU
``LOCAL_RANK``). No DDP wrapper: only the prompt (and SUPMER's ψ) is trained, and DDP cannot run the double backward
of second-order MAML.

Every process holds the whole state (prompt, optimizer, RNGs, learner state) and samples the same meta-batch from the
same RNG; process r scores only its contiguous shard of the tasks (sizes differ by at most one, so a meta-batch need
not divide by the world size). A learner's loss and gradient are means over its tasks, so the global mean is
``sum_r n_r * mean_r / T``: :meth:`Shards.mean` computes it with one all-reduce. Every process then applies the same
update and stays identical, the result does not depend on the world size (up to float summation order), and a
checkpoint written by rank 0 resumes under any world size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from workbench.config import ConfigError


@dataclass(frozen=True)
class Shards:
    """This process's place in the data-parallel group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    backend: str = "none"

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the process that locks, writes and reports."""
        return self.rank == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous share of ``n`` items (the first ``n % world`` ranks get one more)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def split(self, items: list) -> list:
        start, stop = self.bounds(len(items))
        return items[start:stop]

    def mean(self, value: torch.Tensor, n_local: int, n_total: int) -> torch.Tensor:
        """The mean over all ranks' items of a quantity each rank gives as the mean over its ``n_local`` items."""
        if not self.active:
            return value
        out = value.detach().float() * n_local if n_local else torch.zeros_like(value, dtype=torch.float32)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return (out / n_total).to(value.dtype)

    def mean_dict(self, values: dict, n_local: int, n_total: int, device) -> dict:
        """:meth:`mean` over the numeric entries of ``values`` (one all-reduce); the others are kept as they are."""
        keys = [k for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not self.active or not keys:
            return values
        vec = self.mean(torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64),
                        n_local, n_total)
        return {**values, **{k: float(v) for k, v in zip(keys, vec.tolist())}}

    def broadcast(self, obj):
        """``obj`` of rank 0, on every rank (a picklable Python object)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_batch(self, meta_batch: int, val_tasks: int) -> None:
        """Every process needs at least one task of each meta-batch and of meta-validation."""
        for key, n in (("meta.meta_batch", meta_batch), ("meta.val_tasks", val_tasks)):
            if self.world > n:
                raise ConfigError(f"{key} ({n}) is smaller than the data-parallel world size ({self.world}): every "
                                  f"process needs at least one task (raise {key} or run fewer processes)")

    def describe(self) -> dict:
        return {"world_size": self.world, "backend": self.backend}


def from_env() -> Shards:
    """The group of this process: joined (once) when ``WORLD_SIZE`` > 1, as torchrun sets it; else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shards()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    return Shards(rank=dist.get_rank(), world=dist.get_world_size(), backend=str(dist.get_backend()))
