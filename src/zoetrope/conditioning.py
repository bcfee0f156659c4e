"""Prompting with images and videos: animate, extend, long clips, loop, connect, edit (SDEdit).

Every task is one mechanism: given latent frames are fed clean with t = 0 through the samplers'
keep mask while the others are denoised (`Given`, `hold_given`); SDEdit (Meng et al., arXiv
2108.01073) is a time grid that starts below 1, from the clip's latent noised to that time.

Frame semantics (`VAEShapes.latent_frame_pixels`): with the causal VAE, latent frame 0 is pixel
frame 0 alone and latent frame j >= 1 pixel frames 4j-3..4j. Every layer is causal, so a clip
encoded alone gives exactly the first latent frames of any video that starts with it.

Where each task puts its given frames. A window is the model's clip length (`Task.window`,
default the pipeline's default frames); o = `Task.overlap` latent frames (default the model's
`diffusion.window_overlap`).
- animate: the image, encoded as a one-frame clip, is latent frame 0.
- extend forward and long clips: a window holds the clip at its start. Window after window, the
  next one holds the output's last 1 + 4o frames, encoded as a clip of their own (its latent frame
  0 is again one frame alone), and adds its new frames: memory stays flat in the length.
  With `Task.trim` t, each forward window but the last keeps all but its last t latent frames
  (4t frames), which the next window, holding the 1 + 4o frames before them, makes again: a
  window's last latent frame decodes least steadily (speed glitches there), so no window's
  last is kept but the final one's, for about twice the windows at t = 1.
- extend backward, and B of connect: the clip (1 + 4b frames) encoded alone; its latent frames
  1..b (its frames 1..4b) are held as the window's last b latent frames. Its frame 0 shares a
  latent frame with three new frames and is drawn anew, so the output ends with the clip's frames
  1..4b. (Those latents saw a still past, the causal padding, rather than the new frames before
  them: an approximation at the seam.) Backward windows run back in time.
- loop: the clip is made forward, then its last window is made again holding, after the output's
  last frame, the output's first 4o frames (encoded after a copy of frame 0, as the padding does):
  the last frame leads into the first, and the held frames are not output twice. With no
  length asked for (`Task.loop_lengths`), the clip is made forward to LOOP_WINDOWS windows and
  each is cut where it comes back closest to its start (`loop_length`), so the remade end has
  the least to mend: a bouncing object's round trip takes a length of its own (its speed). The
  held first frames are then encoded after the clip's frame n - 1 rather than a still frame 0:
  the frame before the one that came back near frame 0. With `Task.loop_tries` k > 1 the clip is
  made forward k times (each its own noise) and, per prompt, the one that comes back closest to
  its start (`loop_fit`) is cut: k times the forward windows, one remade end.
- connect: forward from A, the last window holding B at its end as backward does.
- edit: the clip's latent noised to t = strength, then round(steps x strength) steps from there.
Windows that hold the output's own earlier frames (a long clip's later windows, backward ones,
a loop's remade end) get the prompt, or `continuation_prompt`: another text, guided as the prompt
is, or "", the empty prompt without guidance (they then follow the frames they hold alone). A
shapes-world caption's direction holds at the clip's start only, so a later window whose object
has bounced contradicts it; `a red circle` (the caption without its direction) does not.
Given frames are resized to the output size; another aspect ratio is an error unless `crop`.
Clips are cut to 1 + 4k frames (forward and edit keep the first, backward and B the last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import Tensor

from .config import DiffusionConfig
from .data.video import resize_crop
from .diffusion import (Callback, ddpm_grid, ddpm_q_sample, flow_grid, flow_q_sample,
                        restart_grid)
from .diffusion.ddpm import DDPMSchedule
from .errors import UserError
from .log import warn
from .patches import Packed, pack

if TYPE_CHECKING:
    from .pipeline import TextToVideoPipeline

LOOP_WINDOWS = 4  # a loop whose length is found is at most this many windows long (65 frames)
Video = np.ndarray  # uint8 (B, T, H, W, 3): one clip per prompt
Reader = Callable[[np.ndarray], str]  # one clip's held frames (G, H, W, 3) -> a window's prompt


@dataclass
class Task:
    """What a generation is given besides the prompt; the CLI flag of each field in brackets."""

    image: np.ndarray | list[np.ndarray] | None = None  # uint8 (H, W, 3), or one per prompt [--image]
    # uint8 (T, H, W, 3): the clip to extend or edit, or one per prompt [--video]
    video: np.ndarray | list[np.ndarray] | None = None
    extend: str | None = None  # "forward" or "backward" [--extend]
    connect: tuple[np.ndarray, np.ndarray] | None = None  # clips A and B, or lists [--connect]
    loop: bool = False  # [--loop]
    # (loop) find its length in shortest..longest frames: where the clip made comes back closest
    # to its start (`loop_length`); None: exactly the output's frames [--loop without --frames]
    loop_lengths: tuple[int, int] | None = None
    # (a loop whose length is found) clips made forward per prompt; the one that comes back
    # closest to its start (`loop_fit`) is cut and its end remade [--loop-tries]
    loop_tries: int = 1
    strength: float | None = None  # SDEdit: noise the clip to t = strength [--strength]
    crop: bool = False  # centre-crop given frames of another aspect ratio [--crop]
    # latent frames a window holds of the one before; None: the model's diffusion.window_overlap
    overlap: int | None = None  # [--overlap]
    # latent frames at the end of each window but the last that the next window makes again
    # (a window's last latent frame decodes least steadily): more windows, a steadier clip [--trim]
    trim: int = 0
    window: int | None = None  # frames per window; default: the pipeline's default frames
    # the prompt of windows holding the output's own earlier frames: None, the prompt; a text
    # (or one per prompt), guided as the prompt is; "", the empty prompt without guidance: they
    # follow the frames they hold alone [--continuation-prompt]; or a function of the frames a
    # window holds (uint8 (G, H, W, 3)) that returns its text (or one per prompt), asked anew
    # for every window [--follow-motion]
    continuation_prompt: str | Reader | list[str] | list[Reader] | None = None

    def check(self) -> None:
        """One line of error for what cannot work together."""
        has = {"--image": self.image is not None, "--video": self.video is not None,
               "--connect": self.connect is not None}
        if sum(has.values()) > 1:
            raise UserError(f"{' and '.join(k for k, v in has.items() if v)} conflict: give one")
        if self.extend is not None and self.extend not in ("forward", "backward"):
            raise UserError(f"--extend must be forward or backward, got {self.extend!r}")
        if self.extend is not None and self.video is None:
            raise UserError("--extend needs --video (the clip to extend)")
        if self.strength is not None:
            if self.video is None or self.extend is not None or self.loop:
                raise UserError("--strength edits a --video, alone (not with --extend or --loop)")
            if not 0 < self.strength <= 1:
                raise UserError(f"--strength must be in (0, 1], got {self.strength}")
        elif self.video is not None and self.extend is None:
            raise UserError("--video needs --extend forward|backward or --strength S")
        if self.loop and (self.connect is not None or self.extend == "backward"):
            raise UserError("--loop conflicts with --connect and --extend backward")
        if self.loop_lengths is not None:
            shortest, longest = self.loop_lengths
            if not self.loop:
                raise UserError("loop_lengths finds a loop's length: it needs --loop")
            if not 5 <= shortest <= longest:
                raise UserError(f"loop_lengths must be 5 <= shortest <= longest, got "
                                f"{shortest}, {longest}")
        if not isinstance(self.loop_tries, int) or self.loop_tries < 1:
            raise UserError(f"--loop-tries must be a whole number >= 1, got {self.loop_tries!r}")
        if self.loop_tries > 1 and not self.loop:
            raise UserError("--loop-tries picks among clips made for a --loop: it needs --loop")
        if self.overlap is not None and self.overlap < 1:
            raise UserError(f"overlap must be at least 1 latent frame, got {self.overlap}")
        if not isinstance(self.trim, int) or self.trim < 0:
            raise UserError(f"--trim must be a whole number >= 0, got {self.trim!r}")


@dataclass
class Given:
    """Clean latent frames one sample holds: its latent (C, t, h, w) and which frames (t,)."""

    latent: Tensor
    frames: Tensor  # (t,) bool; all False with a latent to edit (SDEdit)


@dataclass
class Sampling:
    """What every window of one call samples with (see `TextToVideoPipeline.__call__`)."""

    text: Tensor  # (B or 2B, L, Dtxt): prompts, then negatives when guided
    mask: Tensor
    generator: torch.Generator
    steps: int
    scale: float
    config: DiffusionConfig
    progress: bool = True
    callback: Callback | None = None
    motion_scale: float | None = None  # windows holding frames in motion; None: `scale`


# --------------------------------------------------------------------------------------------
# Holding given frames, and SDEdit's grid
# --------------------------------------------------------------------------------------------


def hold_given(packed: Packed, given: list[Given] | None, config: DiffusionConfig,
               start: Tensor | None = None) -> tuple[Packed, Tensor | None]:
    """Packed noise -> the sampler's start and keep mask (N,): given frames clean, and with
    `start` (the grid's first row, SDEdit) every other token the given latent noised to it."""
    if given is None:
        return packed, None
    if packed.patch_size[0] != 1:
        raise UserError("given frames need a DiT with temporal patch size 1")
    clean = pack([g.latent.to(packed.tokens) for g in given], packed.patch_size).tokens
    frames = torch.cat([g.frames for g in given]).to(packed.tokens.device)
    offsets = torch.tensor([0, *np.cumsum([len(g.frames) for g in given])[:-1]],
                           device=frames.device)
    keep = frames[offsets[packed.sample_ids] + packed.positions[:, 0]]  # (N,)
    x = packed.tokens
    if start is not None:
        x = _noised(config, clean, start.to(x.device, torch.float32).expand(len(x)), x)
    return packed.with_tokens(torch.where(keep[:, None], clean, x)), keep


def _noised(config: DiffusionConfig, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x0 noised to times t (N,) by the objective's forward process."""
    if config.objective == "ddpm":
        return ddpm_q_sample(DDPMSchedule.from_config(config), x0, t, noise)
    return flow_q_sample(x0, t, noise)


def edit_grid(config: DiffusionConfig, steps: int, shift: float | Tensor,
              strength: float) -> Tensor:
    """SDEdit's grid: round(steps x strength) steps from t = strength (flow), or the respaced
    DDPM steps at or below it; restarts jump back no higher than strength."""
    steps = max(1, round(steps * strength))
    if config.objective == "ddpm":
        grid = ddpm_grid(config.num_train_timesteps, steps, config.timestep_spacing) * strength
    else:
        grid = flow_grid(steps, strength, shift)
    return restart_grid(grid, config.restarts, min(config.restart_time, strength),
                        config.restart_steps, shift)


# --------------------------------------------------------------------------------------------
# Given pixels: resized, cut to 1 + 4k frames, encoded
# --------------------------------------------------------------------------------------------


def fit_frames(frames: np.ndarray, height: int, width: int, crop: bool, what: str) -> np.ndarray:
    """uint8 (T, H, W, 3) resized to (height, width); another aspect ratio needs `crop`."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise UserError(f"{what} must be uint8 (T, H, W, 3), got {frames.dtype} "
                        f"{tuple(frames.shape)}")
    h, w = frames.shape[1:3]
    if not crop and abs(h * width - w * height) > 0.02 * h * width:  # 2%: rounding of a resize
        raise UserError(f"{what} is {w}x{h} but the output is {width}x{height} (another aspect "
                        f"ratio): pass --crop to centre-crop it, or a --size of its aspect")
    return resize_crop(frames, height, width)


def cut_clip(frames: np.ndarray, keep_end: bool, what: str, temporal: int = 4) -> np.ndarray:
    """The first (or last) 1 + 4k frames of a clip, with a warning when some are dropped."""
    usable = 1 + (len(frames) - 1) // temporal * temporal
    if usable < len(frames):
        warn(f"{what} has {len(frames)} frames; using its {'last' if keep_end else 'first'} "
             f"{usable} (the VAE takes 1 + {temporal}k)")
    return frames[len(frames) - usable:] if keep_end else frames[:usable]


def encode(pipe: TextToVideoPipeline, video: Video) -> Tensor:
    """uint8 (B, T, H, W, 3) -> latents (B, C, t, h, w) on the pipeline's device."""
    pixels = torch.from_numpy(np.array(video)).to(pipe.device).float() / 127.5 - 1  # a copy: writable
    return pipe.vae.encode_latent(pixels.permute(0, 4, 1, 2, 3)).float()


def roundtrip(pipe: TextToVideoPipeline, video: Video) -> Video:
    """A clip through the VAE and back: what holding all of it gives."""
    latents = list(encode(pipe, video))
    return np.stack(pipe.decode(pack(latents, pipe.dit.config.patch_size)))


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One call's pipeline, sampling settings and output size, shared by its windows."""

    pipe: TextToVideoPipeline
    sampling: Sampling
    count: int  # prompts
    height: int
    width: int
    window: int  # frames per window
    overlap: int  # latent frames a window holds of the one before
    crop: bool  # centre-crop given frames of another aspect ratio
    continuation: str | Reader | list[str] | list[Reader] | None = None  # Task.continuation_prompt
    trim: int = 0  # Task.trim

    @property
    def reads_frames(self) -> bool:
        """Whether continuation prompts are read off each window's held frames."""
        c = self.continuation
        return callable(c) or (isinstance(c, list) and any(callable(x) for x in c))

    def after(self, previous: _Run | None, held: Video) -> _Run:
        """The run of the window after the one `previous` ran (None: this is the first window,
        itself); `held` (B, G, H, W, 3): the output's own frames that window holds."""
        if previous is None:
            return self
        return self.continuing(held) if previous is self or self.reads_frames else previous

    def continuing(self, held: Video) -> _Run:
        """The run for a window that holds the output's own frames `held` (B, G, H, W, 3):
        itself, or prompted with the continuation prompts (the negatives kept; read off `held`
        where they are functions), or unprompted and unguided (all "")."""
        c = self.continuation
        if c is None:
            return self
        texts = [c] * self.count if isinstance(c, str) or callable(c) else list(c)
        if len(texts) != self.count:
            raise UserError(f"{len(texts)} continuation prompts for {self.count} prompts: give "
                            "one, or one per prompt")
        texts = [t(h) if callable(t) else t for t, h in zip(texts, held)]
        s = self.sampling
        if not any(texts):
            text, mask = self.pipe.encode_text(texts)
            return replace(self, sampling=replace(s, text=text, mask=mask, scale=1.0,
                                                  motion_scale=None))
        guided = s.text.shape[0] > self.count  # rows count.. are the negatives
        text, mask = self.pipe.encode_text(texts)
        if guided:
            text, mask = _stack_text((text, mask), (s.text[self.count:], s.mask[self.count:]))
        return replace(self, sampling=replace(s, text=text, mask=mask))


def _stack_text(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Two (text (B, L, D), mask (B, L)) batches as one, the shorter padded (masked out)."""
    length = max(a[0].shape[1], b[0].shape[1])
    pad = lambda t, m: (torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[1])),  # noqa: E731
                        torch.nn.functional.pad(m, (0, length - m.shape[1])))
    (ta, ma), (tb, mb) = pad(*a), pad(*b)
    return torch.cat([ta, tb]), torch.cat([ma, mb])


def _window(run: _Run, frames: int, head: Video | None = None,
            tail: Video | None = None) -> Video:
    """One window of `frames` frames holding `head` (B, G, H, W, 3) first and the frames 1..4b
    of `tail` (B, 1 + 4b, H, W, 3) last; returns its decoded frames (B, frames, H, W, 3)."""
    pipe = run.pipe
    shape = pipe.latent_shape((frames, run.height, run.width))
    t = shape[1]
    latents = torch.zeros(run.count, *shape, device=pipe.device)
    held = torch.zeros(t, dtype=torch.bool)
    g = b = 0
    if head is not None:
        z = encode(pipe, head)  # (B, C, g, h, w): exactly a video's first latents (causal)
        g = z.shape[2]
        latents[:, :, :g], held[:g] = z, True
    if tail is not None:
        z = encode(pipe, tail)[:, :, 1:]  # latent 0 (the clip's frame 0 alone) is drawn anew
        b = z.shape[2]
        latents[:, :, t - b:], held[t - b:] = z, True
    if g + b >= t:
        raise UserError(f"the given frames take all {t} latent frames of a window of {frames} "
                        f"frames, leaving nothing to generate: pass more --frames")
    s = run.sampling  # frames in motion given (more than one pixel frame): their own scale
    if s.motion_scale is not None and (tail is not None or g > 1):
        s = replace(s, scale=s.motion_scale)
    packed = pipe.sample([shape] * run.count, s, [Given(z, held) for z in latents])
    return np.stack(pipe.decode(packed))


def _forward(run: _Run, frames: int, head: Video | None = None,
             tail: Video | None = None) -> Video:
    """`frames` frames, window after window from the start: `head` held first (and output as
    the VAE gives it back), `tail`'s frames 1..4b held last (they close the output)."""
    b, o = (0 if tail is None else (tail.shape[1] - 1) // 4), run.overlap
    out, done, hold, now = [], 0, head, None
    if head is not None and head.shape[1] + 4 > run.window:  # too long to hold whole
        out, done = [roundtrip(run.pipe, head)], head.shape[1]
        hold = out[0][:, -(1 + 4 * o):]
    while done < frames:
        # the first window holds given frames (or none); the next ones the output's own
        now = run.after(now, hold)
        offset = hold.shape[1] if done else 0  # held frames the output already has
        final = offset + frames - done <= run.window
        least = (0 if hold is None else hold.shape[1]) + 4  # one new latent frame
        size = (offset + frames - done if final else
                max(least, min(run.window, offset + frames - done - 4 - 4 * b)))
        video = _window(now, size, hold, tail if final else None)
        # a window but the last leaves its last run.trim latent frames to the next, where it
        # still makes a new frame without them
        cut = size - 4 * run.trim
        keep = cut if not final and cut > max(least - 4, 4 * o) else size
        out.append(video[:, offset:keep])
        done += keep - offset
        # the next window's start: 1 + 4o frames as this window decoded them
        hold = video[:, keep - 1 - 4 * o:keep]
    return np.concatenate(out, 1)


def _backward(run: _Run, frames: int, tail: Video) -> Video:
    """`frames` frames, window after window back in time from an end holding `tail`."""
    o = run.overlap
    out, done, hold, now = [], 0, tail, None
    if tail.shape[1] + 4 > run.window:  # too long to hold whole
        out, done = [roundtrip(run.pipe, tail)], tail.shape[1]
        hold = out[0][:, :1 + 4 * o]
    while done < frames:
        # the output already has the window's held frames and the one drawn anew before them
        offset = hold.shape[1] if done else 0
        size = min(run.window, offset + frames - done)
        now = run.after(now, hold)
        video = _window(now, size, None, hold)
        out.insert(0, video[:, :size - offset])
        done += size - offset
        hold = video[:, :1 + 4 * o]
    return np.concatenate(out, 1)


def loop_length(clip: np.ndarray, shortest: int, longest: int, lead: int) -> int:
    """The length n in shortest..longest at which `clip` (T, H, W, 3), T >= longest + lead,
    comes back closest to its start: where its frames n..n+lead-1 differ least from its frames
    0..lead-1 (mean squared difference; the shortest on a tie). A loop cut there needs the
    least remade to lead its last frame into its first (video textures: Schoedl et al., 2000)."""
    return loop_fit(clip, shortest, longest, lead)[0]


def loop_fit(clip: np.ndarray, shortest: int, longest: int, lead: int) -> tuple[int, float]:
    """`loop_length`'s n and how far the clip is there from coming back: the mean squared
    difference (uint8 levels squared) of its frames n..n+lead-1 to its frames 0..lead-1."""
    if lead < 1 or not 1 <= shortest <= longest or len(clip) < longest + lead:
        raise ValueError(f"a clip of {len(clip)} frames cannot be searched for a loop of "
                         f"{shortest}..{longest} frames leading into {lead} more")
    x = clip[:longest + lead].astype(np.float32)
    start = x[:lead]
    cost = [float(np.mean(np.square(x[n:n + lead] - start))) for n in range(shortest, longest + 1)]
    best = int(np.argmin(cost))
    return shortest + best, cost[best]


def default_loop_lengths(window: int) -> tuple[int, int]:
    """The lengths a loop with no --frames is found in: one window to LOOP_WINDOWS windows."""
    return window, 1 + LOOP_WINDOWS * (window - 1)


def _loop(run: _Run, video: Video, lengths: list[int] | None = None) -> list[np.ndarray]:
    """Each clip of `video` (B, T, H, W, 3) cut to its length n (`lengths`, default T) with its
    end made again so that its last frame leads into its first: the last window holds, after
    frame n - 1, the frames 0..4o-1."""
    n = lengths or [video.shape[1]] * len(video)
    o = run.overlap
    size = min(run.window, min(n) + 4 * o)
    p = min(o, (size - 1 - 4 * o) // 4 - 1)  # latent frames it holds first, leaving one new
    if min(n) < 5 or p < 0:
        raise UserError(f"--loop needs at least 5 frames and a window of {5 + 4 * o}")
    # each window is output frames start..n-1, then the held frames
    starts = [k + 4 * o - size for k in n]
    head = np.stack([clip[a:a + 1 + 4 * p] for clip, a in zip(video, starts)])
    # the held frames 0..4o-1 are encoded after a past frame: where the clip goes on past its
    # length n (a found loop), its frame n - 1, the one before frame n that came back near
    # frame 0; else frame 0 again, a still past (as the causal padding is)
    past = np.stack([clip[k - 1] if len(clip) > k else clip[0] for clip, k in zip(video, n)])
    tail = np.concatenate([past[:, None], video[:, :4 * o]], 1)
    again = _window(run.continuing(head), size, head, tail)
    return [np.concatenate([clip[:a + 1 + 4 * p], end[1 + 4 * p:size - 4 * o]])
            for clip, end, a in zip(video, again, starts)]


def _edit(run: _Run, clip: Video, strength: float) -> Video:
    """SDEdit: each clip's latent noised to t = strength and denoised from there."""
    z = encode(run.pipe, clip)  # (B, C, t, h, w)
    nothing = torch.zeros(z.shape[2], dtype=torch.bool)
    packed = run.pipe.sample([tuple(z.shape[1:])] * run.count, run.sampling,
                             [Given(latent, nothing) for latent in z], strength)
    return np.stack(run.pipe.decode(packed))


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------


def output_frames(task: Task, num_frames: int | None) -> int | None:
    """The output's frames: an edit keeps its clip's usable length (1 + 4k), and asking for
    another length is an error rather than silently ignored."""
    if task.loop_lengths is not None:
        if num_frames is not None:
            raise UserError("a loop whose length is found takes no --frames: give --frames "
                            "for a loop of exactly that length")
        return 1 + 4 * math.ceil((task.loop_lengths[1] - 1) / 4)
    if task.strength is None or task.video is None:
        return num_frames
    video = task.video[0] if isinstance(task.video, (list, tuple)) else task.video
    usable = 1 + (len(video) - 1) // 4 * 4
    if num_frames is not None and num_frames != usable:
        raise UserError(f"--strength keeps the clip's length: --frames must be {usable} (the "
                        f"clip cut to 1 + 4k frames) or left out, got {num_frames}")
    return usable


def _clip(run: _Run, frames: np.ndarray | list[np.ndarray], keep_end: bool, what: str) -> Video:
    """A given clip (or one per prompt) fitted to the output and cut to 1 + 4k frames."""
    fit = lambda f: cut_clip(fit_frames(f, run.height, run.width, run.crop, what),  # noqa: E731
                             keep_end, what, run.pipe.vae.config.temporal_downsample)
    if not isinstance(frames, (list, tuple)):
        clip = fit(frames)
        return np.broadcast_to(clip[None], (run.count, *clip.shape))
    if len(frames) != run.count:
        raise UserError(f"{len(frames)} clips for {what} and {run.count} prompts: give one, or "
                        "one per prompt")
    clips = [fit(f) for f in frames]
    if len({len(c) for c in clips}) != 1:
        raise UserError(f"the clips for {what} have {sorted({len(c) for c in clips})} usable "
                        "frames: one per prompt must be as long as the others")
    return np.stack(clips)


def _images(run: _Run, image: np.ndarray | list[np.ndarray]) -> Video:
    """Images to animate, one per prompt, as one-frame clips (B, 1, H, W, 3)."""
    images = list(image) if isinstance(image, (list, tuple)) else [image] * run.count
    if len(images) != run.count:
        raise UserError(f"{len(images)} images for {run.count} prompts")
    return np.stack([fit_frames(np.asarray(i)[None], run.height, run.width, run.crop, "the image")
                     for i in images])


def _room(given: int, frames: int, what: str) -> None:
    if given >= frames:
        raise UserError(f"{what} of {given} frames leaves nothing to generate in an output of "
                        f"{frames} frames: pass --frames above {given} (1 + 4k)")


def window_frames(task: Task, frames: int, default: int) -> int:
    """Frames the DiT denoises at once for `task`: the whole clip for an edit, else a window
    (`task.window`, or `default`, the pipeline's clip length)."""
    return frames if task.strength is not None else task.window or default


def generate(pipe: TextToVideoPipeline, task: Task, sizes: list[tuple[int, int, int]],
             sampling: Sampling) -> list[np.ndarray]:
    """The videos (T, H, W, 3) uint8 of one call with given frames, one per prompt."""
    task.check()
    if len(set(sizes)) != 1:
        raise UserError("given frames take one size for all prompts")
    frames, height, width = sizes[0]
    window = window_frames(task, frames, pipe.default_size[0])
    pipe.latent_shape((window, height, width))  # a window the VAE and DiT can take
    overlap = pipe.diffusion.window_overlap if task.overlap is None else task.overlap
    if task.strength is None:
        check_overlap(overlap, window, task.trim)
    run = _Run(pipe, sampling, len(sizes), height, width, window, overlap, task.crop,
               task.continuation_prompt, task.trim)
    if task.strength is not None:
        return list(_edit(run, _clip(run, task.video, False, "--video"), task.strength))
    if task.extend == "backward":
        tail = _clip(run, task.video, True, "--video")
        _room(tail.shape[1], frames, "--video")
        return list(_backward(run, frames, tail))
    head, tail = None, None
    if task.connect is not None:
        head = _clip(run, task.connect[0], False, "--connect A")
        tail = _clip(run, task.connect[1], True, "--connect B")
        _room(head.shape[1] + tail.shape[1] - 1, frames, "--connect A and B")
    elif task.video is not None:
        head = _clip(run, task.video, False, "--video")
    elif task.image is not None:
        head = _images(run, task.image)
    if head is not None:
        _room(head.shape[1], frames, "--image" if task.image is not None else "--video")
    if task.loop_lengths is None:
        if task.loop_tries > 1:
            raise UserError("--loop-tries picks the clip that comes back closest to its start, "
                            "for a loop whose length is found: give no --frames")
        video = _forward(run, frames, head, tail)
        return _loop(run, video) if task.loop else list(video)
    shortest, longest = task.loop_lengths  # room after the longest for the frames it leads into
    if head is not None:
        _room(head.shape[1], shortest, "--video")
    made = 1 + 4 * math.ceil((longest + 4 * overlap - 1) / 4)
    tries = [_forward(run, made, head) for _ in range(task.loop_tries)]  # each its own noise
    fits = [[loop_fit(v, shortest, longest, 4 * overlap) for v in t] for t in tries]
    # per prompt the try that comes back closest (the first on a tie)
    best = [min(range(len(tries)), key=lambda k: fits[k][i][1]) for i in range(len(sizes))]
    return _loop(run, np.stack([tries[k][i] for i, k in enumerate(best)]),
                 [fits[k][i][0] for i, k in enumerate(best)])


def check_overlap(overlap: int, window: int, trim: int = 0) -> None:
    """One line of error unless a window of `window` frames that holds the last 1 + 4 x overlap
    frames of the one before still makes a new latent frame, and one more for each of the
    `trim` latent frames it leaves to the next window."""
    if overlap < 1 or 1 + 4 * overlap + 4 > window:
        raise UserError(f"--overlap {overlap} leaves no new frame in a window of {window} frames: "
                        f"it must be 1 .. {(window - 5) // 4}")
    if trim < 0 or 1 + 4 * overlap + 4 + 4 * trim > window:
        raise UserError(f"--trim {trim} with --overlap {overlap} leaves no new frame in a window "
                        f"of {window} frames: it must be 0 .. {(window - 5) // 4 - overlap}")


def as_task(task: Task | None, first_frame: np.ndarray | list[np.ndarray] | None) -> Task | None:
    """The call's task; `first_frame` is shorthand for Task(image=first_frame)."""
    if first_frame is None:
        return task
    if task is not None:
        raise UserError("pass first_frame or task, not both")
    return Task(image=first_frame)
