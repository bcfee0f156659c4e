"""World-consistency benchmark: balanced prompts, reports from a fake generator that renders the
ground truth (all pass) and one that corrupts some clips (exactly those fail)."""

import itertools
import json
import zlib

import numpy as np
import pytest

from zoetrope.critic import parse_prompt
from zoetrope.data.shapes import COLORS, DIRECTIONS, SHAPES, render_clip
from zoetrope.eval import _balanced, build_prompts, contact_sheet, run_eval, speed_band


def truth(prompts: list[str], seed: int, size: tuple[int, int, int]) -> np.ndarray:
    """A perfect generator: renders each prompt with the shapes world itself."""
    clips = []
    for i, prompt in enumerate(prompts):
        (t,) = parse_prompt(prompt)
        clips.append(render_clip(*size, t.color, t.shape, t.direction, seed=seed + i).frames)
    return np.stack(clips)


def read_png_size(path) -> tuple[int, int]:
    """(height, width) from a PNG header, checking the image data decompresses."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    start = blob.index(b"IDAT") + 4
    raw = zlib.decompress(blob[start:start + int.from_bytes(blob[start - 8:start - 4], "big")])
    assert len(raw) == height * (1 + 3 * width)
    return height, width


def test_prompts_cover_the_vocabulary_and_stay_balanced():
    prompts = build_prompts(84 + 10, seed=3)
    triples = [(t.color, t.shape, t.direction) for p in prompts for t in parse_prompt(p)]
    assert set(triples[:84]) == set(itertools.product(COLORS, SHAPES, DIRECTIONS))
    for n in range(1, len(triples) + 1):  # every prefix: counts per value differ by <= 1
        for k, values in enumerate((COLORS, SHAPES, DIRECTIONS)):
            counts = [sum(tr[k] == v for tr in triples[:n]) for v in values]
            assert max(counts) - min(counts) <= 1
    assert build_prompts(20, seed=3) == prompts[:20]
    assert build_prompts(20, seed=4) != prompts[:20]
    digits = build_prompts(40, seed=0, vocabulary="mnist")
    assert len(set(digits)) == 40 and all(p.startswith("the digit ") for p in digits)
    with pytest.raises(ValueError, match="unknown vocabulary"):
        build_prompts(4, vocabulary="cats")


def test_rich_prompts_take_turns_over_one_or_two_objects_and_the_bar():
    prompts = build_prompts(84, seed=5, vocabulary="shapes-rich")
    one = build_prompts(84, seed=5)
    for i, prompt in enumerate(prompts):
        targets = parse_prompt(prompt)
        assert len(targets) == (2 if i % 4 >= 2 else 1), prompt
        assert prompt.endswith(" behind a gray bar") == (i % 2 == 1), prompt
        assert prompt.startswith(one[i])  # the first object: the plain vocabulary's prompt i
        assert len({t.color for t in targets}) == len(targets)  # two objects: two colours
    assert len(set(prompts)) == 84


def test_balanced_handles_sizes_that_share_factors():
    for sizes in [(6, 4, 2), (10, 4), (8, 3, 4)]:
        combos = _balanced(sizes, int(np.prod(sizes)))
        assert len(set(combos)) == len(combos)


def test_run_eval_ground_truth_all_pass(tmp_path):
    sizes = [(17, 64, 64), (13, 48, 80)]
    report = run_eval(truth, tmp_path / "gt", clips=14, seed=1, sizes=sizes, batch_size=3,
                      progress=False)
    totals = report["totals"]
    assert totals["pass_rate"] == 1.0 and totals["passed"] == 14
    assert totals["followed"] == totals["intact"] == totals["followed_and_intact"] == 14
    assert all(a["accuracy"] == 1.0 and a["judged"] == 14 for a in totals["attributes"].values())
    assert all(e["clips"] == 0 for e in totals["errors"].values())
    assert [r["size"] for r in report["clips"][:2]] == [list(s) for s in sizes]  # round-robin
    saved = json.loads((tmp_path / "gt" / "report.json").read_text())
    assert saved["totals"] == totals and len(saved["clips"]) == 14
    md = (tmp_path / "gt" / "report.md").read_text()
    assert "**Followed and intact: 100.0%** (14 / 14)" in md
    assert "**Pass rate: 100.0%** (14 / 14)" in md and "| vanishing | 0 | 0.0% | 0 |" in md
    height, width = read_png_size(tmp_path / "gt" / "contact_sheet.png")
    assert height > 4 * 64 and width > 4 * 4 * 64  # 4 rows (14 clips / 4 columns), 4 frames each


def test_run_eval_catches_corrupted_clips(tmp_path):
    bad = {2, 5, 6}  # clip indices the generator spoils

    def flaky(prompts, seed, size):
        video = truth(prompts, seed, size)
        for j in range(len(prompts)):
            i = seed - 7 + j  # run_eval passes seed + index of the batch's first clip
            if i == 2:
                video[j, 8] = 0  # vanishes for a frame
            elif i == 5:
                video[j, 9:] = np.roll(video[j, 9:], size[1] // 2, axis=1)  # jumps half a frame
            elif i == 6:  # the wrong colour throughout
                (t,) = parse_prompt(prompts[j])
                video[j][video[j].max(-1) > 0] = COLORS["blue" if t.color == "red" else "red"]
        return video

    report = run_eval(flaky, tmp_path, clips=8, seed=7, batch_size=4, progress=False)
    failed = {r["index"] for r in report["clips"] if not r["passed"]}
    assert failed == bad
    totals = report["totals"]
    assert totals["pass_rate"] == 5 / 8
    # 6 has the wrong colour; 2 vanishes and 5 jumps: neither counts as intact
    assert (totals["followed"], totals["intact"], totals["followed_and_intact"]) == (7, 6, 5)
    assert totals["followed_and_intact_rate"] == 5 / 8
    assert totals["errors"]["vanishing"]["clips"] >= 1
    assert report["clips"][2]["critique"]["errors"]["vanishing"] == [8]
    assert totals["attributes"]["color"]["correct"] == 7
    assert report["clips"][6]["critique"]["objects"][0]["color"]["ok"] is False
    md = (tmp_path / "report.md").read_text()
    assert "| 2 | " + report["clips"][2]["prompt"] + " | 17x64x64 | FAIL | vanishing @ 8 |" in md


def test_run_eval_physics_totals(tmp_path):
    sizes = [(17, 64, 64), (33, 48, 80)]
    truth_report = run_eval(truth, tmp_path / "gt", clips=8, sizes=sizes, progress=False)
    p = truth_report["totals"]["physics"]
    assert p["objects"] == 8 and p["unseen"] == 0
    assert p["rms_error_mean"] < 0.35 and p["rms_error_median"] < 0.35  # rasterisation only
    assert p["max_error_mean"] < 1.0 and p["rms_share_mean"] < 0.35 / 48
    assert p["mean_abs_speed_drift"] < 0.1 and p["bounces"] >= 1
    assert p["missed_bounces"] == p["mid_air_reversals"] == p["extra_bounces"] == 0
    assert len(p["error_by_frame"]) == 33 and max(p["error_by_frame"]) < 0.6
    record = truth_report["clips"][1]
    assert record["size"] == [33, 48, 80] and len(record["physics"]["objects"][0]["errors"]) == 33
    md = (tmp_path / "gt" / "report.md").read_text()
    assert "## physics" in md and "Bounces missed: 0 of " in md

    def jumpy(prompts, seed, size):  # every object jumps 10 px down (wrapping) from halfway
        video = truth(prompts, seed, size)
        video[:, size[0] // 2:] = np.roll(video[:, size[0] // 2:], 10, axis=2)
        return video

    bad = run_eval(jumpy, tmp_path / "bad", clips=8, sizes=sizes, progress=False)
    q = bad["totals"]["physics"]
    assert q["rms_error_mean"] > 2.0 and q["max_error_median"] > 4.0
    assert max(q["error_by_frame"][17:]) > 4.0


def test_run_eval_by_speed(tmp_path):
    assert [speed_band(v) for v in (0.1, 0.2, 0.29, 0.3, 0.5)] == [
        "< 0.2", "0.2-0.3", "0.2-0.3", ">= 0.3", ">= 0.3"]
    sizes = [(17, 64, 64), (17, 48, 80)]  # 48x80's 12 px objects cross 80 px: faster for their size
    report = run_eval(truth, tmp_path / "gt", clips=24, sizes=sizes, progress=False)
    table = report["totals"]["by_speed"]
    assert list(table) == [b for b in ("< 0.2", "0.2-0.3", ">= 0.3") if b in table]  # in order
    assert len(table) >= 2
    expected: dict = {}
    for r in report["clips"]:
        o = r["physics"]["objects"][0]
        key = (speed_band(o["speed"] / o["size"]), r["critique"]["objects"][0]["shape"]["expected"])
        expected[key] = expected.get(key, 0) + 1
    assert {(band, shape): c["clips"] for band, row in table.items()
            for shape, c in row.items()} == expected
    assert all(c["followed_and_intact"] == c["clips"] for row in table.values()
               for c in row.values())
    md = (tmp_path / "gt" / "report.md").read_text()
    assert "## followed and intact by speed" in md and "| speed (sizes per frame) |" in md

    def round_squares(prompts, seed, size):  # every square drawn as a circle
        return truth([p.replace("square", "circle") for p in prompts], seed, size)

    bad = run_eval(round_squares, tmp_path / "bad", clips=24, sizes=sizes, progress=False)
    rows = bad["totals"]["by_speed"].values()
    squares = [row["square"] for row in rows if "square" in row]
    assert sum(c["clips"] for c in squares) == 8  # counted as squares, the shape the prompt names
    assert all(c["followed_and_intact"] == 0 for c in squares)
    assert all(row[s]["followed_and_intact"] == row[s]["clips"] for row in rows for s in row
               if s != "square")


def test_run_eval_mnist_vocabulary(tmp_path):
    from zoetrope.data import mnist

    try:
        mnist.load_mnist()
    except FileNotFoundError as e:
        pytest.skip(f"MNIST data absent: {e}")

    def digits(prompts, seed, size):
        out = []
        for i, p in enumerate(prompts):
            (t,) = parse_prompt(p)
            out.append(mnist.render_clip(*size, digit=t.digit, direction=t.direction,
                                         seed=seed + i).frames)
        return np.stack(out)

    report = run_eval(digits, tmp_path, clips=6, vocabulary="mnist", progress=False)
    assert report["totals"]["pass_rate"] == 1.0
    assert report["totals"]["attributes"]["color"]["accuracy"] == 1.0  # digits are drawn grey
    assert report["totals"]["attributes"]["shape"] is None  # which digit: not judged, and said
    assert report["totals"]["errors"]["teleport"]["rate"] is None  # not checked on MNIST
    assert report["totals"]["physics"] is None and report["clips"][0]["physics"] is None
    assert report["totals"]["by_speed"] is None
    assert "says nothing about the digit drawn" in (tmp_path / "report.md").read_text()


def test_run_eval_rejects_bad_generator_output(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        run_eval(lambda p, s, z: truth(p, s, z).astype(np.float32), tmp_path, clips=2,
                 progress=False)
    with pytest.raises(ValueError, match="B=2"):
        run_eval(lambda p, s, z: truth(p, s, z)[:1], tmp_path, clips=2, progress=False)


def test_contact_sheet_borders_show_the_verdict():
    thumbs = [np.zeros((4, 16, 16, 3), np.uint8), np.zeros((4, 16, 16, 3), np.uint8)]
    sheet = contact_sheet(thumbs, [True, False])
    colours = {tuple(c) for c in sheet.reshape(-1, 3)}
    assert (0, 200, 0) in colours and (220, 0, 0) in colours and (255, 255, 255) in colours
