"""Typed configs, named presets, TOML recipes and `--section.key=value` overrides.

Every component is described by a dataclass whose fields carry a comment saying what they mean.
A training run is a `Recipe`: one dataclass per section (`vae`, `dit`, `text`, `diffusion`,
`data`, `train`); `[train]` lists the stages to train (`stages = ["vae", "dit"]`) and holds one
subsection per stage (`[train.vae]`, `[train.dit]`): the loop's settings plus that stage's own.
Recipes load from TOML files (see `configs/`) and are refined from the command
line with `--section.key=value`; values are parsed and type-checked against the field's type, and
an unknown section or key is an error naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from .errors import UserError


class ConfigError(UserError):
    """A config, preset or override a user gave is invalid (message is one line)."""


# The ranges a numeric setting can be held to: the words a message uses, and the test. Every range
# also requires a finite number, so NaN and infinity never pass.
RANGES: dict[str, Callable[[float], bool]] = {
    "finite": lambda v: True,
    ">= -1": lambda v: v >= -1,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "> 0": lambda v: v > 0,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in (0, 1)": lambda v: 0 < v < 1,
}


def check_ranges(config: Any, section: str, rules: dict[str, str]) -> None:
    """Raise a ConfigError naming the first field of `config` (or item of a list field) that is
    outside its range; `rules` maps field names to keys of `RANGES`."""
    for name, rule in rules.items():
        value = getattr(config, name)
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(math.isfinite(v) and RANGES[rule](v) for v in items):
            raise ConfigError(f"{section}.{name} must be {rule}, got {value!r}")


def check_sizes(sizes: Any, label: str) -> None:
    """Clip sizes must be [frames, height, width] triples of positive integers."""
    for size in sizes:
        if len(size) != 3 or min(size) < 1:
            raise ConfigError(f"{label} must be [frames, height, width] triples of positive "
                              f"integers, got {size!r}")


# --------------------------------------------------------------------------------------------
# Component configs
# --------------------------------------------------------------------------------------------


@dataclass
class DiTConfig:
    """Diffusion Transformer over spacetime patches (Peebles and Xie, arXiv 2212.09748)."""

    in_channels: int = 4  # latent channels C
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw) in latent units
    dim: int = 384  # transformer width D
    depth: int = 12  # number of DiT blocks
    num_heads: int = 6  # attention heads; dim must divide by it
    mlp_ratio: float = 4.0  # hidden width of the MLP, as a multiple of dim
    text_dim: int = 0  # width of text tokens; 0 disables text cross-attention
    num_classes: int = 0  # > 0: class-conditional (the paper's ImageNet model), with a null class
    learn_sigma: bool = False  # also predict the DDPM variance interpolation (doubles out channels)
    # "rope": 3D RoPE from (t, h, w) ids; "sincos": fixed 2D sin-cos added (the paper's image
    # models); "rope+abs": RoPE plus an added 3D sin-cos of (t, h, w), so blocks also see where
    # and when a token is, not only how far apart two tokens are
    pos_embed: str = "rope"
    qk_norm: bool = True  # RMSNorm on queries and keys (stabilises large models)
    pooled_text: bool = True  # add the mean-pooled text embedding to the adaLN conditioning
    rope_theta: float = 10000.0  # RoPE base frequency

    def __post_init__(self) -> None:
        self.patch_size = tuple(self.patch_size)  # type: ignore[assignment]
        check_ranges(self, "dit", {
            "in_channels": ">= 1", "patch_size": ">= 1", "dim": ">= 1", "depth": ">= 1",
            "num_heads": ">= 1", "mlp_ratio": "> 0", "text_dim": ">= 0", "num_classes": ">= 0",
            "rope_theta": "> 0"})
        if self.dim % self.num_heads:
            raise ConfigError(f"dit.dim={self.dim} is not divisible by dit.num_heads={self.num_heads}")
        if self.pos_embed not in ("rope", "sincos", "rope+abs"):
            raise ConfigError(f"dit.pos_embed must be 'rope', 'sincos' or 'rope+abs', "
                              f"got {self.pos_embed!r}")

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


@dataclass
class VAEConfig:
    """Causal 3D convolutional VAE (video compression network)."""

    kind: str = "causal3d"  # "causal3d" (ours) or a diffusers adapter name
    in_channels: int = 3  # pixel channels
    latent_channels: int = 8  # C of the latent (4 to 16)
    base_channels: int = 64  # width of the first conv stage
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # width multiplier per stage
    num_res_blocks: int = 1  # residual blocks per stage
    temporal_downsample: int = 4  # frames -> latent frames factor (1 + 4k -> 1 + k)
    spatial_downsample: int = 8  # pixels -> latent pixels factor
    patch_size: int = 1  # fold p x p pixels into channels first (LTX-Video does this); cheap on CPU
    # fold groups of this many frames into channels too (causal: the first frame is repeated to
    # fill its group), so each latent frame sees its frames' pixels directly; divides
    # temporal_downsample, whose remaining factor is done by strided causal convs
    temporal_patch_size: int = 1
    # > 0: a per-pixel nonlinear stem and head of this many channels around the folding, so a
    # folded patch is no longer a linear map of a few features; the (wide) convs next to the
    # folding then use 1x3x3 kernels instead of 3x3x3, to keep their cost down
    pixel_channels: int = 0
    scaling_mean: float = 0.0  # latent normalisation: z_model = (z - mean) / std
    scaling_std: float = 1.0
    pretrained_path: str = ""  # for adapters: local directory of a diffusers model

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        check_ranges(self, "vae", {"scaling_mean": "finite", "scaling_std": "> 0"})
        if self.kind != "causal3d":  # adapters describe someone else's network; nothing to check
            return
        if self.temporal_downsample not in (1, 2, 4):
            raise ConfigError(f"vae.temporal_downsample must be 1, 2 or 4, "
                              f"got {self.temporal_downsample}")
        if self.spatial_downsample not in (1, 2, 4, 8, 16):
            raise ConfigError(f"vae.spatial_downsample must be 1, 2, 4, 8 or 16, "
                              f"got {self.spatial_downsample}")
        if self.patch_size not in (1, 2, 4) or self.spatial_downsample % self.patch_size:
            raise ConfigError(f"vae.patch_size must be 1, 2 or 4 and divide vae.spatial_downsample="
                              f"{self.spatial_downsample}, got {self.patch_size}")
        if (self.temporal_patch_size not in (1, 2, 4)
                or self.temporal_downsample % self.temporal_patch_size):
            raise ConfigError(f"vae.temporal_patch_size must be 1, 2 or 4 and divide "
                              f"vae.temporal_downsample={self.temporal_downsample}, "
                              f"got {self.temporal_patch_size}")
        conv_spatial = self.spatial_downsample // self.patch_size
        conv_temporal = self.temporal_downsample // self.temporal_patch_size
        steps = max(conv_spatial, conv_temporal).bit_length() - 1
        if len(self.channel_mult) < steps + 1:  # one stage per resolution
            raise ConfigError(f"vae.channel_mult needs at least {steps + 1} stages for "
                              f"{self.temporal_downsample}x{self.spatial_downsample} downsampling "
                              f"with patch_size={self.patch_size}, got {len(self.channel_mult)}")
        check_ranges(self, "vae", {
            "in_channels": ">= 1", "latent_channels": ">= 1", "base_channels": ">= 1",
            "channel_mult": ">= 1", "num_res_blocks": ">= 1", "pixel_channels": ">= 0"})


@dataclass
class TextConfig:
    """Text encoder behind one interface: prompts -> (tokens (B, L, D), mask (B, L))."""

    kind: str = "toy"  # "toy" (small, optionally trainable), "minilm", "t5", "clip"
    dim: int = 128  # output width of the toy encoder
    depth: int = 2  # toy encoder transformer layers
    num_heads: int = 4  # toy encoder attention heads
    max_length: int = 32  # tokens per prompt (longer prompts are truncated)
    vocab: list[str] = field(default_factory=list)  # toy encoder word vocabulary ([] = built-in)
    path: str = ""  # local directory of pretrained weights (t5, clip)
    # Whether the trainer updates the toy encoder (pretrained ones are always frozen). Off by
    # default: trained jointly with the DiT on the shapes world, the toy encoder mapped "left" and
    # "right" to nearly the same vector; at its seeded random init every word stays distinct.
    trainable: bool = False

    def __post_init__(self) -> None:
        check_ranges(self, "text", {"dim": ">= 1", "depth": ">= 1", "num_heads": ">= 1",
                                    "max_length": ">= 1"})


# Which latent frames a training sample may get given (`train.dit.given_kinds`): the first, the last,
# a prefix, a suffix, or a prefix and a suffix ("ends")
GIVEN_KINDS = ("first", "last", "prefix", "suffix", "ends")
# objective -> the samplers that fit it (names of `diffusion.SAMPLERS`)
SAMPLERS_OF = {"flow": ("euler",), "ddpm": ("ddim", "ddpm")}


@dataclass
class DiffusionConfig:
    """Objective and sampler; time convention: t in [0, 1], t = 0 clean, t = 1 noise."""

    objective: str = "flow"  # "flow" (rectified flow, v = eps - x0) or "ddpm" (epsilon)
    num_train_timesteps: int = 1000  # DDPM discrete steps
    beta_start: float = 1e-4  # DDPM linear betas
    beta_end: float = 0.02
    logit_mean: float = 0.0  # flow: logit-normal time sampling
    logit_std: float = 1.0
    shift_base_tokens: int = 256  # flow: time shift sqrt(tokens / base); 0 disables the shift
    vlb_weight: float = 0.001  # DDPM learned variance: lambda of L_hybrid = L_simple + lambda * L_vlb
    sampler: str = "euler"  # "euler" (flow), "ddim", "ddpm": a key of `diffusion.SAMPLERS`
    num_inference_steps: int = 25
    # DDPM / DDIM respacing: "linspace", "leading", "trailing" or "iddpm" (DiT's sampler)
    timestep_spacing: str = "linspace"
    eta: float = 0.0  # DDIM noise scale (0 deterministic, 1 = DDPM-like)
    guidance_scale: float = 4.0  # classifier-free guidance; 1 disables it
    # guide only at noise levels t in [lo, hi] (t = 0 clean, 1 noise, as every sampler passes it;
    # DDPM step i is t = i / num_train_timesteps), elsewhere the conditional prediction alone:
    # guidance in a limited interval (Kynkaenniemi et al., arXiv 2404.07724)
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    # the scale of windows holding given frames in motion (more than one pixel frame: extend,
    # connect, a long clip's later windows, a loop's remade end), where the frames, not the
    # text, say how the object moves; None: guidance_scale. An explicit scale at call time
    # (`guidance_scale=`, --cfg) sets every window.
    motion_guidance_scale: float | None = None
    # with guidance and given frames, the unconditional branch goes without them too: held
    # tokens noised (a fixed draw) to their sample's time, so guidance pulls toward the frames
    # as well as the text. Off: both branches hold the frames and guidance is the text's alone
    guide_given_frames: bool = False
    # what windows holding the output's own frames (a long clip's later windows, a loop's remade
    # end) are prompted with when the caller gives no continuation prompt: "prompt", the prompt;
    # "moving", for shapes-world captions, which state the direction at a clip's start: the
    # prompt with the direction each object moves in the frames the window holds
    # (`critic.moving_now`; prompts outside its grammar keep the prompt), at their end;
    # "moving-start", at their start (the step a fresh clip's caption states)
    continuation: str = "prompt"
    # latent frames each later window of a long clip (or a loop's remade end) holds of the one
    # before, when the caller gives none (`Task.overlap`, --overlap): the last 1 + 4 x this frames
    window_overlap: int = 1
    # Euler only: once the ODE reaches t = 0, `restarts` rounds of jumping back to t = restart_time
    # with fresh noise and `restart_steps` Euler steps down again; part of the time grid
    # (`diffusion.restart_grid`)
    restarts: int = 0
    restart_time: float = 0.3
    restart_steps: int = 6
    text_dropout: float = 0.1  # probability of dropping the prompt in training (for CFG)

    def __post_init__(self) -> None:
        self.guidance_interval = tuple(float(v) for v in self.guidance_interval)  # type: ignore[assignment]
        check_ranges(self, "diffusion", {
            "num_train_timesteps": ">= 1", "beta_start": "in (0, 1)", "beta_end": "in (0, 1)",
            "logit_mean": "finite", "logit_std": "> 0", "shift_base_tokens": ">= 0",
            "vlb_weight": ">= 0", "eta": "in [0, 1]", "guidance_scale": "finite",
            "restart_time": "finite", "text_dropout": "in [0, 1]", "window_overlap": ">= 1"})
        m = self.motion_guidance_scale
        if m is not None and (not isinstance(m, (int, float)) or not math.isfinite(m)):
            raise ConfigError(f"diffusion.motion_guidance_scale must be finite or left out, "
                              f"got {self.motion_guidance_scale}")
        if self.guide_given_frames and self.objective != "flow":
            raise ConfigError("diffusion.guide_given_frames needs objective = 'flow'")
        if self.continuation not in ("prompt", "moving", "moving-start"):
            raise ConfigError(f"diffusion.continuation must be 'prompt', 'moving' or "
                              f"'moving-start', got {self.continuation!r}")
        lo, hi = self.guidance_interval if len(self.guidance_interval) == 2 else (1.0, 0.0)
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"diffusion.guidance_interval must be [lo, hi] with 0 <= lo < hi <= 1, "
                              f"got {list(self.guidance_interval)}")
        if self.restarts < 0 or self.restart_steps < 1 or not 0 < self.restart_time < 1:
            raise ConfigError(f"diffusion restarts need restarts >= 0, restart_steps >= 1 and "
                              f"0 < restart_time < 1, got {self.restarts}, {self.restart_steps}, "
                              f"{self.restart_time}")
        if self.timestep_spacing not in ("linspace", "leading", "trailing", "iddpm"):
            raise ConfigError(f"diffusion.timestep_spacing must be 'linspace', 'leading', "
                              f"'trailing' or 'iddpm', got {self.timestep_spacing!r}")
        if self.num_inference_steps < 1:
            raise ConfigError(f"diffusion.num_inference_steps must be at least 1, "
                              f"got {self.num_inference_steps}")
        fitting = SAMPLERS_OF.get(self.objective)
        if fitting is None:
            raise ConfigError(f"diffusion.objective must be one of {', '.join(SAMPLERS_OF)}, "
                              f"got {self.objective!r}")
        if self.sampler not in fitting:
            raise ConfigError(f"diffusion.sampler {self.sampler!r} does not fit objective "
                              f"{self.objective!r}; use one of {', '.join(fitting)}")
        if self.restarts and self.sampler != "euler":
            raise ConfigError(f"diffusion.restarts works with the euler sampler, not "
                              f"{self.sampler!r}")


@dataclass
class DataConfig:
    """What the trainer reads (every stage reads the same dataset, at its own sizes)."""

    dataset: str = "shapes"  # "shapes", "mnist", "folder", "cache" (a `zoetrope encode` cache)
    path: str = ""  # folder / mnist / latent-cache path
    sizes: list[list[int]] = field(default_factory=lambda: [[17, 64, 64]])  # [frames, h, w] choices
    fps: float = 8.0  # target fps for real clips; 0 reads every clip at its own rate
    two_objects: bool = False  # shapes world: sometimes two objects
    collide: bool = False  # shapes world: two objects bounce off each other (needs two_objects)
    occluder: bool = False  # shapes world: half the clips have a gray bar objects pass behind
    # Shapes-world generalization splits: [lo, hi] speeds as shares of the extent per frame
    # ([] = the world's 1/32 .. 1/16), [lo, hi] object sizes as shares of the shorter side
    # ([] = exactly 1/4), and "COLOR SHAPE DIRECTION" combinations never shown ("*" = any)
    speed_range: list[float] = field(default_factory=list)
    object_scale: list[float] = field(default_factory=list)
    holdout: list[str] = field(default_factory=list)
    # Shapes world: the share of clips that start 1..64 frames into their motion, as a long
    # clip's later windows do (not with collide or occluder), captioned as continuing_caption says
    continuing: float = 0.0
    # "empty"; "undirected": `a red circle`, the direction left out; or "moving": the direction
    # the object moves in at the window's start (data.shapes.moving_caption)
    continuing_caption: str = "empty"
    # DataLoader worker processes that fetch samples ahead of the step (real clips decode in
    # ~0.5 s each); 0 fetches in the training process; -1 picks for the hardware
    # (`hardware.default_num_workers`). Never changes what is trained, only when it is fetched.
    num_workers: int = -1

    def __post_init__(self) -> None:
        check_ranges(self, "data", {"fps": ">= 0", "num_workers": ">= -1",
                                    "continuing": "in [0, 1]"})
        if self.continuing and (self.collide or self.occluder):
            raise ConfigError("data.continuing must be 0 with data.collide or data.occluder")
        if self.continuing_caption not in ("empty", "undirected", "moving"):
            raise ConfigError(f"data.continuing_caption must be \"empty\", \"undirected\" or "
                              f"\"moving\", got {self.continuing_caption!r}")
        check_sizes(self.sizes, "data.sizes")
        for name, top in (("speed_range", 0.5), ("object_scale", 1.0)):
            r = getattr(self, name)
            if r and (len(r) != 2 or not 0 < r[0] <= r[1] <= top):
                raise ConfigError(f"data.{name} must be [] or [lo, hi] with 0 < lo <= hi <= {top}"
                                  f", got {r!r}")
        if self.collide and not self.two_objects:
            raise ConfigError("data.collide needs data.two_objects = true")
        for pattern in self.holdout:
            from .data.shapes import parse_holdout  # (imports torch: only when needed)
            try:
                parse_holdout(pattern)
            except ValueError as e:
                raise ConfigError(f"data.holdout: {e}") from None


@dataclass
class LoopConfig:
    """The training loop's settings: the same fields in every stage's section."""

    section: ClassVar[str] = "train"  # where the fields live in a recipe, for error messages

    steps: int = 1000  # optimizer steps of this stage
    lr: float = 3e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    warmup_steps: int = 100  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    batch_size: int = 8  # samples per optimizer step, over all processes
    token_budget: int = 0  # > 0: pack samples up to this many tokens per micro-batch (NaViT)
    grad_accum: int = 1  # micro-batches per step when token_budget = 0
    ema_decay: float = 0.999  # EMA of the weights (what is exported); short runs ramp up to it
    # "auto": bf16 autocast where the hardware computes bf16 natively (CUDA with bf16, CPUs with
    # AVX512-BF16 or AMX), fp32 elsewhere (emulated bf16 made a VAE step 18x slower); or "bf16",
    # "fp32" (`hardware.choose_precision`)
    precision: str = "auto"
    threads: int = 0  # torch CPU threads; 0: OMP_NUM_THREADS if set, else the physical cores
    compile: bool = False  # torch.compile the model
    activation_checkpointing: bool = False  # recompute each DiT block in backward (less memory)
    distributed: str = "fsdp"  # under torchrun: "fsdp" (FSDP2 fully_shard) or "ddp"
    seed: int = 0  # initial weights, the dataset's samples and each sample's noise
    checkpoint_every: int = 200  # steps between checkpoints (and at the last step)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    log_every: int = 10  # steps between lines of metrics.jsonl
    # [frames, h, w] clip sizes of this stage ([] = data.sizes)
    sizes: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"{self.section}.precision must be 'auto', 'bf16' or 'fp32', "
                              f"got {self.precision!r}")
        if self.distributed not in ("fsdp", "ddp"):
            raise ConfigError(f"{self.section}.distributed must be 'fsdp' or 'ddp', "
                              f"got {self.distributed!r}")
        check_ranges(self, self.section, {
            "steps": ">= 1", "lr": "> 0", "weight_decay": ">= 0", "warmup_steps": ">= 0",
            "min_lr_ratio": "in [0, 1]", "grad_clip": ">= 0", "batch_size": ">= 1",
            "token_budget": ">= 0", "grad_accum": ">= 1", "ema_decay": "in [0, 1)",
            "threads": ">= 0", "seed": ">= 0", "checkpoint_every": ">= 1",
            "keep_checkpoints": ">= 1", "log_every": ">= 1"})
        check_sizes(self.sizes, f"{self.section}.sizes")


@dataclass
class VAEStageConfig(LoopConfig):
    """The VAE stage: the loop's settings and the VAE loss."""

    section: ClassVar[str] = "train.vae"

    kl_weight: float = 1e-6  # weight of the KL term of the VAE loss
    # A trained VAE directory (or a pipeline directory, its vae/) whose weights start this stage:
    # fine-tuning. Its config must equal the recipe's [vae] (the latent scaling aside). A resumed
    # run reads its checkpoint instead.
    init_from: str = ""
    # False: train the decoder alone (needs init_from). The encoder, and so the latents and their
    # scaling, stay exactly those of init_from, and a DiT trained on them works with the new
    # decoder unchanged.
    train_encoder: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, self.section, {"kl_weight": ">= 0"})
        if not self.train_encoder and not self.init_from:
            raise ConfigError(f"{self.section}.train_encoder = false needs "
                              f"{self.section}.init_from (a trained VAE whose encoder to keep)")


