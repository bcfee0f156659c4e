"""Text-to-video generation: prompts -> packed noise -> DiT denoising -> VAE decode -> uint8 frames.

`TextToVideoPipeline(vae, dit, text_encoder, diffusion)(prompt, ...) -> VideoOutput`.

A pipeline directory holds `vae/`, `dit/`, `text_encoder/` and `pipeline.json`; `weights` is its
one reader and writer (`read_pipeline`, `save_pipeline`: atomic, versioned; its docstring shows the
layout). `from_pretrained` loads one, `save_pretrained` writes one (the trainer's export too).

Conventions:
- Sizes are pixel (frames, height, width). The VAE's `latent_shape` turns them into latent
  (C, t, h, w) (and names the nearest valid sizes when it cannot); the latent grid must also divide
  by the DiT patch size, checked here with an error naming the nearest valid pixel sizes.
- Several prompts (of one size or, through `sizes`, of several) are one packed sequence.
- Noise is drawn per sample, in prompt order, from a CPU `torch.Generator`, then moved: a seed gives
  the same video on every device, and prompt 0 of a batch is the video its seed gives alone.
- Classifier-free guidance (Ho and Salimans, arXiv 2207.12598): the unconditional branch encodes
  the negative prompt (default ""), and both branches run as ONE packed DiT call over the batch
  concatenated with itself. guidance_scale = 1 runs the conditional branch only.
- Sampling does not branch per sampler: `diffusion.sampling_grid` turns the `DiffusionConfig` into
  a time grid (flow: the SD3 shift sqrt(tokens / shift_base_tokens) of each sample's DiT token
  count, then `restarts` rounds that jump back up, `restarts=` overriding the pipeline's setting;
  DDPM: respaced train steps), `diffusion.build_denoiser` wraps the (guided) DiT and the sampler
  `diffusion.sampler_from_config` names walks the grid. Each sample draws its restart noise right
  after its initial noise; the sampler takes it through its one noise source.
- Guidance applies where the time the sampler passes (t in [0, 1], every sampler alike) lies in
  `diffusion.guidance_interval`; a DiT call with no token inside it runs the conditional branch
  alone.
- Given frames (`task`, `first_frame`): `conditioning` encodes them and holds their latent frames
  clean, with t = 0, through the samplers' keep mask, window after window (`sample` is one window).
"""

from __future__ import annotations

import math
import secrets
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .config import DiffusionConfig
from .data.video import SUPPORTED_WRITE, VideoError, write_video
from .diffusion import (Callback, ModelFn, Noise, StepInfo, build_denoiser,
                        classifier_free_guidance, flow_q_sample, generator_noise, model_calls,
                        queued_noise, resolution_shift, sampler_from_config, sampling_grid)
from .conditioning import (Given, Sampling, Task, as_task, default_loop_lengths, edit_grid,
                           generate, hold_given, output_frames, window_frames)
from .dit import DiT
from . import checks, memory
from .errors import UserError
from .log import warn
from .patches import Packed, concat, pack, unpack
from .weights import PipelineSettings, read_pipeline, save_pipeline

BUNDLED_MODEL = Path(__file__).parent / "assets" / "shapes-demo"  # shipped with the package
# its few-step student (`[train] stages = ["distill"]`, configs/shapes-demo-fast.toml)
FAST_MODEL = Path(__file__).parent / "assets" / "shapes-demo-fast"

Size = tuple[int, int, int]  # (frames, height, width) in pixels
Shape = tuple[int, int, int, int]  # latent (C, t, h, w)


@dataclass
class VideoOutput:
    """Generated videos: uint8 (B, T, H, W, 3) frames, or a list of (T, H, W, 3) if sizes differ."""

    frames: np.ndarray | list[np.ndarray]
    fps: float
    seed: int | None = None  # the seed the noise came from (None when a generator was passed)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: text, denoise, decode, total

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path) -> list[Path]:
        """Write with `write_video`: one video -> `path`; B > 1 -> `name_0.ext`, `name_1.ext`..."""
        path = Path(path)
        if path.suffix.lower() not in SUPPORTED_WRITE:  # before any file is written
            raise VideoError(f"cannot write {str(path)!r}: unsupported extension "
                             f"{path.suffix or '(none)'!r}; "
                             f"supported: {', '.join(SUPPORTED_WRITE)}")
        if len(self.frames) == 1:
            return [write_video(path, self.frames[0], self.fps)]
        return [write_video(path.with_name(f"{path.stem}_{i}{path.suffix}"), video, self.fps)
                for i, video in enumerate(self.frames)]


