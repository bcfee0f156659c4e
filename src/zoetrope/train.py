"""The training loop: one code path from a laptop CPU to `torchrun` on many GPUs.

`train(recipe, run_dir)` trains what `recipe.train.model` names:

- "vae": the causal video VAE on clips of the recipe's dataset;
- "dit": the DiT (and the text encoder if `text.trainable`) on latents of a frozen VAE
  (`train.vae_path`), encoded every step or once into a latent cache (`train.latent_cache`);
- "vae+dit": both, in sequence: `RUN_DIR/vae/` then `RUN_DIR/dit/`, and the pipeline is
  exported to `RUN_DIR/final/`.

Reproducibility and resume. Sample k of the run (k counts samples over all ranks) is always the
dataset's sample k, and its noise, time and prompt dropout come from a generator seeded with
(seed, k). So what a step computes does not depend on the number of processes, and the data
position is just `step * batch_size`. Checkpoints (`checkpoint.py`) hold weights, EMA, optimizer,
step and RNG states; rerunning the same command resumes bit-exactly.

Scale-out: under torchrun the model is wrapped with FSDP2 (`fully_shard`, per DiT block) or DDP;
NCCL on GPUs, gloo on CPU. Each rank takes its slice of every global batch; logs, progress and
files come from rank 0. Infrastructure (autocast, activation checkpointing, compile, sharding)
lives here, never in model code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from . import checkpoint as ckpt
from . import diffusion
from .config import ConfigError, Recipe, to_dict
from .dit import DiT
from .patches import pack
from .text import build_text_encoder
from .vae import CausalVAE, set_scaling_from_data, vae_loss


class TrainingError(RuntimeError):
    """Training cannot go on (message is one line and names the step)."""


# --------------------------------------------------------------------------------------------
# Distributed setup
# --------------------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Initialise torch.distributed from torchrun's environment (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, world, device)


def all_mean(value: Tensor) -> Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def build_dataset(recipe: Recipe):
    """The recipe's dataset: an object with `sample(index) -> (frames uint8 (T,H,W,3), caption)`."""
    data = recipe.data
    sizes = [tuple(s) for s in data.sizes]
    if data.dataset == "shapes":
        from .data.shapes import ShapesWorld
        return ShapesWorld(sizes=sizes, seed=recipe.train.seed, two_objects=data.two_objects)
    if data.dataset == "mnist":
        from .data.mnist import MovingMNIST
        return MovingMNIST(sizes=sizes, seed=recipe.train.seed, **({"root": data.path} if data.path else {}))
    if data.dataset in ("folder", "cache") and not data.path:
        raise ConfigError(f"data.path is required for data.dataset = {data.dataset!r}")
    if data.dataset == "folder":
        from .data.folder import IndexedFolder
        # data.fps = 0 reads every clip at its own frame rate.
        return IndexedFolder(data.path, sizes=sizes, fps=data.fps or None, seed=recipe.train.seed)
    if data.dataset == "cache":
        from .data.cache import LatentCache
        if recipe.train.model != "dit":
            raise ConfigError("data.dataset = \"cache\" holds VAE latents: it can train a DiT "
                              "(train.model = \"dit\"), not a VAE")
        cache = LatentCache(data.path)
        if recipe.train.vae_path:  # latents only mean something to the VAE that made them
            from .weights import read_config
            saved = read_config(recipe.train.vae_path)
            ours = saved.get("class") == cache.vae_config.get("class")  # adapters: diffusers' own
            diff = [k for k, v in cache.vae_config.items() if ours and k in saved and saved[k] != v]
            if diff:
                raise ConfigError(f"latent cache {data.path} was encoded with another VAE than "
                                  f"train.vae_path (differs in {', '.join(diff[:4])})")
        return cache
    raise ConfigError(f"unknown data.dataset {data.dataset!r}; valid: shapes, mnist, folder, cache")


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator owning sample `index`'s noise, time and prompt dropout."""
    return torch.Generator().manual_seed((seed << 40) + index)