@dataclass
class DiTStageConfig(LoopConfig):
    """The DiT stage: the loop's settings and what only DiT training has."""

    section: ClassVar[str] = "train.dit"

    # Trained VAE directory whose latents the DiT learns; must be empty when a "vae" stage comes
    # first (that stage's VAE is used)
    vae_path: str = ""
    # Pipeline directory (e.g. a run's final/ or a bundled model) whose DiT and text encoder start
    # this stage: fine-tuning. Its DiT config must equal the recipe's. A resumed run reads its
    # checkpoint instead.
    init_from: str = ""
    # > 0 encodes dataset samples 0..N-1 once into RUN_DIR/latents and trains on them, sample k
    # being latent k mod N (epochs); 0 encodes every batch with the VAE on the fly. Not used when
    # data.dataset = "cache" (already latents).
    latent_cache: int = 0
    first_frame_cond: float = 0.0  # probability a clip's first latent frame is given clean (i2v)
    # Share of samples trained with given latent frames (fed clean at t = 0, left out of the loss),
    # so the model learns to animate, extend, loop and connect; each such sample draws one of
    # `given_kinds` uniformly (`train.masks.draw_given_frames`). first_frame_cond = p is the same
    # as given_share = p with given_kinds = ["first"], drawn as before; set one of the two.
    given_share: float = 0.0
    given_kinds: list[str] = field(default_factory=lambda: list(GIVEN_KINDS))
    # Continuing clips (data.continuing: they start mid-motion, as a long clip's later windows
    # do) always train with a prefix of their latent frames given, never as text-to-video alone
    # (one-frame samples have none to give), so text-to-video keeps the world's fresh starts
    continuing_given: bool = False
    attention: str = "auto"  # the DiT's attention backend (`DiT(config, attention=...)`)
    preview_every: int = 0  # steps between preview GIFs; 0 disables them
    preview_prompts: list[str] = field(default_factory=list)  # prompts of the preview GIFs

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, self.section, {"latent_cache": ">= 0", "first_frame_cond": "in [0, 1]",
                                          "given_share": "in [0, 1]", "preview_every": ">= 0"})
        bad = [k for k in self.given_kinds if k not in GIVEN_KINDS]
        if bad or not self.given_kinds:
            raise ConfigError(f"{self.section}.given_kinds must name some of "
                              f"{', '.join(GIVEN_KINDS)}; got {self.given_kinds!r}")
        if self.first_frame_cond and self.given_share:
            raise ConfigError(f"set {self.section}.first_frame_cond or {self.section}.given_share, "
                              f"not both (first_frame_cond is given_kinds = [\"first\"])")


