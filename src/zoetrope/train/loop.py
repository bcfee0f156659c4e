"""The training loop, the same for every task: steps, precision, EMA, checkpoints, signals, export.

A `Task` (the VAE's or the DiT's) owns what is model-specific: building the module and its
dataset, the loss of a micro-batch, export and previews. The `Loop` owns the rest: the
optimizer (AdamW, warmup + cosine), gradient accumulation or token-budget micro-batches,
autocast in the precision chosen for the hardware, the EMA that is exported, checkpoints every
`checkpoint_every` steps, metrics.jsonl and loss.png, previews, and SIGINT/SIGTERM (checkpoint,
then stop).

Resume is bit-exact: a checkpoint holds weights, EMA, optimizer, step and every rank's RNG
states, and the data of step s is fixed by s alone (`batches`). Infrastructure (autocast,
sharding, compile) lives here and in `distributed`, never in model code.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..config import ConfigError, LoopConfig, Recipe, to_dict
from ..errors import UserError, atomic_write_text
from ..hardware import Precision, choose_precision, default_num_workers, set_threads
from .batches import Item, micro_batches, step_batches
from .distributed import (Dist, all_mean, any_rank, barrier, from_main, full_state, full_tensor,
                          gather, load_full_state, setup_distributed, shard_like, wrap)

# Settings that may change when a run resumes: they decide how long it trains and where samples
# are fetched, not what a step computes.
RESUMABLE = ("steps", "num_workers", "threads")


class TrainingError(UserError):
    """Training cannot go on (message is one line and names the step)."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: a checkpoint was saved and the run stopped."""

    def __init__(self, signum: int, step: int, path: Path | None):
        super().__init__(f"stopped by signal {signum} at step {step}; checkpoint {path}; "
                         "rerun the same command to resume")
        self.signum, self.step, self.path = signum, step, path


class Task(Protocol):
    """What one stage trains: `VAETask` and `DiTTask` (built by their `setup`)."""

    name: str  # the stage: "vae" or "dit"
    dataset: Any  # sample(index) -> (frames or latent, caption)
    module: nn.Module  # what the optimizer updates, on this rank's device

    def blocks(self) -> list[nn.Module]: ...  # units of FSDP2 sharding and activation checkpointing
    def tokens(self, sample: Any) -> int: ...  # a sample's size, for token budgets
    def loss(self, model: nn.Module, items: list[Item],
             device: torch.device) -> tuple[Tensor, int]: ...  # mean over samples; tokens
    def fresh(self) -> nn.Module: ...  # a new module of the same configs, to load weights into
    def export(self, module: nn.Module, out: Path) -> None: ...  # write RUN_DIR/final atomically
    def preview(self, module: nn.Module, path: Path) -> None: ...


