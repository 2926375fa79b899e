"""Data-parallel training through torchrun: thin wrappers over torch.distributed.

`torchrun --nproc_per_node=N -m visionzoo train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; we
join the process group (NCCL on GPUs, gloo on CPU), wrap the model in
DistributedDataParallel, shard the data per rank, and log and save on rank 0 only.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as td
from torch import Tensor, nn

from visionzoo.errors import UserError


def world_size() -> int:
    return td.get_world_size() if td.is_available() and td.is_initialized() else 1


def rank() -> int:
    return td.get_rank() if td.is_available() and td.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group if torchrun started us; returns this rank's device."""
    if not launched_by_torchrun() or td.is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        have = torch.cuda.device_count()
        if local >= have:
            raise UserError(
                f"torchrun started local rank {local} but this machine has {have} CUDA "
                f"device{'s' * (have != 1)}: use --nproc_per_node={have}, or --device cpu to "
                "train with gloo on CPU"
            )
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def no_sync(model: nn.Module):
    """Skip the gradient all-reduce on accumulation micro-steps."""
    return (
        model.no_sync()
        if isinstance(model, nn.parallel.DistributedDataParallel)
        else contextlib.nullcontext()
    )


def all_reduce_sum(*tensors: Tensor) -> tuple[Tensor, ...]:
    if world_size() == 1:
        return tensors
    out = []
    for t in tensors:
        t = t.clone()
        td.all_reduce(t, op=td.ReduceOp.SUM)
        out.append(t)
    return tuple(out)


def barrier() -> None:
    if world_size() > 1:
        td.barrier()
