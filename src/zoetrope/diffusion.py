"""Diffusion objectives, denoisers, time grids, samplers and classifier-free guidance (packed tokens).

Time convention (the only one in zoetrope): t in [0, 1], t = 0 is clean data, t = 1 is pure noise.
Every sampler, the guidance wrapper and the network see times in this convention; the DiT timestep
embedder multiplies by 1000 itself, so nothing here rescales time.

- Rectified flow (Liu et al., arXiv 2209.03003; Lipman et al. flow matching, arXiv 2210.02747):
  x_t = (1 - t) x0 + t eps and the model predicts the velocity v = eps - x0 = dx_t/dt. Training
  times are logit-normal and shifted towards noise for larger inputs (Esser et al., SD3,
  arXiv 2403.03206, sections 3.1 and 5.3.2); sampling integrates dx/dt = v from t = 1 to 0 (Euler).
- DDPM (Ho et al., arXiv 2006.11239), the objective of DiT: T = 1000 discrete steps, linear betas
  1e-4 .. 0.02, the model predicts eps. Step i in {0..T-1} is t = i / T, so the DiT timestep
  embedder (which sees t * 1000) sees i exactly as in DiT. With a learned variance (Nichol and
  Dhariwal, improved DDPM, arXiv 2102.09672) the model outputs [eps, v] on the last dim, v in
  [-1, 1] interpolating log beta_i and log beta~_i, trained by L_hybrid = L_simple + lambda L_vlb
  with the mean stop-gradiented inside L_vlb. Samplers: ancestral DDPM and DDIM (Song et al.,
  arXiv 2010.02502).

The sampling seam (after k-diffusion): a denoiser wraps the network and owns its objective's
conventions (`FlowDenoiser`: v-prediction; `DDPMDenoiser`: eps, optionally with a learned
variance). Every sampler is a stateless function with one signature,

    sampler(denoiser, x (N, D), grid (K + 1,) or (K + 1, N), noise, callback, keep) -> x (N, D)

and walks the time grid, which is data: grid step k goes from row k to row k + 1. A grid is
built by `flow_grid` (SD3-shifted, one shift per token allowed), `ddpm_grid` (respaced train steps
i / T, then the clean end) or `restart_grid` (rounds that jump back up, Xu et al., arXiv
2306.14878); `sampling_grid` builds the one a `DiffusionConfig` asks for. Where the grid rises, the
flow sampler re-noises forward exactly instead of calling the model. `noise(k)` gives fresh standard
normal noise shaped like x for grid step k; `callback(StepInfo)` runs after every model call.
Classifier-free guidance (Ho and Salimans, arXiv 2207.12598) wraps the network function, below the
denoiser, so it works the same under every sampler.

Data are packed tokens: x0 (N, D) holds the tokens of several samples, t (N,) is per token and
`sample_ids` (N,) names each token's sample. A model function is `model_fn(x (N, D), t (N,)) ->
(N, D_out)`. Tokens in a `keep` mask (N,) are conditioning (given frames): they are fed clean with
t = 0, never changed by a sampler and never counted in a loss. Losses are averaged per sample
first, so a long clip weighs as much as a short one. Noise comes from a CPU `torch.Generator` and
is then moved, so a seed gives the same result on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import torch
from torch import Tensor

from .config import DiffusionConfig
from .errors import UserError

ModelFn = Callable[[Tensor, Tensor], Tensor]  # (x (N, D), t (N,)) -> (N, D_out)
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


def _randn(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like `like`, drawn on the CPU then moved (device-agnostic)."""
    noise = torch.randn(like.shape, generator=generator, dtype=torch.float32)
    return noise.to(like.device, like.dtype)


def _keep_mask(keep: Tensor | None, n: int, device: torch.device) -> Tensor:
    return torch.zeros(n, dtype=torch.bool, device=device) if keep is None else keep.to(device)


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