def to_video(frames) -> Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [-1, 1]."""
    x = torch.as_tensor(frames)
    return x.permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def local_indices(step: int, batch_size: int, d: Dist) -> list[int]:
    """Global sample indices this rank handles at `step` (a contiguous slice of the batch)."""
    per_rank = batch_size // d.world
    start = step * batch_size + d.rank * per_rank
    return list(range(start, start + per_rank))


def micro_batches(indices: list[int], samples: list, recipe: Recipe, tokens_of: Callable) -> Iterator:
    """Split this rank's samples into micro-batches: by token budget (NaViT) or into grad_accum."""
    items = list(zip(indices, samples))
    if recipe.train.token_budget > 0:
        from .patches import budget_batches
        yield from budget_batches(items, recipe.train.token_budget, lambda item: tokens_of(item[1][0]))
        return
    n = max(1, math.ceil(len(items) / recipe.train.grad_accum))
    for i in range(0, len(items), n):
        yield items[i:i + n]


# --------------------------------------------------------------------------------------------
# Models and losses
# --------------------------------------------------------------------------------------------


class DiTTrainee(nn.Module):
    """What DiT training updates: the DiT and, when trainable, the text encoder.

    Its forward runs both, so DDP/FSDP see one module call per micro-batch.
    """

    def __init__(self, recipe: Recipe, vae_channels: int):
        super().__init__()
        self.text_encoder = build_text_encoder(recipe.text)
        config = dataclasses.replace(recipe.dit, in_channels=vae_channels, text_dim=self.text_encoder.dim)
        self.dit = DiT(config)

    def forward(self, packed, t: Tensor, prompts: list[str]) -> Tensor:
        text, mask = self.text_encoder(prompts)
        return self.dit(packed, t, text.to(packed.tokens.device), mask.to(packed.tokens.device))


def load_frozen_vae(path: str, device: torch.device):
    from .vae_adapters import load_vae
    if not path:
        raise ConfigError("train.vae_path is required to train a DiT (or use train.model = \"vae+dit\")")
    vae = load_vae(path).to(device).eval()
    vae.requires_grad_(False)
    return vae


@torch.no_grad()
def encode_latents(vae, samples: list, device: torch.device) -> list[Tensor]:
    """Frames -> normalised latents (C, t, h, w), one VAE call per distinct clip size.

    Samples that already are latents (float (C, t, h, w), from a latent cache) pass through.
    """
    by_size: dict[tuple, list[int]] = {}
    out: list[Tensor | None] = [None] * len(samples)
    for i, (frames, _) in enumerate(samples):
        if isinstance(frames, Tensor) and frames.is_floating_point():  # frames are uint8
            out[i] = frames.to(device, torch.float32)
        else:
            by_size.setdefault(tuple(frames.shape), []).append(i)
    for idx in by_size.values():
        video = torch.cat([to_video(samples[i][0]) for i in idx]).to(device)
        with torch.autocast(device.type, enabled=False):  # fp32: on CPU 1.6x faster than bf16 here
            z = vae.encode_latent(video)
        for j, i in enumerate(idx):
            out[i] = z[j].float()
    return out  # type: ignore[return-value]