def lr_at(step: int, config: LoopConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"dit": {"lr": 1}}} -> {"train.dit.lr": 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_leaves(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def check_run_dir(recipe: Recipe, run_dir: Path, d: Dist) -> None:
    """A run directory belongs to one recipe; only `RESUMABLE` settings may change on resume.

    A setting the saved config.json lacks (added to zoetrope after the run started) counts as
    its default, so upgrading mid-run resumes unless the recipe sets it. Rank 0 checks and
    writes config.json; the verdict is broadcast so every rank fails or goes on.
    """
    error = None
    if d.main:
        path, current = run_dir / "config.json", to_dict(recipe)
        if path.is_file():
            saved, ours = _leaves(json.loads(path.read_text())), _leaves(current)
            defaults = _leaves(to_dict(Recipe()))
            keys = [*ours, *(k for k in saved if k not in ours)]
            diff = [k for k in keys if k.rsplit(".", 1)[-1] not in RESUMABLE
                    and saved.get(k, defaults.get(k)) != ours.get(k)]
            if diff:
                error = (f"{run_dir} was started with another recipe (differs in "
                         f"{', '.join(diff[:4])}); use a new --out to start a new run")
        if error is None:
            atomic_write_text(path, json.dumps(current, indent=2))
            ckpt.clean_partial(run_dir)
    error = from_main(error)
    if error:
        raise ConfigError(error)


class Loop:
    """One stage's training run: `run()` trains `task` to `cfg.steps` and exports it."""

    def __init__(self, task: Task, cfg: LoopConfig, run_dir: Path, d: Dist, precision: Precision,
                 num_workers: int, progress: bool = True):
        self.task, self.cfg, self.run_dir, self.d = task, cfg, Path(run_dir), d
        self.precision, self.num_workers = precision, num_workers
        self.progress = progress and d.main
        self.model = wrap(task.module, task.blocks(), cfg, d)
        self.params = {n: p for n, p in task.module.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        self.ema = {n: p.detach().clone().float() for n, p in self.params.items()}
        self.step = 0
        self.stop_signal: int | None = None

    @property
    def dataset(self) -> Any:
        return self.task.dataset

    # ---- one step ----------------------------------------------------------------------

    def micro_loss(self, items: list[Item]) -> tuple[Tensor, int]:
        """The task's loss of one micro-batch (mean over its samples) and its tokens."""
        return self.task.loss(self.model, items, self.d.device)

    def train_step(self, items: list[Item]) -> tuple[float, int]:
        """One optimizer step over this rank's samples of the step; returns (loss, tokens)."""
        batches = list(micro_batches(items, self.cfg, self.task.tokens))
        autocast = torch.autocast(self.d.device.type, dtype=torch.bfloat16,
                                  enabled=self.precision.autocast)
        total, tokens = torch.zeros((), device=self.d.device), 0
        ddp = isinstance(self.model, nn.parallel.DistributedDataParallel)
        for j, micro in enumerate(batches):
            sync = self.model.no_sync() if ddp and j < len(batches) - 1 else nullcontext()
            with sync, autocast:
                loss, n = self.micro_loss(micro)
                share = loss * len(micro) / len(items)  # per-sample mean over the whole step
            share.backward()
            total += share.detach().float()
            tokens += n
        loss = all_mean(total).item()
        if not math.isfinite(loss):
            last = ckpt.latest_checkpoint(self.run_dir)
            raise TrainingError(f"loss became {loss} at step {self.step}; stopped without "
                                f"updating. Last good checkpoint: {last or 'none'}")
        self.update()
        return loss, tokens

    def update(self) -> None:
        """Clip, step the optimizer at this step's learning rate, then update the EMA."""
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # short runs: a faster EMA at first
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for name, p in self.params.items():
                self.ema[name].lerp_(p.detach().float(), 1 - decay)
        self.step += 1

    # ---- run ---------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def should_stop(self) -> bool:
        """Whether a signal reached any rank (all ranks stop at the same step)."""
        return any_rank(self.stop_signal is not None)

    def run(self) -> Path:
        """Resume if there is a checkpoint, train to `cfg.steps`, export; returns RUN_DIR/final."""
        self.resume()
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not self.progress,
                   desc=f"train {self.task.name}", dynamic_ncols=True)
        remaining = self.step < self.cfg.steps  # no worker processes for a finished run
        batches = iter(step_batches(self.dataset, self.cfg, self.d, self.step, self.num_workers)
                       if remaining else ())
        try:
            while self.step < self.cfg.steps:
                start = time.perf_counter()  # waiting for samples counts in the step time
                loss, tokens = self.train_step(next(batches))
                self.after_step(loss, tokens, time.perf_counter() - start, bar)
        finally:
            bar.close()
            del batches  # stops the workers
            for s, h in handlers.items():
                signal.signal(s, h)
        return self.export()

    def after_step(self, loss: float, tokens: int, elapsed: float, bar: tqdm) -> None:
        """Progress, metrics, previews, checkpoints, and the stop a signal asked for."""
        tok_s = tokens * self.d.world / elapsed
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", s_step=f"{elapsed:.2f}", tok_s=f"{tok_s:.0f}")
        last = self.step == self.cfg.steps
        if self.step % self.cfg.log_every == 0 or last:
            self.log({"step": self.step, "loss": loss, "lr": lr_at(self.step - 1, self.cfg),
                      "step_time": elapsed, "tokens_per_s": tok_s})
        preview_every = getattr(self.cfg, "preview_every", 0)  # only DiT stages sample previews
        if preview_every and self.step % preview_every == 0 and self.d.world == 1:
            # one rank samples alone, so previews need unsharded weights: one process only
            path = self.run_dir / "previews" / f"step_{self.step:08d}.gif"
            self.task.preview(self.task.module, path)
        if self.step % self.cfg.checkpoint_every == 0 or last:
            self.save()
        if self.should_stop():
            path = self.save()
            raise Interrupted(self.stop_signal or signal.SIGTERM, self.step, path)

    def log(self, record: dict) -> None:
        if self.d.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ---- state -------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Checkpoint weights, EMA, optimizer, step and every rank's RNG (rank 0 writes)."""
        weights, optim = full_state(self.model, self.optimizer)
        ema = {n: full_tensor(t).cpu() for n, t in self.ema.items()}
        rngs = gather(ckpt.rng_state())
        path = None
        if self.d.main:
            state = {"samples_seen": self.step * self.cfg.batch_size}
            path = ckpt.save_checkpoint(self.run_dir, self.step, weights, ema, optim, state,
                                        self.cfg.keep_checkpoints, rngs)
            from ..plot import plot_metrics
            plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
        barrier()
        return path

    def resume(self) -> None:
        """Load the latest checkpoint, if any: weights, optimizer, EMA, step and RNG states."""
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            self.trim_metrics()
            return
        data = ckpt.load_checkpoint(latest, self.d.rank)
        load_full_state(self.model, self.optimizer, data["model"], data["optimizer"])
        for name, t in self.ema.items():
            t.copy_(shard_like(data["ema"][name], t))
        self.step = data["state"]["step"]
        self.trim_metrics()
        if self.d.main:
            tqdm.write(f"resuming from {latest} (step {self.step})")

    def trim_metrics(self) -> None:
        """Drop the lines of metrics.jsonl past the step this run resumes from (they will be
        logged again, so each step appears once) and any line a kill cut short."""
        path = self.run_dir / "metrics.jsonl"
        if not self.d.main or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                step = json.loads(line)["step"]
            except (ValueError, TypeError, KeyError):
                continue
            if step <= self.step:
                kept.append(line + "\n")
        atomic_write_text(path, "".join(kept))

    # ---- export ------------------------------------------------------------------------

    def ema_module(self) -> nn.Module | None:
        """A plain (unwrapped, unsharded, CPU) copy of the trained module with the EMA weights.

        Every rank must call it (gathering is collective); only rank 0 gets the module, as only it
        receives the full state dict (frozen weights, such as a frozen text encoder's, have no EMA
        to fall back on elsewhere)."""
        weights, _ = full_state(self.model, None)
        ema = {n: full_tensor(t).cpu() for n, t in self.ema.items()}  # collective under FSDP2
        if not self.d.main:
            return None
        with torch.device("cpu"):
            fresh = self.task.fresh()
        fresh.load_state_dict({**weights, **ema})
        return fresh.eval()

    def export(self) -> Path:
        """Write RUN_DIR/final/ through the task (whole or not at all), then return it."""
        final, module = self.run_dir / "final", self.ema_module()
        if self.d.main:
            self.task.export(module, final)
        barrier()
        return final


def stage_loop(recipe: Recipe, stage: str, run_dir: str | Path, progress: bool = True,
               vae_dir: Path | None = None) -> Loop:
    """Set up the loop of one stage ("vae", "dit" or "distill") in `run_dir`; `vae_dir`: the VAE
    a DiT stage trains on when a VAE stage came first."""
    from .dit_task import DiTTask
    from .vae_task import VAETask
    run_dir, d = Path(run_dir), setup_distributed()
    cfg: LoopConfig = getattr(recipe.train, stage)
    if cfg.batch_size % d.world:
        raise ConfigError(f"train.{stage}.batch_size={cfg.batch_size} is not divisible by the "
                          f"{d.world} processes")
    check_run_dir(recipe, run_dir, d)
    set_threads(cfg.threads)
    precision = choose_precision(cfg.precision, d.device)
    if d.main:
        print(f"train {stage}: {precision.describe()}", flush=True)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank and every rerun
    if stage == "vae":
        task = VAETask.setup(recipe, run_dir, d)
    elif stage == "distill":
        from .distill_task import DistillTask
        task = DistillTask.setup(recipe, run_dir, d, progress and d.main)
    else:
        task = DiTTask.setup(recipe, run_dir, d, vae_dir, progress and d.main)
    workers = recipe.data.num_workers
    workers = workers if workers >= 0 else default_num_workers(d.device, d.local_world)
    return Loop(task, cfg, run_dir, d, precision, workers, progress)
