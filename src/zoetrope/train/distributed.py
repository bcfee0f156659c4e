"""Distribution for the training loop: torchrun's processes, model wrapping and full state dicts.

Under torchrun every process is one rank: NCCL on GPUs, gloo on CPU. The model is wrapped with
FSDP2 (`fully_shard`, per block the task names, then the whole module) or DDP; state dicts are
gathered full and on the CPU, so checkpoints and exports do not depend on the number of ranks.
Without torchrun all of this reduces to one process and no wrapping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import LoopConfig


@dataclass
class Dist:
    """This process's place in the run."""

    rank: int = 0  # global rank
    world: int = 1  # number of processes
    device: torch.device = torch.device("cpu")  # where this rank computes
    local_world: int = 1  # processes on this node (they share its CPU cores)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Initialise torch.distributed from torchrun's environment (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, world, device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_mean(value: Tensor) -> Tensor:
    """Mean of `value` over the ranks (itself in one process)."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (so all stop together)."""
    value = torch.tensor(float(flag))
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value):
    """Rank 0's `value` on every rank (a picklable object)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 and torch.compile keep the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap(module: nn.Module, blocks: list[nn.Module], cfg: LoopConfig, d: Dist) -> nn.Module:
    """Activation checkpointing of `blocks`, then FSDP2 / DDP under torchrun, then compile."""
    if cfg.activation_checkpointing:
        from torch.utils.checkpoint import checkpoint
        for block in blocks:  # instance-level forward: state-dict names stay unchanged
            block.forward = lambda *a, _f=block.forward: checkpoint(_f, *a, use_reentrant=False)
    model = module
    if d.world > 1 and cfg.distributed == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in blocks:
            fully_shard(block)
        fully_shard(module)
    elif d.world > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(module, device_ids=ids)
    if cfg.compile:
        model.compile()
    return model


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and (unless `optimizer` is None) optimizer state dicts."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options) if optimizer else {}
    return weights, optim


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict,
                    optim: dict) -> None:
    """Load full state dicts into a (possibly sharded) model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim, options=options)


def full_tensor(t: Tensor) -> Tensor:
    """A DTensor's full value (FSDP2 shards), or the tensor itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def shard_like(full: Tensor, param: Tensor) -> Tensor:
    """Shard a full tensor like `param` (a DTensor under FSDP2), or copy it onto its device."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(full.to(param.device), param.device_mesh, param.placements)
    return full.to(param.device)


def gather(value) -> list:
    """Every rank's `value` (a picklable object), in rank order."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out
