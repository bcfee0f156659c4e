"""Objectives, time sampling, samplers and guidance: closed forms and diffusers as the reference."""

import math

import pytest
import torch

from functools import partial

from zoetrope.config import DiffusionConfig
from zoetrope.diffusion import (
    SAMPLERS, DDPMDenoiser, DDPMSchedule, FlowDenoiser, build_denoiser, classifier_free_guidance,
    ddim_step, ddpm_grid, ddpm_loss, ddpm_q_sample, ddpm_step, flow_grid, flow_loss, flow_q_sample,
    flow_renoise, generator_noise, model_calls, queued_noise, resolution_shift, respaced_timesteps,
    restart_grid, sample_ddim, sample_ddpm, sample_euler, sample_time_ddpm,
    sample_time_logit_normal, sampler_from_config, sampling_grid, time_shift,
)
from zoetrope.errors import UserError

N, D = 12, 4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))


def schedule() -> DDPMSchedule:
    return DDPMSchedule.from_config(DiffusionConfig())


SCHEDULE = schedule()


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth, time-dependent stand-in for a network (eps-like output)."""
    return torch.tanh(0.7 * x) + torch.cos(3 * t)[:, None]


def gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Near the ideal eps for N(0, 1) data (sqrt(1 - abar) x), perturbed: keeps samples O(1)."""
    abar = SCHEDULE.alphas_cumprod[SCHEDULE.step_index(t)].float()[:, None]
    return 0.9 * (1 - abar).sqrt() * x + 0.05 * torch.cos(3 * t)[:, None]


# --- time convention and time sampling -------------------------------------------------------


def test_flow_time_convention():
    x0, eps = randn(N, D, seed=1), randn(N, D, seed=2)
    assert torch.equal(flow_q_sample(x0, torch.zeros(N), eps), x0)  # t = 0: clean
    assert torch.equal(flow_q_sample(x0, torch.ones(N), eps), eps)  # t = 1: noise


def test_ddpm_time_convention():
    s, x0, eps = schedule(), randn(N, D, seed=1), randn(N, D, seed=2)
    i = torch.arange(1000)
    assert torch.equal(s.step_index(i / 1000), i)  # t = i / 1000 round-trips to step i
    assert torch.allclose(ddpm_q_sample(s, x0, torch.zeros(N), eps), x0, atol=0.05)  # abar_0 ~ 1
    assert torch.allclose(ddpm_q_sample(s, x0, torch.full((N,), 0.999), eps), eps, atol=0.05)
    assert s.alphas_cumprod[0] > s.alphas_cumprod[-1]  # noise grows with t


