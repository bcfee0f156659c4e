"""`zoetrope sweep`: a grid of ordinary training runs, each measured alike, and their scaling law.

A grid file (TOML) lists what varies; every combination is one run of the recipe's DiT stage:

    sizes = ["tiny", { name = "tiny-wide", preset = "tiny", dim = 96 }]  # DiT presets or tables
    steps = [10, 20]        # train.dit.steps (each step count is its own run: the learning-rate
                            # schedule spans the run, so a short run is not a prefix of a long one)
    lr = [1e-3]             # optional, default: the recipe's train.dit.lr
    batch_size = [4]        # optional, default: the recipe's train.dit.batch_size
    [heldout]               # optional: the held-out loss (below)
    clips = 16
    times = 8
    seed = 0
    path = ""               # a folder or cache of held-out clips, for datasets that repeat
    [critic]                # optional: generate and critique `clips` clips per run (0: off)
    clips = 0

A size table may name a `preset` to start from (default: the recipe's [dit]) and set `dim`,
`depth` and `num_heads` (default: the base's head width, dim / heads, kept); `name` defaults to
dDIMxDEPTH. Each run is the recipe plus that run's overrides (`--dit.*` of its size,
`--train.dit.steps/lr/batch_size`) trained by `zoetrope.train.train` into DIR/runs/NAME, an
ordinary resumable run directory; the overrides are listed in DIR/scaling.json, so
`zoetrope train RECIPE --out D ...` reproduces any run. When the recipe trains a VAE first, it
is trained once, in DIR/vae, and every run's DiT learns its latents: the held-out losses of
different runs are only comparable on the same latents.

Rerunning the command resumes: a run with DIR/runs/NAME/result.json is skipped, a run cut short
resumes from its checkpoint, a failed run is tried again. A run that fails is reported and the
others go on. Runs go one at a time; under torchrun every run uses all the processes. Before any
run starts, every run's recipe is checked, and its training memory estimated and refused when it
exceeds what the device has.

Measured per run (rank 0): the DiT's parameters; training FLOPs, in the DiT paper's convention
(`dit.forward_flops` multiply-adds of one forward pass, averaged over the stage's clip sizes,
x 3 for forward and backward, x batch size x steps; the frozen VAE and text encoder excluded);
wall time (summed over the invocations that trained it); the held-out loss: the recipe's
denoiser loss with the exported EMA weights on `clips` clips at dataset indices from
HELDOUT_START on, which no training run reads, each with fixed noise (from (seed, i)) at every t
of the fixed grid (i + 0.5) / times, averaged; and, optionally, the critic's pass rates
(`zoetrope.eval`). Reports: `zoetrope.scaling`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import scaling
from .config import (DiTConfig, Recipe, check_ranges, dit_preset, from_dict, load_recipe,
                     read_toml, to_dict)
from .errors import UserError, atomic_write_text

HELDOUT_START = 2 * 10**9  # first dataset index of held-out clips (VAE scaling uses 10**9 + i)
GRID_KEYS = ("sizes", "steps", "lr", "batch_size", "heldout", "critic")
SIZE_KEYS = ("name", "preset", "dim", "depth", "num_heads")
BYTES_PER_PARAM = 20  # float32 weights 4, gradients 4, AdamW's two moments 8, the EMA 4
# float32 (tokens, D) tensors one DiT block keeps for backward: x and residuals, norms, adaLN
# modulation (6 D), q/k/v, attention outputs, the MLP hidden before and after GELU (2 x 4 D)
ACTIVATION_WIDTHS = 32
FLOPS_NOTE = ("Training FLOPs follow the DiT paper: forward multiply-adds of the DiT "
              "(dit.forward_flops, averaged over the clip sizes) x 3 (backward ~ 2 forwards) "
              "x batch size x steps; the frozen VAE and text encoder are not counted.")


class GridError(UserError):
    """A grid file a user gave is invalid (message is one line naming the file and key)."""


@dataclass
class HeldOut:
    """The held-out loss: which clips, which noise, which times."""

    clips: int = 16  # held-out clips, dataset indices HELDOUT_START + i
    times: int = 8  # the fixed grid of t: (i + 0.5) / times
    seed: int = 0  # seed of the held-out clips' dataset and of clip i's noise (seed, i)
    path: str = ""  # a folder (or latent cache) of held-out clips, for datasets that repeat

    def __post_init__(self) -> None:
        check_ranges(self, "heldout", {"clips": ">= 1", "times": ">= 1", "seed": ">= 0"})


@dataclass
class Critic:
    """Optional critic metrics on generated clips."""

    clips: int = 0  # clips generated and critiqued per run (0: off)

    def __post_init__(self) -> None:
        check_ranges(self, "critic", {"clips": ">= 0"})


@dataclass
class Run:
    """One grid point: a name and the overrides that make it from the recipe."""

    name: str
    size: str
    overrides: list[str]  # --dit.* of its size and --train.dit.steps/lr/batch_size


@dataclass
class Grid:
    """What a grid file asks for."""

    runs: list[Run]
    heldout: HeldOut = field(default_factory=HeldOut)
    critic: Critic = field(default_factory=Critic)


def _override(key: str, value: Any) -> str:
    """`--key=value` with the value written as TOML (json's strings, numbers, lists are TOML)."""
    return f"--{key}={json.dumps(value)}"


def _size(entry: Any, base: DiTConfig, where: str) -> tuple[str, list[str]]:
    """A size entry (a preset name, or a table) -> its name and --dit.* overrides."""
    if isinstance(entry, str):
        entry = {"name": entry, "preset": entry}
    if not isinstance(entry, dict):
        raise GridError(f"{where} must be a preset name or a table, got {entry!r}")
    unknown = [k for k in entry if k not in SIZE_KEYS]
    if unknown:
        raise GridError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(SIZE_KEYS)}")
    changes = {k: entry[k] for k in ("dim", "depth", "num_heads") if k in entry}
    try:
        config = dit_preset(entry["preset"]) if "preset" in entry else dataclasses.replace(base)
        if isinstance(changes.get("dim"), int) and "num_heads" not in changes:
            head_width = config.dim // config.num_heads  # kept
            changes["num_heads"] = max(1, changes["dim"] // head_width)
        config = from_dict(DiTConfig, {**to_dict(config), **changes}, "dit")
    except UserError as e:
        raise GridError(f"{where}: {e}") from None
    name = entry.get("name") or f"d{config.dim}x{config.depth}"
    return str(name), [_override(f"dit.{k}", v) for k, v in to_dict(config).items()]


def _values(data: dict, key: str, kind: type, where: str) -> list:
    """A list of grid values (default [None]: the recipe's)."""
    values = data.get(key, [None])
    if not isinstance(values, list) or not values:
        raise GridError(f"{where}: {key} must be a non-empty list, got {values!r}")
    for v in values:
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)
                              or (kind is int and not isinstance(v, int))):
            raise GridError(f"{where}: {key} must list {kind.__name__}s, got {v!r}")
    return values


