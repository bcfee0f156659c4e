"""Classifier-free guidance (Ho and Salimans, arXiv 2207.12598): a wrapper of the network function.

It sits below the denoiser, so it works the same under every sampler (see `zoetrope.diffusion`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .tokens import ModelFn


def classifier_free_guidance(double_fn: ModelFn, scale: float,
                             interval: tuple[float, float] = (0.0, 1.0),
                             cond_fn: ModelFn | None = None,
                             guided_columns: int | None = None) -> ModelFn:
    """Wrap `double_fn(x2, t2)` (rows [:N] conditional, [N:] unconditional) into a guided model_fn.

    Both branches run in one call on the doubled batch; the result is
    uncond + scale (cond - uncond)
    for rows whose time t (in [0, 1], as every sampler passes it) lies in `interval`, and the
    conditional prediction (scale 1) for the others. Given `cond_fn(x, t)`, the conditional
    branch alone, a call with no row inside the interval runs only that (half the work).
    With a learned variance (output 2x the input width) only the eps half is guided and the
    conditional variance is kept, as in DiT.

    `guided_columns`: guide only the first that many output columns and keep the conditional
    prediction for the rest (None: the whole eps). The sampler released with the DiT paper
    guides only the first 3 of the 4 latent channels (`forward_with_cfg` in facebookresearch/DiT;
    its released samples were made so): 3 * H * W columns of a (B, C * H * W) image row, or 3/4
    of a packed token, whose values are ordered channel first.
    """
    lo, hi = interval

    def guided(x: Tensor, t: Tensor) -> Tensor:
        inside: Tensor | None = None
        if (lo, hi) != (0.0, 1.0):
            u = t.double()
            inside = (u >= lo) & (u <= hi)
            if cond_fn is not None and not bool(inside.any()):
                return cond_fn(x, t)
        out = double_fn(torch.cat([x, x]), torch.cat([t, t]))  # (2N, D_out)
        cond, uncond = out.chunk(2)
        d = x.shape[1] if out.shape[1] == 2 * x.shape[1] else out.shape[1]
        d = d if guided_columns is None else guided_columns
        s: float | Tensor = scale
        if inside is not None:
            s = torch.where(inside, scale, 1.0).to(out.dtype)[:, None]
        eps = uncond[:, :d] + s * (cond[:, :d] - uncond[:, :d])
        return torch.cat([eps, cond[:, d:]], dim=1)

    return guided