def test_time_shift_and_resolution_shift():
    t = torch.linspace(0, 1, 101)
    assert torch.allclose(time_shift(t, 1.0), t)
    shifted = time_shift(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted.diff() > 0).all()
    assert (shifted[1:-1] > t[1:-1]).all()  # shift > 1 spends more time near noise
    assert time_shift(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    assert torch.allclose(time_shift(shifted, 1 / 3.0), t, atol=1e-6)  # 1 / shift inverts it
    assert resolution_shift(1024, 256) == pytest.approx(2.0)
    assert resolution_shift(1024, 0) == 1.0
    shifts = resolution_shift(torch.tensor([256, 2304]), 256)
    assert torch.allclose(shifts, torch.tensor([1.0, 3.0]))


def test_logit_normal_sampling():
    t = sample_time_logit_normal(20000, gen(0), mean=0.5, std=0.8)
    assert torch.equal(t, sample_time_logit_normal(20000, gen(0), mean=0.5, std=0.8))  # seeded
    assert (t > 0).all() and (t < 1).all()
    logit = torch.logit(t.double())
    assert logit.mean().item() == pytest.approx(0.5, abs=0.03)
    assert logit.std().item() == pytest.approx(0.8, abs=0.03)
    shifted = sample_time_logit_normal(20000, gen(0), mean=0.5, std=0.8, shift=3.0)
    assert torch.allclose(shifted, time_shift(t, 3.0))
    shifts = torch.tensor([1.0, 4.0])  # one shift per sample
    per_sample = sample_time_logit_normal(2, gen(0), shift=shifts)
    assert torch.allclose(per_sample, time_shift(sample_time_logit_normal(2, gen(0)), shifts))
    t = sample_time_ddpm(5000, gen(0))
    i = schedule().step_index(t)
    assert torch.equal(t, i / 1000) and i.min() == 0 and i.max() == 999


# --- losses ----------------------------------------------------------------------------------


def test_flow_loss_normalises_per_sample_and_skips_kept_tokens():
    # Sample 0 has 10 tokens with squared error 1, sample 1 has 100 with squared error 4.
    sample_ids = torch.cat([torch.zeros(10), torch.ones(100)]).long()
    x0, eps = randn(110, D, seed=1), randn(110, D, seed=2)
    t = torch.rand(110, generator=gen(3))
    keep = torch.zeros(110, dtype=torch.bool)
    keep[:3] = keep[50:60] = True  # conditioning tokens: clean, t = 0, not counted
    offset = torch.where(sample_ids == 0, 1.0, 2.0)[:, None]
    seen = {}

    def model_fn(x, tt):
        seen["x"], seen["t"] = x, tt
        target = (eps - x0) + offset
        return torch.where(keep[:, None], target + 100.0, target)  # huge error on kept tokens

    loss = flow_loss(model_fn, x0, t, eps, sample_ids=sample_ids, num_samples=2, keep=keep)
    assert loss.item() == pytest.approx((1 + 4) / 2)  # a token mean would give ~3.7
    assert torch.equal(seen["x"][keep], x0[keep]) and (seen["t"][keep] == 0).all()
    assert torch.equal(seen["x"][~keep], flow_q_sample(x0, t, eps)[~keep])
    # A sample with no counted token is left out instead of dragging the mean to 0.
    weight = (sample_ids == 0).float()
    loss = flow_loss(model_fn, x0, t, eps, loss_weight=weight, sample_ids=sample_ids, keep=keep)
    assert loss.item() == pytest.approx(1.0)


def test_ddpm_simple_loss_and_keep():
    s, x0, eps = schedule(), randn(N, D, seed=1), randn(N, D, seed=2)
    t = sample_time_ddpm(N, gen(3))
    keep = torch.arange(N) < 3
    assert ddpm_loss(lambda x, tt: eps, s, x0, t, eps, keep=keep).item() == 0.0  # perfect eps
    seen = {}

    def model_fn(x, tt):
        seen["x"] = x
        return eps + 1.0

    assert ddpm_loss(model_fn, s, x0, t, eps, keep=keep).item() == pytest.approx(1.0)
    assert torch.equal(seen["x"][keep], x0[keep])  # kept tokens stay exactly clean


def test_ddpm_hybrid_loss_matches_closed_form_and_stops_mean_gradient():
    s, x0, eps = schedule(), randn(1, D, seed=1), randn(1, D, seed=2)
    i, v = 400, 0.3
    out = torch.cat([eps + 0.1, torch.full((1, D), v)], dim=1).requires_grad_(True)
    loss = ddpm_loss(lambda x, tt: out, s, x0, torch.tensor([i / 1000]), eps)
    # Independent reference: float64 posterior and torch.distributions' Gaussian KL.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    a, a_prev, b = abar[i], abar[i - 1], betas[i]
    x_t = a.sqrt() * x0.double() + (1 - a).sqrt() * eps.double()
    post_var = b * (1 - a_prev) / (1 - a)

    def posterior_mean(x0_):
        return (a_prev.sqrt() * b * x0_ + (1 - b).sqrt() * (1 - a_prev) * x_t) / (1 - a)

    x0_hat = (x_t - (1 - a).sqrt() * (eps.double() + 0.1)) / a.sqrt()
    frac = (v + 1) / 2
    model_std = (frac * b.log() + (1 - frac) * post_var.log()).mul(0.5).exp()
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(posterior_mean(x0.double()), post_var.sqrt()),
        torch.distributions.Normal(posterior_mean(x0_hat), model_std)).mean() / math.log(2)
    assert loss.item() == pytest.approx(0.01 + 1.0 * kl.item(), rel=1e-4)  # lambda * T = 1
    loss.backward()
    assert torch.allclose(out.grad[:, :D], torch.full((1, D), 2 * 0.1 / D))  # L_simple only
    assert (out.grad[:, D:] != 0).all()  # the variance half learns from L_vlb


