"""Given frames (conditioning.py) on a tiny random pipeline: animate, extend, long, loop, connect,
edit; the mechanics (held latents, shapes, seams, flat memory), not quality."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from zoetrope.cli import main
from zoetrope.conditioning import Task, encode, loop_length, roundtrip
from zoetrope.data.shapes import _centers, _draw_motion, shape_mask
from zoetrope.data.video import read_video, write_video
from zoetrope.config import ConfigError, DiffusionConfig
from zoetrope.errors import UserError
from zoetrope.pipeline import TextToVideoPipeline

from test_pipeline import PROMPT, tiny_pipeline  # window: 9 frames (3 latent frames) of 16x16


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def clip(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 16, 16, 3), dtype=np.uint8)


def make(pipe, task: Task, seed: int = 0, steps=None, **kw):
    """Frames (T, H, W, 3) and every step's StepInfo."""
    steps = [] if steps is None else steps
    out = pipe(PROMPT, task=task, seed=seed, progress=False, callback=steps.append, **kw)
    return out.frames[0], steps


def test_extend_forward_holds_the_clip_exactly_and_continues_it(pipe):
    given = clip(5)
    a, steps = make(pipe, Task(video=given, extend="forward"), seed=1)
    b, _ = make(pipe, Task(video=given, extend="forward"), seed=2)
    back = roundtrip(pipe, given[None])[0]
    assert a.shape == (9, 16, 16, 3)
    assert np.array_equal(a[:5], back) and np.array_equal(b[:5], back)  # the VAE's round trip
    assert not np.array_equal(a[5:], b[5:])
    held = encode(pipe, given[None])[0]  # (C, 2, 4, 4): tokens of latent frames 0, 1
    for info in steps:  # fed at t = 0 and never changed
        kept = info.t == 0
        assert kept.sum() == 2 * 4 * 4 // 4  # 2 latent frames x (4 x 4) / (2 x 2) patches
        torch.testing.assert_close(info.x[kept].sum(), held.sum(), rtol=0, atol=1e-4)


def test_extend_backward_holds_the_clip_latents_at_the_end(pipe):
    given = clip(5)
    steps = []
    out, _ = make(pipe, Task(video=given, extend="backward"), steps=steps, num_frames=9)
    assert out.shape == (9, 16, 16, 3)
    tokens = encode(pipe, given[None])[0, :, 1:]  # its latent frame 1 (frames 1..4), at the end
    kept = steps[-1].t == 0
    assert kept.sum() == 4 and kept[-4:].all()
    torch.testing.assert_close(steps[-1].x[kept].sum(), tokens.sum(), rtol=0, atol=1e-4)


def test_animate_starts_with_the_image(pipe):
    image = clip(1)[0]
    a, _ = make(pipe, Task(image=image), seed=1)
    assert np.array_equal(a[:1], roundtrip(pipe, image[None, None])[0])
    old = pipe(PROMPT, first_frame=image, seed=1, progress=False).frames[0]
    assert np.array_equal(a, old)  # first_frame is Task(image=...)