@dataclass
class DistillStageConfig(LoopConfig):
    """The distill stage: a few-step student of a teacher pipeline (`train.distill_task`)."""

    section: ClassVar[str] = "train.distill"

    teacher: str = ""  # the teacher's pipeline directory (flow objective)
    pairs: int = 4096  # teacher samples (noise, clean latent) made once into RUN_DIR/pairs
    pair_batch: int = 32  # pairs the teacher makes per call and per file
    teacher_steps: int = 0  # the teacher's Euler steps for the pairs; 0: its own setting
    student_steps: int = 4  # the student's sampling steps (its pipeline.json default)
    # "reflow": the straight line from each pair's noise to its clean latent, at any time;
    # "piecewise": one Euler step of the student from the teacher's state at each of its grid
    # times to the teacher's state at the next (`train.distill_task`)
    method: str = "reflow"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, self.section, {"pairs": ">= 1", "pair_batch": ">= 1",
                                          "teacher_steps": ">= 0", "student_steps": ">= 1"})
        if self.method not in ("reflow", "piecewise"):
            raise ConfigError(f"{self.section}.method must be 'reflow' or 'piecewise', "
                              f"got {self.method!r}")


STAGES = ("vae", "dit", "distill")  # what a recipe can train, in the order stages run


@dataclass
class TrainConfig:
    """Which stages a run trains, in order, and each stage's own section."""

    # "vae", "dit" or both in that order; with both, the DiT stage trains on the latents of the
    # VAE the first stage exported
    stages: list[str] = field(default_factory=lambda: ["dit"])
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)  # [train.vae]
    dit: DiTStageConfig = field(default_factory=DiTStageConfig)  # [train.dit]
    distill: DistillStageConfig = field(default_factory=DistillStageConfig)  # [train.distill]

    def __post_init__(self) -> None:
        if not self.stages or sorted(self.stages, key=_stage_order) != self.stages \
                or len(set(self.stages)) != len(self.stages) \
                or ("distill" in self.stages and len(self.stages) > 1):
            raise ConfigError(f"train.stages must be [\"vae\"], [\"dit\"], [\"vae\", \"dit\"] or "
                              f"[\"distill\"], got {self.stages!r}")


