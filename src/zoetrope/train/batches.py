"""Which samples each step trains on, fetched ahead by DataLoader workers.

Sample k of a run (k counts samples over all ranks) is always the dataset's sample k, and its
noise, time and prompt dropout come from a generator seeded with (seed, k). Step s trains on
samples s * batch_size .. (s + 1) * batch_size - 1, each rank on a contiguous slice. So what a
step computes depends neither on the number of processes nor on the number of workers, and
resuming at step s is just starting the index stream there.

Workers only decide *where* `dataset.sample(k)` runs: in `num_workers` worker processes (real
clips decode in ~0.5 s each, in parallel with the step) or, with 0, in the training process.
The order of samples is never rearranged (not even to suit a kernel).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import LoopConfig
from .distributed import Dist

Item = tuple[int, tuple[Any, str]]  # (global sample index, (frames or latent, caption))


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator owning sample `index`'s noise, time and prompt dropout."""
    return torch.Generator().manual_seed((seed << 40) + index)


def to_video(frames) -> Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [-1, 1]."""
    x = torch.as_tensor(frames)
    return x.permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def local_indices(step: int, batch_size: int, d: Dist) -> list[int]:
    """Global sample indices this rank handles at `step` (a contiguous slice of the batch)."""
    per_rank = batch_size // d.world
    start = step * batch_size + d.rank * per_rank
    return list(range(start, start + per_rank))


class _Samples(Dataset):
    """`dataset.sample(k)` as a map-style dataset whose items keep their index k."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, index: int) -> Item:
        return index, self.dataset.sample(index)


class _Steps(Sampler):
    """This rank's index list of every step from `start` to `steps` - 1."""

    def __init__(self, start: int, steps: int, batch_size: int, d: Dist) -> None:
        self.start, self.steps, self.batch_size, self.d = start, steps, batch_size, d

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield local_indices(step, self.batch_size, self.d)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def _as_list(items: list[Item]) -> list[Item]:
    return items  # samples vary in size: no stacking (module level: workers pickle it)


def step_batches(dataset, cfg: LoopConfig, d: Dist, start: int, num_workers: int) -> DataLoader:
    """Each remaining step's samples of this rank, [(index, sample), ...], in step order."""
    return DataLoader(_Samples(dataset), batch_sampler=_Steps(start, cfg.steps, cfg.batch_size, d),
                      num_workers=num_workers, collate_fn=_as_list,
                      # its own generator: creating an iterator then draws nothing from the global
                      # RNG, whose state checkpoints save and resume restores
                      generator=torch.Generator().manual_seed(cfg.seed))


def micro_batches(items: list[Item], cfg: LoopConfig, tokens_of: Callable) -> Iterator[list[Item]]:
    """Split this rank's samples into micro-batches: by token budget (NaViT) or into grad_accum."""
    if cfg.token_budget > 0:
        from ..patches import budget_batches
        yield from budget_batches(items, cfg.token_budget, lambda item: tokens_of(item[1][0]))
        return
    n = max(1, math.ceil(len(items) / cfg.grad_accum))
    for i in range(0, len(items), n):
        yield items[i:i + n]
