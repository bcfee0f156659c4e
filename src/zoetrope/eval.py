"""World-consistency benchmark: generate clips over a world's whole vocabulary, critique, report.

`run_eval(generate, out_dir, ...)` builds prompts, calls `generate(prompts, seed, (frames, height,
width)) -> uint8 (B, T, H, W, 3)` in small batches, judges every clip with `critic.critique` and
writes a report directory:

  report.json        totals (pass rate; clips with every attribute right and no object vanishing,
                     duplicating, morphing or teleporting; per-attribute accuracy; per-error-kind
                     counts and rates; physics against the ideal bouncing path, see
                     `zoetrope.physics`: position error, speed drift, bounce counts, mean error
                     per frame index; clips followed and intact by how fast the object moves
                     for its size, per shape)
                     and one record per clip (its critique, and its physics scores per object in
                     the shapes world)
  report.md          the same as markdown tables, plus the clip list in contact-sheet order
  contact_sheet.png  a grid of clips (a few frames each), framed green (passed) or red (failed),
                     each labelled with its clip index

Prompt order: every attribute (colour, shape, direction; or digit, direction) cycles through its
values, so any prefix of the list is balanced to within one clip per value, and the first
(colours x shapes x directions) prompts are each combination exactly once. The seed permutes each
attribute's values. Batch b's `generate` call gets seed + (index of its first clip), so a clip's
seed does not depend on the batch size.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from .critic import ERROR_KINDS, INTACT_KINDS, critique, find_bar, has_occluder
from .data.shapes import COLORS, DIRECTIONS, SHAPES
from .errors import UserError
from .physics import physics_from_critique

VOCABULARIES = ("shapes", "mnist", "shapes-rich")
RICH_KINDS = ("one", "one behind the bar", "two", "two behind the bar")  # "shapes-rich", in turn
Generate = Callable[[list[str], int, tuple[int, int, int]], np.ndarray]

SHEET_FRAMES = 4  # frames shown per clip on the contact sheet
SHEET_COLUMNS = 4  # clips per contact-sheet row
SHEET_MAX_CLIPS = 256  # bounds the sheet's size; the report lists every clip anyway
PASS_RGB, FAIL_RGB = (0, 200, 0), (220, 0, 0)
# Speed bands, in object sizes per frame (the fitted speed over the object's size): the shapes
# world's 1/32-1/16 of the extent per frame is 0.125-0.25 sizes at 17x64x64 on both axes, but up
# to 0.42 across 17x48x80, whose 12 px objects cross 80 px.
SPEED_BANDS = (0.2, 0.3)

# 3x5 bitmap digits (rows top to bottom), enough to number the clips without a font file.
_DIGITS = ["111101101101111", "010110010010111", "111001111100111", "111001111001111",
           "101101111001001", "111100111001111", "111100111101111", "111001010010010",
           "111101111101111", "111101111001111"]


def _balanced(sizes: Sequence[int], count: int) -> list[tuple[int, ...]]:
    """`count` index tuples where each attribute cycles and all combinations come first.

    Attribute k takes (i + block) mod n_k, where the block counter shifts it by one each time
    the pairing with the earlier attributes would repeat (Chinese remainder theorem: i mod a and
    i mod b repeat after lcm(a, b) = a * b / gcd), so every prod(n) consecutive tuples hold each
    combination once and each attribute's counts differ by at most one in any prefix.
    """
    out = []
    for i in range(count):
        combo, period = [], 1  # period: the earlier attributes repeat every `period` tuples
        for n in sizes:
            g = math.gcd(period, n)
            combo.append((i + (i // (period * n // g)) % g) % n)
            period *= n
        out.append(tuple(combo))
    return out


def build_prompts(clips: int, seed: int = 0, vocabulary: str = "shapes") -> list[str]:
    """Balanced prompts over a world's vocabulary, attribute values permuted by `seed`.
    "shapes-rich" is the richer shapes world's (`data.two_objects`, `collide`, `occluder`):
    clip i is of kind RICH_KINDS[i % 4], its first object the "shapes" prompt i, a second one
    (of another colour) from the "shapes" prompts of seed + 1."""
    if vocabulary == "shapes-rich":
        first, second = build_prompts(clips, seed), build_prompts(clips + 8, seed + 1)
        out = []
        for i, prompt in enumerate(first):
            kind = RICH_KINDS[i % 4]
            if kind.startswith("two"):
                color = prompt.split()[1]
                prompt += " and " + next(p for p in second[i:] if p.split()[1] != color)
            out.append(prompt + (" behind a gray bar" if kind.endswith("bar") else ""))
        return out
    rng = np.random.default_rng(seed)
    if vocabulary == "shapes":
        values = [list(COLORS), list(SHAPES), list(DIRECTIONS)]
        template = "a {} {} moving {}"
    elif vocabulary == "mnist":
        values = [[str(d) for d in range(10)], list(DIRECTIONS)]
        template = "the digit {} moving {}"
    else:
        raise UserError(f"unknown vocabulary {vocabulary!r}; known: {', '.join(VOCABULARIES)}")
    values = [[v[j] for j in rng.permutation(len(v))] for v in values]
    return [template.format(*(v[k] for v, k in zip(values, combo)))
            for combo in _balanced([len(v) for v in values], clips)]


def _check_video(video, prompts: list[str]) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 5 or video.shape[0] != len(prompts) or video.shape[-1] != 3:
        raise UserError(f"generate must return uint8 (B={len(prompts)}, T, H, W, 3), "
                        f"got shape {video.shape}")
    if video.dtype != np.uint8:
        raise UserError(f"generate must return uint8 frames, got {video.dtype}")
    return video


def run_eval(generate: Generate, out_dir: str | Path, clips: int = 84, seed: int = 0,
             sizes: Sequence[tuple[int, int, int]] = ((17, 64, 64),),
             vocabulary: str = "shapes", batch_size: int = 4, progress: bool = True) -> dict:
    """Generate `clips` clips (clip i at sizes[i % len(sizes)]), critique them, write a report."""
    if clips < 1 or batch_size < 1:
        raise UserError(f"clips and batch_size must be >= 1, got {clips} and {batch_size}")
    sizes = [tuple(int(v) for v in s) for s in sizes]
    if not sizes or any(len(s) != 3 or min(s) < 1 for s in sizes):
        raise UserError(f"sizes must be (frames, height, width) triples, got {sizes}")
    prompts = build_prompts(clips, seed, vocabulary)
    records: list[dict | None] = [None] * clips
    thumbs: list[np.ndarray | None] = [None] * clips
    with tqdm(total=clips, desc="eval", unit="clip", disable=not progress) as bar:
        for k, size in enumerate(sizes):
            indices = list(range(k, clips, len(sizes)))  # one size per batch
            for start in range(0, len(indices), batch_size):
                batch = indices[start:start + batch_size]
                clip_seed = seed + batch[0]
                video = _check_video(generate([prompts[i] for i in batch], clip_seed, size),
                                     [prompts[i] for i in batch])
                for i, frames in zip(batch, video):
                    verdict = critique(frames, prompts[i])
                    occluder = find_bar(frames) if has_occluder(prompts[i]) else None
                    physics = (physics_from_critique(verdict, bar=occluder).to_dict()
                               if verdict.world == "shapes" else None)
                    records[i] = {"index": i, "prompt": prompts[i], "size": list(frames.shape[:3]),
                                  "seed": clip_seed, "passed": verdict.passed,
                                  "critique": verdict.to_dict(), "physics": physics}
                    pick = np.linspace(0, len(frames) - 1, min(SHEET_FRAMES, len(frames)))
                    thumbs[i] = frames[np.round(pick).astype(int)]
                bar.update(len(batch))
    report = {"config": {"clips": clips, "seed": seed, "sizes": [list(s) for s in sizes],
                         "vocabulary": vocabulary, "batch_size": batch_size},
              "totals": _totals(records), "clips": records}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(_markdown(report))
    from .data.video import write_png

    write_png(out / "contact_sheet.png", contact_sheet(thumbs[:SHEET_MAX_CLIPS],
                                                      [r["passed"] for r in records]))
    return report


def _totals(records: list[dict]) -> dict:
    """Pass rate, per-attribute accuracy (overall and per expected value), error-kind rates."""
    n = len(records)
    attributes = {}
    for name in ("color", "shape", "direction"):
        by_value: dict[str, Counter] = {}
        for r in records:
            for obj in r["critique"]["objects"]:
                a = obj[name]
                if a["ok"] is None:
                    continue
                c = by_value.setdefault(a["expected"], Counter())
                c["judged"] += 1
                c["correct"] += bool(a["ok"])
                if not a["ok"]:
                    c["saw " + a["observed"]] += 1
        if not by_value:
            attributes[name] = None  # not applicable to this world
            continue
        rows = {}
        for value, c in sorted(by_value.items()):
            mistakes = {k[4:]: v for k, v in c.items() if k.startswith("saw ")}
            rows[value] = {"judged": c["judged"], "correct": c["correct"],
                           "accuracy": c["correct"] / c["judged"], "mistakes": mistakes}
        judged = sum(r["judged"] for r in rows.values())
        correct = sum(r["correct"] for r in rows.values())
        attributes[name] = {"judged": judged, "correct": correct, "accuracy": correct / judged,
                            "by_value": rows}
    errors = {}
    for kind in ERROR_KINDS:
        checked = [r for r in records if kind in r["critique"]["checked"]]
        hit = [r for r in checked if r["critique"]["errors"][kind]]
        errors[kind] = {"checked": len(checked), "clips": len(hit),
                        "rate": len(hit) / len(checked) if checked else None,
                        "frames": sum(len(r["critique"]["errors"][kind]) for r in hit)}
    passed = sum(r["passed"] for r in records)
    followed = [r["critique"]["followed"] for r in records]
    intact = [r["critique"]["intact"] for r in records]
    both = sum(f and i for f, i in zip(followed, intact))
    return {"clips": n, "passed": passed, "pass_rate": passed / n, "followed": sum(followed),
            "intact": sum(intact), "followed_and_intact": both,
            "followed_and_intact_rate": both / n, "attributes": attributes, "errors": errors,
            "physics": _physics_totals(records), "by_speed": _by_speed(records)}


def speed_band(sizes_per_frame: float) -> str:
    """The `SPEED_BANDS` band of a speed in object sizes per frame: "< 0.2", "0.2-0.3", ">= 0.3"."""
    lo, hi = SPEED_BANDS
    return (f"< {lo}" if sizes_per_frame < lo else f"{lo}-{hi}" if sizes_per_frame < hi
            else f">= {hi}")


SPEED_BAND_NAMES = tuple(speed_band(v) for v in (0.0, *SPEED_BANDS))  # slowest first


def _by_speed(records: list[dict]) -> dict | None:
    """Clips and clips followed and intact per speed band and shape (None outside the shapes
    world). A clip counts under its fastest prompt object's band and the shape its prompt names
    (a square drawn round stays a square); clips whose objects were never tracked are left out."""
    table: dict = {}
    for r in records:
        tracked = [o for o in (r["physics"] or {}).get("objects", []) if o["speed"] is not None]
        if not tracked:
            continue
        o = max(tracked, key=lambda o: o["speed"] / o["size"])
        named = {c["target"]: c["shape"]["expected"] for c in r["critique"]["objects"]}
        row = table.setdefault(speed_band(o["speed"] / o["size"]), {})
        cell = row.setdefault(named.get(o["target"], o["shape"]),
                              {"clips": 0, "followed_and_intact": 0})
        cell["clips"] += 1
        cell["followed_and_intact"] += bool(r["critique"]["followed"] and r["critique"]["intact"])
    if not table:
        return None
    return {band: dict(sorted(table[band].items())) for band in SPEED_BAND_NAMES if band in table}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _physics_totals(records: list[dict]) -> dict | None:
    """Physics over every prompt object seen in some frame (None: no shapes-world clips).

    Errors are px, `*_share` the same over the shorter frame side, speed drift is |relative
    change|, bounce delays are |frames|; `error_by_frame[t]` is the mean position error at frame
    t over the objects seen there (None where none is).
    """
    scored = [o for r in records if r["physics"] for o in r["physics"]["objects"]]
    if not scored:
        return None
    objects = [o for o in scored if o["seen"]]
    out: dict = {"objects": len(objects), "unseen": len(scored) - len(objects)}
    for key in ("rms_error", "max_error", "rms_share", "max_share"):
        values = [o[key] for o in objects]
        out[key + "_mean"] = _mean(values)
        out[key + "_median"] = float(np.median(values)) if values else None
    out["mean_abs_speed_drift"] = _mean([abs(o["speed_drift"]) for o in objects
                                         if o["speed_drift"] is not None])
    out["bounces"] = sum(len(o["bounces"]) for o in objects)
    out["mean_abs_bounce_delay"] = _mean([abs(b["delay"]) for o in objects for b in o["bounces"]
                                          if b["delay"] is not None])
    for key in ("missed_bounces", "mid_air_reversals", "extra_bounces"):
        out[key] = sum(o[key] for o in objects)
    columns = itertools.zip_longest(*(o["errors"] for o in objects))  # frame t of every object
    out["error_by_frame"] = [_mean([e for e in c if e is not None]) for c in columns]
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _markdown(report: dict) -> str:
    """report.md: summary line, attribute tables, error table, and the clip list."""
    t, cfg = report["totals"], report["config"]
    lines = ["# World-consistency eval", "",
             f"{t['clips']} clips, vocabulary `{cfg['vocabulary']}`, seed {cfg['seed']}, sizes "
             + ", ".join("x".join(map(str, s)) for s in cfg["sizes"]) + " (frames x H x W).", "",
             f"**Pass rate: {_pct(t['pass_rate'])}** ({t['passed']} / {t['clips']}): "
             "a clip passes when every attribute is right and no physics error is found.", "",
             f"**Followed and intact: {_pct(t['followed_and_intact_rate'])}** "
             f"({t['followed_and_intact']} / {t['clips']}): every attribute right "
             f"({t['followed']} clips) and no object {', '.join(INTACT_KINDS)} "
             f"({t['intact']} clips).",
             ""]
    for name, a in t["attributes"].items():
        lines += [f"## {name}", ""]
        if a is None:
            lines += ["not checked: the critic cannot tell which digit a blob is, so a pass "
                      "here says nothing about the digit drawn" if cfg["vocabulary"] == "mnist"
                      and name == "shape" else "not applicable to this world", ""]
            continue
        lines += [f"accuracy {_pct(a['accuracy'])} ({a['correct']} / {a['judged']})", "",
                  f"| expected {name} | judged | correct | accuracy | seen instead |",
                  "|---|---|---|---|---|"]
        for value, r in a["by_value"].items():
            seen = ", ".join(f"{k} x{v}" for k, v in sorted(r["mistakes"].items())) or "-"
            lines.append(f"| {value} | {r['judged']} | {r['correct']} | "
                         f"{_pct(r['accuracy'])} | {seen} |")
        lines.append("")
    lines += ["## physics errors", "", "| error | clips | rate | frames |", "|---|---|---|---|"]
    for kind, e in t["errors"].items():
        lines.append(f"| {kind} | {e['clips']} | {_pct(e['rate'])} | {e['frames']} |")
    lines += _physics_markdown(t["physics"])
    lines += _speed_markdown(t["by_speed"])
    lines += ["", "## clips (contact_sheet.png order: left to right, top to bottom; "
              "green frame = pass, red = fail)", "",
              "| # | prompt | size | verdict | problems |", "|---|---|---|---|---|"]
    for r in report["clips"]:
        c = r["critique"]
        wrong = [f"{k} (saw {o[k]['observed']})" for o in c["objects"]
                 for k in ("color", "shape", "direction") if o[k]["ok"] is False]
        wrong += [f"{k} @ {','.join(map(str, f))}" for k, f in c["errors"].items() if f]
        lines.append(f"| {r['index']} | {r['prompt']} | {'x'.join(map(str, r['size']))} | "
                     f"{'pass' if r['passed'] else 'FAIL'} | {'; '.join(wrong) or '-'} |")
    return "\n".join(lines) + "\n"


def _px(value: float | None, share: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} px ({_pct(share)})"


def _physics_markdown(p: dict | None) -> list[str]:
    """The physics table of report.md (nothing outside the shapes world)."""
    if p is None:
        return []
    delay = "n/a" if p["mean_abs_bounce_delay"] is None else f"{p['mean_abs_bounce_delay']:.2f}"
    return ["", "## physics", "",
            f"{p['objects']} objects tracked ({p['unseen']} never seen), each against the ideal "
            "path of the world's law (constant speed, elastic bounces); shares are of the "
            "shorter frame side.", "",
            "| measure | mean | median |", "|---|---|---|",
            f"| RMS position error | {_px(p['rms_error_mean'], p['rms_share_mean'])} | "
            f"{_px(p['rms_error_median'], p['rms_share_median'])} |",
            f"| max position error | {_px(p['max_error_mean'], p['max_share_mean'])} | "
            f"{_px(p['max_error_median'], p['max_share_median'])} |",
            f"| speed drift, last vs first quarter (abs.) | {_pct(p['mean_abs_speed_drift'])} | |",
            f"| bounce timing error (abs., frames) | {delay} | |", "",
            f"Bounces missed: {p['missed_bounces']} of {p['bounces']}; mid-air reversals: "
            f"{p['mid_air_reversals']}; wall bounces no ideal bounce explains: "
            f"{p['extra_bounces']}."]


def _speed_markdown(table: dict | None) -> list[str]:
    """The by-speed table of report.md: followed and intact / clips per band and shape."""
    if not table:
        return []
    shapes = sorted({shape for row in table.values() for shape in row})
    lines = ["", "## followed and intact by speed", "",
             "Each clip under its object's fitted speed over its size, per frame (the fastest "
             "prompt object's); cells are clips followed and intact / clips.", "",
             "| speed (sizes per frame) | " + " | ".join(shapes) + " | all |",
             "|---" * (len(shapes) + 2) + "|"]
    for band, row in table.items():
        cells = [row.get(s, {"clips": 0, "followed_and_intact": 0}) for s in shapes]
        ok, n = sum(c["followed_and_intact"] for c in cells), sum(c["clips"] for c in cells)
        lines.append(f"| {band} | " + " | ".join(f"{c['followed_and_intact']} / {c['clips']}"
                                                  for c in cells) + f" | {ok} / {n} |")
    return lines


def _draw_number(image: np.ndarray, number: int, x: int, y: int, scale: int = 2) -> None:
    """Draw `number` in white 3x5 bitmap digits at (x, y) of an (H, W, 3) image, in place."""
    for d in str(number):
        glyph = np.array([int(b) for b in _DIGITS[int(d)]], bool).reshape(5, 3)
        block = np.kron(glyph, np.ones((scale, scale), bool))  # (5s, 3s)
        h, w = block.shape
        region = image[y:y + h, x:x + w]
        region[block[:region.shape[0], :region.shape[1]]] = 255
        x += w + scale


def contact_sheet(thumbs: list[np.ndarray], passed: list[bool], border: int = 2) -> np.ndarray:
    """Grid image (H, W, 3) of clips' frames (each (K, h, w, 3)), framed green/red, numbered."""
    label = 14  # px strip above each clip for its index (10 px digits + margin)
    cell_h = max(t.shape[1] for t in thumbs) + 2 * border + label
    cell_w = max(t.shape[0] * (t.shape[2] + 1) - 1 for t in thumbs) + 2 * border
    cols = min(SHEET_COLUMNS, len(thumbs))
    rows = math.ceil(len(thumbs) / cols)
    gap = 4
    sheet = np.full((rows * (cell_h + gap) + gap, cols * (cell_w + gap) + gap, 3), 32, np.uint8)
    for i, (frames, ok) in enumerate(zip(thumbs, passed)):
        y, x = gap + (i // cols) * (cell_h + gap), gap + (i % cols) * (cell_w + gap)
        k, h, w, _ = frames.shape
        strip = np.concatenate([np.pad(f, ((0, 0), (0, 1), (0, 0)), constant_values=96)
                                for f in frames], 1)[:, :-1]  # grey 1 px between frames
        frame_w = k * (w + 1) - 1 + 2 * border
        sheet[y + label:y + label + h + 2 * border, x:x + frame_w] = PASS_RGB if ok else FAIL_RGB
        top, left = y + label + border, x + border
        sheet[top:top + h, left:left + strip.shape[1]] = strip
        _draw_number(sheet, i, x + 1, y + 2)
    return sheet
