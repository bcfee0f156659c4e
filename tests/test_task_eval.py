"""Task evals (`zoetrope eval --task`): a perfect generator passes every task, each kind of
corruption fails exactly the check it breaks, and the CLI runs on a tiny pipeline."""

import json

import numpy as np
import pytest

from zoetrope.cli import EVAL_CONTINUATIONS, EVAL_SPLITS, EVAL_TASKS, main
from zoetrope.conditioning import Task
from zoetrope.data.shapes import COLORS, shape_mask
from zoetrope.errors import UserError
from zoetrope.task_eval import (CHECKS, CONTINUATIONS, SPLITS, TASKS, build_cases, draw_ideal,
                                judge, long_windows, merge_tasks, run_splits, run_task_eval)

from test_pipeline import tiny_pipeline

SIZE = (17, 64, 64)


def truth(case):
    """What a perfect model makes: the render the given frames were cut from (edit: the render
    in the prompt's colour, which is the source recoloured)."""
    video = case.source.copy()
    if case.task is not None and case.task.strength is not None:
        lit = video.max(-1) > 0
        video[lit] = COLORS[case.prompt.split()[1]]
    return video


def periodic(case, n=None):
    """A clip (moving left or right) of n frames (default the case's) whose motion repeats every
    n frames: the object bounces off the far wall and is back where it started one frame after
    the last."""
    n = n or case.frames
    h, w = case.source.shape[1:3]
    _, color, shape, _, direction = case.prompt.split()
    size, room = 16, w - 16
    phase = (2 * room) * np.arange(n) / n  # one round trip per n frames, from the wall behind
    x = size / 2 + np.where(phase <= room, phase, 2 * room - phase)
    x = x if direction == "right" else w - x
    video = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        video[t][shape_mask(shape, x[t], 24.0, size, h, w)] = COLORS[color]
    return video


def cases(task, clips=8, **kw):
    return build_cases(task, clips, 0, SIZE, **kw)


def test_cli_task_names_are_the_evals():
    assert EVAL_TASKS == TASKS == tuple(CHECKS) and EVAL_SPLITS == tuple(SPLITS)
    assert EVAL_CONTINUATIONS == CONTINUATIONS


@pytest.mark.parametrize("task", [t for t in TASKS if t not in ("loop", "long")])
def test_the_truth_passes_every_task(task):
    for case in cases(task):
        record = judge(case, truth(case))
        assert record["passed"], (case.prompt, record)
        if case.given:
            assert record["numbers"]["given_error"] == 0


def test_a_periodic_clip_passes_loop_and_a_plain_one_jumps_at_the_wrap():
    sideways = [c for c in cases("loop", 8, frames=33) if c.prompt.endswith(("left", "right"))]
    assert len(sideways) == 4
    for case in sideways:
        assert judge(case, periodic(case))["passed"], case.prompt
    case = [c for c in cases("loop", 4, frames=33) if c.prompt.endswith("right")][0]
    record = judge(case, truth(case))  # a render does not come back to where it started
    assert not record["checks"]["seams"] and record["checks"]["intact"]
    assert case.frames == 33  # a round trip at the world's middle speed
    assert any(int(e.split("@")[1]) in range(31, 36) for e in record["numbers"]["seam_errors"])


def test_a_loop_of_found_length_is_judged_at_its_own_wrap():
    case = [c for c in cases("loop", 4) if c.prompt.endswith("left")][0]
    assert case.frames is None and case.task.loop_lengths == (17, 65)
    for n in (26, 43):  # any length the model finds: the wrap is where the clip ends
        record = judge(case, periodic(case, n))
        assert record["passed"] and record["frames"] == n, record
        half = periodic(case, 2 * n)[:n]  # half a round trip: back at the wrap in a jump
        record = judge(case, half)
        assert not record["checks"]["seams"] and record["checks"]["intact"]
        assert any(abs(int(e.split("@")[1]) - n) <= 2 for e in record["numbers"]["seam_errors"])