def _stage_order(name: str) -> int:
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r} in train.stages; valid: {', '.join(STAGES)}")
    return STAGES.index(name)


@dataclass
class Recipe:
    """A whole training run: one section per component, and [train] for the stages."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

# The paper's twelve class-conditional ImageNet models: (depth, dim, heads) per size, patch 2/4/8.
_DIT_PAPER_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def paper_size_of(depth: int, dim: int) -> tuple[int, int, int]:
    """(depth, dim, heads) of the paper's model size with this depth and width."""
    for size in _DIT_PAPER_SIZES.values():
        if size[:2] == (depth, dim):
            return size
    known = ", ".join(f"DiT-{name}: {d} x {w}" for name, (d, w, _) in _DIT_PAPER_SIZES.items())
    raise ConfigError(f"no DiT paper size has depth {depth} and width {dim} ({known}); "
                      f"give the number of attention heads")


def _paper_preset(size: str, patch: int) -> DiTConfig:
    depth, dim, heads = _DIT_PAPER_SIZES[size]
    return DiTConfig(
        in_channels=4, patch_size=(1, patch, patch), dim=dim, depth=depth, num_heads=heads,
        num_classes=1000, learn_sigma=True, pos_embed="sincos", qk_norm=False, text_dim=0,
        pooled_text=False,
    )