def test_ddpm_hybrid_loss_at_step_0_is_the_discretized_decoder_nll():
    s, eps = schedule(), randn(1, D, seed=2)
    x0 = torch.tensor([[-1.0, -0.3, 0.2, 1.0]])  # both edge bins and two inner bins
    v = -0.4
    out = torch.cat([eps + 0.1, torch.full((1, D), v)], dim=1)
    loss = ddpm_loss(lambda x, tt: out, s, x0, torch.zeros(1), eps)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    x0_hat = x0.double() - 0.1 * ((1 - abar[0]) / abar[0]).sqrt()  # decoder mean = predicted x0
    clipped_var = betas[1] * (1 - abar[0]) / (1 - abar[1])  # beta~_0 = 0 is clipped to beta~_1
    frac = (v + 1) / 2
    log_var = frac * betas[0].log() + (1 - frac) * clipped_var.log()
    normal = torch.distributions.Normal(x0_hat, (0.5 * log_var).exp())
    x = x0.double()
    prob = torch.where(x < -0.999, normal.cdf(x + 1 / 255),
                       torch.where(x > 0.999, 1 - normal.cdf(x - 1 / 255),
                                   normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255)))
    nll_bits = -prob.log().mean() / math.log(2)
    assert loss.item() == pytest.approx(0.01 + nll_bits.item(), rel=1e-4)


# --- time grids and samplers -----------------------------------------------------------------


def flow(model_fn) -> FlowDenoiser:
    return FlowDenoiser(model_fn)


def ddpm(model_fn) -> DDPMDenoiser:
    return DDPMDenoiser(model_fn, SCHEDULE)


def f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_grids():
    ts = flow_grid(4, t_start=0.6, shift=3.0)
    assert ts.dtype == torch.float64 and ts[0] == 0.6 and ts[-1] == 0 and (ts.diff() < 0).all()
    assert flow_grid(6, shift=torch.tensor([1.0, 3.0, 3.0])).shape == (7, 3)
    assert torch.allclose(flow_grid(4), f64(1.0, 0.75, 0.5, 0.25, 0.0))
    # DDPM: the respaced train steps as i / T, noisiest first, then the clean end
    assert torch.equal(ddpm_grid(1000, 3, "linspace"), f64(0.999, 0.5, 0.0, 0.0))
    assert torch.equal(ddpm_grid(1000, 4, "trailing") * 1000, f64(999, 749, 499, 249, 0))
    # restarts: rounds that jump back up to their time and descend again
    grid = restart_grid(flow_grid(2), 2, 0.4, 2)
    assert torch.allclose(grid, f64(1, 0.5, 0, 0.4, 0.2, 0, 0.4, 0.2, 0))
    assert model_calls(grid) == 6 and model_calls(flow_grid(5)) == 5
    config = DiffusionConfig(num_inference_steps=7, restarts=1, restart_steps=3)
    assert torch.equal(sampling_grid(config, 5, 2.0),
                       torch.cat([flow_grid(5, shift=2.0), flow_grid(3, 0.3, shift=2.0)]))
    config = DiffusionConfig(objective="ddpm", sampler="ddim", timestep_spacing="leading")
    assert torch.equal(sampling_grid(config, 10), ddpm_grid(1000, 10, "leading"))
    with pytest.raises(UserError, match="at least 1 step"):
        flow_grid(0)
    with pytest.raises(UserError, match="1..1000"):
        ddpm_grid(1000, 1001)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_is_exact_on_straight_lines(shift):
    x0, eps = randn(N, D, seed=1), randn(N, D, seed=2)
    # For data concentrated at x0 the true velocity is (x_t - x0) / t: a straight line.
    straight = flow(lambda x, t: (x - x0) / t[:, None])
    assert torch.allclose(sample_euler(straight, eps, flow_grid(4, shift=shift)), x0, atol=1e-5)
    constant = flow(lambda x, t: eps - x0)
    assert torch.allclose(sample_euler(constant, eps, flow_grid(3)), x0, atol=1e-5)
    x_half = flow_q_sample(x0, torch.full((N,), 0.6), eps)
    out = sample_euler(straight, x_half, flow_grid(3, t_start=0.6, shift=shift))
    assert torch.allclose(out, x0, atol=1e-5)