def load_grid(path: str | Path, base: DiTConfig) -> Grid:
    """Read a grid file; `base`: the recipe's DiT, which size tables start from."""
    path = Path(path)
    data, where = read_toml(path, "grid"), path.name
    unknown = [k for k in data if k not in GRID_KEYS]
    if unknown:
        raise GridError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(GRID_KEYS)}")
    entries = data.get("sizes", [])
    if not isinstance(entries, list) or not entries or "steps" not in data:
        raise GridError(f"{where}: the grid is empty; it needs sizes = [...] and steps = [...]")
    sizes = dict(_size(e, base, f"{where}: sizes[{i}]") for i, e in enumerate(entries))
    if len(sizes) < len(entries):
        raise GridError(f"{where}: two sizes have the same name; give each table a name")
    steps, lrs = _values(data, "steps", int, where), _values(data, "lr", float, where)
    batches = _values(data, "batch_size", int, where)
    runs = []
    for (size, dit), n, lr, bs in itertools.product(sizes.items(), steps, lrs, batches):
        loop = {"steps": n, "lr": lr, "batch_size": bs}
        extra = [_override(f"train.dit.{k}", v) for k, v in loop.items() if v is not None]
        label = "_".join([size] + [f"{k}{v:g}" for k, v in loop.items() if v is not None])
        runs.append(Run(re.sub(r"[^A-Za-z0-9._=+-]+", "-", label), size, dit + extra))
    sections = {k: from_dict(cls, data.get(k, {}), k) for k, cls in
                (("heldout", HeldOut), ("critic", Critic))}
    return Grid(runs, **sections)


# --------------------------------------------------------------------------------------------
# Planning: every run's recipe, its shapes and memory, before anything trains
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """The checked recipes of a sweep."""

    vae: Recipe | None  # the VAE stage, trained once into DIR/vae (None: train.dit.vae_path)
    runs: list[tuple[Run, Recipe]]
    vae_path: Path  # the VAE every run trains on