def sample_time_ddpm(n: int, generator: torch.Generator | None = None,
                     num_steps: int = 1000) -> Tensor:
    """n times i / num_steps with i uniform in {0..num_steps-1} (DDPM training); CPU."""
    return torch.randint(0, num_steps, (n,), generator=generator) / num_steps


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
# DDPM schedule
# --------------------------------------------------------------------------------------------


def respaced_timesteps(num_train_timesteps: int, steps: int, spacing: str = "linspace") -> Tensor:
    """Ascending subset of `steps` train steps (spacings: Lin et al., arXiv 2305.08891, tab. 2)."""
    if not 1 <= steps <= num_train_timesteps:
        raise UserError(f"DDPM sampling steps must be in 1..{num_train_timesteps}, got {steps}")
    if spacing == "linspace":  # both ends, as DiT's space_timesteps: 0 .. T-1
        ts = torch.linspace(0, num_train_timesteps - 1, steps, dtype=torch.float64).round()
    elif spacing == "leading":  # 0, r, 2r, ...: DDIM's original choice
        ts = torch.arange(steps, dtype=torch.float64) * (num_train_timesteps // steps)
    elif spacing == "trailing":  # ..., T-1: starts from the noisiest step
        ratio = num_train_timesteps / steps
        ts = (torch.arange(1, steps + 1, dtype=torch.float64) * ratio).round() - 1
    else:
        raise UserError(f"timestep_spacing must be 'linspace', 'leading' or 'trailing', "
                        f"got {spacing!r}")
    return ts.long()


@dataclass
class DDPMSchedule:
    """DDPM noise schedule (float64, CPU) over `timesteps`, a subset of the train steps.

    The betas are rebuilt from the kept alphas_cumprod, beta_k = 1 - abar[s_k] / abar[s_{k-1}]
    (improved DDPM, section 4), so a subset is a consistent chain. Training and the denoiser use
    the full chain; sampling respaces through the time grid instead (`ddpm_grid`, `ddpm_step`).
    """

    num_train_timesteps: int  # T: the model sees t = timesteps[k] / T
    timesteps: Tensor  # (K,) long, ascending train steps
    alphas_cumprod: Tensor  # (K,) abar at each kept step
    betas: Tensor = field(init=False)  # (K,) betas of the (respaced) chain
    alphas_cumprod_prev: Tensor = field(init=False)  # (K,) abar of the previous kept step, 1 at k=0
    posterior_variance: Tensor = field(init=False)  # (K,) beta~_k of q(x_{k-1} | x_k, x0)
    posterior_log_variance: Tensor = field(init=False)  # (K,) log beta~_k, k = 0 clipped to k = 1
    posterior_mean_coef1: Tensor = field(init=False)  # (K,) coefficient of x0 in the posterior mean
    posterior_mean_coef2: Tensor = field(init=False)  # (K,) coefficient of x_k

    def __post_init__(self) -> None:
        abar = self.alphas_cumprod.double()
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        self.alphas_cumprod, self.alphas_cumprod_prev = abar, prev
        self.betas = 1 - abar / prev
        self.posterior_variance = self.betas * (1 - prev) / (1 - abar)  # Ho et al. eq. 7
        # beta~_0 = 0; its log is clipped to beta~_1 as in improved DDPM (only the k = 0 decoder
        # NLL reads it, and no noise is added at k = 0).
        pv = self.posterior_variance
        clipped = torch.cat([pv[1:2], pv[1:]]) if len(pv) > 1 else pv.clamp_min(1e-20)
        self.posterior_log_variance = clipped.log()
        self.posterior_mean_coef1 = self.betas * prev.sqrt() / (1 - abar)
        self.posterior_mean_coef2 = (1 - prev) * (1 - self.betas).sqrt() / (1 - abar)

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> DDPMSchedule:
        """The linear beta schedule of Ho et al. (used by DiT)."""
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        return cls(num_steps, torch.arange(num_steps), torch.cumprod(1 - betas, 0))

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> DDPMSchedule:
        """Full train schedule from a `DiffusionConfig`."""
        return cls.linear(config.num_train_timesteps, config.beta_start, config.beta_end)

    def step_index(self, t: Tensor) -> Tensor:
        """Train step i = round(t * T), clamped to 0..T-1 (inverse of t = i / T)."""
        i = (t.double() * self.num_train_timesteps).round().long()
        return i.clamp(0, self.num_train_timesteps - 1)

    def _check_full(self) -> None:
        if len(self.timesteps) != self.num_train_timesteps:
            raise ValueError("this needs the full train schedule, not a respaced one")


def _take(values: Tensor, index: Tensor) -> Tensor:
    """values[index] as float32 (N, 1) on index's device; gathered in float64 except on MPS."""
    dtype = torch.float32 if index.device.type == "mps" else torch.float64
    return values.to(index.device, dtype)[index].float()[:, None]


def _x0_from_eps(x: Tensor, eps: Tensor, abar: Tensor | float) -> Tensor:
    """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (Ho et al. eq. 4 solved for x0)."""
    return (x - (1 - abar) ** 0.5 * eps) / abar ** 0.5


def ddpm_q_sample(schedule: DDPMSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) eps with i = round(t * T), per token."""
    schedule._check_full()
    abar = _take(schedule.alphas_cumprod, schedule.step_index(t).to(x0.device))
    return (abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise.float()).to(x0.dtype)


# --------------------------------------------------------------------------------------------
# DDPM loss (L_simple, or L_hybrid with a learned variance)
# --------------------------------------------------------------------------------------------


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1 + logvar2 - logvar1 + (logvar1 - logvar2).exp()
                  + (mean1 - mean2) ** 2 * (-logvar2).exp())


def _discretized_gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """-log p(x), x in [-1, 1] in 256 bins, under N(mean, e^(2 log_scale)) (Ho et al. eq. 13)."""
    inv_std = (-log_scale).exp()
    upper, lower = inv_std * (x - mean + 1 / 255), inv_std * (x - mean - 1 / 255)
    log_cdf_upper = torch.special.log_ndtr(upper)  # edge bin x = -1 takes all mass below
    log_sf_lower = torch.special.log_ndtr(-lower)  # edge bin x = 1 takes all mass above
    log_mid = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp_min(1e-12).log()
    return -torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))


def _learned_log_variance(v: Tensor, min_log: Tensor | float, max_log: Tensor | float) -> Tensor:
    """log sigma^2 = frac log beta + (1 - frac) log beta~, frac = (v + 1) / 2 (Nichol eq. 15)."""
    frac = (v.float() + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def ddpm_loss(model_fn: ModelFn, schedule: DDPMSchedule, x0: Tensor, t: Tensor, noise: Tensor,
              loss_weight: Tensor | None = None, sample_ids: Tensor | None = None,
              num_samples: int | None = None, keep: Tensor | None = None,
              vlb_weight: float = 0.001) -> Tensor:
    """DDPM epsilon loss; with 2x output channels, L_hybrid = L_simple + vlb_weight * T * L_vlb_i.

    L_vlb = sum over the T steps, so its one-step estimate is T * L_i: with T = 1000 and
    lambda = 0.001 the weight is 1, exactly DiT's `mse + vb` (vb in bits per dim).
    """
    keep = _keep_mask(keep, x0.shape[0], x0.device)
    t = torch.where(keep, 0.0, t)
    x_t = torch.where(keep[:, None], x0, ddpm_q_sample(schedule, x0, t, noise))
    out = model_fn(x_t, t).float()
    d = x0.shape[1]
    per_token = (out[:, :d] - noise.float()).pow(2).mean(-1)  # L_simple, (N,)
    if out.shape[1] == 2 * d:
        i = schedule.step_index(t).to(x0.device)
        abar = _take(schedule.alphas_cumprod, i)
        c1, c2 = _take(schedule.posterior_mean_coef1, i), _take(schedule.posterior_mean_coef2, i)
        min_log, max_log = _take(schedule.posterior_log_variance, i), _take(schedule.betas, i).log()
        x0f, x_tf = x0.float(), x_t.float()
        true_mean = c1 * x0f + c2 * x_tf
        # Stop-grad on eps: L_vlb trains only the variance, L_simple only the mean (section 3.1).
        model_mean = c1 * _x0_from_eps(x_tf, out[:, :d].detach(), abar) + c2 * x_tf
        model_log_var = _learned_log_variance(out[:, d:], min_log, max_log)
        kl = _normal_kl(true_mean, min_log, model_mean, model_log_var).mean(-1)
        nll = _discretized_gaussian_nll(x0f, model_mean, 0.5 * model_log_var).mean(-1)
        vlb = torch.where(i == 0, nll, kl) / math.log(2.0)  # bits per dim; step 0 is the decoder
        per_token = per_token + vlb_weight * schedule.num_train_timesteps * vlb
    weight = _loss_weight(loss_weight, keep, x0.shape[0])
    return per_sample_mean(per_token, weight, sample_ids, num_samples)


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


class DDPMDenoiser:
    """DDPM around a network: eps-prediction, [eps, v] with a learned variance (2x output width).

    The network sees t = i / T for train step i (`ddpm_grid` times), never i itself.
    """

    def __init__(self, model: ModelFn, schedule: DDPMSchedule, vlb_weight: float = 0.001):
        schedule._check_full()
        self.model, self.schedule, self.vlb_weight = model, schedule, vlb_weight

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """eps (N, D), or [eps, v] (N, 2D) for a learned variance: the network's output as is."""
        return self.model(x, t)

    def denoised(self, x: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
        abar = _take(self.schedule.alphas_cumprod, self.schedule.step_index(t).to(x.device))
        return _x0_from_eps(x.float(), out[:, : x.shape[1]].float(), abar).to(x.dtype)

    def levels(self, times: Tensor) -> Tensor:
        """abar (float64, CPU) of train step round(t * T) at each time."""
        return self.schedule.alphas_cumprod[self.schedule.step_index(times.cpu())]

    def loss(self, x0: Tensor, t: Tensor, noise: Tensor, loss_weight: Tensor | None = None,
             sample_ids: Tensor | None = None, num_samples: int | None = None,
             keep: Tensor | None = None) -> Tensor:
        """The training loss (`ddpm_loss`: L_simple, or L_hybrid with a learned variance)."""
        return ddpm_loss(self.model, self.schedule, x0, t, noise, loss_weight, sample_ids,
                         num_samples, keep, self.vlb_weight)


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


def ddpm_grid(num_train_timesteps: int, steps: int, spacing: str = "linspace") -> Tensor:
    """`steps` respaced train steps as times i / T, noisiest first, then the clean end 0.

    (steps + 1,) float64. The last row stands for clean data (abar = 1) whatever train step the
    one before it is, as a respaced chain ends (DDIM's final alpha of one).
    """
    ts = respaced_timesteps(num_train_timesteps, steps, spacing).flip(0).double()
    return torch.cat([ts / num_train_timesteps, ts.new_zeros(1)])


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


def _coef(value: Tensor, like: Tensor) -> Tensor:
    """A float64 coefficient, one per token (N,) or one for all (), as float32 broadcasting over
    like (N, D) on its device (computed in float64 on the CPU: MPS has none)."""
    value = value.to(torch.float64).float().to(like.device)
    return value[:, None] if value.ndim else value


def _eps_to_x0(out: Tensor, x: Tensor, abar: Tensor) -> tuple[Tensor, Tensor]:
    """eps (float32) from the output and the x0 it implies, Ho et al. eq. 4 solved for x0."""
    eps = out[:, : x.shape[1]].float()
    return eps, (x.float() - _coef((1 - abar).sqrt(), x) * eps) / _coef(abar.sqrt(), x)


def ddpm_step(out: Tensor, x: Tensor, abar: Tensor, abar_prev: Tensor,
              noise: Tensor | None = None) -> Tensor:
    """One ancestral DDPM step from noise level abar down to abar_prev (Ho et al. algorithm 2).

    abar, abar_prev: float64, per token (N,) or one (). The step's beta = 1 - abar / abar_prev, as a
    respaced chain rebuilds it (improved DDPM, section 4), so any two grid points work. The fixed
    variance is beta~ ("fixed_small"); `out` 2x wide carries a learned variance (Nichol eq. 15).
    abar_prev = 1 is the clean end: the posterior mean, without noise.
    """
    abar, abar_prev = abar.double(), abar_prev.double()
    beta = 1 - abar / abar_prev
    c1 = beta * abar_prev.sqrt() / (1 - abar)  # posterior mean coefficients (Ho et al. eq. 7)
    c2 = (1 - abar_prev) * (1 - beta).sqrt() / (1 - abar)
    _, x0 = _eps_to_x0(out, x, abar)
    mean = _coef(c1, x) * x0 + _coef(c2, x) * x.float()
    if bool((abar_prev == 1).all()):
        return mean.to(x.dtype)
    min_log = (beta * (1 - abar_prev) / (1 - abar)).log()  # log beta~
    d = x.shape[1]
    log_var = _coef(min_log, x).expand_as(mean)
    if out.shape[1] == 2 * d:
        log_var = _learned_log_variance(out[:, d:], log_var, _coef(beta.log(), x))
    if noise is None:
        raise ValueError("ddpm_step needs noise above the clean end")
    return (mean + (0.5 * log_var).exp() * noise.float()).to(x.dtype)


def ddim_step(out: Tensor, x: Tensor, abar: Tensor, abar_prev: Tensor,
              noise: Tensor | None = None, eta: float = 0.0) -> Tensor:
    """One DDIM step from abar to abar_prev (Song et al. eq. 12, sigma(eta) of eq. 16); eta = 0 is
    deterministic. abar, abar_prev: float64, per token (N,) or one ()."""
    abar, abar_prev = abar.double(), abar_prev.double()
    eps, x0 = _eps_to_x0(out, x, abar)
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    direction = (1 - abar_prev - sigma ** 2).clamp_min(0).sqrt()  # weight of eps pointing to x_t
    x_prev = _coef(abar_prev.sqrt(), x) * x0 + _coef(direction, x) * eps
    if bool((sigma > 0).any()):
        if noise is None:
            raise ValueError("ddim_step needs noise when eta > 0")
        x_prev = x_prev + _coef(sigma, x) * noise.float()
    return x_prev.to(x.dtype)


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


# --------------------------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------------------------


def classifier_free_guidance(double_fn: ModelFn, scale: float,
                             interval: tuple[float, float] = (0.0, 1.0),
                             cond_fn: ModelFn | None = None) -> ModelFn:
    """Wrap `double_fn(x2, t2)` (rows [:N] conditional, [N:] unconditional) into a guided model_fn.

    Both branches run in one call on the doubled batch; the result is
    uncond + scale (cond - uncond)
    for rows whose time t (in [0, 1], as every sampler passes it) lies in `interval`, and the
    conditional prediction (scale 1) for the others. Given `cond_fn(x, t)`, the conditional
    branch alone, a call with no row inside the interval runs only that (half the work).
    With a learned variance (output 2x the input width) only the eps half is guided and the
    conditional variance is kept, as in DiT.
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
        s: float | Tensor = scale
        if inside is not None:
            s = torch.where(inside, scale, 1.0).to(out.dtype)[:, None]
        eps = uncond[:, :d] + s * (cond[:, :d] - uncond[:, :d])
        return torch.cat([eps, cond[:, d:]], dim=1)

    return guided