def test_long_clips_pass_and_a_break_or_a_stop_fails():
    case = cases("long", 1, frames=65)[0]
    assert case.windows == [(0, 17), (12, 29), (24, 41), (36, 53), (48, 65)]
    assert case.seams == [17, 29, 41, 53]
    good = truth(case)
    assert judge(case, good)["passed"]
    gone = good.copy()
    gone[30] = 0  # the object vanishes for a frame in the third window
    record = judge(case, gone)
    assert not record["passed"] and not record["checks"]["windows"]
    assert record["numbers"]["broken_windows"] == [2]  # frames 24..40 only
    stopped = good.copy()
    stopped[50:] = good[50]  # frozen from frame 50
    record = judge(case, stopped)
    assert not record["checks"]["moving"] and record["checks"]["intact"]


def test_a_longer_overlap_moves_the_windows_and_seams():
    case = cases("long", 1, frames=41, overlap=2)[0]
    assert case.task.overlap == 2
    assert case.windows == [(0, 17), (8, 25), (16, 33), (24, 41)]
    assert case.seams == [17, 25, 33]  # each window's first new frame
    assert judge(case, truth(case))["passed"]
    assert cases("loop", 1, overlap=2)[0].task.overlap == 2
    assert cases("loop", 1, loop_tries=3)[0].task.loop_tries == 3
    trimmed = cases("long", 1, frames=41, overlap=2, trim=1)[0]
    assert trimmed.task.trim == 1 and trimmed.windows[:3] == [(0, 17), (4, 21), (8, 25)]
    assert trimmed.seams[:2] == [13, 17]  # each window's first new frame, 4 apart
    assert cases("long", 1, frames=41, continuation="empty")[0].task.continuation_prompt == ""
    both = cases("loop", 2, continuation="undirected")
    assert [c.task.continuation_prompt for c in both] == [
        c.prompt.split(" moving")[0] for c in both] and " moving" in both[0].prompt
    assert merge_tasks(both).continuation_prompt == [c.task.continuation_prompt for c in both]
    assert cases("long", 1, frames=41)[0].task.continuation_prompt is None
    assert cases("long", 1, frames=41, overlap=3)[0].windows[1] == (4, 21)  # one new latent
    with pytest.raises(UserError, match=r"--overlap 4 leaves no new frame .* must be 1 \.\. 3"):
        cases("long", 1, frames=41, overlap=4)


def test_long_windows_match_the_pipeline():
    assert long_windows(257, 17)[-1] == (240, 257) and len(long_windows(257, 17)) == 21
    assert long_windows(29, 17) == [(0, 17), (12, 29)]
    assert long_windows(21, 17) == [(0, 17), (12, 21)]


@pytest.mark.parametrize("task", ["extend-forward", "extend-backward", "connect"])
def test_a_jump_at_the_seam_fails_the_seams(task):
    for case in cases(task, 4):
        video = truth(case)
        seam = case.seams[0]
        part = slice(seam, None) if task != "extend-backward" else slice(None, seam)
        moved = video.copy()
        moved[part] = np.roll(video[part], 14, axis=2 if "left" in case.prompt
                              or "right" in case.prompt else 1)
        if task == "connect":  # the gap only: A and B stay given
            moved[case.seams[1]:] = video[case.seams[1]:]
        record = judge(case, moved)
        assert not record["checks"]["seams"], (case.prompt, record)


@pytest.mark.parametrize("task", ["animate", "extend-forward", "extend-backward", "connect"])
def test_given_frames_that_do_not_come_back_fail(task):
    for case in cases(task, 2):
        video = truth(case)
        s = case.given[-1]
        video[s.first:s.stop] = np.clip(video[s.first:s.stop].astype(int) + 40, 0, 255)
        record = judge(case, video)
        assert not record["checks"]["given"] and record["numbers"]["given_error"] > 30
        # the VAE's own error on them widens the margin
        loose = judge(case, video, roundtrip=lambda c: np.clip(c.astype(int) + 40, 0, 255))
        assert loose["checks"]["given"] and loose["numbers"]["roundtrip_error"] > 30