def dit_loss(model: nn.Module, vae, items: list, recipe: Recipe, device: torch.device) -> tuple[Tensor, int]:
    """Diffusion loss of one micro-batch, averaged over its samples; also returns its tokens."""
    dcfg, core = recipe.diffusion, unwrap(model)
    latents = encode_latents(vae, [s for _, s in items], device)
    # Samples of one size side by side: attention then cuts the packed sequence into views instead
    # of gathering and scattering by index. Noise and times follow each sample's own index.
    order = sorted(range(len(items)), key=lambda i: tuple(latents[i].shape), reverse=True)
    items, latents = [items[i] for i in order], [latents[i] for i in order]
    packed = pack(latents, core.dit.config.patch_size)
    ts, noises, prompts, keeps = [], [], [], []
    for (index, (_, caption)), n in zip(items, packed.lengths):
        g = sample_generator(recipe.train.seed, index)
        if dcfg.objective == "flow":
            shift = diffusion.resolution_shift(n, dcfg.shift_base_tokens)
            ts.append(diffusion.sample_time_logit_normal(1, g, dcfg.logit_mean, dcfg.logit_std, shift))
        else:
            ts.append(diffusion.sample_time_ddpm(1, g, dcfg.num_train_timesteps))
        noises.append(torch.randn((n, packed.tokens.shape[1]), generator=g))
        drop = torch.rand(1, generator=g).item() < dcfg.text_dropout
        prompts.append("" if drop else caption)
        first = torch.rand(1, generator=g).item() < recipe.train.first_frame_cond
        keeps.append(torch.full((n,), first))
    packed = packed.to(device)
    t = torch.cat(ts).to(device)[packed.sample_ids]
    noise = torch.cat(noises).to(device)
    keep = torch.cat(keeps).to(device) & (packed.positions[:, 0] == 0)  # image-to-video: clean frame 0

    def model_fn(x: Tensor, t_: Tensor) -> Tensor:
        return model(packed.with_tokens(x), t_, prompts)

    kwargs = dict(sample_ids=packed.sample_ids, num_samples=packed.num_samples, keep=keep)
    if dcfg.objective == "flow":
        loss = diffusion.flow_loss(model_fn, packed.tokens, t, noise, **kwargs)
    else:
        schedule = diffusion.DDPMSchedule.from_config(dcfg)
        loss = diffusion.ddpm_loss(model_fn, schedule, packed.tokens, t, noise, **kwargs)
    return loss, packed.num_tokens


def vae_micro_loss(model: nn.Module, items: list, recipe: Recipe, device: torch.device) -> tuple[Tensor, int]:
    """VAE loss of one micro-batch (clips of equal size are batched), averaged over samples."""
    by_size: dict[tuple, list] = {}
    for _, (frames, _) in items:
        by_size.setdefault(tuple(frames.shape), []).append(to_video(frames))
    total, pixels = 0.0, 0
    for videos in by_size.values():
        video = torch.cat(videos).to(device)
        loss, _ = vae_loss(model, video, recipe.train.kl_weight)
        total = total + loss * len(videos)
        pixels += video[:, 0].numel()
    return total / len(items), pixels


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 and torch.compile keep the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def lr_at(step: int, config) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _full(t: Tensor) -> Tensor:
    """A DTensor's full value (FSDP2 shards), or the tensor itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(full: Tensor, param: Tensor) -> Tensor:
    """Shard a full tensor like `param` (a DTensor under FSDP2), or copy it onto its device."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(full.to(param.device), param.device_mesh, param.placements)
    return full.to(param.device)


