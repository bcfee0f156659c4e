"""Prompting with images and videos, measured: `zoetrope eval --task NAME`.

For every prompt of the vocabulary (`eval.build_prompts`), a shapes-world clip is rendered with
the prompt's colour, shape and direction (render seed: seed + clip index, one window of frames),
and the task is given what a user would give, cut from that render:

  animate          its frame 0 as the image; output one window
  extend-forward   its first 1 + 4k frames (about half); output one window that starts with them
  extend-backward  its last 1 + 4k frames; output one window that ends with them
  long             the prompt alone; output `frames` frames (default 257), window after window
  loop             the prompt alone; output `frames` frames whose last frame leads into the
                   first, or by default as many as the clip made takes to come back closest to
                   its start (`conditioning.loop_length`, one to four windows: 17..65 frames). A
                   loop obeys the world's laws only if a round trip (to the far wall and back)
                   takes exactly the clip's length: at 64 px and the world's middle speed that
                   is 32 frames, while 17 frames would need a speed above the world's range
  connect          its first 5 frames as A and its last 5 as B; output one window (A, gap, B)
  edit             the render in another colour (the next one in `COLORS`) as the clip, the
                   prompt's colour as the edit, at `strength` (default 0.6)

Generalization splits (`SPLITS`, phyworld-style: Meng et al., arXiv 2411.02385) change what the
renders are drawn from: "in" the world's own ranges; "ood-slow" and "ood-fast" speeds outside
its 1/32 .. 1/16 of the extent per frame; "ood-small" and "ood-large" objects of 0.15 and 0.35
of the shorter side instead of 1/4; "combo" only the combinations a recipe held out of training
(`data.holdout`, given here as `holdout`), whose prompts every other split leaves out. Frame
sizes and clip lengths outside training are the `size` and `frames` arguments.
`run_splits` runs several side by side.

Each clip is judged by the world-consistency critic (`critic.critique`) plus what the task
promises, and passes when every check of its task holds:

  given     frames fed as given come back: their mean absolute error to the source (uint8 levels)
            is at most the VAE's own round-trip error on them plus GIVEN_SLACK
  followed  every attribute of the prompt right (long: judged on the first window)
  intact    no object vanishing, duplicating, morphing or teleporting anywhere
  seams     no vanishing, duplicate, teleport, speed change, wall pass or bad bounce within
            SEAM_RADIUS frames of a seam (where generated frames meet given ones, a long clip's
            windows meet, or, for loop, the clip followed by itself wraps)
  windows   (long) every window the DiT made is intact on its own
  moving    (long) the object's median speed in the last window is at least half the first's
  path      (edit) the object's tracked centre stays within EDIT_PATH of the source's in every
            frame (a share of the shorter side: 4 px at 64x64)

Where the true path is known (extension, connect, edit: the render goes on), the RMS distance
between the tracked and the true centres over the generated frames is reported too, and every
clip gets the physics scores of `zoetrope.physics` (error against the ideal bouncing path fitted
to it, per frame and overall, speed drift, missed and mid-air bounces): for long clips, how the
error grows with the frame index.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from .conditioning import Task, check_overlap, default_loop_lengths
from .critic import INTACT_KINDS, critique, find_bar, has_occluder, moving_now, parse_prompt
from .data.shapes import COLORS, render_clip, undirected
from .errors import UserError, atomic_write, atomic_write_text
from .eval import SHEET_FRAMES, build_prompts, contact_sheet
from .physics import physics_from_critique

TASKS = ("animate", "extend-forward", "extend-backward", "long", "loop", "connect", "edit")
# What a long clip's or a loop's windows holding its own frames are prompted with: the model's
# diffusion.continuation, the prompt, the empty prompt (unguided), the prompt without its
# direction (`a red circle`), or with the direction the object moves in (`critic.moving_now`) at
# the end of the frames a window holds, or at their start
CONTINUATIONS = ("model", "prompt", "empty", "undirected", "moving", "moving-start")
SEAM_RADIUS = 2  # frames either side of a seam whose errors are the seam's
SEAM_KINDS = ("vanishing", "duplicate", "teleport", "speed_change", "wall_pass", "bad_bounce")
GIVEN_SLACK = 2.0  # uint8 levels a given frame may be further off than the VAE's round trip
EDIT_PATH = 1 / 16  # of the shorter side: 4 px at 64x64
SPLITS: dict[str, dict] = {
    "in": {},
    "ood-slow": {"speed_range": (1 / 64, 1 / 40)},
    "ood-fast": {"speed_range": (1 / 12, 1 / 9)},  # (capped by the free steps: 6 px at 64)
    "ood-small": {"scale": 0.15},
    "ood-large": {"scale": 0.35},
    "combo": {},
}
CHECKS = {"animate": ("given", "followed", "intact"),
          "extend-forward": ("given", "intact", "seams"),
          "extend-backward": ("given", "intact", "seams"),
          "long": ("followed", "intact", "seams", "windows", "moving"),
          "loop": ("followed", "intact", "seams"),
          "connect": ("given", "intact", "seams"),
          "edit": ("followed", "intact", "path")}

# generate(cases, seed) -> one uint8 clip (T, H, W, 3) per case (an array (B, T, H, W, 3), or a
# list where lengths differ); roundtrip(clip (T, H, W, 3)) -> the VAE's copy
Generate = Callable[[list["Case"], int], "np.ndarray | list[np.ndarray]"]
Roundtrip = Callable[[np.ndarray], np.ndarray]


@dataclass
class Span:
    """Output frames first..stop-1 are given: they must come back as source[first:stop]. The
    clip fed was source[fed:stop] (fed < first where the fed clip's frame 0 is drawn anew)."""

    fed: int
    first: int
    stop: int


@dataclass
class Case:
    """One clip of a task eval: what to ask, what is given, and where to look."""

    index: int
    prompt: str  # what the generation is asked
    frames: int | None  # output frames; None: the model finds them (a loop's length)
    source: np.ndarray  # the render given frames are cut from (T, H, W, 3); the truth to compare
    source_prompt: str
    task: Task  # given frames of this one clip (long: none, only how windows overlap)
    given: list[Span] = field(default_factory=list)
    seams: list[int] = field(default_factory=list)  # output frames where new meets given
    path_frames: list[int] = field(default_factory=list)  # frames with a known true path
    windows: list[tuple[int, int]] = field(default_factory=list)  # (long) the DiT's windows
    wrap: bool = False  # (loop) judge the clip followed by itself
    object_size: int | None = None  # px across, as rendered (splits change it)


def _other_color(color: str) -> str:
    names = list(COLORS)
    return names[(names.index(color) + 1) % len(names)]


def _given_length(window: int) -> int:
    """About half a window, 1 + 4k frames: 9 of 17."""
    return 1 + 4 * max(1, (window - 1) // 8)


def long_windows(frames: int, window: int, overlap: int = 1,
                 trim: int = 0) -> list[tuple[int, int]]:
    """(start, stop) of the windows a long clip is made in (`conditioning._forward` with no
    given frames): each holds the last 1 + 4 x overlap frames of the one before, or with `trim`
    (`Task.trim`) the 1 + 4 x overlap frames before the one before's last 4 x trim."""
    step = window - 1 - 4 * overlap - 4 * trim
    out, start = [(0, min(window, frames))], 0
    while out[-1][1] < frames:
        start += step
        out.append((start, min(start + window, frames)))
    return out


def split_prompts(clips: int, seed: int, split: str, holdout: Sequence[str] = ()) -> list[str]:
    """`clips` prompts: balanced over the vocabulary less the held-out combinations, or (split
    "combo") cycling through exactly the held-out ones."""
    from .data.shapes import held_out, parse_holdout

    patterns = [parse_holdout(p) for p in holdout]
    if split == "combo" and not patterns:
        raise UserError("the combo split needs the held-out combinations (--holdout, as in the "
                        "recipe's data.holdout)")
    every = build_prompts(len(COLORS) * 12, seed, "shapes")  # each combination once
    out = [p for p in every if (split == "combo") == held_out(parse_prompt(p)[0], patterns)]
    if not out:
        raise UserError("the held-out combinations leave no prompt to ask")
    if split == "combo":
        return [out[i % len(out)] for i in range(clips)]
    extra = build_prompts(clips * 2 * len(every) // len(out) + clips, seed, "shapes")
    return [p for p in extra if not held_out(parse_prompt(p)[0], patterns)][:clips]


def build_cases(task: str, clips: int, seed: int, size: tuple[int, int, int],
                frames: int | None = None, strength: float = 0.6, split: str = "in",
                holdout: Sequence[str] = (), overlap: int = 1,
                continuation: str = "model", loop_tries: int = 1, trim: int = 0) -> list[Case]:
    """The cases of `task` over `clips` balanced prompts; size = (window frames, height, width);
    `overlap` (long and loop): `conditioning.Task`'s; `continuation` (long and loop): one of
    `CONTINUATIONS`, each case's `Task.continuation_prompt`; `loop_tries` (a loop whose length
    is found): `Task.loop_tries`; `trim` (long and loop): `Task.trim`."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if continuation not in CONTINUATIONS:
        raise UserError(f"unknown continuation {continuation!r}; known: "
                        f"{', '.join(CONTINUATIONS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    window, h, w = size
    if window < 9 or (window - 1) % 4:
        raise UserError(f"task evals need a window of at least 9 frames, 1 + 4k; got {window}")
    if task == "connect" and window < 13:
        raise UserError(f"--task connect gives 5 frames at each end: it needs a window of at "
                        f"least 13 frames, got {window}")
    if not 0 < strength <= 1:
        raise UserError(f"strength must be in (0, 1], got {strength}")
    check_overlap(overlap, window, trim)
    found = task == "loop" and frames is None  # the loop's length found by the model
    if loop_tries != 1 and not found:
        raise UserError("--loop-tries picks among clips made for a loop whose length is found: "
                        "use it with --task loop and no --frames")
    total = {"long": frames or 257, "loop": frames or window}.get(task, window)
    if task in ("long", "loop") and not found and (total <= window or (total - 1) % 4):
        raise UserError(f"--task {task} needs more frames than a window ({window}), 1 + 4k; "
                        f"got {total}")
    cases = []
    for i, prompt in enumerate(split_prompts(clips, seed, split, holdout)):
        target = parse_prompt(prompt)[0]
        color = _other_color(target.color) if task == "edit" else target.color
        clip = render_clip(total, h, w, color, target.shape, target.direction, seed=seed + i,
                           **SPLITS[split])
        src, g = clip.frames, _given_length(window)
        case = Case(i, prompt, None if found else total, src, clip.caption, None,
                    object_size=clip.objects[0].size)
        if task == "animate":
            case.task, case.given = Task(image=src[0]), [Span(0, 0, 1)]
        elif task == "extend-forward":
            case.task, case.given, case.seams = Task(video=src[:g], extend="forward"), \
                [Span(0, 0, g)], [g]
            case.path_frames = list(range(g, total))
        elif task == "extend-backward":
            start = total - g
            case.task = Task(video=src[start:], extend="backward")
            case.given, case.seams = [Span(start, start + 1, total)], [start + 1]
            case.path_frames = list(range(start + 1))
        elif task == "connect":
            a = b = 5
            case.task = Task(connect=(src[:a], src[total - b:]))
            case.given = [Span(0, 0, a), Span(total - b, total - b + 1, total)]
            case.seams, case.path_frames = [a, total - b + 1], list(range(a, total - b + 1))
        elif task == "edit":
            case.task = Task(video=src, strength=strength)
            case.path_frames = list(range(total))
        elif task == "loop":
            case.task = Task(loop=True, overlap=overlap,
                             continuation_prompt=_continuation(continuation, prompt),
                             loop_lengths=default_loop_lengths(window) if found else None,
                             loop_tries=loop_tries, trim=trim)
            case.wrap = True  # the seam is where the clip wraps: its length
        else:  # long
            case.task = Task(overlap=overlap, trim=trim,
                             continuation_prompt=_continuation(continuation, prompt))
            case.windows = long_windows(total, window, overlap, trim)
            case.seams = [start + 1 + 4 * overlap for start, _ in case.windows[1:]]
        cases.append(case)
    return cases


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _centers(frames: np.ndarray, prompt: str) -> list[tuple[float, float] | None]:
    return critique(frames, prompt).objects[0].centers


def _speed(centers: list) -> float:
    seen = [(t, c) for t, c in enumerate(centers) if c is not None]
    steps = [math.dist(a, b) / (s - t) for (t, a), (s, b) in zip(seen, seen[1:])]
    return float(np.median(steps)) if steps else 0.0


def judge(case: Case, video: np.ndarray, roundtrip: Roundtrip | None = None) -> dict:
    """One clip's record: each check of its task, the numbers behind them, and the verdict."""
    video = np.asarray(video)
    n, h, w = video.shape[:3]
    if case.frames is not None and n != case.frames:
        raise UserError(f"clip {case.index}: expected {case.frames} frames, got {n}")
    checks, numbers = {}, {}
    verdict = critique(video, case.prompt)
    errors = verdict.errors
    checks["intact"] = verdict.intact
    checks["followed"] = verdict.followed
    if case.given:
        out_err = rt_err = 0.0
        for s in case.given:
            out_err = max(out_err, _mae(video[s.first:s.stop], case.source[s.first:s.stop]))
            if roundtrip is not None:
                back = roundtrip(case.source[s.fed:s.stop])[s.first - s.fed:]
                rt_err = max(rt_err, _mae(back, case.source[s.first:s.stop]))
        numbers["given_error"], numbers["roundtrip_error"] = round(out_err, 3), round(rt_err, 3)
        checks["given"] = out_err <= rt_err + GIVEN_SLACK
    seams = case.seams
    if case.wrap:  # the clip followed by itself: the wrap is a seam
        errors = critique(np.concatenate([video, video]), case.prompt).errors
        seams = [n]
    seam_hits = sorted({(t, k) for k in SEAM_KINDS for t in errors.get(k, ())
                        for s in seams if abs(t - s) <= SEAM_RADIUS})
    checks["seams"] = not seam_hits
    numbers["seam_errors"] = [f"{k}@{t}" for t, k in seam_hits]
    if case.windows:
        first = critique(video[:case.windows[0][1]], case.prompt)
        checks["followed"] = first.followed
        parts = [critique(video[a:b], case.prompt) for a, b in case.windows]
        checks["windows"] = all(p.intact for p in parts)
        numbers["broken_windows"] = [i for i, p in enumerate(parts) if not p.intact]
        speeds = [_speed(p.objects[0].centers) for p in (parts[0], parts[-1])]
        numbers["speed_first_last"] = [round(s, 3) for s in speeds]
        checks["moving"] = speeds[1] >= 0.5 * speeds[0] > 0
    if case.path_frames:
        truth = _centers(case.source, case.source_prompt)
        got = verdict.objects[0].centers
        dists = [math.dist(got[t], truth[t]) for t in case.path_frames
                 if got[t] is not None and truth[t] is not None]
        missing = len(case.path_frames) - len(dists)
        numbers["path_rms_px"] = round(float(np.sqrt(np.mean(np.square(dists)))), 3) \
            if dists else None
        numbers["path_max_px"] = round(max(dists), 3) if dists and not missing else None
        checks["path"] = bool(dists) and not missing and max(dists) <= EDIT_PATH * min(h, w)
    # against the ideal bouncing path
    bar = find_bar(video) if has_occluder(case.prompt) else None
    phys = physics_from_critique(verdict, case.object_size, bar).objects[0]
    numbers.update(physics_rms_px=phys.rms_error, physics_max_px=phys.max_error,
                   speed_drift=phys.speed_drift, missed_bounces=phys.missed_bounces,
                   mid_air_reversals=phys.mid_air_reversals)
    wanted = {k: checks[k] for k in CHECKS[_kind(case)]}
    return {"index": case.index, "prompt": case.prompt, "source": case.source_prompt,
            "frames": n, "passed": all(wanted.values()), "checks": wanted, "numbers": numbers,
            "errors": {k: v for k, v in verdict.errors.items() if v},
            "adherence": verdict.adherence, "error_by_frame": phys.errors,
            "ideal": phys.ideal}


def _kind(case: Case) -> str:
    t = case.task
    if case.windows:
        return "long"
    if t.image is not None:
        return "animate"
    if t.strength is not None:
        return "edit"
    if t.extend is not None:
        return f"extend-{t.extend}"
    return "connect" if t.connect is not None else "loop"


def _continuation(kind: str, prompt: str) -> str | None:
    """`Task.continuation_prompt` of a `CONTINUATIONS` kind for `prompt`."""
    if kind in ("moving", "moving-start"):
        return moving_now(prompt, "start" if kind == "moving-start" else "end")
    return {"model": None, "prompt": prompt, "empty": "",  # "model": diffusion.continuation
            "undirected": undirected(prompt)}[kind]


def merge_tasks(cases: Sequence[Case]) -> Task:
    """One Task for a batch of cases of one kind: their given frames and continuation prompts,
    one per prompt."""
    first = cases[0].task
    return replace(first, image=None if first.image is None else [c.task.image for c in cases],
                   continuation_prompt=None if first.continuation_prompt is None else
                   [c.task.continuation_prompt for c in cases],
                   video=None if first.video is None else [c.task.video for c in cases],
                   connect=None if first.connect is None else
                   ([c.task.connect[0] for c in cases], [c.task.connect[1] for c in cases]))


PATH_RGB, NOW_RGB = (110, 110, 110), (255, 140, 0)  # the ideal path, and where it is now


def draw_ideal(frames: np.ndarray, times: Sequence[int],
               ideal: Sequence[tuple[float, float] | None]) -> np.ndarray:
    """Thumbnails (K, H, W, 3) of frames `times` with the fitted ideal path drawn over them: a
    grey dot per frame of the clip, and an orange cross where the ideal object is at that frame
    (on background pixels only, so the object itself stays visible)."""
    out = frames.copy()
    h, w = out.shape[1:3]
    points = [(int(x), int(y)) for p in ideal if p is not None for x, y in [p]
              if 0 <= x < w and 0 <= y < h]
    for k, t in enumerate(times):
        frame, dark = out[k], out[k].max(-1) < 40
        for x, y in points:
            if dark[y, x]:
                frame[y, x] = PATH_RGB
        if t < len(ideal) and ideal[t] is not None:
            x, y = (int(v) for v in ideal[t])
            for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                if 0 <= x + dx < w and 0 <= y + dy < h and dark[y + dy, x + dx]:
                    frame[y + dy, x + dx] = NOW_RGB
    return out


def run_task_eval(task: str, generate: Generate, out_dir: str | Path, clips: int = 84,
                  seed: int = 0, size: tuple[int, int, int] = (17, 64, 64),
                  frames: int | None = None, strength: float = 0.6, batch_size: int = 4,
                  roundtrip: Roundtrip | None = None, progress: bool = True,
                  split: str = "in", holdout: Sequence[str] = (), overlap: int = 1,
                  continuation: str = "model", loop_tries: int = 1, trim: int = 0) -> dict:
    """Build `task`'s cases (from `split`), generate and judge each, write report.json,
    report.md and contact_sheet.png (the ideal paths drawn over) to `out_dir`; return the
    report."""
    if clips < 1 or batch_size < 1:
        raise UserError(f"clips and batch_size must be >= 1, got {clips} and {batch_size}")
    cases = build_cases(task, clips, seed, tuple(size), frames, strength, split, holdout, overlap,
                        continuation, loop_tries, trim)
    records, thumbs = [], []
    with tqdm(total=clips, desc=f"eval {task} ({split})", unit="clip",
              disable=not progress) as bar:
        for start in range(0, clips, batch_size):
            batch = cases[start:start + batch_size]
            video = [np.asarray(v) for v in generate(batch, seed + start)]
            if len(video) != len(batch) or any(
                    v.dtype != np.uint8 or v.ndim != 4 or c.frames not in (None, len(v))
                    for v, c in zip(video, batch)):
                raise UserError(f"generate must return {len(batch)} uint8 clips (T, H, W, 3) of "
                                f"{batch[0].frames or 'any'} frames, got "
                                f"{[(str(v.dtype), v.shape) for v in video]}")
            for case, clip in zip(batch, video):
                record = judge(case, clip, roundtrip)
                record["seed"] = seed + start
                records.append(record)
                pick = np.round(np.linspace(0, len(clip) - 1, min(SHEET_FRAMES, len(clip))))
                pick = pick.astype(int)
                thumbs.append(draw_ideal(clip[pick], pick, record["ideal"]))
            bar.update(len(batch))
    report = {"config": {"task": task, "split": split, "holdout": list(holdout),
                         "clips": clips, "seed": seed, "size": list(size),
                         "frames": cases[0].frames, "loop_lengths": cases[0].task.loop_lengths,
                         "loop_tries": cases[0].task.loop_tries, "trim": cases[0].task.trim,
                         "strength": strength if task == "edit"
                         else None, "overlap": overlap if task in ("long", "loop") else None,
                         "continuation": continuation if task in ("long", "loop") else None,
                         "batch_size": batch_size},
              "totals": totals(records, task), "clips": records}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "report.md", markdown(report))
    from .data.video import write_png  # atomic

    write_png(out / "contact_sheet.png", contact_sheet(thumbs, [r["passed"] for r in records]))
    return report


def totals(records: list[dict], task: str) -> dict:
    """Pass rate, each check's count, and the mean of every number over the clips."""
    n = len(records)
    passed = sum(r["passed"] for r in records)
    checks = {k: sum(r["checks"][k] for r in records) for k in CHECKS[task]}
    means = {}
    for key in ("given_error", "roundtrip_error", "path_rms_px", "path_max_px",
                "physics_rms_px", "physics_max_px"):
        vals = [r["numbers"][key] for r in records if r["numbers"].get(key) is not None]
        if vals:
            means[key] = round(float(np.mean(vals)), 3)
    seam_kinds = {}
    for r in records:
        for hit in r["numbers"].get("seam_errors", []):
            kind = hit.split("@")[0]
            seam_kinds[kind] = seam_kinds.get(kind, 0) + 1
    errors = {}
    for r in records:
        for kind in r["errors"]:
            errors[kind] = errors.get(kind, 0) + 1
    by_frame = []  # mean physics error per frame index over the clips that saw the object
    for t in range(max(len(r["error_by_frame"]) for r in records)):
        seen = [r["error_by_frame"][t] for r in records if t < len(r["error_by_frame"])
                and r["error_by_frame"][t] is not None]
        by_frame.append(round(float(np.mean(seen)), 3) if seen else None)
    return {"clips": n, "passed": passed, "pass_rate": passed / n, "checks": checks,
            "mean_frames": round(float(np.mean([r["frames"] for r in records])), 2),
            "means": means, "seam_errors": seam_kinds, "clips_with_error": errors,
            "physics_error_by_frame": by_frame}


def markdown(report: dict) -> str:
    """report.md: the pass rate, each check, the means, and one row per clip."""
    t, cfg = report["totals"], report["config"]
    n = t["clips"]
    lines = [f"# Task eval: {cfg['task']}", "",
             f"{n} clips, seed {cfg['seed']}, window {'x'.join(map(str, cfg['size']))}, "
             f"output {_frames(cfg, t)} frames" + (f", strength {cfg['strength']}"
                                                 if cfg["strength"] is not None else "") + ".",
             "", f"**Pass rate: {100 * t['pass_rate']:.1f}%** ({t['passed']} / {n}): every "
             f"check of the task holds ({', '.join(t['checks'])}; see `zoetrope.task_eval`).",
             "", "| check | clips | rate |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {100 * v / n:.1f}% |" for k, v in t["checks"].items()]
    if t["means"]:
        lines += ["", "| mean over clips | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in t["means"].items()]
    lines += ["", "Errors at seams: " + (", ".join(f"{k} x{v}" for k, v in
                                                 t["seam_errors"].items()) or "none") + ".",
              "Clips with each error anywhere: " + (", ".join(
                  f"{k} {v}" for k, v in t["clips_with_error"].items()) or "none") + ".",
              "", "## clips (contact_sheet.png order)", "",
              "| # | prompt | verdict | failed checks | numbers |", "|---|---|---|---|---|"]
    for r in report["clips"]:
        failed = ", ".join(k for k, v in r["checks"].items() if not v) or "-"
        nums = "; ".join(f"{k} {round(v, 3) if isinstance(v, float) else v}"
                         for k, v in r["numbers"].items() if v not in (None, []))
        lines.append(f"| {r['index']} | {r['prompt']} | {'pass' if r['passed'] else 'FAIL'} | "
                     f"{failed} | {nums or '-'} |")
    return "\n".join(lines) + "\n"


def _frames(config: dict, totals: dict) -> str:
    """A report's output frames: the count, or a found loop's range and mean."""
    if config["frames"] is not None:
        return str(config["frames"])
    shortest, longest = config["loop_lengths"]
    tries = config.get("loop_tries", 1)  # reports written before loop_tries have none
    best = f", the closest of {tries} tries" if tries > 1 else ""
    return f"{shortest}..{longest} (found{best}; mean {totals['mean_frames']:.1f})"


def run_splits(task: str, generate: Generate, out_dir: str | Path, splits: Sequence[str],
               **kw) -> dict[str, dict]:
    """`run_task_eval` for each split into out_dir/SPLIT, then out_dir/splits.md (one table, the
    splits side by side) and, with matplotlib, splits.png (mean physics error by frame index)."""
    out = Path(out_dir)
    reports = {name: run_task_eval(task, generate, out / name, split=name, **kw)
               for name in splits}
    atomic_write_text(out / "splits.md", splits_markdown(task, reports))
    plot_error_by_frame(reports, out / "splits.png")
    return reports


def splits_markdown(task: str, reports: dict[str, dict]) -> str:
    """One row per split: clips, pass rate, each check, and the mean numbers."""
    first = next(iter(reports.values()))
    checks = list(first["totals"]["checks"])
    keys = ["physics_rms_px", "physics_max_px", "path_rms_px", "given_error"]
    keys = [k for k in keys if any(k in r["totals"]["means"] for r in reports.values())]
    lines = [f"# Task eval by split: {task}", "",
             f"Seed {first['config']['seed']}, window {'x'.join(map(str, first['config']['size']))}"
             f", output {_frames(first['config'], first['totals'])} frames. "
             "Splits: `zoetrope.task_eval.SPLITS`.",
             "", "| split | clips | pass | " + " | ".join(checks + keys) + " |",
             "|---" * (3 + len(checks) + len(keys)) + "|"]
    for name, r in reports.items():
        t = r["totals"]
        cells = [f"{100 * t['checks'][c] / t['clips']:.1f}%" for c in checks]
        cells += [str(t["means"].get(k, "-")) for k in keys]
        lines.append(f"| {name} | {t['clips']} | {100 * t['pass_rate']:.1f}% | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_error_by_frame(reports: dict[str, dict], path: Path) -> Path | None:
    """Mean physics error (px) against frame index, one line per split; None without
    matplotlib (an optional extra: `pip install zoetrope[plot]`)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, r in reports.items():
        ys = r["totals"]["physics_error_by_frame"]
        ax.plot([t for t, y in enumerate(ys) if y is not None], [y for y in ys if y is not None],
                label=name)
    ax.set(xlabel="frame", ylabel="mean position error vs ideal path (px)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    return path