def test_long_clip_is_window_after_window_with_flat_memory(pipe):
    steps = []
    out, _ = make(pipe, Task(window=9), steps=steps, num_frames=33)
    assert out.shape == (33, 16, 16, 3)
    assert {info.x.shape[0] for info in steps} == {3 * 4 * 4 // 4}  # every call: one window
    assert len(steps) == 7 * steps[0].total  # 33 = 9 + 6 x 4 new frames: seven windows
    first, _ = make(pipe, None, num_frames=9)
    assert np.array_equal(out[:9], first)  # the first window is a plain 9-frame clip
    for info in steps[steps[0].total:]:  # later windows hold 2 latent frames: the last 5 frames
        assert (info.t[:8] == 0).all() and (info.t[8:] > 0).all()
    second = steps[steps[0].total].x[:8]  # the seam: the first window's frames 4..8, encoded
    torch.testing.assert_close(second.sum(), encode(pipe, first[None, 4:9])[0].sum(), rtol=0,
                               atol=1e-4)


def test_a_longer_overlap_holds_more_of_the_last_window(pipe):
    steps = []
    out, _ = make(pipe, Task(window=13, overlap=2), steps=steps, num_frames=21)
    assert out.shape == (21, 16, 16, 3)
    per = steps[0].total
    assert len(steps) == 3 * per  # 21 = 13 + 2 x 4 new frames: three windows
    for info in steps[per:]:  # later windows hold 3 latent frames (the last 9 frames), make 1
        assert (info.t[:12] == 0).all() and (info.t[12:] > 0).all()
    first, _ = make(pipe, Task(window=13), num_frames=13)
    torch.testing.assert_close(steps[per].x[:12].sum(), encode(pipe, first[None, 4:13])[0].sum(),
                               rtol=0, atol=1e-4)
    with pytest.raises(UserError, match="--overlap 2 leaves no new frame in a window of 9"):
        make(pipe, Task(window=9, overlap=2), num_frames=21)


def test_the_models_window_overlap_is_the_default(tmp_path):
    """diffusion.window_overlap (kept in pipeline.json) sets how much of the last window a later
    one holds when the task does not say; Task(overlap=) still wins."""
    pipe = tiny_pipeline(window_overlap=2)
    pipe.save_pretrained(tmp_path / "model")
    assert TextToVideoPipeline.from_pretrained(tmp_path / "model").diffusion.window_overlap == 2
    for overlap, windows in [(None, 3), (2, 3), (1, 2)]:  # 21 = 13 + 2 x 4, or 13 + 8
        steps = []
        make(pipe, Task(window=13, overlap=overlap), steps=steps, num_frames=21)
        assert len(steps) == windows * steps[0].total
    with pytest.raises(ConfigError, match="window_overlap"):
        DiffusionConfig(window_overlap=0)


def test_unprompted_continuation_drops_the_prompt_after_the_first_window(pipe, monkeypatch):
    asked = []
    encode = pipe.encode_text
    monkeypatch.setattr(pipe, "encode_text", lambda prompts: asked.append(prompts) or encode(prompts))
    steps = []
    out, _ = make(pipe, Task(window=9, continuation_prompt=""), steps=steps, num_frames=17)
    per = steps[0].total
    assert len(steps) == 3 * per  # 9 + 2 x 4 frames
    assert asked == [[PROMPT, ""], [""]]  # prompt and negative once; the later windows: empty
    with_prompt, _ = make(pipe, Task(window=9), num_frames=17)
    assert np.array_equal(out[:9], with_prompt[:9])  # the first window is prompted as before
    assert not np.array_equal(out[9:], with_prompt[9:])
    looped = make(pipe, Task(loop=True, window=9, continuation_prompt=""), num_frames=9)[0]
    assert asked[-2:] == [[PROMPT, ""], [""]] and looped.shape == (9, 16, 16, 3)  # its end


def test_a_continuation_prompt_is_guided_like_the_prompt(pipe, monkeypatch):
    asked, rows = [], []
    encode = pipe.encode_text
    monkeypatch.setattr(pipe, "encode_text", lambda prompts: asked.append(prompts) or encode(prompts))
    real = pipe.sample
    monkeypatch.setattr(pipe, "sample", lambda shapes, sampling, *a: rows.append(
        (sampling.text.shape[0], sampling.scale)) or real(shapes, sampling, *a))
    out, _ = make(pipe, Task(window=9, continuation_prompt="a red circle"), num_frames=17)
    assert asked == [[PROMPT, ""], ["a red circle"]]
    assert rows[0] == rows[1] == rows[2] and rows[0][0] == 2  # prompt and negative, guided
    with_prompt, _ = make(pipe, Task(window=9), num_frames=17)
    assert np.array_equal(out[:9], with_prompt[:9]) and not np.array_equal(out[9:], with_prompt[9:])
    with pytest.raises(UserError, match="2 continuation prompts for 1 prompts"):
        make(pipe, Task(window=9, continuation_prompt=["a", "b"]), num_frames=17)


def test_a_continuation_reader_prompts_each_window_from_the_frames_it_holds(pipe, monkeypatch):
    """continuation_prompt as a function: asked anew for every later window with the frames it
    holds (the last 5 of the output so far), and what it returns prompts that window."""
    asked, read = [], []
    encode = pipe.encode_text
    monkeypatch.setattr(pipe, "encode_text", lambda prompts: asked.append(prompts) or encode(prompts))

    def reader(frames):
        read.append(frames.copy())
        return f"window {len(read)}"

    out, _ = make(pipe, Task(window=9, continuation_prompt=reader), num_frames=21)
    assert asked == [[PROMPT, ""], ["window 1"], ["window 2"], ["window 3"]]  # 9 + 3 x 4 frames
    # window k + 1 holds output frames 4 + 4k .. 8 + 4k (the first of them as window k decoded
    # its held latent again: the output has the previous window's)
    assert np.array_equal(read[0], out[4:9])
    for k, frames in enumerate(read):
        assert frames.shape == (5, 16, 16, 3) and np.array_equal(frames[1:], out[5 + 4 * k:9 + 4 * k])
    make(pipe, Task(window=9, continuation_prompt=[reader]), num_frames=13)  # one per prompt
    assert asked[-1] == [f"window {len(read)}"]


def test_a_model_that_continues_moving_reads_its_windows_by_default(monkeypatch, tmp_path):
    """diffusion.continuation = "moving" (kept in pipeline.json): with no continuation prompt
    given, later windows are prompted by `critic.moving_now` of each prompt; a prompt outside
    the critic's grammar keeps itself; a continuation prompt given at call time wins."""
    import zoetrope.critic

    read = []

    def moving_now(prompt, at="end"):
        zoetrope.critic.parse_prompt(prompt)  # as the real one: outside the grammar, UserError
        return lambda frames: read.append(prompt) or f"a red circle moving left ({at})"

    monkeypatch.setattr(zoetrope.critic, "moving_now", moving_now)
    pipe = tiny_pipeline(continuation="moving")
    pipe.save_pretrained(tmp_path / "model")
    assert TextToVideoPipeline.from_pretrained(tmp_path / "model").diffusion.continuation == "moving"
    asked = []
    encode = pipe.encode_text
    monkeypatch.setattr(pipe, "encode_text", lambda prompts: asked.append(prompts) or encode(prompts))
    make(pipe, Task(window=9), num_frames=17)
    assert read == [PROMPT, PROMPT] and asked[1:] == [["a red circle moving left (end)"]] * 2
    del asked[:]
    pipe(["a cat", PROMPT], num_frames=13, progress=False, task=Task(window=9))
    assert asked[1] == ["a cat", "a red circle moving left (end)"]
    del asked[:]
    make(pipe, Task(window=9, continuation_prompt="a blue square"), num_frames=13)
    assert asked[1:] == [["a blue square"]] and len(read) == 3
    pipe.diffusion = replace(pipe.diffusion, continuation="moving-start")  # the held frames' start
    del asked[:]
    make(pipe, Task(window=9), num_frames=13)
    assert asked[1:] == [["a red circle moving left (start)"]]
    with pytest.raises(ConfigError, match="diffusion.continuation must be 'prompt', 'moving' or"):
        DiffusionConfig(continuation="forward")


def test_frames_in_motion_take_the_motion_guidance_scale(monkeypatch, tmp_path):
    pipe = tiny_pipeline(motion_guidance_scale=1.5)  # guidance_scale 3
    pipe.save_pretrained(tmp_path)  # kept in pipeline.json
    assert TextToVideoPipeline.from_pretrained(tmp_path).diffusion.motion_guidance_scale == 1.5
    with pytest.raises(ConfigError, match="motion_guidance_scale must be finite"):
        DiffusionConfig(motion_guidance_scale=float("inf"))
    rows = []
    real = pipe.sample
    monkeypatch.setattr(pipe, "sample", lambda shapes, sampling, *a: rows.append(
        (sampling.text.shape[0], sampling.scale)) or real(shapes, sampling, *a))

    def scales(task, **kw):
        rows.clear()
        out = make(pipe, task, **kw)[0]
        return [scale for _, scale in rows], out

    # a long clip's first window is free, its later ones hold 5 frames of the one before
    assert scales(Task(window=9), num_frames=17)[0] == [3.0, 1.5, 1.5]
    assert scales(Task(image=clip(1)[0]))[0] == [3.0]  # one frame: the text says how it moves
    assert scales(Task(video=clip(5), extend="backward"), num_frames=9)[0] == [1.5]
    forward, out = scales(Task(video=clip(5), extend="forward"), num_frames=9)
    assert forward == [1.5]
    extend = Task(video=clip(5), extend="forward")
    assert np.array_equal(out, make(pipe, extend, guidance_scale=1.5)[0])
    assert not np.array_equal(out, make(tiny_pipeline(), extend)[0])  # without: scale 3
    # a scale at call time sets every window; without a task the motion scale never applies
    assert scales(Task(window=9), num_frames=17, guidance_scale=2.0)[0] == [2.0] * 3
    assert scales(Task(video=clip(5), strength=0.5))[0] == [3.0]  # an edit holds no frames
    # unguided free windows still encode the negatives the guided held ones need
    pipe.diffusion = replace(pipe.diffusion, guidance_scale=1.0)
    assert scales(Task(window=9), num_frames=17)[0] == [1.0, 1.5, 1.5]
    assert [n for n, _ in rows] == [2, 2, 2]


def test_guide_given_frames_drops_them_from_the_unconditional_branch():
    pipe = tiny_pipeline(guide_given_frames=True)  # guidance_scale 3
    seen = []
    pipe.dit.register_forward_hook(lambda module, args, out: seen.append(args[1].clone()))
    extend = Task(video=clip(5), extend="forward")
    out = make(pipe, extend)[0]
    t = seen[0]  # the first step: conditional rows, then unconditional, 3 latent frames of 4x4
    n = len(t) // 2
    held = torch.arange(n) < 2 * 4 * 4 // 4  # the clip's 2 latent frames, 2x2 patches
    assert (t[:n][held] == 0).all() and (t[n:][held] == t[n:][~held].max()).all() and t.max() > 0
    plain = tiny_pipeline()
    assert not np.array_equal(out, make(plain, extend)[0])  # the frames move the guidance
    assert np.array_equal(make(pipe, Task(window=9))[0], make(plain, Task(window=9))[0])
    with pytest.raises(ConfigError, match="guide_given_frames needs objective = 'flow'"):
        DiffusionConfig(objective="ddpm", guide_given_frames=True)


def test_frames_beyond_the_window_go_window_after_window_without_a_task(pipe, monkeypatch):
    steps = []
    out, _ = make(pipe, None, steps=steps, num_frames=33)  # the tiny pipeline's clips: 9 frames
    assert out.shape == (33, 16, 16, 3)
    assert {info.x.shape[0] for info in steps} == {3 * 4 * 4 // 4}  # every call: one window
    seen = []  # the memory check is asked about one window, not the whole clip
    monkeypatch.setattr(pipe, "check_memory", lambda shapes, sizes, guided: seen.append(sizes))
    make(pipe, None, num_frames=129)
    assert seen == [[(9, 16, 16)]]


def test_loop_remakes_the_end_so_it_leads_into_the_start(pipe):
    plain, _ = make(pipe, Task(window=9), num_frames=17)
    steps = []
    looped, _ = make(pipe, Task(loop=True, window=9), steps=steps, num_frames=17)
    assert looped.shape == plain.shape == (17, 16, 16, 3)
    assert np.array_equal(looped[:13], plain[:13])  # the remade window starts at 17 + 4 - 9 = 12
    assert not np.array_equal(looped[13:], plain[13:])
    last = steps[-1]  # it holds frame 12 first and frames 0..3 last: 1 + 1 latent frames held
    assert (last.t[:4] == 0).all() and (last.t[4:8] > 0).all() and (last.t[8:] == 0).all()


def test_loop_length_finds_a_bouncing_objects_round_trip():
    for seed in range(6):
        motion = _draw_motion(np.random.default_rng(seed), 17, 64, 64, 16, "right")
        centers = _centers(motion, 73)
        video = np.zeros((73, 64, 64, 3), np.uint8)
        for t, (x, y) in enumerate(centers):
            video[t][shape_mask("circle", x, y, 16, 64, 64)] = 255
        period = 2 * motion.room / motion.speed  # 24 .. 48 frames at the world's speeds
        n = loop_length(video, 17, 65, 8)
        assert min(abs(n - period), abs(n - 2 * period)) <= 0.5, (seed, n, period)
    with pytest.raises(ValueError, match="cannot be searched"):
        loop_length(video, 17, 70, 8)


def test_a_loop_with_no_length_asked_is_cut_where_it_comes_back_to_its_start(pipe, monkeypatch):
    import zoetrope.conditioning as conditioning

    o = pipe.diffusion.window_overlap  # 1: the forward clip runs to 33 + 4 frames, 1 + 4k
    plain, _ = make(pipe, Task(window=9), num_frames=37)
    tails, window = [], conditioning._window

    def spy(run, frames, head=None, tail=None):
        tails.append(tail)
        return window(run, frames, head, tail)

    monkeypatch.setattr(conditioning, "_window", spy)
    looped, _ = make(pipe, Task(loop=True, window=9))  # lengths 9 .. 33 (four windows)
    n = loop_length(plain, 9, 33, 4 * o)
    assert len(looped) == n and n < 37
    # the remade end holds frames 0..3, encoded after the forward clip's frame n - 1 (the one
    # before its frame n, which came back near frame 0) rather than a still frame 0
    assert np.array_equal(tails[-1][0], np.concatenate([plain[n - 1:n], plain[:4 * o]]))
    monkeypatch.undo()
    start = n + 4 * o - 9  # the remade window: frame start, then new ones, then frames 0..3
    assert np.array_equal(looped[:start + 1], plain[:start + 1])
    assert not np.array_equal(looped[start + 1:], plain[start + 1:n])
    two = pipe([PROMPT, "a blue square moving up"], task=Task(loop=True, window=9), seed=3,
               progress=False).frames  # each prompt's clip cut at its own length
    assert all(9 <= len(v) <= 33 for v in two)


def test_loop_tries_keeps_per_prompt_the_clip_that_comes_back_closest(pipe, monkeypatch):
    import zoetrope.conditioning as conditioning

    tried, forward, fit = [], conditioning._forward, conditioning.loop_fit
    monkeypatch.setattr(conditioning, "_forward",
                        lambda *a, **k: tried.append(forward(*a, **k)) or tried[-1].copy())
    # how far each try is from coming back, per prompt: prompt 0 best on try 2, prompt 1 on 1
    far = iter([5.0, 3.0, 4.0, 1.0, 2.0, 9.0])
    monkeypatch.setattr(conditioning, "loop_fit", lambda *a: (fit(*a)[0], next(far)))
    prompts = [PROMPT, "a blue square moving up"]
    out = pipe(prompts, task=Task(loop=True, window=9, loop_tries=3), seed=4,
               progress=False).frames
    assert len(tried) == 3 and not np.array_equal(tried[0], tried[1])  # each try its own noise
    o = pipe.diffusion.window_overlap
    for clip_, best in zip(out, (tried[2][0], tried[1][1])):
        n = fit(best, 9, 33, 4 * o)[0]
        start = n + 4 * o - 9  # the remade end starts after frame start
        assert len(clip_) == n and np.array_equal(clip_[:start + 1], best[:start + 1])


def test_trim_makes_each_windows_last_latent_frame_again_in_the_next(pipe, monkeypatch):
    import zoetrope.conditioning as conditioning
    from zoetrope.task_eval import long_windows

    made, window = [], conditioning._window

    def spy(run, frames, head=None, tail=None):
        video = window(run, frames, head, tail)
        made.append((None if head is None else head[0], video[0]))  # one prompt
        return video

    monkeypatch.setattr(conditioning, "_window", spy)
    out, _ = make(pipe, Task(window=13, trim=1), num_frames=25)  # overlap 1: 5 frames held
    spans = long_windows(25, 13, 1, trim=1)
    assert spans == [(0, 13), (4, 17), (8, 21), (12, 25)] and len(made) == len(spans)
    assert made[0][0] is None
    for (start, stop), (head, video), (nxt, _) in zip(spans, made, made[1:] + [(None, None)]):
        keep = stop if stop == 25 else stop - 4  # all but the last latent frame, but the final
        new = 0 if head is None else 5
        assert np.array_equal(out[start + new:keep], video[new:keep - start])
        if nxt is not None:  # the next window holds the 5 frames before the 4 left to it,
            # as this window decoded them
            assert np.array_equal(nxt, video[keep - start - 5:keep - start])
    monkeypatch.undo()
    plain, _ = make(pipe, Task(window=13), num_frames=25)
    assert not np.array_equal(plain[9:], out[9:]) and np.array_equal(plain[:9], out[:9])


def test_connect_starts_as_a_and_ends_holding_b(pipe):
    a, b = clip(5, 1), clip(5, 2)
    steps = []
    out, _ = make(pipe, Task(connect=(a, b), window=13), steps=steps, num_frames=13)
    assert out.shape == (13, 16, 16, 3)
    assert np.array_equal(out[:5], roundtrip(pipe, a[None])[0])
    kept = steps[-1].t == 0
    torch.testing.assert_close(steps[-1].x[-4:].sum(), encode(pipe, b[None])[0, :, 1:].sum(),
                               rtol=0, atol=1e-4)
    assert kept[:8].all() and kept[-4:].all() and not kept[8:12].any()


def test_edit_starts_its_grid_at_the_strength(pipe):
    given = clip(9)
    steps = []
    light, _ = make(pipe, Task(video=given, strength=0.3), steps=steps, restarts=0)
    assert light.shape == (9, 16, 16, 3)
    assert float(steps[0].t.max()) == pytest.approx(0.3) and len(steps) == 1  # round(2 x 0.3)
    faint, _ = make(pipe, Task(video=given, strength=1e-4))
    back = roundtrip(pipe, given[None])[0].astype(int)
    assert np.abs(faint.astype(int) - back).max() <= 2  # barely noised: the round trip
    full, _ = make(pipe, Task(video=given, strength=1.0))
    assert np.abs(full.astype(int) - back).mean() > 5


@pytest.mark.parametrize("task, kw, message", [
    (Task(extend="forward"), {}, "--extend needs --video"),
    (Task(video=clip(5)), {}, "--video needs --extend"),
    (Task(image=clip(1)[0], video=clip(5), extend="forward"), {}, "--image and --video conflict"),
    (Task(video=clip(5), strength=1.5), {}, r"--strength must be in \(0, 1\]"),
    (Task(video=clip(9), extend="forward"), {"num_frames": 9}, "leaves nothing to generate"),
    (Task(video=clip(5), extend="backward"), {"num_frames": 5}, "leaves nothing to generate"),
    (Task(image=np.zeros((16, 32, 3), np.uint8)), {}, "another aspect ratio.*--crop"),
    (Task(image=clip(1)[0]), {"height": 18}, "height=18"),
    (Task(loop=True, connect=(clip(5), clip(5))), {}, "conflict"),
    (Task(video=clip(9), strength=0.5), {"num_frames": 17}, "--strength keeps the clip's length"),
    (Task(loop=True, loop_lengths=(9, 33)), {"num_frames": 17}, "found takes no --frames"),
    (Task(loop_lengths=(9, 33)), {}, "loop_lengths finds a loop's length: it needs --loop"),
    (Task(loop=True, loop_lengths=(33, 9)), {}, "shortest <= longest"),
    (Task(loop=True, video=clip(13), extend="forward", loop_lengths=(9, 33)), {},
     "leaves nothing to generate"),
    (Task(loop_tries=2), {}, "--loop-tries picks among clips made for a --loop"),
    (Task(trim=-1), {}, "--trim must be a whole number >= 0"),
    (Task(trim=1), {"num_frames": 17}, "--trim 1 with --overlap 1 leaves no new frame"),
    (Task(loop=True, loop_tries=0), {}, "--loop-tries must be a whole number >= 1"),
    (Task(loop=True, loop_tries=2), {"num_frames": 17}, "give no --frames"),
])
def test_what_cannot_work_is_one_line(pipe, task, kw, message):
    with pytest.raises(UserError, match=message) as e:
        pipe(PROMPT, task=task, seed=0, progress=False, **kw)
    assert "\n" not in str(e.value)


def test_crop_takes_another_aspect_ratio(pipe):
    wide = np.zeros((16, 32, 3), np.uint8)
    assert make(pipe, Task(image=wide, crop=True))[0].shape == (9, 16, 16, 3)


def test_cli_tasks_write_clips_and_bad_ones_nothing(tmp_path, capsys, monkeypatch):
    pipe = tiny_pipeline()
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    write_video(tmp_path / "a.mp4", clip(5, 1), 8)
    write_video(tmp_path / "b.mp4", clip(5, 2), 8)
    write_video(tmp_path / "first.png", clip(1), 8)
    base = [PROMPT, "--model", str(model), "--seed", "0"]
    for name, flags in [("animate", ["--image", str(tmp_path / "first.png")]),
                        ("forward", ["--video", str(tmp_path / "a.mp4"), "--extend", "forward",
                                     "--frames", "13"]),
                        ("long", ["--frames", "25"]), ("loop", ["--loop", "--frames", "13"]),
                        ("found", ["--loop"]),
                        ("follow", ["--frames", "13", "--follow-motion"]),
                        ("connect", ["--connect", str(tmp_path / "first.png"),
                                     str(tmp_path / "b.mp4")]),
                        ("edit", ["--video", str(tmp_path / "a.mp4"), "--strength", "0.5"])]:
        out = tmp_path / f"{name}.mp4"
        assert main(["generate", *base, *flags, "-o", str(out)]) == 0
        frames = len(read_video(out)[0])
        if name == "found":  # a loop's length found in one to four windows of 9
            assert 9 <= frames <= 33
        else:
            assert frames == {"forward": 13, "long": 25, "edit": 5, "follow": 13,
                              "loop": 13}.get(name, 9)
    capsys.readouterr()
    for flags, message in [(["--extend", "forward"], "--extend needs --video"),
                           (["--video", str(tmp_path / "a.mp4"), "--extend", "forward",
                             "--frames", "5"], "leaves nothing to generate"),
                           (["--image", str(tmp_path / "first.png"), "--loop", "--video",
                             str(tmp_path / "a.mp4")], "conflict"),
                           (["--frames", "25", "--overlap", "2"], "--overlap 2 leaves no new"),
                           (["--frames", "25", "--trim", "1"], "--trim 1 with --overlap 1"),
                           (["--frames", "13", "--follow-motion", "--continuation-prompt", "a"],
                            "--follow-motion and --continuation-prompt both")]:
        out = tmp_path / "bad.mp4"
        assert main(["generate", *base, *flags, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and not out.exists()
    assert main(["generate", "a cat", *base[1:], "--follow-motion", "-o", str(out)]) == 2
    assert "cannot parse prompt 'a cat'" in capsys.readouterr().err and not out.exists()


def test_one_clip_per_prompt(pipe):
    a, b = clip(5, 1), clip(5, 2)
    out = pipe([PROMPT, PROMPT], task=Task(video=[a, b], extend="forward"), seed=0,
               progress=False).frames
    assert np.array_equal(out[0, :5], roundtrip(pipe, a[None])[0])
    assert np.array_equal(out[1, :5], roundtrip(pipe, b[None])[0])
    joined = pipe([PROMPT, PROMPT], task=Task(connect=([a, b], [b, a]), window=13), seed=0,
                  num_frames=13, progress=False).frames
    assert np.array_equal(joined[1, :5], roundtrip(pipe, b[None])[0])
    with pytest.raises(UserError, match="one per prompt must be as long"):
        pipe([PROMPT, PROMPT], task=Task(video=[a, clip(9)], extend="forward"), seed=0,
             num_frames=13, progress=False)
    with pytest.raises(UserError, match="3 clips for --video and 2 prompts"):
        pipe([PROMPT, PROMPT], task=Task(video=[a, a, a], extend="forward"), seed=0,
             progress=False)