def test_euler_per_token_grid_equals_separate_runs():
    x0, eps = randn(N, D, seed=1), randn(N, D, seed=2)
    shift = torch.where(torch.arange(N) < 5, 1.0, 3.0)  # two samples of different sizes
    together = sample_euler(flow(toy_model), eps, flow_grid(6, shift=shift))
    alone = [sample_euler(flow(toy_model), eps, flow_grid(6, shift=s)) for s in (1.0, 3.0)]
    assert torch.allclose(together[:5], alone[0][:5], atol=1e-6)
    assert torch.allclose(together[5:], alone[1][5:], atol=1e-6)
    straight = flow(lambda x, t: (x - x0) / t[:, None])
    assert torch.allclose(sample_euler(straight, eps, flow_grid(3, shift=shift)), x0, atol=1e-5)


def test_flow_renoise_is_the_exact_forward_jump():
    x0, e1, e2 = randn(N, D, seed=1), randn(N, D, seed=2), randn(N, D, seed=3)
    t = torch.full((N,), 0.4)
    # from the clean end it is the training process, bit for bit
    assert torch.equal(flow_renoise(x0, torch.zeros(N), t, e2), flow_q_sample(x0, t, e2))
    # from s > 0: the data part scales to 1 - t and the noise variance tops up to t^2
    s = torch.full((N,), 0.25)
    a = flow_renoise(torch.ones(N, D), s, t, torch.zeros(N, D))  # a, the scale of x_s
    b = flow_renoise(torch.zeros(N, D), s, t, torch.ones(N, D))  # b, the scale of fresh noise
    assert torch.allclose(a * (1 - s[:, None]), 1 - t[:, None])
    assert torch.allclose((a * s[:, None]) ** 2 + b ** 2, t[:, None] ** 2)
    x_s = flow_q_sample(x0, s, e1)
    assert torch.allclose(flow_renoise(x_s, s, t, e2), a * x_s + b * e2)


def test_restart_grid_renoises_then_integrates_down_again():
    x0, eps = randn(N, D, seed=1), randn(N, D, seed=2)
    keep = torch.arange(N) % 4 == 0
    times, steps, asked = [], [], []

    def model_fn(x, t):
        times.append(t[~keep].unique().tolist())
        return toy_model(x, t)

    def noise(k):
        asked.append(k)
        return randn(N, D, seed=10 + len(asked))

    grid = restart_grid(flow_grid(5, shift=2.0), 2, 0.4, 3, shift=2.0)
    out = sample_euler(flow(model_fn), eps, grid, noise, lambda i: steps.append((i.step, i.total)),
                       keep)
    # The same thing by hand: Euler from noise, then twice back to t = 0.4 and down in 3 steps.
    x = sample_euler(flow(toy_model), eps, flow_grid(5, shift=2.0), keep=keep)
    for i in range(2):
        noisy = flow_q_sample(x, torch.full((N,), 0.4), randn(N, D, seed=11 + i))
        x = sample_euler(flow(toy_model), torch.where(keep[:, None], x, noisy),
                         flow_grid(3, 0.4, shift=2.0), keep=keep)
    assert torch.allclose(out, x, atol=1e-6)
    assert torch.equal(out[keep], eps[keep])
    assert len(times) == 11 and all(len(t) == 1 for t in times)  # one time for all moving tokens
    starts = [k for k in range(11) if k == 0 or times[k][0] > times[k - 1][0]]
    assert starts == [0, 5, 8] and [round(times[k][0], 6) for k in starts] == [1.0, 0.4, 0.4]
    assert steps == [(i, 11) for i in range(1, 12)]
    assert asked == [5, 9]  # one draw per jump, for the grid steps that rise
    # A restart keeps the exact flow of data concentrated at x0 exact.
    straight = flow(lambda x, t: (x - x0) / t[:, None])
    grid = restart_grid(flow_grid(4, shift=3.0), 3, 0.3, 2, shift=3.0)
    assert torch.allclose(sample_euler(straight, eps, grid, lambda k: randn(N, D)), x0, atol=1e-5)
    with pytest.raises(ValueError, match="needs noise"):
        sample_euler(flow(toy_model), eps, grid)