DIT_PRESETS: dict[str, DiTConfig] = {
    f"DiT-{size}/{patch}": _paper_preset(size, patch) for size in _DIT_PAPER_SIZES for patch in (2, 4, 8)
}
DIT_PRESETS.update({
    # Text-to-video presets: 3D RoPE, QK-norm, text cross-attention.
    "tiny": DiTConfig(in_channels=4, dim=64, depth=2, num_heads=4, text_dim=32),
    "shapes-demo": DiTConfig(in_channels=16, dim=256, depth=6, num_heads=4, text_dim=128),
    "small": DiTConfig(in_channels=16, dim=384, depth=12, num_heads=6, text_dim=768),
    "base": DiTConfig(in_channels=16, dim=768, depth=12, num_heads=12, text_dim=768),
    "large": DiTConfig(in_channels=16, dim=1024, depth=24, num_heads=16, text_dim=4096),
    "sora-3B": DiTConfig(in_channels=16, dim=2304, depth=28, num_heads=18, text_dim=4096),
})

# Input grid (latent C, t, h, w) each preset's FLOPs are quoted at in `zoetrope info`.
PRESET_INPUTS: dict[str, tuple[int, int, int, int]] = {
    name: (4, 1, 32, 32) for name in DIT_PRESETS if name.startswith("DiT-")  # 256x256 images
}
PRESET_INPUTS.update({
    "tiny": (4, 3, 8, 8),
    "shapes-demo": (16, 5, 8, 8),  # 17 frames of 64x64 through a 4x8x8 VAE
    "small": (16, 5, 32, 32),
    "base": (16, 5, 32, 32),
    "large": (16, 9, 60, 90),
    "sora-3B": (16, 9, 60, 90),  # 33 frames of 480x720 through a 4x8x8 VAE
})