def test_an_edit_that_keeps_its_colour_or_moves_the_object_fails():
    for case in cases("edit", 4):
        record = judge(case, case.source)  # not edited at all
        assert not record["checks"]["followed"] and record["checks"]["path"]
        shifted = np.roll(truth(case), 6, axis=1 if case.prompt.endswith(("left", "right"))
                          else 2)  # moved 6 px across its path
        record = judge(case, shifted)
        assert not record["checks"]["path"] and record["numbers"]["path_max_px"] >= 5


def test_bad_settings_are_one_line():
    with pytest.raises(UserError, match="unknown task"):
        build_cases("dance", 1, 0, SIZE)
    with pytest.raises(UserError, match="1 \\+ 4k"):
        build_cases("long", 1, 0, SIZE, frames=30)
    with pytest.raises(UserError, match="--task loop needs more frames than a window"):
        build_cases("loop", 1, 0, SIZE, frames=17)
    with pytest.raises(UserError, match="--loop-tries picks among clips made for a loop"):
        build_cases("loop", 1, 0, SIZE, frames=33, loop_tries=2)
    with pytest.raises(UserError, match="window of at least 9"):
        build_cases("animate", 1, 0, (5, 64, 64))
    with pytest.raises(UserError, match="connect .* at least 13"):
        build_cases("connect", 1, 0, (9, 64, 64))
    with pytest.raises(UserError, match="strength"):
        build_cases("edit", 1, 0, SIZE, strength=0)


def test_merge_tasks_gives_one_clip_per_prompt():
    batch = cases("connect", 3)
    task = merge_tasks(batch)
    assert len(task.connect[0]) == len(task.connect[1]) == 3
    assert task.connect[1][2] is batch[2].task.connect[1]
    assert merge_tasks(cases("long", 2, frames=33, overlap=2)) == Task(overlap=2)  # no frames


def test_run_task_eval_writes_a_report(tmp_path):
    def generate(batch, seed):
        return np.stack([truth(c) for c in batch])

    report = run_task_eval("extend-forward", generate, tmp_path, clips=6, batch_size=4,
                           progress=False)
    assert report["totals"]["passed"] == 6 and report["totals"]["checks"]["seams"] == 6
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [r["seed"] for r in saved["clips"]] == [0, 0, 0, 0, 4, 4]
    assert "**Pass rate: 100.0%** (6 / 6)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "contact_sheet.png").stat().st_size > 0
    with pytest.raises(UserError, match="generate must return"):
        run_task_eval("animate", lambda b, s: np.zeros((len(b), 9, 64, 64, 3), np.uint8),
                      tmp_path / "bad", clips=2, progress=False)


@pytest.mark.parametrize("task", TASKS)
def test_cli_runs_every_task_on_a_tiny_pipeline(tmp_path, capsys, task):
    model = tmp_path / "model"
    window = 13 if task == "connect" else 9  # connect: 5 frames of A, one new latent, 5 of B
    tiny_pipeline(default_size=(window, 16, 16)).save_pretrained(model)
    out = tmp_path / task
    extra = {"long": ["--frames", "21"], "loop": ["--loop-tries", "2"]}.get(task, [])
    assert main(["eval", "--model", str(model), "--task", task, "--clips", "2", "--size",
                 f"{window}x16x16", "--out", str(out), "--json", *extra]) == 0
    frames = {"long": 21, "loop": None}.get(task, window)  # a loop's length: found
    totals = json.loads(capsys.readouterr().out)
    assert totals["clips"] == 2 and set(totals["checks"]) == set(CHECKS[task])
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["frames"] == frames
    lengths = [r["frames"] for r in report["clips"]]
    assert all(9 <= n <= 33 for n in lengths) if task == "loop" else set(lengths) == {frames}
    if task == "loop":
        assert "output 9..33 (found, the closest of 2 tries; mean" in (
            out / "report.md").read_text()
        assert report["config"]["loop_tries"] == 2


