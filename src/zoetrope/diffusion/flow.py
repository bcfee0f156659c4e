"""Rectified flow: training times, x_t, the loss, the denoiser, the exact forward jump, the grid.

x_t = (1 - t) x0 + t eps and the model predicts v = eps - x0 (Liu et al., arXiv 2209.03003);
training times are logit-normal and SD3-shifted (Esser et al., arXiv 2403.03206). Times follow the
package's convention (`zoetrope.diffusion`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError
from .tokens import ModelFn, _keep_mask, _loss_weight, per_sample_mean


# --------------------------------------------------------------------------------------------
# Time sampling
# --------------------------------------------------------------------------------------------


def time_shift(t: Tensor, shift: float | Tensor) -> Tensor:
    """SD3 shift: shift * t / (1 + (shift - 1) * t); shift > 1 moves times towards noise."""
    return shift * t / (1 + (shift - 1) * t)


def resolution_shift(num_tokens: int | Tensor, base_tokens: int) -> float | Tensor:
    """Shift for an input of `num_tokens`: sqrt(num_tokens / base_tokens); 1 if base_tokens <= 0."""
    if base_tokens <= 0:
        return 1.0
    if isinstance(num_tokens, Tensor):
        return (num_tokens.double() / base_tokens).sqrt().float()
    return math.sqrt(num_tokens / base_tokens)


def sample_time_logit_normal(n: int, generator: torch.Generator | None = None, mean: float = 0.0,
                             std: float = 1.0, shift: float | Tensor = 1.0) -> Tensor:
    """n times t = time_shift(sigmoid(mean + std * z), shift), z ~ N(0, 1) (SD3 eq. 19); CPU."""
    z = torch.randn(n, generator=generator)
    return time_shift(torch.sigmoid(mean + std * z), shift)


# --------------------------------------------------------------------------------------------
# Rectified flow
# --------------------------------------------------------------------------------------------


def flow_q_sample(x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t eps for per-token t (N,)."""
    t = t.to(x0.dtype)[:, None]
    return (1 - t) * x0 + t * noise


def flow_loss(model_fn: ModelFn, x0: Tensor, t: Tensor, noise: Tensor,
              loss_weight: Tensor | None = None, sample_ids: Tensor | None = None,
              num_samples: int | None = None, keep: Tensor | None = None) -> Tensor:
    """Rectified-flow loss ||model(x_t, t) - (eps - x0)||^2, normalised per sample."""
    keep = _keep_mask(keep, x0.shape[0], x0.device)
    t = torch.where(keep, 0.0, t)  # conditioning tokens: t = 0, so x_t = x0 exactly
    x_t = torch.where(keep[:, None], x0, flow_q_sample(x0, t, noise))
    v = model_fn(x_t, t)[:, : x0.shape[1]]  # a learned-variance half, if any, is unused here
    per_token = (v.float() - (noise - x0).float()).pow(2).mean(-1)  # (N,)
    weight = _loss_weight(loss_weight, keep, x0.shape[0])
    return per_sample_mean(per_token, weight, sample_ids, num_samples)


def flow_renoise(x: Tensor, s: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Exact forward jump of rectified flow from times s up to t >= s (N,): q(x_t | x_s).

    x_t = a x_s + b eps with a = (1 - t) / (1 - s), b = sqrt(t^2 - (a s)^2): the data part scales
    from (1 - s) to (1 - t) and the noise variance tops up from (a s)^2 to t^2. From s = 0 this is
    x_t = (1 - t) x0 + t eps computed exactly (a = 1 - t, and sqrt(t * t) = t in IEEE arithmetic).
    """
    s, t = s.to(x.dtype)[:, None], t.to(x.dtype)[:, None]
    a = (1 - t) / (1 - s)
    b = (t * t - (a * s) ** 2).clamp_min(0).sqrt()
    return a * x + b * noise


# --------------------------------------------------------------------------------------------
# Denoiser
# --------------------------------------------------------------------------------------------


class FlowDenoiser:
    """Rectified flow around a network: v-prediction, v = eps - x0; the network sees t in [0, 1]."""

    def __init__(self, model: ModelFn):
        self.model = model

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """v (N, D) in x's dtype; a learned-variance half of the output, if any, is unused."""
        return self.model(x, t)[:, : x.shape[1]].to(x.dtype)

    def denoised(self, x: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """x0 = x_t - t v."""
        return x - t.to(x.dtype)[:, None] * out

    def loss(self, x0: Tensor, t: Tensor, noise: Tensor, loss_weight: Tensor | None = None,
             sample_ids: Tensor | None = None, num_samples: int | None = None,
             keep: Tensor | None = None) -> Tensor:
        """The training loss (`flow_loss`)."""
        return flow_loss(self.model, x0, t, noise, loss_weight, sample_ids, num_samples, keep)


# --------------------------------------------------------------------------------------------
# Time grid
# --------------------------------------------------------------------------------------------


def flow_grid(steps: int, t_start: float = 1.0, shift: float | Tensor = 1.0) -> Tensor:
    """Times from t_start down to 0, uniform before the SD3 shift: (steps + 1,) float64, or
    (steps + 1, N) for a per-token shift (N,) (mixed sizes in one packed batch each follow their
    own grid)."""
    if steps < 1:
        raise UserError(f"sampling needs at least 1 step, got {steps}")
    shift = torch.as_tensor(shift, dtype=torch.float64)
    u_start = time_shift(torch.tensor(t_start, dtype=torch.float64), 1 / shift)  # inverse shift
    frac = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).view(-1, *[1] * shift.ndim)
    ts = time_shift(frac * u_start, shift)
    ts[0] = t_start  # the input is exactly at t_start, whatever rounding the shift did
    return ts