def dit_preset(name: str) -> DiTConfig:
    """Return a fresh copy of a named DiT preset; unknown names raise a one-line ConfigError."""
    if name not in DIT_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(DIT_PRESETS)}")
    return dataclasses.replace(DIT_PRESETS[name])


# --------------------------------------------------------------------------------------------
# Serialisation, TOML recipes and overrides
# --------------------------------------------------------------------------------------------


def differing_fields(ours: Any, theirs: Any, ignore: tuple[str, ...] = ()) -> list[str]:
    """Names of the fields of dataclass config `ours` whose values `theirs` does not share
    (those in `ignore` aside): what keeps one component's weights from loading into another."""
    a, b = dataclasses.asdict(ours), dataclasses.asdict(theirs)
    return [k for k in a if k not in ignore and a[k] != b.get(k)]


def to_dict(config: Any) -> dict:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a dict, checking keys and value types (nested for Recipe)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:  # fields only: a ClassVar is not a setting
            place = f"[{where}] " if where else ""
            raise ConfigError(f"unknown key {place}{key!r}; valid keys: {', '.join(names)}")
        kind = hints[key]
        label = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{label} must be a table of settings, got {value!r}")
            kwargs[key] = from_dict(kind, value, label)
        else:
            kwargs[key] = _check_type(value, kind, label)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {where or cls.__name__} config: {e}") from None