def test_ddim_recovers_x0_from_true_eps():
    s, x0, eps = schedule(), randn(N, D, seed=1), randn(N, D, seed=2)

    def true_eps(x, t):  # data concentrated at x0
        a = s.alphas_cumprod[s.step_index(t)].float()[:, None]
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    x_T = ddpm_q_sample(s, x0, torch.ones(N), eps)
    assert torch.allclose(sample_ddim(ddpm(true_eps), x_T, ddpm_grid(1000, 10)), x0, atol=1e-4)


def test_ddim_per_token_grid_equals_separate_runs():
    x = randn(N, D, seed=1)
    grids = [ddpm_grid(1000, 8, spacing) for spacing in ("leading", "trailing")]
    per_token = torch.stack([grids[0]] * 5 + [grids[1]] * (N - 5), dim=1)  # (9, N)
    together = sample_ddim(ddpm(gaussian_eps), x, per_token)
    assert torch.allclose(together[:5], sample_ddim(ddpm(gaussian_eps), x, grids[0])[:5], atol=1e-6)
    assert torch.allclose(together[5:], sample_ddim(ddpm(gaussian_eps), x, grids[1])[5:], atol=1e-6)
    with pytest.raises(ValueError, match="restarts are flow-only"):
        sample_ddim(ddpm(gaussian_eps), x, restart_grid(grids[0], 1, 0.3, 2))


def test_keep_tokens_stay_clean_in_every_sampler():
    noise = randn(N, D, seed=1)
    keep = torch.arange(N) % 3 == 0
    clean = randn(N, D, seed=2)
    x = torch.where(keep[:, None], clean, noise)
    for name, denoiser, grid in (("euler", flow, flow_grid(5)), ("ddpm", ddpm, ddpm_grid(1000, 5)),
                                 ("ddim", ddpm, ddpm_grid(1000, 5))):
        times, infos = [], []

        def model_fn(xx, t):
            times.append(t)
            return toy_model(xx, t)

        sampler = partial(sample_ddim, eta=1.0) if name == "ddim" else SAMPLERS[name]
        out = sampler(denoiser(model_fn), x, grid, generator_noise(x, gen(4)), infos.append, keep)
        assert torch.equal(out[keep], clean[keep])
        assert not torch.allclose(out[~keep], noise[~keep])
        assert all((t[keep] == 0).all() and (t[~keep] > 0).all() for t in times[:-1])
        assert [(i.step, i.total) for i in infos] == [(i, 5) for i in range(1, 6)]
        assert all(torch.equal(i.denoised[keep], clean[keep]) for i in infos)
        assert torch.equal(infos[-1].x, out)


def test_callback_reports_the_denoised_estimate():
    x0, eps, infos = randn(N, D, seed=1), randn(N, D, seed=2), []
    sample_euler(flow(lambda x, t: eps - x0), eps, flow_grid(3), callback=infos.append)
    assert all(torch.allclose(i.denoised, x0, atol=1e-5) for i in infos)  # x0 = x_t - t v
    s, infos = schedule(), []
    true_eps = lambda x, t: (x - s.alphas_cumprod[s.step_index(t)].float().sqrt()[:, None] * x0) \
        / (1 - s.alphas_cumprod[s.step_index(t)].float()).sqrt()[:, None]  # noqa: E731
    x_T = ddpm_q_sample(s, x0, torch.ones(N), eps)
    sample_ddim(ddpm(true_eps), x_T, ddpm_grid(1000, 4), callback=infos.append)
    assert all(torch.allclose(i.denoised, x0, atol=1e-3) for i in infos)


def test_samplers_are_seeded():
    x = randn(N, D, seed=1)
    run = lambda seed: sample_ddpm(ddpm(toy_model), x, ddpm_grid(1000, 8),  # noqa: E731
                                   generator_noise(x, gen(seed)))
    a = run(5)
    assert torch.equal(a, run(5)) and not torch.allclose(a, run(6))