class Trainer:
    """State of one training run; `run()` trains to `train.steps` and exports the result."""

    def __init__(self, recipe: Recipe, run_dir: Path, progress: bool = True):
        if recipe.train.sizes:  # this stage trains on its own clip sizes
            recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, sizes=recipe.train.sizes))
        self.recipe, self.cfg, self.run_dir = recipe, recipe.train, Path(run_dir)
        self.d = setup_distributed()
        self.progress = progress and self.d.main
        self.stop_signal: int | None = None
        if self.cfg.batch_size % self.d.world:
            raise ConfigError(f"train.batch_size={self.cfg.batch_size} is not divisible by the "
                              f"{self.d.world} processes")
        self._check_run_dir()
        torch.manual_seed(self.cfg.seed)  # same initial weights on every rank and every rerun
        self.dataset = build_dataset(recipe)
        self.vae = None
        if self.cfg.model == "dit":
            self.vae = load_frozen_vae(self.cfg.vae_path, self.d.device)
            channels = self.vae.latent_shape(*self._first_size())[0]
            if self.cfg.latent_cache and recipe.data.dataset != "cache":  # else: latents already
                self.dataset = self._latent_cache()
            self.module = DiTTrainee(recipe, channels).to(self.d.device)
        elif self.cfg.model == "vae":
            if self.cfg.latent_cache:
                raise ConfigError("train.latent_cache is for DiT training; set it to 0 for the VAE")
            self.module = CausalVAE(recipe.vae).to(self.d.device)
        else:
            raise ConfigError(f"unknown train.model {self.cfg.model!r}; valid: vae, dit, vae+dit")
        self.model = self._wrap(self.module)
        self.params = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=self.cfg.lr,
                                           weight_decay=self.cfg.weight_decay, betas=(0.9, 0.99))
        self.ema = {n: p.detach().clone().float() for n, p in self.params.items()}
        self.step = 0

    # ---- setup -------------------------------------------------------------------------

    def _first_size(self) -> tuple[int, int, int]:
        return tuple(self.recipe.data.sizes[0])  # type: ignore[return-value]

    def _latent_cache(self):
        """Encode samples 0..latent_cache-1 into RUN_DIR/latents once (rank 0; a rerun continues
        it) and serve them as the dataset: the VAE encoder then costs nothing per step."""
        from .data.cache import LatentCache, encode_dataset
        count, out = self.cfg.latent_cache, self.run_dir / "latents"
        if count < 0:
            raise ConfigError(f"train.latent_cache must be >= 0, got {count}")
        if self.d.main:
            encode_dataset(self.dataset, self.vae, out, count, batch_size=32,
                           progress=self.progress)
        if dist.is_initialized():
            dist.barrier()
        return LatentCache(out)

    def _check_run_dir(self) -> None:
        """A run directory belongs to one recipe; only the step counts may change on resume.

        Rank 0 checks and writes; the verdict is broadcast so every rank fails or goes on.
        """
        error = None
        if self.d.main:
            path = self.run_dir / "config.json"
            current = to_dict(self.recipe)
            if path.is_file():
                saved = json.loads(path.read_text())
                diff = [f"{s}.{k}" for s in current for k in current[s]
                        if k != "steps" and saved.get(s, {}).get(k) != current[s][k]]
                if diff:
                    error = (f"{self.run_dir} was started with another recipe (differs in "
                             f"{', '.join(diff[:4])}); use a new --out to start a new run")
            if error is None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name("config.json.tmp")
                tmp.write_text(json.dumps(current, indent=2))
                os.replace(tmp, path)
                ckpt.clean_partial(self.run_dir)
        if dist.is_initialized():
            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error:
            raise ConfigError(error)

    def _wrap(self, module: nn.Module) -> nn.Module:
        """Activation checkpointing, then FSDP2 / DDP under torchrun, then compile."""
        blocks = list(getattr(getattr(module, "dit", None), "blocks", []))
        if self.cfg.activation_checkpointing:
            from torch.utils.checkpoint import checkpoint
            for block in blocks:  # instance-level forward: state-dict names stay unchanged
                block.forward = lambda *a, _f=block.forward: checkpoint(_f, *a, use_reentrant=False)
        model = module
        if self.d.world > 1:
            if self.cfg.distributed == "fsdp":
                from torch.distributed.fsdp import fully_shard
                for block in blocks:
                    fully_shard(block)
                fully_shard(module)
            elif self.cfg.distributed == "ddp":
                ids = [self.d.device.index] if self.d.device.type == "cuda" else None
                model = nn.parallel.DistributedDataParallel(module, device_ids=ids)
            else:
                raise ConfigError(f"train.distributed must be fsdp or ddp, got {self.cfg.distributed!r}")
        if self.cfg.compile:
            model.compile()
        return model

    # ---- state -------------------------------------------------------------------------

    def state_dicts(self, optimizer: bool = True) -> tuple[dict, dict, dict]:
        """Full (unsharded, CPU) model, EMA and (unless `optimizer=False`) optimizer state dicts."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model = get_model_state_dict(self.model, options=options)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=options) if optimizer else {}
        ema = {n: _full(t).cpu() for n, t in self.ema.items()}
        return model, ema, optim

    def save(self) -> Path | None:
        model, ema, optim = self.state_dicts()
        rng = ckpt.rng_state()
        rngs = [rng]
        if dist.is_initialized():
            rngs = [None] * self.d.world  # type: ignore[list-item]
            dist.all_gather_object(rngs, rng)
        path = None
        if self.d.main:
            state = {"samples_seen": self.step * self.cfg.batch_size}
            path = ckpt.save_checkpoint(self.run_dir, self.step, model, ema, optim, state,
                                        self.cfg.keep_checkpoints, rngs)
            self.plot()
        if dist.is_initialized():
            dist.barrier()
        return path

    def resume(self) -> None:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            return
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)
        data = ckpt.load_checkpoint(latest, self.d.rank)
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, data["model"], options=options)
        set_optimizer_state_dict(self.model, self.optimizer, data["optimizer"], options=options)
        for name, t in self.ema.items():
            t.copy_(_like(data["ema"][name], t))
        self.step = data["state"]["step"]
        if self.d.main:
            tqdm.write(f"resuming from {latest} (step {self.step})")

    # ---- one step ----------------------------------------------------------------------

    def tokens_of(self, frames) -> int:
        if self.vae is None:
            return int(frames.shape[0] * frames.shape[1] * frames.shape[2])
        if isinstance(frames, Tensor) and frames.is_floating_point():  # a cached latent
            c, t, h, w = frames.shape
        else:
            c, t, h, w = self.vae.latent_shape(*frames.shape[:3])
        pt, ph, pw = unwrap(self.module).dit.config.patch_size
        return (t // pt) * (h // ph) * (w // pw)

    def micro_loss(self, items: list) -> tuple[Tensor, int]:
        if self.vae is None:
            return vae_micro_loss(self.model, items, self.recipe, self.d.device)
        return dit_loss(self.model, self.vae, items, self.recipe, self.d.device)

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over this rank's slice of the global batch; returns (loss, tokens)."""
        indices = local_indices(self.step, self.cfg.batch_size, self.d)
        samples = [self.dataset.sample(i) for i in indices]
        batches = list(micro_batches(indices, samples, self.recipe, self.tokens_of))
        autocast = torch.autocast(self.d.device.type, dtype=torch.bfloat16,
                                  enabled=self.cfg.precision == "bf16")
        total, tokens = torch.zeros((), device=self.d.device), 0
        for j, items in enumerate(batches):
            last = j == len(batches) - 1
            sync = self.model.no_sync() if isinstance(self.model, nn.parallel.DistributedDataParallel) and not last else nullcontext()
            with sync, autocast:
                loss, n = self.micro_loss(items)
                share = loss * len(items) / len(indices)  # per-sample mean over the whole step
            share.backward()
            total += share.detach().float()
            tokens += n
        loss = all_mean(total).item()
        if not math.isfinite(loss):
            last = ckpt.latest_checkpoint(self.run_dir)
            raise TrainingError(f"loss became {loss} at step {self.step}; stopped without updating. "
                                f"Last good checkpoint: {last or 'none'}")
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))  # short runs: faster EMA
        with torch.no_grad():
            for name, p in self.params.items():
                self.ema[name].lerp_(p.detach().float(), 1 - decay)
        self.step += 1
        return loss, tokens

    # ---- run ---------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def _should_stop(self) -> bool:
        flag = torch.tensor(float(self.stop_signal is not None))
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def run(self) -> Path:
        self.resume()
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not self.progress,
                   desc=f"train {self.cfg.model}", dynamic_ncols=True)
        try:
            while self.step < self.cfg.steps:
                start = time.perf_counter()
                loss, tokens = self.train_step()
                elapsed = time.perf_counter() - start
                tok_s = tokens * self.d.world / elapsed
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", s_step=f"{elapsed:.2f}", tok_s=f"{tok_s:.0f}")
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    self.log({"step": self.step, "loss": loss, "lr": lr_at(self.step - 1, self.cfg),
                              "step_time": elapsed, "tokens_per_s": tok_s})
                if self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                    self.preview()
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    self.save()
                if self._should_stop():
                    path = self.save()
                    raise Interrupted(self.stop_signal or signal.SIGTERM, self.step, path)
        finally:
            bar.close()
            for s, h in handlers.items():
                signal.signal(s, h)
        return self.export()

    def log(self, record: dict) -> None:
        if self.d.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        from .plot import plot_metrics
        plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")

    def preview(self) -> None:
        # One rank samples alone, so previews need unsharded weights: single-process runs only.
        if self.d.world == 1 and self.vae is not None and self.cfg.preview_prompts:
            from .pipeline import preview_gif
            core = unwrap(self.module)
            preview_gif(core.dit, self.vae, core.text_encoder, self.recipe, self.cfg.preview_prompts,
                        self.run_dir / "previews" / f"step_{self.step:08d}.gif")

    # ---- export ------------------------------------------------------------------------

    def ema_module(self) -> nn.Module | None:
        """A plain (unwrapped, unsharded) copy of the trained module carrying the EMA weights.

        Every rank must call it (gathering is collective); only rank 0 gets the module, as only it
        receives the full model state dict (frozen weights, such as a frozen text encoder's, have
        no EMA to fall back on elsewhere)."""
        model, ema, _ = self.state_dicts(optimizer=False)  # export needs no optimizer state
        if not self.d.main:
            return None
        with torch.device("cpu"):
            fresh = DiTTrainee(self.recipe, unwrap(self.module).dit.config.in_channels) \
                if self.vae is not None else CausalVAE(self.recipe.vae)
        fresh.load_state_dict({**model, **ema})
        return fresh.eval()

    def export(self) -> Path:
        """Write RUN_DIR/final/: a pipeline directory (DiT runs) or final/vae (VAE runs)."""
        final = self.run_dir / "final"
        module = self.ema_module()
        if self.d.main:
            tmp = self.run_dir / ".tmp-final"
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
            if self.vae is None:
                self.fit_scaling(module)
                module.save_pretrained(tmp / "vae")
            else:
                write_pipeline(tmp, module.dit, self.vae, module.text_encoder, self.recipe)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        if dist.is_initialized():
            dist.barrier()
        return final

    @torch.no_grad()
    def fit_scaling(self, vae: CausalVAE, samples: int = 32) -> None:
        """Set the VAE's latent mean/std from `samples` clips so the DiT sees unit-scale latents."""
        clips = (self.dataset.sample(10**9 + i)[0] for i in range(samples))  # held-out indices
        set_scaling_from_data(vae, (vae.encode(to_video(c)).mode() for c in clips))


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: a checkpoint was saved and the run stopped."""

    def __init__(self, signum: int, step: int, path: Path | None):
        super().__init__(f"stopped by signal {signum} at step {step}; checkpoint {path}; "
                         "rerun the same command to resume")
        self.signum, self.step, self.path = signum, step, path


def write_pipeline(directory: Path, dit: DiT, vae, text_encoder, recipe: Recipe) -> None:
    """Write a pipeline directory: dit/, vae/, text_encoder/ and pipeline.json."""
    directory.mkdir(parents=True, exist_ok=True)
    dit.save_pretrained(directory / "dit")
    vae.save_pretrained(directory / "vae")
    text_encoder.save_pretrained(directory / "text_encoder")
    sizes = [list(s) for s in recipe.data.sizes]
    meta = {"diffusion": to_dict(recipe.diffusion), "fps": recipe.data.fps,
            "default_size": sizes[0], "sizes": sizes}
    (directory / "pipeline.json").write_text(json.dumps(meta, indent=2))


def train(recipe: Recipe, run_dir: str | Path, progress: bool = True) -> Path:
    """Train what the recipe names into `run_dir` (resuming if it has checkpoints); returns final/."""
    run_dir = Path(run_dir)
    if recipe.train.model != "vae+dit":
        return Trainer(recipe, run_dir, progress).run()
    vae_recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.vae_train, model="vae"))
    vae_final = train(vae_recipe, run_dir / "vae", progress)
    dit_train = dataclasses.replace(recipe.train, model="dit", vae_path=str(vae_final / "vae"))
    final = train(dataclasses.replace(recipe, train=dit_train), run_dir / "dit", progress)
    if not dist.is_initialized() or dist.get_rank() == 0:
        import shutil
        tmp = run_dir / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(final, tmp)
        shutil.rmtree(run_dir / "final", ignore_errors=True)
        tmp.rename(run_dir / "final")
    return run_dir / "final"
