"""Packed tokens as every objective sees them: the model function, keep masks, per-sample means.

x0 (N, D) holds the tokens of several samples, `sample_ids` (N,) names each token's sample and
tokens in a `keep` mask (N,) are conditioning and never count in a loss (`zoetrope.diffusion`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


ModelFn = Callable[[Tensor, Tensor], Tensor]  # (x (N, D), t (N,)) -> (N, D_out)


def _keep_mask(keep: Tensor | None, n: int, device: torch.device) -> Tensor:
    return torch.zeros(n, dtype=torch.bool, device=device) if keep is None else keep.to(device)


# --------------------------------------------------------------------------------------------
# Per-sample loss normalisation
# --------------------------------------------------------------------------------------------


def per_sample_mean(per_token: Tensor, weight: Tensor, sample_ids: Tensor | None = None,
                    num_samples: int | None = None) -> Tensor:
    """Mean of weighted per-token losses over each sample's counted tokens, then over samples.

    A token counts when its weight is > 0; samples without counted tokens are left out. Dividing
    by the count (not by the sum of weights) keeps a uniform weight of 5 a 5x larger loss.
    """
    if sample_ids is None:
        sample_ids = torch.zeros_like(per_token, dtype=torch.long)
    if num_samples is None:
        num_samples = int(sample_ids.max()) + 1 if sample_ids.numel() else 1
    zeros = per_token.new_zeros(num_samples, dtype=torch.float32)
    sums = zeros.index_add(0, sample_ids, per_token.float() * weight)  # (S,)
    counts = zeros.index_add(0, sample_ids, (weight > 0).float())  # (S,)
    return (sums / counts.clamp_min(1)).sum() / (counts > 0).sum().clamp_min(1)


def _loss_weight(loss_weight: Tensor | None, keep: Tensor, n: int) -> Tensor:
    w = torch.ones(n, device=keep.device) if loss_weight is None else loss_weight.float()
    return w * ~keep  # conditioning tokens never count
