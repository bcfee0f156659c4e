"""The sampling seam: denoisers as samplers see them, time grids, noise sources and the samplers.

Every sampler has the one signature given in `zoetrope.diffusion` and walks a time grid as data;
`build_denoiser`, `sampling_grid` and `sampler_from_config` build what a `DiffusionConfig` asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
from torch import Tensor

from ..config import DiffusionConfig
from ..errors import UserError
from .ddpm import DDPMDenoiser, DDPMSchedule, ddim_step, ddpm_grid, ddpm_step
from .flow import FlowDenoiser, flow_grid, flow_renoise
from .tokens import ModelFn, _keep_mask


Noise = Callable[[int], Tensor]  # noise(k): standard normal noise shaped like x for grid step k


@dataclass
class StepInfo:
    """What a sampler reports after each model call (progress bars, live previews)."""

    step: int  # model calls done, 1..total
    total: int  # model calls the whole grid takes (steps that jump back up call no model)
    t: Tensor  # (N,) float32 times the model saw (0 on kept tokens)
    x: Tensor  # (N, D) the latent after the step
    denoised: Tensor  # (N, D) the step's estimate of the clean latent x0


Callback = Callable[[StepInfo], None]


# --------------------------------------------------------------------------------------------
# Denoisers: a network wrapped with its objective's conventions
# --------------------------------------------------------------------------------------------


class Denoiser(Protocol):
    """What samplers call: the objective's prediction, and the clean latent it implies."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """Prediction for x (N, D) at times t (N,) in [0, 1]."""
        ...

    def denoised(self, x: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The clean latent x0 (N, D) that prediction `out` for x at t implies."""
        ...


def build_denoiser(config: DiffusionConfig, model: ModelFn) -> FlowDenoiser | DDPMDenoiser:
    """The denoiser of `config.objective` around `model`."""
    if config.objective == "flow":
        return FlowDenoiser(model)
    if config.objective == "ddpm":
        return DDPMDenoiser(model, DDPMSchedule.from_config(config), config.vlb_weight)
    raise UserError(f"unknown diffusion objective {config.objective!r}; known: flow, ddpm")


# --------------------------------------------------------------------------------------------
# Time grids: what a sampler walks, as data
# --------------------------------------------------------------------------------------------


def restart_grid(grid: Tensor, rounds: int, time: float, steps: int,
                 shift: float | Tensor = 1.0) -> Tensor:
    """`grid` then `rounds` rounds that jump back up to `time` and descend to 0 in `steps` steps.

    Restart sampling (Xu et al., arXiv 2306.14878): each round's descent follows `shift` like
    `flow_grid`'s, so a per-token shift gives a (K + 1, N) grid.
    """
    return torch.cat([grid, *[flow_grid(steps, time, shift) for _ in range(rounds)]])


def sampling_grid(config: DiffusionConfig, steps: int, shift: float | Tensor = 1.0) -> Tensor:
    """The grid `config` samples on: `steps` steps of its objective, then its restart rounds.

    `shift` is the flow's SD3 time shift, one or one per token (`resolution_shift`); DDPM grids
    take none (the config allows restarts only with the flow sampler).
    """
    if config.objective == "ddpm":
        grid = ddpm_grid(config.num_train_timesteps, steps, config.timestep_spacing)
    else:
        grid = flow_grid(steps, shift=shift)
    return restart_grid(grid, config.restarts, config.restart_time, config.restart_steps, shift)


# --------------------------------------------------------------------------------------------
# Noise sources
# --------------------------------------------------------------------------------------------


def _randn(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like `like`, drawn on the CPU then moved (device-agnostic)."""
    noise = torch.randn(like.shape, generator=generator, dtype=torch.float32)
    return noise.to(like.device, like.dtype)


def generator_noise(like: Tensor, generator: torch.Generator | None = None) -> Noise:
    """A noise source that draws fresh noise shaped like `like` from a CPU generator per call."""
    return lambda k: _randn(like, generator)


def queued_noise(queue: Sequence[Tensor], then: Noise | None = None) -> Noise:
    """A noise source that hands out `queue` in call order, then asks `then` (noise drawn ahead)."""
    pending = list(queue)

    def noise(k: int) -> Tensor:
        if pending:
            return pending.pop(0)
        if then is None:
            raise ValueError(f"grid step {k} needs noise but the queued noise ran out")
        return then(k)

    return noise


def _draw(noise: Noise | None, k: int, like: Tensor) -> Tensor:
    if noise is None:
        raise ValueError(f"grid step {k} needs noise: pass a noise source")
    return noise(k).to(like)


# --------------------------------------------------------------------------------------------
# Samplers: sampler(denoiser, x, grid, noise=None, callback=None, keep=None) -> x
# --------------------------------------------------------------------------------------------


def _token_grid(grid: Tensor, n: int) -> Tensor:
    """A grid as (K + 1, N) float64 on the CPU: one row per grid point, one column per token."""
    grid = grid.to("cpu", torch.float64)
    if grid.ndim == 1:
        grid = grid[:, None].expand(-1, n)
    if grid.ndim != 2 or grid.shape[1] != n or len(grid) < 2:
        raise ValueError(f"a time grid must be (K + 1,) or (K + 1, {n}) with K >= 1, "
                         f"got {tuple(grid.shape)}")
    return grid


def _rises(grid: Tensor) -> list[bool]:
    """Per grid step, whether it jumps back up (no token's time falls) rather than steps down."""
    up, down = (grid[1:] > grid[:-1]).any(1), (grid[1:] < grid[:-1]).any(1)
    if bool((up & down).any()):
        raise ValueError("a grid step must move every token's time the same way, up or down")
    return up.tolist()


def _walk(denoiser: Denoiser, x: Tensor, grid: Tensor,
          advance: Callable[[Tensor, Tensor, int], Tensor], jump: Callable[[Tensor, int], Tensor],
          keep: Tensor | None, callback: Callback | None) -> Tensor:
    """The loop every sampler shares: per grid step k, one model call and `advance(x, out, k)`,
    or `jump(x, k)` where the grid rises. Tokens under `keep` stay as given, seen at t = 0."""
    keep = _keep_mask(keep, x.shape[0], x.device)
    times = grid.to(x.device, torch.float32)  # (K + 1, N): what the model sees
    rises = _rises(grid)
    total, done, clean = rises.count(False), 0, x
    for k, rising in enumerate(rises):
        if rising:
            x = torch.where(keep[:, None], clean, jump(x, k))
            continue
        t = torch.where(keep, 0.0, times[k])
        out = denoiser(x, t)
        moved = torch.where(keep[:, None], clean, advance(x, out, k))
        done += 1
        if callback is not None:
            denoised = torch.where(keep[:, None], clean, denoiser.denoised(x, t, out))
            callback(StepInfo(done, total, t, moved, denoised))
        x = moved
    return x


def model_calls(grid: Tensor) -> int:
    """Model calls a sampler makes on `grid` (K + 1,) or (K + 1, N): the steps that go down."""
    return _rises(grid.to("cpu", torch.float64).reshape(len(grid), -1)).count(False)


def _no_jump(name: str) -> Callable[[Tensor, int], Tensor]:
    def jump(x: Tensor, k: int) -> Tensor:
        raise ValueError(f"{name} cannot jump back up (grid step {k}); restarts are flow-only")
    return jump


def sample_euler(denoiser: FlowDenoiser, x: Tensor, grid: Tensor, noise: Noise | None = None,
                 callback: Callback | None = None, keep: Tensor | None = None) -> Tensor:
    """Euler's method on the rectified-flow ODE dx/dt = v down `grid`; restart sampling where the
    grid rises.

    Each falling step is x += (t_{k+1} - t_k) v(x, t_k) (Liu et al., arXiv 2209.03003). A rising
    step, as `restart_grid` makes, is Restart sampling (Xu et al., arXiv 2306.14878): the exact
    forward jump `flow_renoise` with fresh noise from `noise`. It scales the errors the ODE piled
    up by (1 - t) and lets the next descent redraw the details decided below t (shape edges, in
    the shapes demo).
    """
    grid = _token_grid(grid, x.shape[0])
    dts = grid.diff(dim=0).to(x.device, x.dtype)[..., None]  # (K, N, 1), differenced in float64
    times = grid.to(x.device, torch.float32)

    def advance(x: Tensor, v: Tensor, k: int) -> Tensor:
        return x + dts[k] * v

    def jump(x: Tensor, k: int) -> Tensor:
        return flow_renoise(x, times[k], times[k + 1], _draw(noise, k, x))

    return _walk(denoiser, x, grid, advance, jump, keep, callback)


def _ddpm_levels(denoiser: DDPMDenoiser, grid: Tensor) -> Tensor:
    """abar at each row of a (K + 1, N) DDPM grid, the last row the clean end (abar = 1)."""
    return torch.cat([denoiser.levels(grid[:-1]), grid.new_ones(1, grid.shape[1])])


def sample_ddpm(denoiser: DDPMDenoiser, x: Tensor, grid: Tensor, noise: Noise | None = None,
                callback: Callback | None = None, keep: Tensor | None = None) -> Tensor:
    """Ancestral DDPM sampling (Ho et al., arXiv 2006.11239, algorithm 2) down a `ddpm_grid`, with
    the learned variance of improved DDPM (arXiv 2102.09672) when the model outputs one."""
    grid = _token_grid(grid, x.shape[0])
    abar, last = _ddpm_levels(denoiser, grid), len(grid) - 2

    def advance(x: Tensor, out: Tensor, k: int) -> Tensor:
        fresh = None if k == last else _draw(noise, k, x)  # the clean end takes no noise
        return ddpm_step(out, x, abar[k], abar[k + 1], fresh)

    return _walk(denoiser, x, grid, advance, _no_jump("sample_ddpm"), keep, callback)


def sample_ddim(denoiser: DDPMDenoiser, x: Tensor, grid: Tensor, noise: Noise | None = None,
                callback: Callback | None = None, keep: Tensor | None = None,
                eta: float = 0.0) -> Tensor:
    """DDIM sampling (Song et al., arXiv 2010.02502) down a `ddpm_grid`; eta = 0 is the
    deterministic ODE, eta = 1 has DDPM's posterior variance."""
    grid = _token_grid(grid, x.shape[0])
    abar = _ddpm_levels(denoiser, grid)

    def advance(x: Tensor, out: Tensor, k: int) -> Tensor:
        fresh = _draw(noise, k, x) if eta > 0 else None  # every step draws, as diffusers does
        return ddim_step(out, x, abar[k], abar[k + 1], fresh, eta)

    return _walk(denoiser, x, grid, advance, _no_jump("sample_ddim"), keep, callback)


Sampler = Callable[..., Tensor]  # sampler(denoiser, x, grid, noise, callback, keep) -> x
SAMPLERS: dict[str, Sampler] = {"euler": sample_euler, "ddpm": sample_ddpm, "ddim": sample_ddim}


def sampler_from_config(config: DiffusionConfig) -> Sampler:
    """The sampler `config.sampler` names, with its own settings bound (DDIM's eta)."""
    sampler = SAMPLERS.get(config.sampler)
    if sampler is None:
        raise UserError(f"unknown sampler {config.sampler!r}; known: {', '.join(SAMPLERS)}")
    return partial(sample_ddim, eta=config.eta) if sampler is sample_ddim else sampler