def test_denoisers_own_their_losses():
    x0, eps, t = randn(N, D, seed=1), randn(N, D, seed=2), torch.rand(N, generator=gen(3))
    keep = torch.arange(N) % 4 == 0
    assert torch.equal(flow(toy_model).loss(x0, t, eps, keep=keep),
                       flow_loss(toy_model, x0, t, eps, keep=keep))
    learned = lambda x, t: torch.cat([toy_model(x, t), torch.tanh(x)], 1)  # noqa: E731
    config = DiffusionConfig(objective="ddpm", sampler="ddpm", vlb_weight=0.01)
    got = build_denoiser(config, learned).loss(x0, t, eps, keep=keep)
    assert torch.equal(got, ddpm_loss(learned, SCHEDULE, x0, t, eps, keep=keep, vlb_weight=0.01))


def test_sampler_and_denoiser_from_config():
    assert isinstance(build_denoiser(DiffusionConfig(), toy_model), FlowDenoiser)
    ddim = DiffusionConfig(objective="ddpm", sampler="ddim", eta=0.5)
    assert isinstance(build_denoiser(ddim, toy_model), DDPMDenoiser)
    assert sampler_from_config(DiffusionConfig()) is sample_euler
    assert sampler_from_config(ddim).keywords == {"eta": 0.5}
    queue = queued_noise([torch.zeros(2)], lambda k: torch.ones(2))
    assert torch.equal(queue(0), torch.zeros(2)) and torch.equal(queue(1), torch.ones(2))


# --- guidance through every sampler: guided and conditional-only calls ------------------------


GUIDANCE_CASES = {  # sampler, denoiser, grid, interval -> (guided calls, conditional-only calls)
    # Euler, 20 unshifted steps: t = 1, 0.95, ..., 0.75 lie in [0.72, 1]
    "euler": ("euler", flow, flow_grid(20), (0.72, 1.0), (6, 14)),
    # then 2 rounds from 0.3 in 3 steps: 1 .. 0.25 and each round's 0.3 lie in [0.24, 1]
    "restart": ("euler", flow, restart_grid(flow_grid(20), 2, 0.3, 3), (0.24, 1.0), (18, 8)),
    # 20 linspace steps of 1000: 999, 946, 894, 841 lie in [0.8, 1]
    "ddpm": ("ddpm", ddpm, ddpm_grid(1000, 20), (0.8, 1.0), (4, 16)),
    "ddim": ("ddim", ddpm, ddpm_grid(1000, 20), (0.8, 1.0), (4, 16)),
}


@pytest.mark.parametrize("case", list(GUIDANCE_CASES))
def test_guidance_interval_counts_in_every_sampler(case):
    name, denoiser, grid, (lo, hi), expected = GUIDANCE_CASES[case]
    x, calls = randn(N, D, seed=1), []

    def double_fn(x2, t2):
        calls.append(("guided", t2[0].item()))
        return torch.cat([toy_model(x2[:N], t2[:N]), toy_model(-x2[N:], t2[N:])])

    def cond_fn(x1, t1):
        calls.append(("cond", t1[0].item()))
        return toy_model(x1, t1)

    model = classifier_free_guidance(double_fn, 4.0, (lo, hi), cond_fn)
    SAMPLERS[name](denoiser(model), x, grid, generator_noise(x, gen(3)))
    guided = [t for kind, t in calls if kind == "guided"]
    assert (len(guided), len(calls) - len(guided)) == expected
    assert all(lo <= t <= hi for t in guided)


# --- diffusers as the reference --------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_respacing_matches_diffusers(spacing):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(timestep_spacing=spacing)
    for steps in (50, 250, 7):
        ref.set_timesteps(steps)
        assert torch.equal(respaced_timesteps(1000, steps, spacing).flip(0), ref.timesteps)