def test_cli_rejects_flags_of_another_task(tmp_path, capsys):
    model = tmp_path / "model"
    tiny_pipeline().save_pretrained(model)
    for flags, message in [(["--task", "animate", "--frames", "33"], "--frames sets the length"),
                           (["--task", "loop", "--strength", "0.5"], "--strength sets an edit"),
                           (["--task", "edit", "--overlap", "2"], "set how windows continue"),
                           (["--task", "animate", "--continuation", "empty"], "how windows"),
                           (["--task", "long", "--loop-tries", "2"], "--loop-tries picks"),
                           (["--task", "loop", "--frames", "17", "--loop-tries", "2"],
                            "and no --frames"),
                           (["--loop-tries", "2"], "give a --task"),
                           (["--task", "edit", "--trim", "1"], "set how windows continue"),
                           (["--overlap", "2"], "give a --task")]:
        assert main(["eval", "--model", str(model), "--size", "9x16x16", *flags,
                     "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_splits_change_what_is_rendered_and_the_truth_still_passes():
    speed = {}
    for split in ("in", "ood-slow", "ood-fast", "ood-small", "ood-large"):
        batch = build_cases("extend-forward", 8, 0, SIZE, split=split)
        for case in batch:
            record = judge(case, truth(case))
            assert record["passed"] and record["numbers"]["physics_rms_px"] < 0.5, (split, case)
        steps = [np.abs(np.diff(np.array(judge(c, truth(c))["ideal"]), axis=0)).sum(1).mean()
                 for c in batch[:4]]  # px per frame along the fitted path
        speed[split] = np.mean(steps)
        sizes = {c.object_size for c in batch}
        assert sizes == {{"ood-small": 10, "ood-large": 22}.get(split, 16)}
    assert speed["ood-slow"] < 0.8 * speed["in"] and speed["ood-fast"] > 1.2 * speed["in"]


def test_combo_asks_only_the_held_out_and_the_others_never():
    holdout = ["* circle up", "red square left"]
    combo = build_cases("animate", 10, 0, SIZE, split="combo", holdout=holdout)
    assert {c.prompt for c in combo} == {f"a {c} circle moving up" for c in COLORS} | {
        "a red square moving left"}
    rest = build_cases("animate", 84, 0, SIZE, holdout=holdout)
    assert len(rest) == 84 and not any(
        c.prompt.endswith("circle moving up") or c.prompt == "a red square moving left"
        for c in rest)
    plain = [c.prompt for c in build_cases("animate", 20, 0, SIZE)]
    assert plain == [c.prompt for c in build_cases("animate", 30, 0, SIZE)][:20]
    with pytest.raises(UserError, match="combo split needs"):
        build_cases("animate", 2, 0, SIZE, split="combo")
    with pytest.raises(UserError, match="held-out combination"):
        build_cases("animate", 2, 0, SIZE, split="combo", holdout=["purple circle up"])


def test_the_ideal_path_is_drawn_on_the_background_only():
    case = cases("extend-forward", 1)[0]
    video = truth(case)
    ideal = judge(case, video)["ideal"]
    drawn = draw_ideal(video[[0, 8]], [0, 8], ideal)
    lit = video[[0, 8]].max(-1) > 0
    assert np.array_equal(drawn[lit], video[[0, 8]][lit])  # the object untouched
    changed = (drawn != video[[0, 8]]).any(-1)
    assert changed.sum() > 10 and (drawn[changed] != 0).all()


def test_run_splits_writes_them_side_by_side(tmp_path):
    def generate(batch, seed):
        return np.stack([truth(c) for c in batch])

    reports = run_splits("extend-forward", generate, tmp_path, ["in", "ood-fast"], clips=3,
                         progress=False)
    assert set(reports) == {"in", "ood-fast"}
    table = (tmp_path / "splits.md").read_text()
    assert "| in | 3 | 100.0% |" in table and "| ood-fast | 3 | 100.0% |" in table
    assert (tmp_path / "in" / "report.json").is_file()
    assert (tmp_path / "splits.png").is_file() or not _has_matplotlib()


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False
