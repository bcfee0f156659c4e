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

Files, imports flowing down the list: `tokens` (the model function, keep masks, per-sample loss
means), `flow` and `ddpm` (each objective's training times, x_t, loss, denoiser and grid; DDPM's
and DDIM's steps), `sampling` (noise sources, `StepInfo`, the samplers and what a config asks for)
and `guidance` (classifier-free guidance, needing only `tokens`). Import from this package.
"""

from .ddpm import (DDPMDenoiser, DDPMSchedule, ddim_step, ddpm_grid, ddpm_loss, ddpm_q_sample,
                   ddpm_step, respaced_timesteps, sample_time_ddpm)
from .flow import (FlowDenoiser, flow_grid, flow_loss, flow_q_sample, flow_renoise,
                   resolution_shift, sample_time_logit_normal, time_shift)
from .guidance import classifier_free_guidance
from .sampling import (SAMPLERS, Callback, Denoiser, Noise, Sampler, StepInfo, build_denoiser,
                       generator_noise, model_calls, queued_noise, restart_grid, sample_ddim,
                       sample_ddpm, sample_euler, sampler_from_config, sampling_grid)
from .tokens import ModelFn, per_sample_mean

__all__ = [
    "SAMPLERS", "Callback", "DDPMDenoiser", "DDPMSchedule", "Denoiser", "FlowDenoiser", "ModelFn",
    "Noise", "Sampler", "StepInfo", "build_denoiser", "classifier_free_guidance", "ddim_step",
    "ddpm_grid", "ddpm_loss", "ddpm_q_sample", "ddpm_step", "flow_grid", "flow_loss",
    "flow_q_sample", "flow_renoise", "generator_noise", "model_calls", "per_sample_mean",
    "queued_noise", "resolution_shift", "respaced_timesteps", "restart_grid", "sample_ddim",
    "sample_ddpm", "sample_euler", "sample_time_ddpm", "sample_time_logit_normal",
    "sampler_from_config", "sampling_grid", "time_shift",
]