def _float64(scheduler):
    """Give a diffusers scheduler a float64 schedule (float32 1 - abar_t / abar_prev cancels)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    scheduler.alphas_cumprod = torch.cumprod(1 - betas, 0)
    return scheduler


def _diffusers_loop(scheduler, model_fn, x, generator, **step_kwargs):
    for timestep in scheduler.timesteps:
        out = model_fn(x, torch.full((x.shape[0],), timestep.item() / 1000))
        x = scheduler.step(out, timestep, x, generator=generator, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("learned", [False, True])
def test_ddpm_matches_diffusers(learned):
    diffusers = pytest.importorskip("diffusers")
    s, x0, out = schedule(), randn(N, D, seed=1), randn(N, D, seed=2)
    model_fn = gaussian_eps
    if learned:
        model_fn = lambda x, t: torch.cat([gaussian_eps(x, t), torch.tanh(x)], 1)  # noqa: E731
    variance = "learned_range" if learned else "fixed_small"
    ref = _float64(diffusers.DDPMScheduler(clip_sample=False, timestep_spacing="linspace",
                                           variance_type=variance))
    # Single full-schedule steps, including the last one (no noise).
    ref.set_timesteps(1000)
    for k in (999, 500, 1, 0):
        o = model_fn(x0, torch.full((N,), k / 1000))
        expected = ref.step(o, k, x0, generator=gen(k)).prev_sample
        noise = torch.randn(N, D, generator=gen(k))
        got = ddpm_step(o, x0, s.alphas_cumprod[k], s.alphas_cumprod_prev[k], noise)
        assert torch.allclose(got, expected, atol=1e-5), k
    # A whole respaced run: 50 of 1000 steps.
    ref.set_timesteps(50)
    expected = _diffusers_loop(ref, model_fn, out, gen(7))
    assert expected.abs().max() < 10  # a bounded run, so the tolerance means something
    got = sample_ddpm(DDPMDenoiser(model_fn, s), out, ddpm_grid(1000, 50),
                      generator_noise(out, gen(7)))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("spacing,eta", [("leading", 0.0), ("trailing", 0.0), ("leading", 1.0)])
def test_ddim_matches_diffusers(spacing, eta):
    diffusers = pytest.importorskip("diffusers")
    s, x = schedule(), randn(N, D, seed=1)
    ref = _float64(diffusers.DDIMScheduler(clip_sample=False, timestep_spacing=spacing,
                                           set_alpha_to_one=True))
    ref.set_timesteps(50)
    expected = _diffusers_loop(ref, gaussian_eps, x, gen(8), eta=eta)
    assert expected.abs().max() < 10
    grid = ddpm_grid(1000, 50, spacing)
    out = sample_ddim(DDPMDenoiser(gaussian_eps, s), x, grid, generator_noise(x, gen(8)), eta=eta)
    assert torch.allclose(out, expected, atol=1e-5)
    # One step alone, eta = 0 (no noise): grid step k goes from train step i to the next kept one.
    k, o = 19, gaussian_eps(x, torch.full((N,), 0.5))
    i, i_prev = (grid[k: k + 2] * 1000).round().long().tolist()
    ref_step = ref.step(o, i, x, eta=0.0).prev_sample
    got = ddim_step(o, x, s.alphas_cumprod[i], s.alphas_cumprod[i_prev])
    assert torch.allclose(got, ref_step, atol=1e-5)


# --- classifier-free guidance ----------------------------------------------------------------


def test_classifier_free_guidance():
    x, t = randn(N, D, seed=1), torch.rand(N, generator=gen(2))
    cond, uncond = randn(N, D, seed=3), randn(N, D, seed=4)
    calls = []

    def double_fn(x2, t2):
        calls.append(x2.shape[0])
        assert torch.equal(x2[:N], x2[N:]) and torch.equal(t2[:N], t2[N:])
        return torch.cat([cond, uncond])

    assert torch.allclose(classifier_free_guidance(double_fn, 1.0)(x, t), cond)
    guided = classifier_free_guidance(double_fn, 4.0)(x, t)
    assert torch.allclose(guided, uncond + 4.0 * (cond - uncond))
    assert calls == [2 * N, 2 * N]  # one batched call per evaluation
    # Learned variance: guide the eps half, keep the conditional variance half.
    var_c, var_u = randn(N, D, seed=5), randn(N, D, seed=6)
    both = torch.cat([torch.cat([cond, var_c], 1), torch.cat([uncond, var_u], 1)])  # (2N, 2D)
    out = classifier_free_guidance(lambda x2, t2: both, 3.0)(x, t)
    assert torch.allclose(out[:, :D], uncond + 3.0 * (cond - uncond))
    assert torch.equal(out[:, D:], var_c)


def test_guidance_interval_guides_only_rows_inside_it():
    x = randn(N, D, seed=1)
    cond, uncond = randn(N, D, seed=3), randn(N, D, seed=4)
    t = torch.linspace(0, 1, N)  # one time per row (packed tokens at different noise levels)
    inside = (t >= 0.25) & (t <= 0.75)
    assert 0 < inside.sum() < N
    want = torch.where(inside[:, None], uncond + 5.0 * (cond - uncond), cond)
    fn = classifier_free_guidance(lambda x2, t2: torch.cat([cond, uncond]), 5.0, (0.25, 0.75))
    assert torch.allclose(fn(x, t), want)


def test_guidance_interval_runs_the_conditional_branch_alone_outside_it():
    x, cond, uncond = randn(N, D, seed=1), randn(N, D, seed=3), randn(N, D, seed=4)
    calls = []

    def double_fn(x2, t2):
        calls.append(("both", len(x2)))
        return torch.cat([cond, uncond])

    def cond_fn(x1, t1):
        calls.append(("cond", len(x1)))
        return cond

    fn = classifier_free_guidance(double_fn, 5.0, (0.5, 1.0), cond_fn=cond_fn)
    assert torch.equal(fn(x, torch.full((N,), 0.3)), cond) and calls == [("cond", N)]
    mixed = torch.linspace(0, 1, N)  # some rows inside: both branches, guided where inside
    want = torch.where((mixed >= 0.5)[:, None], uncond + 5.0 * (cond - uncond), cond)
    assert torch.allclose(fn(x, mixed), want) and calls[1:] == [("both", 2 * N)]


def test_guidance_of_the_first_columns_only():
    x, t = randn(N, D, seed=1), torch.rand(N, generator=gen(2))
    cond, uncond = randn(N, 2 * D, seed=3), randn(N, 2 * D, seed=4)  # [eps, v]: learned variance
    out = classifier_free_guidance(lambda x2, t2: torch.cat([cond, uncond]), 4.0,
                                   guided_columns=3)(x, t)
    assert torch.allclose(out[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(out[:, 3:], cond[:, 3:])  # eps column 3 and the variance: conditional


# --- DiT's respacing (improved DDPM's space_timesteps), from its formulas ---------------------


def _iddpm_reference(steps: int) -> list[int]:
    """Strides of 999 / (steps - 1) summed one by one in floats, Python's round (half to even)."""
    positions = [0.0]
    for _ in range(steps - 1):
        positions.append(positions[-1] + 999 / max(steps - 1, 1))
    return [round(p) for p in positions]


