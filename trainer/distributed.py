"""Data-parallel training under ``torchrun``: one process per rank, gradients all-reduced.

When ``WORLD_SIZE`` is above 1 the process group starts from the ``torchrun`` environment
(``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``) with gloo on CPU and nccl on
CUDA. Every rank builds the same encoder and batch plan from the same data and seed, runs its
share of the batches, and takes the stop decisions rank 0 broadcasts (wall-clock time differs
between ranks, so no rank decides alone). Only rank 0 writes checkpoints and artifacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.torch_runtime import torch_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports progress."""
        return self.rank == 0


def join(device: str = "auto") -> World:
    """Join the process group when ``WORLD_SIZE`` > 1; a world of one otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    target = torch_device(device)
    if size <= 1:
        return World(0, 1, target)
    if target.type == "cuda":
        target = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), target)


def leave(world: World) -> None:
    """Leave the process group this module joined."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(network: nn.Module, world: World) -> nn.Module:
    """The network wrapped in DistributedDataParallel when there is more than one rank."""
    if world.size == 1:
        return network
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)


def agree(flag: bool, world: World) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if world.size == 1:
        return flag
    value = torch.tensor([int(flag)], device=world.device if world.device.type == "cuda" else None)
    dist.broadcast(value, src=0)
    return bool(value.item())


def mean_across(value: float, world: World) -> float:
    """The mean of ``value`` over ranks (for logging a loss)."""
    if world.size == 1:
        return value
    tensor = torch.tensor(
        [value], dtype=torch.float64, device=world.device if world.device.type == "cuda" else None
    )
    dist.all_reduce(tensor)
    return float(tensor.item()) / world.size