class TextToVideoPipeline:
    """VAE + packed DiT + text encoder + diffusion settings; call it with prompts to get videos."""

    def __init__(self, vae: nn.Module, dit: DiT, text_encoder: nn.Module,
                 diffusion: DiffusionConfig, fps: float = 8.0,
                 default_size: Sequence[int] = (17, 64, 64),
                 sizes: Sequence[Sequence[int]] | None = None, negative_prompt: str = "",
                 metadata: dict | None = None):
        self.vae, self.dit, self.text_encoder = vae.eval(), dit.eval(), text_encoder.eval()
        self.diffusion = diffusion
        self.fps = float(fps)
        self.default_size: Size = tuple(int(s) for s in default_size)  # type: ignore[assignment]
        self.sizes = [tuple(int(s) for s in size) for size in (sizes or [self.default_size])]
        self.negative_prompt = negative_prompt
        self.metadata = dict(metadata or {})
        self._check_components()

    def _check_components(self) -> None:
        """Fail early, in one line, when the parts cannot work together."""
        channels = self.latent_shape(self.default_size)[0]
        if self.dit.config.in_channels != channels:
            raise UserError(f"the DiT takes {self.dit.config.in_channels} latent channels but the "
                            f"VAE makes {channels}")
        if self.dit.config.text_dim != self.text_encoder.dim:
            raise UserError(f"the DiT takes text of width {self.dit.config.text_dim} but the text "
                            f"encoder makes {self.text_encoder.dim}")
        if self.fps <= 0:
            raise UserError(f"fps must be positive, got {self.fps}")

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def to(self, device: torch.device | str) -> TextToVideoPipeline:
        """Move all three models to `device` (in place); returns the pipeline."""
        for model in (self.vae, self.dit, self.text_encoder):
            model.to(device)
        return self

    # -- weights ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | Path, attention: str = "auto") -> TextToVideoPipeline:
        """Load a pipeline directory (`weights.read_pipeline`); `attention` is the DiT's backend."""
        from .text import load_text_encoder
        from .vae_adapters import load_vae

        directory = Path(directory)
        settings = read_pipeline(directory)
        return cls(load_vae(directory / "vae"), DiT.from_pretrained(directory / "dit", attention),
                   load_text_encoder(directory / "text_encoder"), **vars(settings))

    @classmethod
    def from_configs(cls, vae, dit, text, diffusion: DiffusionConfig | None = None,
                     **settings) -> TextToVideoPipeline:
        """A pipeline of freshly initialised models from a VAEConfig, DiTConfig and TextConfig."""
        from .text import build_text_encoder
        from .vae import CausalVAE

        return cls(CausalVAE(vae), DiT(dit), build_text_encoder(text),
                   diffusion or DiffusionConfig(), **settings)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the whole pipeline directory atomically (`weights.save_pipeline`); returns it.

        Complete or not at all: an existing pipeline directory is replaced only once the new one
        is written. The trainer's export is this call.
        """
        settings = PipelineSettings(self.diffusion, self.fps, self.default_size, self.sizes,
                                    self.negative_prompt, self.metadata)
        components = {"vae": self.vae, "dit": self.dit, "text_encoder": self.text_encoder}
        return save_pipeline(directory, components, settings)

    # -- sizes ----------------------------------------------------------------------------------

    def latent_shape(self, size: Size) -> Shape:
        """Pixel (frames, height, width) -> latent (C, t, h, w) fit for the VAE and DiT patches."""
        frames, height, width = size
        shape = self.vae.latent_shape(frames, height, width)  # VAEShapeError names nearest sizes
        for axis, (name, value) in enumerate(zip(("num_frames", "height", "width"), size)):
            p = self.dit.config.patch_size[axis]
            if shape[1 + axis] % p:
                low, high = self._nearest_valid(size, axis)
                near = " or ".join(str(v) for v in (low, high) if v is not None)
                raise UserError(f"{name}={value} gives a latent {'thw'[axis]}={shape[1 + axis]}, "
                                f"not divisible by the DiT patch size {p}; nearest valid: {near}")
        return shape

    def _nearest_valid(self, size: Size, axis: int, limit: int = 4096
                       ) -> tuple[int | None, int | None]:
        """Closest values below and above size[axis] that the VAE and the patch size both take."""
        def ok(value: int) -> bool:
            trial = list(size)
            trial[axis] = value
            try:
                shape = self.vae.latent_shape(*trial)
            except ValueError:
                return False
            return shape[1 + axis] % self.dit.config.patch_size[axis] == 0

        value = size[axis]
        low = next((v for v in range(value - 1, 0, -1) if ok(v)), None)
        high = next((v for v in range(value + 1, value + limit) if ok(v)), None)
        return low, high

    def prepare_sizes(self, count: int, num_frames: int | None, height: int | None,
                      width: int | None, sizes: Sequence[Sequence[int]] | None) -> list[Size]:
        """One pixel size per prompt: `sizes`, or the given dims with the rest from default_size."""
        if sizes is not None:
            if any(v is not None for v in (num_frames, height, width)):
                raise UserError("pass either sizes or num_frames/height/width, not both")
            if len(sizes) != count:
                raise UserError(f"sizes has {len(sizes)} entries for {count} prompts")
            if any(len(s) != 3 for s in sizes):
                raise UserError("each entry of sizes must be (frames, height, width)")
            return [tuple(checks.integer(f"sizes[{i}]", v, low=1) for v in s)  # type: ignore[misc]
                    for i, s in enumerate(sizes)]
        given = [d if v is None else checks.integer(name, v, low=1) for name, v, d in
                 zip(("num_frames", "height", "width"), (num_frames, height, width), self.default_size)]
        return [tuple(given)] * count  # type: ignore[list-item]

    # -- generation -----------------------------------------------------------------------------

    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] | None = None,
                 num_frames: int | None = None, height: int | None = None, width: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 sizes: Sequence[Sequence[int]] | None = None, progress: bool = True,
                 first_frame: np.ndarray | list[np.ndarray] | None = None,
                 restarts: int | None = None, callback: Callback | None = None,
                 force: bool = False, task: Task | None = None) -> VideoOutput:
        """Generate one video per prompt; see the module docstring for sizes, seeds and guidance.

        `callback(StepInfo)` runs after every DiT step (step, total, times, latent, x0 estimate).
        `task` (`conditioning.Task`) gives frames: animate, extend, long clips, loop, connect,
        edit; `first_frame` is `Task(image=first_frame)`.
        A request whose memory estimate (`memory.generation_bytes`) exceeds what the device has
        available is refused before any work, unless `force`.
        """
        prompts = _as_prompts(prompt)
        task = as_task(task, first_frame)
        if task is None and sizes is None and num_frames is not None \
                and num_frames > self.default_size[0]:
            task = Task()  # longer than the model's clips: window after window (conditioning)
        if task is not None and task.loop and task.loop_lengths is None and num_frames is None:
            # a loop with no length asked for: found where the clip comes back to its start
            task = replace(task, loop_lengths=default_loop_lengths(
                task.window or self.default_size[0]))
        num_frames = num_frames if task is None else output_frames(task, num_frames)
        if task is not None and task.continuation_prompt is None \
                and self.diffusion.continuation != "prompt":
            at = "start" if self.diffusion.continuation == "moving-start" else "end"
            task = replace(task, continuation_prompt=[_moving(p, at) for p in prompts])
        pixel_sizes = self.prepare_sizes(len(prompts), num_frames, height, width, sizes)
        shapes = [self.latent_shape(s) for s in pixel_sizes]
        steps = checks.integer("num_inference_steps", self.diffusion.num_inference_steps
                               if num_inference_steps is None else num_inference_steps,
                               low=1, high=checks.MAX_STEPS)
        scale = checks.real("guidance_scale", self.diffusion.guidance_scale
                            if guidance_scale is None else guidance_scale)
        # a scale given at call time sets every window; else frames in motion take their own
        motion = (self.diffusion.motion_guidance_scale
                  if guidance_scale is None and task is not None else None)
        guided = scale != 1 or motion not in (None, 1)
        negatives = self._negatives(negative_prompt, len(prompts)) if guided else []
        # an override is checked by DiffusionConfig, like the pipeline's own setting
        config = (self.diffusion if restarts is None else replace(
            self.diffusion, restarts=checks.integer("restarts", restarts, 0, checks.MAX_RESTARTS)))
        if not force:  # with given frames the DiT sees one window at a time
            held = pixel_sizes if task is None else [
                (min(f, window_frames(task, f, self.default_size[0])), h, w)
                for f, h, w in pixel_sizes]
            self.check_memory([self.latent_shape(s) for s in held], held, guided=guided)
        generator, seed = _generator(seed, generator)
        self._warn_unknown_words(prompts + negatives)
        seconds: dict[str, float] = {}
        with torch.inference_mode():
            with _timed(seconds, "text", self.device):
                text, mask = self.encode_text(prompts + negatives)
            sampling = Sampling(text, mask, generator, steps, scale, config, progress, callback,
                                motion)
            if task is not None:  # windows that hold given frames, each decoded as it is made
                with _timed(seconds, "denoise", self.device):
                    videos = generate(self, task, pixel_sizes, sampling)
            else:
                with _timed(seconds, "denoise", self.device):
                    packed = self.sample(shapes, sampling)
                with _timed(seconds, "decode", self.device):
                    videos = self.decode(packed)
        seconds["total"] = sum(seconds.values())
        same = len({v.shape for v in videos}) == 1
        return VideoOutput(np.stack(videos) if same else videos, self.fps, seed, seconds)

    def check_memory(self, shapes: list[Shape], pixel_sizes: list[Size], guided: bool) -> None:
        """Refuse, in one line with the estimate and the limit, a request the device cannot hold."""
        patch = self.dit.config.patch_size
        tokens = [math.prod(n // p for n, p in zip(shape[1:], patch)) for shape in shapes]
        needed = memory.generation_bytes(tokens, self.dit.config.dim, pixel_sizes, guided,
                                         memory.decoder_channels(self.vae))
        largest = "x".join(map(str, max(pixel_sizes, key=math.prod)))
        what = f"{len(shapes)} video{'s' if len(shapes) > 1 else ''} of up to {largest}"
        memory.check_fits(needed, self.device, what)

    def _warn_unknown_words(self, prompts: list[str]) -> None:
        """One warning line naming the prompt words the text encoder reads as unknown."""
        unknown_words = getattr(self.text_encoder, "unknown_words", None)
        words = unknown_words(prompts) if unknown_words is not None else []
        if words:
            warn(f"words the text encoder does not know, read as <unk>: {', '.join(words)}")

    def _negatives(self, negative_prompt: str | list[str] | None, count: int) -> list[str]:
        """One unconditional prompt per prompt (default: the pipeline's negative_prompt)."""
        if negative_prompt is None:
            negative_prompt = self.negative_prompt
        if isinstance(negative_prompt, str):
            return [negative_prompt] * count
        if not isinstance(negative_prompt, (list, tuple)) or not all(
                isinstance(p, str) for p in negative_prompt):
            raise UserError(f"negative_prompt must be a string or a list of strings, "
                            f"got {negative_prompt!r}")
        if len(negative_prompt) != count:
            raise UserError(f"negative_prompt has {len(negative_prompt)} entries "
                            f"for {count} prompts")
        return list(negative_prompt)

    def encode_text(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Prompts -> text tokens (B, L, Dtxt) and mask (B, L) on the pipeline's device."""
        text, mask = self.text_encoder(prompts)
        return text.to(self.device), mask.to(self.device)

    def prepare_latents(self, shapes: list[Shape], generator: torch.Generator, restarts: int = 0,
                        ) -> tuple[Packed, list[Tensor]]:
        """Packed noise and each restart round's noise (N, D).

        Each sample draws all its noise at once, in prompt order, from the CPU generator, so a
        sample's video does not depend on the prompts after it.
        """
        patch = self.dit.config.patch_size
        draws = [torch.randn((1 + restarts, *shape), generator=generator) for shape in shapes]
        packed = pack([d[0] for d in draws], patch).to(self.device)
        renoise = [pack([d[r] for d in draws], patch).tokens.to(self.device)
                   for r in range(1, 1 + restarts)]
        return packed, renoise

    def sample(self, shapes: list[Shape], s: Sampling, given: list[Given] | None = None,
               strength: float | None = None) -> Packed:
        """Noise -> clean packed latents of `shapes`. `given` latent frames are held clean at
        t = 0; `strength` starts from the given latents noised to it (SDEdit; `conditioning`)."""
        packed, renoise = self.prepare_latents(shapes, s.generator, s.config.restarts)
        shift = self._token_shift(packed)
        grid = (sampling_grid(s.config, s.steps, shift) if strength is None
                else edit_grid(s.config, s.steps, shift, strength))
        packed, keep = hold_given(packed, given, s.config, None if strength is None else grid[0])
        # restart noise as drawn ahead, then (DDPM, DDIM) fresh draws from the generator
        noise = queued_noise(renoise, generator_noise(packed.tokens, s.generator))
        tokens = self.denoise(packed, keep, s.text, s.mask, grid, s.scale, noise, s.progress,
                              s.callback)
        return packed.with_tokens(tokens)

    def denoise(self, packed: Packed, keep: Tensor | None, text: Tensor, mask: Tensor, grid: Tensor,
                scale: float, noise: Noise, progress: bool = True,
                callback: Callback | None = None) -> Tensor:
        """Walk `grid` with the configured denoiser and sampler from the packed noise; returns clean
        tokens (N, D). `noise` is the sampler's noise source (restart rounds, DDPM steps)."""
        from tqdm.auto import tqdm

        denoiser = build_denoiser(self.diffusion, self._model_fn(packed, text, mask, scale, keep))
        sampler = sampler_from_config(self.diffusion)
        bar = tqdm(total=model_calls(grid), desc="denoising", unit="step", disable=not progress,
                   leave=False, file=sys.stderr)

        def report(info: StepInfo) -> None:
            bar.update(info.step - bar.n)
            if callback is not None:
                callback(info)

        try:
            tokens = sampler(denoiser, packed.tokens, grid, noise, report, keep)
        finally:
            bar.close()
        if not torch.isfinite(tokens).all():  # would decode to a black or garbage video
            raise UserError(f"sampling produced NaN or infinite values (guidance_scale={scale}: "
                            f"a smaller scale may help; otherwise the model's weights are broken)")
        return tokens

    def _token_shift(self, packed: Packed) -> float | Tensor:
        """The flow's SD3 time shift of each sample's token count: one number, or one per token
        when sizes differ (each sample then follows its own time grid)."""
        shifts = [resolution_shift(n, self.diffusion.shift_base_tokens) for n in packed.lengths]
        return shifts[0] if len(set(shifts)) == 1 else torch.tensor(shifts)[packed.sample_ids.cpu()]

    def _model_fn(self, packed: Packed, text: Tensor, mask: Tensor, scale: float,
                  keep: Tensor | None = None) -> ModelFn:
        """The DiT as model_fn(x, t); with guidance, conditional and unconditional in one call
        (the unconditional without the held frames `keep` too, with `guide_given_frames`)."""
        b = len(packed.shapes)  # text rows [:b] are the prompts, [b:] (with guidance) the negatives
        cond = lambda x, t: self.dit(packed.with_tokens(x), t, text[:b], mask[:b])  # noqa: E731
        if scale == 1:
            return cond
        double = concat([packed, packed])  # samples B.. 2B-1 read text rows B.. 2B-1: the negatives
        both = lambda x, t: self.dit(double.with_tokens(x), t, text, mask)  # noqa: E731
        if self.diffusion.guide_given_frames and keep is not None and bool(keep.any()):
            both = _without_frames(both, packed, keep.to(packed.tokens.device))
        return classifier_free_guidance(both, scale, self.diffusion.guidance_interval,
                                        cond_fn=cond)

    def decode(self, packed: Packed) -> list[np.ndarray]:
        """Clean packed tokens -> a uint8 (T, H, W, 3) video per sample (equal sizes batched)."""
        latents = unpack(packed.tokens, packed)  # B x (C, t, h, w)
        videos: list[np.ndarray | None] = [None] * len(latents)
        for shape in dict.fromkeys(packed.shapes):
            index = [i for i, s in enumerate(packed.shapes) if s == shape]
            batch = torch.stack([latents[i] for i in index])  # (b, C, t, h, w)
            pixels = self.vae.decode_latent(batch)  # (b, 3, T, H, W)
            for i, video in zip(index, to_uint8(pixels)):
                videos[i] = video
        return videos  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _without_frames(both: ModelFn, packed: Packed, keep: Tensor) -> ModelFn:
    """`both` (conditional rows, then unconditional) with the unconditional rows' held tokens
    noised to their sample's time, as if they were to be made (`guide_given_frames`)."""
    ids = packed.sample_ids
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(packed.tokens.shape, generator=g).to(packed.tokens)

    def fn(x2: Tensor, t2: Tensor) -> Tensor:
        x, t = x2.chunk(2)[0], t2.chunk(2)[0]
        now = torch.zeros(len(packed.shapes), dtype=t.dtype, device=t.device).scatter_reduce(
            0, ids[~keep], t[~keep], "amax")[ids]  # each token's sample time
        held_t = torch.where(keep, now, t)
        held_x = torch.where(keep[:, None], flow_q_sample(x, now, noise), x)
        return both(torch.cat([x, held_x]), torch.cat([t, held_t]))

    return fn


def preview_gif(pipe: TextToVideoPipeline, prompts: list[str], path: str | Path,
                seed: int = 0) -> Path:
    """Training preview: `prompts` side by side in one GIF at the pipeline's default size and
    frame rate, from a fixed seed."""
    frames = pipe(prompts, seed=seed, progress=False).frames  # (B, T, H, W, 3)
    strip = np.concatenate(list(frames), axis=2)  # (T, H, B * W, 3)
    return write_video(path, strip, pipe.fps)


def to_uint8(pixels: Tensor) -> list[np.ndarray]:
    """Pixels (B, 3, T, H, W) in [-1, 1] (clamped) -> B uint8 arrays (T, H, W, 3)."""
    frames = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(frames.permute(0, 2, 3, 4, 1).cpu().numpy())


def _moving(prompt: str, at: str = "end"):
    """`diffusion.continuation = "moving"` (or "moving-start": `at`): the continuation reader of
    a shapes-world prompt (`critic.moving_now`), or the prompt itself where the critic's grammar
    does not take it."""
    from .critic import moving_now
    try:
        return moving_now(prompt, at)
    except UserError:
        return prompt


def _as_prompts(prompt: str | list[str]) -> list[str]:
    """A prompt or a list of prompts -> a non-empty list of non-empty strings."""
    if not isinstance(prompt, (str, list, tuple)):
        raise UserError(f"prompt must be a string or a list of strings, got {prompt!r}")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not all(isinstance(p, str) for p in prompts):
        raise UserError(f"prompt must be a string or a list of strings, got {prompt!r}")
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad or not prompts:
        raise UserError(f"empty prompt {bad[0] if bad else []!r}; describe the video to generate")
    return prompts


def _generator(seed: int | None, generator: torch.Generator | None
               ) -> tuple[torch.Generator, int | None]:
    """The CPU generator noise comes from, and the seed it started from (None if passed in)."""
    if generator is not None:
        if seed is not None:
            raise UserError("pass seed or generator, not both")
        if generator.device.type != "cpu":
            raise UserError("generator must be a CPU torch.Generator (noise is drawn on the CPU)")
        return generator, None
    # a fresh seed is drawn in the range a user can pass back (torch's own may be >= 2**63)
    seed = secrets.randbelow(checks.SEED_MAX + 1) if seed is None else checks.seed("seed", seed)
    return torch.Generator().manual_seed(seed), seed


@contextmanager
def _timed(seconds: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    """Record the wall-clock seconds of a phase in `seconds[name]` (synchronising CUDA first)."""
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds[name] = time.perf_counter() - start