def _check_type(value: Any, kind: Any, label: str) -> Any:
    """Return `value` coerced to `kind` (int -> float allowed), or raise a ConfigError."""
    origin = typing.get_origin(kind)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool):
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{label} must be {kind.__name__}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label} must be a list, got {value!r}")
        args = typing.get_args(kind)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{label} must have {len(args)} items, got {value!r}")
            return tuple(_check_type(v, a, label) for v, a in zip(value, args))
        item = args[0] if args else Any
        items = [_check_type(v, item, label) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(kind):
            try:
                return _check_type(value, arg, label)
            except ConfigError:
                pass
        raise ConfigError(f"{label} has the wrong type: {value!r}")
    return value


def parse_value(text: str) -> Any:
    """Parse a command-line value as a TOML value, falling back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Apply `--section.key=value` (or `section.key=value`) strings to a dataclass config."""
    data = to_dict(config)
    for item in overrides:
        body = item[2:] if item.startswith("--") else item
        if "=" not in body:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        path, text = body.split("=", 1)
        if isinstance(config, Recipe) and (hint := _old_layout_hint(path)):
            raise ConfigError(hint)
        node, cls, parts = data, type(config), path.split(".")
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                where = ".".join(parts[:depth]) or "recipe"
                raise ConfigError(f"unknown key {path!r}: {where} has {', '.join(names)}")
            kind = typing.get_type_hints(cls)[part]
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(kind):
                    raise ConfigError(f"{path!r} is a section; set one of its keys")
                node[part] = parse_value(text)
            else:
                if not dataclasses.is_dataclass(kind):
                    raise ConfigError(f"{'.'.join(parts[:depth + 1])!r} is not a section")
                node, cls = node[part], kind
    return from_dict(type(config), data)


def read_toml(path: str | Path, what: str) -> dict:
    """A TOML file as a dict; a missing or invalid file is a one-line ConfigError naming `what`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid TOML: {e}") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a TOML recipe (missing sections take defaults) and apply overrides."""
    path = Path(path)
    data = read_toml(path, "recipe")
    recipe = data.pop("preset", None)
    old = ["vae_train"] if "vae_train" in data else []
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    old += [f"train.{key}" for key in train if key not in ("stages", *STAGES)]
    if old and (hint := _old_layout_hint(old[0])):
        raise ConfigError(f"{path.name}: {hint}")
    base = to_dict(Recipe())
    if recipe is not None:  # `preset = "shapes-demo"` at top level picks a DiT preset
        base["dit"] = to_dict(dit_preset(recipe))
    for section, values in data.items():
        if section not in base:
            raise ConfigError(f"unknown section [{section}] in {path.name}; valid sections: "
                              f"{', '.join(base)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        base[section].update(values)
        from_dict(type(getattr(Recipe(), section)), values, section)  # names the bad key
    return apply_overrides(from_dict(Recipe, base), overrides or [])


def _old_layout_hint(key: str) -> str | None:
    """What to write instead of a setting of the recipe layout before stages (one line), if any."""
    stage_keys = {f.name for f in dataclasses.fields(VAEStageConfig)} | {
        f.name for f in dataclasses.fields(DiTStageConfig)}
    first = key.split(".")[0]
    if first == "vae_train":
        return ("[vae_train] is the old recipe layout: put the VAE stage's settings in "
                "[train.vae] and list the stages in [train]: stages = [\"vae\", \"dit\"]")
    if key == "train.model":
        return ("train.model is the old recipe layout: list the stages in [train] instead, "
                "e.g. stages = [\"vae\", \"dit\"] (\"vae+dit\"), [\"vae\"] or [\"dit\"]")
    name = key.split(".")[1] if first == "train" and "." in key else ""
    if name in stage_keys:
        return (f"train.{name} is the old recipe layout: each stage's settings live in its own "
                f"section, [train.dit] or [train.vae] (e.g. --train.dit.{name}=...)")
    return None

