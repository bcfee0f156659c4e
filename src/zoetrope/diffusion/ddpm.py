"""DDPM: schedule, training times, x_t, loss, the ancestral and DDIM steps, denoiser, respaced grid.

Ho et al. (arXiv 2006.11239) with the learned variance and L_hybrid of improved DDPM (Nichol and
Dhariwal, arXiv 2102.09672) and DDIM's step (Song et al., arXiv 2010.02502). Train step i is time
t = i / T in the package's convention (`zoetrope.diffusion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import DiffusionConfig
from ..errors import UserError
from .tokens import ModelFn, _keep_mask, _loss_weight, per_sample_mean


# --------------------------------------------------------------------------------------------
# Time sampling
# --------------------------------------------------------------------------------------------


def sample_time_ddpm(n: int, generator: torch.Generator | None = None,
                     num_steps: int = 1000) -> Tensor:
    """n times i / num_steps with i uniform in {0..num_steps-1} (DDPM training); CPU."""
    return torch.randint(0, num_steps, (n,), generator=generator) / num_steps


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
    elif spacing == "iddpm":  # improved DDPM's respacing, which DiT samples with
        ts = torch.tensor(_iddpm_steps(num_train_timesteps, steps), dtype=torch.float64)
    else:
        raise UserError(f"timestep_spacing must be 'linspace', 'leading', 'trailing' or 'iddpm', "
                        f"got {spacing!r}")
    return ts.long()


def _iddpm_steps(num_train_timesteps: int, steps: int) -> list[int]:
    """0 .. T-1 in `steps` strides of (T - 1) / (steps - 1), summed in floats and rounded half to
    even (Nichol and Dhariwal's `space_timesteps` with one section). It differs from "linspace" by
    one step where a sum lands near .5 (21 steps: 499, not 500), so DiT needs exactly this."""
    stride = (num_train_timesteps - 1) / (steps - 1) if steps > 1 else 1.0
    position, out = 0.0, []
    for _ in range(steps):
        out.append(round(position))  # Python's round: half to even
        position += stride
    return out


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
# Steps: one move down between two noise levels
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Denoiser and time grid
# --------------------------------------------------------------------------------------------


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


def ddpm_grid(num_train_timesteps: int, steps: int, spacing: str = "linspace") -> Tensor:
    """`steps` respaced train steps as times i / T, noisiest first, then the clean end 0.

    (steps + 1,) float64. The last row stands for clean data (abar = 1) whatever train step the
    one before it is, as a respaced chain ends (DDIM's final alpha of one).
    """
    ts = respaced_timesteps(num_train_timesteps, steps, spacing).flip(0).double()
    return torch.cat([ts / num_train_timesteps, ts.new_zeros(1)])
