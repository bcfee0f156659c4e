"""Scaling laws from a sweep's runs: the compute frontier, its power-law fit, and the reports.

Each finished run is a point (training compute C, held-out loss L) of one model size. The compute
frontier is the lower envelope of all points: a run is on it when no cheaper run reached a lower
loss. The frontier is fitted with a saturating power law (Kaplan et al., arXiv 2001.08361; the
irreducible term as in Hoffmann et al., arXiv 2203.15556):

    L(C) = a * C^(-b) + c

by least squares on log L (relative errors, so every decade of compute weighs the same). For a
fixed c the best (a, b) is a straight-line fit of log(L - c) on log C, so c is first searched on a
grid below min L, then (log a, b, c) are refined together by Gauss-Newton. The standard errors are
those of the Gauss-Newton covariance s^2 (J^T J)^-1 with s^2 = SSE / (n - 3), so they need at least
four frontier points; three give a fit without them, fewer no fit.

The compute-optimal size for a budget is the size whose own curve (log-log interpolation between
its runs, never extrapolated) reaches the lowest held-out loss at that compute.

`write_reports` writes DIR/scaling.json, DIR/scaling.md and, with matplotlib (the `plot` extra),
DIR/scaling.png (and DIR/scaling-critic.png when critic metrics were measured), each atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import atomic_write, atomic_write_text
from .log import warn

GRID_C = 400  # values of c tried below min L before Gauss-Newton refines
GN_ITERATIONS = 50


@dataclass
class PowerLaw:
    """L(C) = a * C^(-b) + c, with standard errors (None when the points cannot give them)."""

    a: float
    b: float
    c: float
    a_stderr: float | None
    b_stderr: float | None
    c_stderr: float | None
    rmse_log: float  # root-mean-square residual of log L
    points: int  # frontier points fitted

    def __call__(self, compute: np.ndarray) -> np.ndarray:
        return self.a * np.asarray(compute, dtype=float) ** (-self.b) + self.c


def frontier(compute: Sequence[float], loss: Sequence[float]) -> list[int]:
    """Indices of the compute frontier, cheapest first: each reached a lower loss than every
    cheaper (or equally cheap) point."""
    order = sorted(range(len(compute)), key=lambda i: (compute[i], loss[i]))
    kept: list[int] = []
    for i in order:
        if math.isfinite(loss[i]) and (not kept or loss[i] < loss[kept[-1]]):
            kept.append(i)
    return kept


def _predict(theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L at centred log-compute x for theta = (u, b, c), L = exp(u - b x) + c; and its
    Jacobian (n, 3) with respect to theta."""
    u, b, c = theta
    power = np.exp(u - b * x)
    total = power + c
    jac = np.stack([power / total, -x * power / total, 1.0 / total], axis=1)
    return np.log(total), jac