def plan(recipe_path: str | Path, overrides: Sequence[str], grid: Grid, out: Path) -> Plan:
    """Every run's recipe (each error names the run), with the VAE stage split off."""
    base = load_recipe(recipe_path, list(overrides))
    vae = None
    if "vae" in base.train.stages:
        vae = load_recipe(recipe_path, [*overrides, _override("train.stages", ["vae"])])
        vae_path = out / "vae" / "final" / "vae"
        stage = [_override("train.stages", ["dit"]), _override("train.dit.vae_path", str(vae_path))]
    elif base.train.dit.vae_path:
        vae_path, stage = Path(base.train.dit.vae_path), []
    else:
        raise UserError("train.dit.vae_path is required when the recipe trains no VAE stage")
    if base.data.dataset in ("folder", "cache") and not grid.heldout.path:
        raise UserError(f"data.dataset = {base.data.dataset!r} repeats its clips, so none is held "
                        f"out; give the grid a [heldout] path (a folder of held-out clips)")
    runs = []
    for run in grid.runs:
        try:
            recipe = load_recipe(recipe_path, [*overrides, *run.overrides, *stage])
        except UserError as e:
            raise UserError(f"grid run {run.name}: {e}") from None
        cfg = recipe.train.dit
        if cfg.steps * cfg.batch_size >= HELDOUT_START:
            raise UserError(f"grid run {run.name} reads samples up to {cfg.steps * cfg.batch_size}"
                            f", into the held-out clips from {HELDOUT_START}")
        runs.append((run, recipe))
    return Plan(vae, runs, vae_path)


def _shape_vae(plan_: Plan) -> Any:
    """A VAE that knows the latent shapes: the recipe's, built on meta, or the trained one."""
    from .vae_adapters import load_vae
    if plan_.vae is not None:
        with torch.device("meta"):
            return load_vae(plan_.vae.vae)
    return load_vae(plan_.vae_path)


def dit_shapes(recipe: Recipe, vae: Any, text_dim: int) -> tuple[DiTConfig, list[tuple]]:
    """The DiT a run trains (latent channels and text width filled in) and its latent shapes."""
    sizes = recipe.train.dit.sizes or recipe.data.sizes
    shapes = [tuple(vae.latent_shape(*s)) for s in sizes]
    config = dataclasses.replace(recipe.dit, in_channels=shapes[0][0], text_dim=text_dim)
    return config, shapes


