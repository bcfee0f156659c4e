"""Diffusion objectives, time sampling, samplers and classifier-free guidance over packed tokens.

Time convention (the only one in zoetrope): t in [0, 1], t = 0 is clean data, t = 1 is pure noise.

- Rectified flow (Liu et al., arXiv 2209.03003; Lipman et al. flow matching, arXiv 2210.02747):
  x_t = (1 - t) x0 + t eps and the model predicts the velocity v = eps - x0 = dx_t/dt. Training
  times are logit-normal and shifted towards noise for larger inputs (Esser et al., SD3,
  arXiv 2403.03206, sections 3.1 and 5.3.2); sampling integrates dx/dt = v from t = 1 to 0 (Euler),
  optionally followed by restarts: jumps back to a noise level and Euler again (`sample_restart`).
- DDPM (Ho et al., arXiv 2006.11239), the objective of DiT: T = 1000 discrete steps, linear betas
  1e-4 .. 0.02, the model predicts eps. Step i in {0..T-1} is t = i / T, so the DiT timestep
  embedder (which sees t * 1000) sees i exactly as in DiT. With a learned variance (Nichol and
  Dhariwal, improved DDPM, arXiv 2102.09672) the model outputs [eps, v] on the last dim, v in
  [-1, 1] interpolating log beta_i and log beta~_i, trained by L_hybrid = L_simple + lambda L_vlb
  with the mean stop-gradiented inside L_vlb. Samplers: ancestral DDPM and DDIM (Song et al.,
  arXiv 2010.02502), both on respaced step subsets.
- Classifier-free guidance (Ho and Salimans, arXiv 2207.12598) wraps a model function.

Data are packed tokens: x0 (N, D) holds the tokens of several samples, t (N,) is per token and
`sample_ids` (N,) names each token's sample. A model function is `model_fn(x (N, D), t (N,)) ->
(N, D_out)`. Tokens in a `keep` mask (N,) are conditioning (given frames): they are fed clean with
t = 0, never changed by a sampler and never counted in a loss. Losses are averaged per sample
first, so a long clip weighs as much as a short one. Samplers are stateless functions (after
k-diffusion); noise comes from a CPU `torch.Generator` and is then moved, so a seed gives the same
result on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config import DiffusionConfig

ModelFn = Callable[[Tensor, Tensor], Tensor]  # (x (N, D), t (N,)) -> (N, D_out)
Progress = Callable[[int, int], None]  # progress(steps_done, total_steps), e.g. to drive tqdm


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


def flow_timesteps(steps: int, t_start: float = 1.0, shift: float | Tensor = 1.0) -> Tensor:
    """Times from t_start down to 0, uniform before the shift: (steps + 1,), or (steps + 1, N)
    for a per-token shift (N,) (mixed sizes in one packed batch each follow their own grid)."""
    shift = torch.as_tensor(shift, dtype=torch.float64)
    u_start = time_shift(torch.tensor(t_start, dtype=torch.float64), 1 / shift)  # inverse shift
    frac = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).view(-1, *[1] * shift.ndim)
    ts = time_shift(frac * u_start, shift)
    ts[0] = t_start  # the input is exactly at t_start, whatever rounding the shift did
    return ts


def sample_euler(model_fn: ModelFn, x: Tensor, steps: int, *, t_start: float = 1.0,
                 shift: float | Tensor = 1.0, keep: Tensor | None = None,
                 progress: Progress | None = None) -> Tensor:
    """Euler integration of the flow ODE dx/dt = v from t_start (x: noise at 1) to 0.

    `shift` is one number or one per token (N,). Rows of `x` under `keep` hold clean conditioning
    tokens; they stay fixed and are seen at t = 0.
    """
    keep = _keep_mask(keep, x.shape[0], x.device)
    clean = x
    ts = flow_timesteps(steps, t_start, shift)  # float64 on the CPU
    ts = ts.view(steps + 1, 1).expand(-1, x.shape[0]) if ts.ndim == 1 else ts  # (steps + 1, N)
    dts = ts.diff(dim=0).to(x.device, x.dtype)[..., None]  # (steps, N, 1), differenced in float64
    ts = ts.to(x.device, torch.float32)
    for k in range(steps):
        t = torch.where(keep, 0.0, ts[k])
        v = model_fn(x, t)[:, : x.shape[1]].to(x.dtype)
        x = torch.where(keep[:, None], clean, x + dts[k] * v)
        if progress is not None:
            progress(k + 1, steps)
    return x


def sample_restart(model_fn: ModelFn, x: Tensor, steps: int, noise_fn: Callable[[], Tensor], *,
                   restarts: int, restart_time: float, restart_steps: int,
                   shift: float | Tensor = 1.0, keep: Tensor | None = None,
                   progress: Progress | None = None) -> Tensor:
    """Euler from t = 1 to 0, then `restarts` rounds of: back to t = restart_time with fresh noise,
    x_T = (1 - T) x + T eps, and Euler to 0 again in `restart_steps` (Restart sampling, Xu et al.,
    arXiv 2306.14878).

    The forward jump is exact (it is the training process applied to the ODE's output): it scales
    the errors the ODE piled up by (1 - T), and the fresh noise lets the reverse run redraw the
    details decided below T (shape edges, in the shapes demo). Each round's time grid follows
    `shift` like the first run's. `noise_fn()` draws noise shaped like x (the pipeline draws it
    from its CPU generator, so a seed still fixes the video). Tokens under `keep` stay clean.
    """
    total = steps + restarts * restart_steps

    def report_from(offset: int) -> Progress | None:  # one bar over every round
        return None if progress is None else lambda k, _: progress(offset + k, total)

    x = sample_euler(model_fn, x, steps, shift=shift, keep=keep, progress=report_from(0))
    keep = _keep_mask(keep, x.shape[0], x.device)
    t = torch.full((x.shape[0],), restart_time, device=x.device)
    for r in range(restarts):
        x = torch.where(keep[:, None], x, flow_q_sample(x, t, noise_fn().to(x)))
        x = sample_euler(model_fn, x, restart_steps, t_start=restart_time, shift=shift, keep=keep,
                         progress=report_from(steps + r * restart_steps))
    return x

# --------------------------------------------------------------------------------------------
# DDPM schedule
# --------------------------------------------------------------------------------------------


def respaced_timesteps(num_train_timesteps: int, steps: int, spacing: str = "linspace") -> Tensor:
    """Ascending subset of `steps` train steps (spacings: Lin et al., arXiv 2305.08891, tab. 2)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    if spacing == "linspace":  # both ends, as DiT's space_timesteps: 0 .. T-1
        ts = torch.linspace(0, num_train_timesteps - 1, steps, dtype=torch.float64).round()
    elif spacing == "leading":  # 0, r, 2r, ...: DDIM's original choice
        ts = torch.arange(steps, dtype=torch.float64) * (num_train_timesteps // steps)
    elif spacing == "trailing":  # ..., T-1: starts from the noisiest step
        ratio = num_train_timesteps / steps
        ts = (torch.arange(1, steps + 1, dtype=torch.float64) * ratio).round() - 1
    else:
        raise ValueError(f"spacing must be 'linspace', 'leading' or 'trailing', got {spacing!r}")
    return ts.long()


@dataclass
class DDPMSchedule:
    """DDPM noise schedule (float64, CPU) over `timesteps`, a subset of the train steps.

    A respaced schedule keeps the train steps in `timesteps` and rebuilds the betas from the kept
    alphas_cumprod, beta_k = 1 - abar[s_k] / abar[s_{k-1}] (improved DDPM, section 4), so the
    same ancestral / learned-variance formulas apply to fewer steps.
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

    def respace(self, steps: int, spacing: str = "linspace") -> DDPMSchedule:
        """Schedule over `steps` train steps (see `respaced_timesteps`)."""
        self._check_full()
        ts = respaced_timesteps(self.num_train_timesteps, steps, spacing)
        return DDPMSchedule(self.num_train_timesteps, ts, self.alphas_cumprod[ts])

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
# DDPM / DDIM steps and samplers
# --------------------------------------------------------------------------------------------


def ddpm_step(schedule: DDPMSchedule, out: Tensor, x: Tensor, k: int,
              noise: Tensor | None = None) -> Tensor:
    """One ancestral DDPM step k -> k-1 (Ho et al. algorithm 2), learned variance if out is 2x wide.

    Fixed variance is beta~_k (the posterior variance, "fixed_small"); k = 0 returns the mean.
    """
    d = x.shape[1]
    eps = out[:, :d].float()
    x0 = _x0_from_eps(x.float(), eps, float(schedule.alphas_cumprod[k]))
    c1, c2 = float(schedule.posterior_mean_coef1[k]), float(schedule.posterior_mean_coef2[k])
    mean = c1 * x0 + c2 * x.float()
    if k == 0:
        return mean.to(x.dtype)
    min_log = float(schedule.posterior_log_variance[k])
    if out.shape[1] == 2 * d:
        log_var = _learned_log_variance(out[:, d:], min_log, math.log(float(schedule.betas[k])))
    else:
        log_var = torch.full_like(mean, min_log)
    if noise is None:
        raise ValueError("ddpm_step needs noise for k > 0")
    return (mean + (0.5 * log_var).exp() * noise.float()).to(x.dtype)


def ddim_step(schedule: DDPMSchedule, out: Tensor, x: Tensor, k: int, noise: Tensor | None = None,
              eta: float = 0.0) -> Tensor:
    """One DDIM step k -> k-1 (Song et al. eq. 12, sigma(eta) of eq. 16); eta = 0: deterministic."""
    abar, abar_prev = float(schedule.alphas_cumprod[k]), float(schedule.alphas_cumprod_prev[k])
    eps = out[:, : x.shape[1]].float()
    x0 = _x0_from_eps(x.float(), eps, abar)
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
    x_prev = abar_prev ** 0.5 * x0 + max(1 - abar_prev - sigma ** 2, 0.0) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step needs noise when eta > 0")
        x_prev = x_prev + sigma * noise.float()
    return x_prev.to(x.dtype)


def _sample_discrete(step: Callable[..., Tensor], model_fn: ModelFn, x: Tensor,
                     schedule: DDPMSchedule, keep: Tensor | None,
                     generator: torch.Generator | None, progress: Progress | None,
                     needs_noise: Callable[[int], bool]) -> Tensor:
    """Shared loop of the discrete samplers: k = K-1 .. 0, keep rows fixed and seen at t = 0."""
    keep = _keep_mask(keep, x.shape[0], x.device)
    clean, total = x, len(schedule.timesteps)
    for n, k in enumerate(reversed(range(total))):
        t_k = float(schedule.timesteps[k]) / schedule.num_train_timesteps
        t = torch.where(keep, 0.0, torch.full((x.shape[0],), t_k, device=x.device))
        noise = _randn(x, generator) if needs_noise(k) else None
        x = torch.where(keep[:, None], clean, step(schedule, model_fn(x, t), x, k, noise))
        if progress is not None:
            progress(n + 1, total)
    return x


def sample_ddpm(model_fn: ModelFn, x: Tensor, schedule: DDPMSchedule, steps: int | None = None, *,
                spacing: str = "linspace", keep: Tensor | None = None,
                generator: torch.Generator | None = None,
                progress: Progress | None = None) -> Tensor:
    """Ancestral DDPM sampling from noise x, on `steps` respaced steps (None: all train steps)."""
    if steps is not None and steps != len(schedule.timesteps):
        schedule = schedule.respace(steps, spacing)
    return _sample_discrete(ddpm_step, model_fn, x, schedule, keep, generator, progress,
                            needs_noise=lambda k: k > 0)


def sample_ddim(model_fn: ModelFn, x: Tensor, schedule: DDPMSchedule, steps: int | None = None, *,
                eta: float = 0.0, spacing: str = "linspace", keep: Tensor | None = None,
                generator: torch.Generator | None = None,
                progress: Progress | None = None) -> Tensor:
    """DDIM sampling from noise x on `steps` respaced steps; eta = 0 is the deterministic ODE."""
    if steps is not None and steps != len(schedule.timesteps):
        schedule = schedule.respace(steps, spacing)

    def step(s: DDPMSchedule, out: Tensor, x: Tensor, k: int, noise: Tensor | None) -> Tensor:
        return ddim_step(s, out, x, k, noise, eta)

    return _sample_discrete(step, model_fn, x, schedule, keep, generator, progress,
                            needs_noise=lambda k: eta > 0)


# --------------------------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------------------------


def classifier_free_guidance(double_fn: ModelFn, scale: float,
                             interval: tuple[float, float] = (0.0, 1.0),
                             time_scale: float = 1.0, cond_fn: ModelFn | None = None) -> ModelFn:
    """Wrap `double_fn(x2, t2)` (rows [:N] conditional, [N:] unconditional) into a guided model_fn.

    Both branches run in one call on the doubled batch; the result is
    uncond + scale (cond - uncond)
    for rows whose time t / time_scale lies in `interval` (t = 0 clean, 1 noise), and the
    conditional prediction (scale 1) for the others. Given `cond_fn(x, t)`, the conditional
    branch alone, a call with no row inside the interval runs only that (half the work).
    With a learned variance (output 2x the input width) only the eps half is guided and the
    conditional variance is kept, as in DiT.
    """
    lo, hi = interval

    def guided(x: Tensor, t: Tensor) -> Tensor:
        inside: Tensor | None = None
        if (lo, hi) != (0.0, 1.0):
            u = t.double() / time_scale
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
