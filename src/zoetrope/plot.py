"""Loss curves as PNG without a plotting library: a log-scale line chart drawn with numpy.

matplotlib is an optional extra; training writes `RUN_DIR/loss.png` on every checkpoint, so the
chart is rasterised here (white background, grey grid, blue raw loss, orange moving average).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, MARGIN = 640, 360, 24


def _line(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, color: tuple[int, int, int]) -> None:
    """Draw a polyline through pixel coordinates, sampling each segment densely."""
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:]):
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 2
        px = np.linspace(x0, x1, n).round().astype(int)
        py = np.linspace(y0, y1, n).round().astype(int)
        img[py.clip(0, HEIGHT - 1), px.clip(0, WIDTH - 1)] = color


def render_curve(steps: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 chart of loss against step, log-scale in loss."""
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    box = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN)  # x0, x1, y0, y1
    for frac in np.linspace(0, 1, 5):  # grid lines
        img[int(box[2] + frac * (box[3] - box[2])), box[0]:box[1]] = 225
        img[box[2]:box[3], int(box[0] + frac * (box[1] - box[0]))] = 225
    ok = np.isfinite(losses) & (losses > 0)
    steps, losses = steps[ok], np.log10(losses[ok])
    if len(steps) >= 2:
        span_x = max(steps.max() - steps.min(), 1)
        span_y = max(losses.max() - losses.min(), 1e-6)
        xs = box[0] + (steps - steps.min()) / span_x * (box[1] - box[0])
        ys = box[3] - (losses - losses.min()) / span_y * (box[3] - box[2])
        _line(img, xs, ys, (90, 140, 220))
        k = max(1, len(ys) // 20)  # moving average over ~5% of the run
        smooth = np.convolve(ys, np.ones(k) / k, mode="valid")
        _line(img, xs[k - 1:], smooth, (240, 130, 30))
    img[box[3], box[0]:box[1]] = 0  # axes
    img[box[2]:box[3], box[0]] = 0
    return img


def plot_metrics(metrics: Path, out: Path) -> Path | None:
    """Read metrics.jsonl and write the loss chart to `out` (nothing if there are no metrics)."""
    if not Path(metrics).is_file():
        return None
    records = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    if not records:
        return None
    from .data.video import write_png
    steps = np.array([r["step"] for r in records], dtype=float)
    losses = np.array([r["loss"] for r in records], dtype=float)
    return write_png(out, render_curve(steps, losses))