@pytest.mark.parametrize("steps", [1, 2, 10, 21, 25, 50, 100, 250, 1000])
def test_iddpm_respacing_matches_dits_timesteps_and_betas(steps):
    want = _iddpm_reference(steps)
    assert respaced_timesteps(1000, steps, "iddpm").tolist() == want
    grid = ddpm_grid(1000, steps, "iddpm")
    assert (grid[:-1] * 1000).round().long().flip(0).tolist() == want and grid[-1] == 0
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    kept = abar[want]
    betas = 1 - kept / torch.cat([kept.new_ones(1), kept[:-1]])  # a respaced chain's betas
    schedule = DDPMSchedule(1000, torch.tensor(want), kept)
    assert torch.allclose(schedule.betas, betas, rtol=1e-12, atol=0)


def test_iddpm_respacing_differs_from_linspace_where_a_sum_lands_on_a_half():
    assert _iddpm_reference(21)[10] == 499  # linspace rounds 499.5 to 500
    assert respaced_timesteps(1000, 21, "linspace")[10] == 500


def test_ddpm_step_with_learned_variance_is_dits_p_sample():
    """One ancestral step between two respaced steps, written out from improved DDPM's formulas."""
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    a, a_prev = abar[500], abar[496]
    beta = 1 - a / a_prev
    x, eps, v, z = randn(N, D, seed=1), randn(N, D, seed=2), torch.rand(N, D, generator=gen(3)) * 2 - 1, randn(N, D, seed=4)
    x0 = (x.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()
    mean = beta * a_prev.sqrt() / (1 - a) * x0 + (1 - a_prev) * (1 - beta).sqrt() / (1 - a) * x.double()
    log_var = (v.double() + 1) / 2 * beta.log() + (1 - v.double()) / 2 * (beta * (1 - a_prev) / (1 - a)).log()
    want = mean + (0.5 * log_var).exp() * z.double()
    got = ddpm_step(torch.cat([eps, v], 1), x, a, a_prev, z)
    assert torch.allclose(got.double(), want, atol=1e-5)