def train_bytes(config: DiTConfig, shapes: list[tuple], recipe: Recipe, world: int = 1) -> int:
    """A rough peak of training memory: weights, gradients, AdamW and EMA (sharded by FSDP),
    plus the activations one micro-batch keeps for backward."""
    from .dit import DiT, count_params
    cfg = recipe.train.dit
    with torch.device("meta"):
        params = count_params(DiT(config))
    pt, ph, pw = config.patch_size
    largest = max((t // pt) * (h // ph) * (w // pw) for _, t, h, w in shapes)
    samples = math.ceil(cfg.batch_size / world / cfg.grad_accum)
    tokens = max(cfg.token_budget, largest) if cfg.token_budget else samples * largest
    layers = 1 if cfg.activation_checkpointing else config.depth
    shards = world if cfg.distributed == "fsdp" else 1
    return params * BYTES_PER_PARAM // shards + 4 * tokens * config.dim * layers * ACTIVATION_WIDTHS


def check_memory(plan_: Plan, device: torch.device, world: int) -> None:
    """Refuse, in one line with the estimate, a run whose training would not fit."""
    from .memory import available_bytes
    vae, available = _shape_vae(plan_), available_bytes(device)
    for run, recipe in plan_.runs:
        config, shapes = dit_shapes(recipe, vae, recipe.text.dim)
        need = train_bytes(config, shapes, recipe, world)
        if available is not None and need > available:
            raise UserError(f"grid run {run.name} would need about {need / 2**30:.1f} GiB to "
                            f"train but {available / 2**30:.1f} GiB is free on {device}; use a "
                            f"smaller size or batch_size (or train.dit.activation_checkpointing)")


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

HELDOUT_CHUNK = 8  # held-out clips per DiT call


@torch.no_grad()
def heldout_set(recipe: Recipe, spec: HeldOut, vae_path: Path) -> tuple[list, list[str]]:
    """The held-out clips as latents (C, t, h, w) of the sweep's VAE, and their captions."""
    from .data.factory import build_dataset
    from .train.dit_task import encode_latents, load_frozen_vae
    data = dataclasses.replace(recipe.data, path=spec.path) if spec.path else recipe.data
    dataset = build_dataset(data, spec.seed, recipe.train.dit.sizes or recipe.data.sizes)
    start = 0 if spec.path else HELDOUT_START  # a held-out folder is held out from its start
    samples = [dataset.sample(start + i) for i in range(spec.clips)]
    captions = [caption for _, caption in samples]
    if getattr(dataset, "is_latent", False):
        return [s.float() for s, _ in samples], captions
    cpu = torch.device("cpu")
    return encode_latents(load_frozen_vae(vae_path, cpu), [s for s, _ in samples], cpu), captions


@torch.no_grad()
def heldout_loss(pipe: Any, latents: list, captions: list[str], spec: HeldOut) -> list[float]:
    """The denoiser's loss at each t = (k + 0.5) / times, averaged over the held-out clips; clip
    i's noise is drawn from the generator of dataset index HELDOUT_START + i."""
    from . import diffusion
    from .patches import pack
    from .train.batches import sample_generator
    patch, device = pipe.dit.config.patch_size, pipe.device
    noise = [torch.randn(z.shape, generator=sample_generator(spec.seed, HELDOUT_START + i))
             for i, z in enumerate(latents)]
    totals = [0.0] * spec.times
    for lo in range(0, len(latents), HELDOUT_CHUNK):
        packed = pack(latents[lo:lo + HELDOUT_CHUNK], patch).to(device)
        eps = pack(noise[lo:lo + HELDOUT_CHUNK], patch).tokens.to(device)
        text, mask = pipe.encode_text(captions[lo:lo + HELDOUT_CHUNK])

        def model_fn(x, t, packed=packed, text=text, mask=mask):
            return pipe.dit(packed.with_tokens(x), t, text, mask)

        denoiser = diffusion.build_denoiser(pipe.diffusion, model_fn)
        for k in range(spec.times):
            t = torch.full((packed.num_tokens,), (k + 0.5) / spec.times, device=device)
            loss = denoiser.loss(packed.tokens, t, eps, sample_ids=packed.sample_ids,
                                 num_samples=packed.num_samples)
            totals[k] += float(loss) * packed.num_samples
    return [total / len(latents) for total in totals]


def critic_metrics(pipe: Any, out: Path, clips: int, seed: int) -> dict:
    """Pass rates of the critic on `clips` generated clips (`zoetrope.eval`, report in `out`)."""
    from .eval import run_eval

    def generate(prompts: list[str], seed: int, size: tuple[int, int, int]):
        frames, height, width = size
        return pipe(prompts, num_frames=frames, height=height, width=width, seed=seed,
                    progress=False).frames

    totals = run_eval(generate, out, clips=clips, seed=seed, sizes=[pipe.default_size],
                      progress=False)["totals"]
    return {"pass_rate": totals["pass_rate"],
            "followed_and_intact_rate": totals["followed_and_intact_rate"]}


def describe(run: Run, recipe: Recipe) -> dict:
    """What a run is: its name, size, loop settings and overrides."""
    cfg = recipe.train.dit
    return {"name": run.name, "size": run.size, "steps": cfg.steps, "lr": cfg.lr,
            "batch_size": cfg.batch_size, "overrides": run.overrides}


def measure(run: Run, recipe: Recipe, final: Path, heldout: tuple, grid: Grid) -> dict:
    """Parameters, training FLOPs, held-out loss (and critic metrics) of a trained run."""
    from .dit import count_params, forward_flops
    from .pipeline import TextToVideoPipeline
    pipe = TextToVideoPipeline.from_pretrained(final)
    cfg = recipe.train.dit
    shapes = [pipe.vae.latent_shape(*s) for s in cfg.sizes or recipe.data.sizes]
    macs = sum(forward_flops(pipe.dit.config, s, recipe.text.max_length) for s in shapes)
    macs /= len(shapes)  # samples draw their size uniformly from the stage's sizes
    by_t = heldout_loss(pipe, *heldout, grid.heldout)
    result = {**describe(run, recipe), "params": count_params(pipe.dit),
              "forward_flops_per_sample": macs,
              "train_flops": 3 * macs * cfg.batch_size * cfg.steps,
              "heldout_loss": sum(by_t) / len(by_t), "heldout_loss_by_t": by_t}
    if grid.critic.clips:
        critic = critic_metrics(pipe, final.parent / "critic", grid.critic.clips, grid.heldout.seed)
        result.update(critic=critic, critic_fail_rate=1 - critic["pass_rate"])
    return result


# --------------------------------------------------------------------------------------------
# Running the grid
# --------------------------------------------------------------------------------------------


def _add_time(path: Path, seconds: float) -> float:
    """Add `seconds` to the wall time kept in `path`; returns the total."""
    total = seconds + (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0)
    atomic_write_text(path, json.dumps({"seconds": total}))
    return total


def run_one(run: Run, recipe: Recipe, out: Path, heldout: tuple | None, grid: Grid,
            progress: bool) -> dict:
    """Train (or resume) one run and measure it; a finished run's result is read back."""
    from .train import setup_distributed, train
    from .train.distributed import barrier, from_main
    run_dir, d = out / "runs" / run.name, setup_distributed()
    done = run_dir / "result.json"
    if done.is_file():
        if d.main:
            print(f"sweep: {run.name}: done before, skipped", flush=True)
        return json.loads(done.read_text())
    start = time.perf_counter()
    try:
        final = train(recipe, run_dir, progress)
    finally:
        seconds = _add_time(run_dir / "wall_time.json", time.perf_counter() - start) \
            if d.main else 0.0
    result, failure = None, None
    if d.main:
        try:  # rank 0 measures alone; a failure is raised on every rank, after the barrier
            result = {**measure(run, recipe, final, heldout, grid), "wall_time_s": seconds}
        except Exception as e:
            failure = e
    barrier()
    if from_main(failure is not None):
        raise failure or RuntimeError(f"measuring {run.name} failed on rank 0")
    if d.main:
        atomic_write_text(done, json.dumps(result, indent=2) + "\n")
        (run_dir / "error.txt").unlink(missing_ok=True)
        print(f"sweep: {run.name}: held-out loss {result['heldout_loss']:.4f}, "
              f"{result['train_flops']:.3g} FLOPs, {seconds:.1f} s", flush=True)
    return from_main(result)


def attempt(run: Run, recipe: Recipe, out: Path, heldout: tuple | None, grid: Grid,
            progress: bool) -> dict:
    """`run_one`, with a failure reported (one line, traceback in NAME/error.txt), not raised;
    a signal (Interrupted) still stops the sweep."""
    from .train import Interrupted
    try:
        return run_one(run, recipe, out, heldout, grid, progress)
    except Interrupted:
        raise
    except Exception as e:
        lines = str(e).strip().splitlines()
        message = (lines[0] if lines else type(e).__name__) if isinstance(e, UserError) \
            else f"{type(e).__name__}: {e}"
        path = out / "runs" / run.name / "error.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, traceback.format_exc())
        print(f"sweep: {run.name}: failed: {message}", file=sys.stderr, flush=True)
        return {**describe(run, recipe), "error": message}


def report(recipe_path: str | Path, grid_path: str | Path, overrides: Sequence[str], grid: Grid,
           results: list[dict]) -> dict:
    """Everything scaling.json holds: the runs, the failures and the fits."""
    done = [r for r in results if "error" not in r]
    fits = {"heldout_loss": scaling.summarize(done)}
    if grid.critic.clips:
        fits["critic_fail_rate"] = scaling.summarize(done, "critic_fail_rate")
    return {"recipe": Path(recipe_path).name, "grid": Path(grid_path).name,
            "overrides": list(overrides), "flops_note": FLOPS_NOTE,
            "heldout": dataclasses.asdict(grid.heldout), "critic": dataclasses.asdict(grid.critic),
            "runs": results, "failed": [r["name"] for r in results if "error" in r], "fits": fits}


def sweep(recipe_path: str | Path, grid_path: str | Path, out: str | Path,
          overrides: Sequence[str] = (), progress: bool = True) -> dict:
    """Check every run, then train and measure each (resuming), then write the reports."""
    from .train import run_lock, setup_distributed, train
    out = Path(out).resolve()
    grid = load_grid(grid_path, load_recipe(recipe_path, list(overrides)).dit)
    plan_ = plan(recipe_path, overrides, grid, out)
    d = setup_distributed()
    check_memory(plan_, d.device, d.world)
    with run_lock(out, d):
        if plan_.vae is not None:
            train(plan_.vae, out / "vae", progress)
        base = plan_.runs[0][1]
        heldout = heldout_set(base, grid.heldout, plan_.vae_path) if d.main else None
        results = [attempt(run, recipe, out, heldout, grid, progress)
                   for run, recipe in plan_.runs]
        result = report(recipe_path, grid_path, overrides, grid, results)
        if d.main:
            scaling.write_reports(out, result)
    return result
