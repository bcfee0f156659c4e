"""Scaling-law math: the compute frontier, the power-law fit, compute-optimal sizes."""

import math

import numpy as np
import pytest

from zoetrope.scaling import compute_optimal, fit_power_law, frontier, summarize


def test_fit_recovers_known_exponents_from_noisy_points():
    rng = np.random.default_rng(0)
    compute = np.geomspace(1e10, 1e14, 16)
    loss = 5000.0 * compute ** -0.3 + 0.2  # the power term spans 5 down to 0.3
    noisy = loss * np.exp(rng.normal(0.0, 0.02, compute.size))  # 2% multiplicative noise
    fit = fit_power_law(compute, noisy)
    assert abs(fit.b - 0.3) < 0.03 and abs(fit.b - 0.3) < 3 * fit.b_stderr
    assert abs(fit.c - 0.2) < 0.05 and abs(fit.c - 0.2) < 3 * fit.c_stderr
    assert 0.01 < fit.rmse_log < 0.04  # the noise it was given, not a perfect fit
    assert fit.points == 16


def test_fit_is_exact_on_exact_points():
    compute = np.geomspace(1e8, 1e12, 6)
    fit = fit_power_law(compute, 3.0 * compute ** -0.15 + 0.5)
    assert fit.a == pytest.approx(3.0, rel=1e-6)
    assert fit.b == pytest.approx(0.15, rel=1e-6)
    assert fit.c == pytest.approx(0.5, rel=1e-6)
    assert fit(np.array([1e10]))[0] == pytest.approx(3.0 * 1e10 ** -0.15 + 0.5, rel=1e-9)


def test_fit_needs_three_points_and_four_for_errors():
    assert fit_power_law([1e9, 1e10], [2.0, 1.0]) is None
    fit = fit_power_law([1e9, 1e10, 1e11], [2.0, 1.5, 1.3])
    assert fit is not None and fit.b_stderr is None


def test_frontier_keeps_points_no_cheaper_point_beats():
    compute = [4.0, 1.0, 2.0, 3.0, 5.0, 3.0]
    loss = [1.0, 3.0, 3.5, 2.0, 1.5, math.nan]
    assert frontier(compute, loss) == [1, 3, 0]


def test_compute_optimal_picks_the_size_lowest_at_each_budget():
    runs = [{"size": "small", "train_flops": 1e9, "loss": 2.0},
            {"size": "small", "train_flops": 1e11, "loss": 1.2},
            {"size": "big", "train_flops": 1e10, "loss": 2.5},
            {"size": "big", "train_flops": 1e12, "loss": 0.8}]
    rows = compute_optimal(runs, "loss", budgets=4)  # 1e9, 1e10, 1e11, 1e12
    assert [r["best_size"] for r in rows] == ["small", "small", "small", "big"]
    assert rows[0]["losses"]["big"] is None  # never extrapolated
    assert rows[1]["losses"]["small"] == pytest.approx(math.sqrt(2.0 * 1.2))  # log-log midpoint


def test_summarize_names_the_frontier_runs():
    runs = [{"name": f"r{i}", "size": "s", "train_flops": 10.0 ** i, "loss": 1 + 1 / i}
            for i in range(1, 6)] + [{"name": "bad", "size": "s", "train_flops": 1e3, "loss": 9}]
    summary = summarize(runs, "loss")
    assert summary["frontier"] == ["r1", "r2", "r3", "r4", "r5"]
    assert summary["fit"]["points"] == 5
