"""Property: whatever arguments `generate` gets (CLI flags or Python API values, including NaN,
infinities, negative and huge numbers and wrong types), the outcome is a valid video or a one-line
error with a non-zero exit; never a traceback, a NaN or black video, or a file left behind.

Few examples and a tiny random pipeline keep this to seconds; the value pools are chosen so that
no allowed request is slow (the largest valid one is 33 frames at 32x32)."""

import contextlib
import io
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from test_pipeline import model_dir, pipe  # noqa: F401  (fixtures)
from zoetrope.cli import main
from zoetrope.data.video import read_video
from zoetrope.errors import UserError

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
# Every argument takes a value from its good pool, except at most one (chosen at random) that takes
# a value from its bad pool: a bad value is then always the one the outcome answers for, and about
# half the examples are valid requests that must produce a video.
SPECIAL = ["nan", "inf", "-inf", "-1", "0", "1e309", "", "abc", "2.5", "99999999999999999999"]
CLI = {  # flag: (good values, bad values); None: the flag is left out
    "--cfg": ([None, "1", "3.5", "-2", "20"], SPECIAL),
    "--steps": ([None, "1", "2"], SPECIAL),
    "--frames": ([None, "1", "5", "9", "33"], SPECIAL + ["16", "3"]),
    "--size": ([None, "16x16", "32x16"], SPECIAL + ["15x16", "x", "0x16", "16x16x16"]),
    "--seed": ([None, "7", str(2**63 - 1)], SPECIAL + [str(2**63)]),
    "--restarts": ([None, "0", "1"], SPECIAL),
    "--device": ([None, "cpu", "auto"], ["cuda", "banana", "cuda:7", "meta", ""]),
    "--negative": ([None, "blurry", "a hexagon"], []),
}
API = {  # argument: (good values, bad values)
    "prompt": (["a red circle moving right", ["a red circle", "a blue square"]],
               ["", " ", 123, None, ["a", 5], [], b"a red circle"]),
    "num_inference_steps": ([None, 1, 2, np.int64(1)],
                            [0, -3, 1.0, math.nan, "2", True, [1], 10**20]),
    "guidance_scale": ([None, 1, 3.0, -2, np.float32(2)],
                       [math.nan, math.inf, -math.inf, "4", [1.0]]),
    "seed": ([None, 0, 7, 2**63 - 1, np.int64(3)], [-1, 2**63, 2**70, 1.5, "1", math.nan, True]),
    "num_frames": ([None, 1, 5, 9, 33], [16, 0, -9, 9.0, math.nan, "9"]),
    "height": ([None, 16, 32], [15, 0, -16, 10**30, 16.0, "16", math.inf]),
    "restarts": ([None, 0, 1], [-1, 1.5, math.nan, "1", True, 10**9]),
}


@st.composite
def one_fault(draw, pools: dict):
    """{name: value}: good values everywhere except, in half the draws, one bad value."""
    faulty = [name for name, (_, bad_values) in pools.items() if bad_values]
    bad = draw(st.one_of(st.none(), st.sampled_from(faulty)))
    return {name: draw(st.sampled_from(bad_values if name == bad else good))
            for name, (good, bad_values) in pools.items()}


@FUZZ
@given(args=one_fault(CLI))
def test_cli_generate_gives_a_video_or_one_line(model_dir, args):
    flags = [a for name, value in args.items() if value is not None for a in (name, value)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mp4"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["generate", "a red circle moving right", "--model", str(model_dir),
                         "-o", str(out), "--steps", "1", *flags])
        lines = [line for line in err.getvalue().splitlines()
                 if line.strip() and "warning" not in line]
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        event("video" if code == 0 else "refused")
        if code == 0:  # stderr holds the progress bar and warnings only
            assert files == [out] and not any("error" in line or "Traceback" in line
                                              for line in lines)
            frames, _ = read_video(out)
            assert frames.max() > 0  # not all black
        else:
            assert code == 2 and len(lines) == 1 and "error" in lines[0], lines
            assert not files


@FUZZ
@given(args=one_fault(API))
def test_python_api_gives_a_video_or_a_user_error(pipe, args):
    try:
        out = pipe(**args, progress=False)
    except UserError as e:
        event("refused")
        assert "\n" not in str(e).strip() and str(e).strip()
        return
    event("video")
    frames = np.asarray(out.frames)
    assert frames.dtype == np.uint8 and frames.max() > 0  # not all black