def _grid_start(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Best (u, b, c) over a grid of c in [0, min L): for each c, a line through log(L - c)."""
    low = float(np.exp(y).min())
    best, best_sse = None, math.inf
    for c in low * np.arange(GRID_C) / GRID_C:
        slope, u = np.polyfit(x, np.log(np.exp(y) - c), 1)
        theta = np.array([u, -slope, c])
        sse = float(((_predict(theta, x)[0] - y) ** 2).sum())
        if sse < best_sse:
            best, best_sse = theta, sse
    return best


def _gauss_newton(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refine theta by Gauss-Newton with step halving, keeping 0 <= c < min L; returns theta and
    the Jacobian at it."""
    low = float(np.exp(y).min())
    pred, jac = _predict(theta, x)
    sse = float(((pred - y) ** 2).sum())
    for _ in range(GN_ITERATIONS):
        step = np.linalg.lstsq(jac, y - pred, rcond=None)[0]
        for _ in range(30):  # halve until the error drops and c stays in range
            trial = theta + step
            if 0 <= trial[2] < low:
                trial_pred, trial_jac = _predict(trial, x)
                trial_sse = float(((trial_pred - y) ** 2).sum())
                if trial_sse < sse:
                    break
            step = step / 2
        else:
            break  # no step improves: converged
        theta, pred, jac, sse = trial, trial_pred, trial_jac, trial_sse
    return theta, jac


def fit_power_law(compute: Sequence[float], loss: Sequence[float]) -> PowerLaw | None:
    """Least-squares fit of L = a * C^(-b) + c on log L; None with fewer than three points."""
    if len(compute) < 3:
        return None
    log_c, y = np.log(np.asarray(compute, float)), np.log(np.asarray(loss, float))
    x0 = float(log_c.mean())  # centred: a at C = exp(x0) is well conditioned, C^-b is not
    x = log_c - x0
    theta, jac = _gauss_newton(_grid_start(x, y), x, y)
    residual = _predict(theta, x)[0] - y
    sse, n = float((residual**2).sum()), len(y)
    u, b, c = (float(v) for v in theta)
    a = math.exp(u + b * x0)
    errors: list[float | None] = [None, None, None]
    if n > 3:
        cov = sse / (n - 3) * np.linalg.pinv(jac.T @ jac)
        # a = exp(u + b x0): the delta method through u and b
        var_a = a**2 * (cov[0, 0] + 2 * x0 * cov[0, 1] + x0**2 * cov[1, 1])
        errors = [math.sqrt(max(v, 0.0)) for v in (var_a, cov[1, 1], cov[2, 2])]
    return PowerLaw(a, b, c, *errors, rmse_log=math.sqrt(sse / n), points=n)


def _interp_log(points: list[tuple[float, float]], budget: float) -> float | None:
    """A size's loss at `budget` by log-log interpolation between its runs; None outside them."""
    xs = [math.log(c) for c, _ in points]
    if not xs[0] <= math.log(budget) <= xs[-1]:
        return None
    return float(np.exp(np.interp(math.log(budget), xs, [math.log(v) for _, v in points])))


def compute_optimal(runs: list[dict], metric: str = "heldout_loss", budgets: int = 6) -> list[dict]:
    """For `budgets` log-spaced computes across the runs: each size's loss there (interpolated)
    and the size with the lowest."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        curves.setdefault(run["size"], []).append((run["train_flops"], run[metric]))
    for points in curves.values():
        points.sort()
    flops = [run["train_flops"] for run in runs]
    rows = []
    for budget in np.geomspace(min(flops), max(flops), budgets) if flops else []:
        losses = {size: _interp_log(points, float(budget)) for size, points in curves.items()}
        known = {s: v for s, v in losses.items() if v is not None}
        best = min(known, key=known.get) if known else None
        rows.append({"train_flops": float(budget), "best_size": best, "losses": losses})
    return rows


def summarize(runs: list[dict], metric: str = "heldout_loss") -> dict:
    """The frontier (run names), its power-law fit and the compute-optimal table of `metric`."""
    done = [r for r in runs if r.get(metric) is not None]
    flops, values = [r["train_flops"] for r in done], [r[metric] for r in done]
    edge = frontier(flops, values)
    fit = fit_power_law([flops[i] for i in edge], [values[i] for i in edge])
    return {"metric": metric, "frontier": [done[i]["name"] for i in edge],
            "fit": asdict(fit) if fit else None, "compute_optimal": compute_optimal(done, metric)}


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _fit_text(fit: dict | None) -> str:
    if fit is None:
        return "no fit (fewer than three frontier points)"
    def pm(name: str) -> str:
        err = fit[f"{name}_stderr"]
        return f"{fit[name]:.4g}" + (f" ± {err:.2g}" if err is not None else "")
    return (f"L(C) = a * C^(-b) + c with a = {pm('a')}, b = {pm('b')}, c = {pm('c')} "
            f"({fit['points']} frontier points, rms log residual {fit['rmse_log']:.3g})")


def _run_rows(runs: list[dict]) -> list[str]:
    rows = ["| run | size | steps | lr | batch | params | train FLOPs | held-out loss | wall s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r.get("error"):
            rows.append(f"| {r['name']} | {r['size']} | {r['steps']} | {r['lr']:g} | "
                        f"{r['batch_size']} | failed: {r['error']} | | | |")
            continue
        rows.append(f"| {r['name']} | {r['size']} | {r['steps']} | {r['lr']:g} | {r['batch_size']}"
                    f" | {r['params'] / 1e6:.3f}M | {r['train_flops']:.3g} | "
                    f"{r['heldout_loss']:.4f} | {r['wall_time_s']:.1f} |")
    return rows


def _optimal_rows(summary: dict) -> list[str]:
    table = summary["compute_optimal"]
    sizes = list(table[0]["losses"]) if table else []
    rows = ["| train FLOPs | compute-optimal size | " + " | ".join(sizes) + " |",
            "|---|---|" + "---|" * len(sizes)]
    for row in table:
        cells = ["—" if row["losses"][s] is None else f"{row['losses'][s]:.4f}" for s in sizes]
        rows.append(f"| {row['train_flops']:.3g} | {row['best_size'] or '—'} | "
                    + " | ".join(cells) + " |")
    return rows


def markdown(report: dict) -> str:
    """scaling.md: the runs, the fit of each metric and its compute-optimal sizes."""
    lines = [f"# Scaling: {report['recipe']}", "", report["flops_note"], "", "## Runs", "",
             *_run_rows(report["runs"])]
    for summary in report["fits"].values():
        lines += ["", f"## {summary['metric']} against training compute", "",
                  f"Frontier: {', '.join(summary['frontier']) or '—'}.", "",
                  _fit_text(summary["fit"]), "", *_optimal_rows(summary)]
    return "\n".join(lines) + "\n"


def _plot(runs: list[dict], summary: dict, path: Path) -> None:
    """Metric against training FLOPs: one curve per size, the frontier and its fit."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    metric = summary["metric"]
    done = [r for r in runs if r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for size in dict.fromkeys(r["size"] for r in done):
        points = sorted((r["train_flops"], r[metric]) for r in done if r["size"] == size)
        ax.plot(*zip(*points), "o-", label=size, alpha=0.8)
    by_name = {r["name"]: r for r in done}
    edge = [(by_name[n]["train_flops"], by_name[n][metric]) for n in summary["frontier"]]
    if edge:
        ax.plot(*zip(*edge), "k--", lw=1, label="compute frontier")
    if summary["fit"]:
        fit = PowerLaw(**summary["fit"])
        xs = np.geomspace(edge[0][0], edge[-1][0], 100)
        ax.plot(xs, fit(xs), "r-", lw=1.5,
                label=f"fit: {fit.a:.3g} C^-{fit.b:.3f} + {fit.c:.3g}")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs (3 x forward multiply-adds)",
           ylabel=metric.replace("_", " "), title=f"{metric.replace('_', ' ')} vs compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp))
    plt.close(fig)


def write_reports(out: str | Path, report: dict) -> None:
    """DIR/scaling.json, scaling.md and the plots (skipped, with a warning, without matplotlib)."""
    out = Path(out)
    atomic_write_text(out / "scaling.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "scaling.md", markdown(report))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warn("matplotlib is not installed (pip install 'zoetrope[plot]'): no scaling.png")
        return
    for name, summary in report["fits"].items():
        stem = "scaling" if name == "heldout_loss" else f"scaling-{name.split('_')[0]}"
        _plot(report["runs"], summary, out / f"{stem}.png")
