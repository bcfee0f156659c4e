"""The distill task: a few-step student from a teacher pipeline, by rectified-flow reflow.

Method (Liu, Gong and Liu, "Flow Straight and Fast", arXiv 2209.03003, section 2.2; used for
text-to-image by InstaFlow, arXiv 2309.06380): the teacher's sampler is a map from noise to
latents. Draw noise z, run the teacher (its ODE: Euler, its guidance, no restarts, whose fresh
noise would break the map) to its clean latent x, and train a student with the flow-matching
loss on the straight line between the pair, x_t = (1 - t) x + t z, v = z - x. The teacher's
paths cross and curve; the pairs' straight lines cross far less, so the student's ODE is nearly
straight and a few Euler steps follow it. Guidance is distilled too: pairs are made with the
teacher's classifier-free guidance, and the student samples unguided (one DiT call per step).

Pairs: `train.distill.pairs` of them, made once into RUN_DIR/pairs by rank 0, `pair_batch` per
file (pairs-NNNNN.safetensors, written atomically; a rerun makes only the missing ones). Pair k
has the prompt and size of the dataset's sample k, and its noise comes from the generator of
its file, so the pairs do not depend on how often the run was interrupted. The student starts
as a copy of the teacher's DiT (and its text encoder, frozen), and each sample's
time comes from its own generator as in the DiT task. Export: a pipeline directory like any
other, whose `num_inference_steps` is `student_steps`, guidance 1 and no restarts, so
`zoetrope generate --model DIR` samples in the student's steps by default.

`method = "piecewise"` trains for the student's own grid instead: piecewise rectified flow
(PeRFlow, Yan et al., arXiv 2405.07510) with one window per student step, taken at the window's
start, which is Luhman and Luhman's one-step distillation (arXiv 2101.02388) done step by step.
The pair files also hold the teacher's states at the student's grid times (the teacher's grid
contains them when its steps are a multiple of the student's: the shift maps both uniform grids
the same way). A sample draws one window k; the student, given the teacher's state at t_k, learns
the velocity of one Euler step to the teacher's state at t_{k+1}. Its Euler steps then land on the
teacher's path at every grid time, where reflow only makes the whole path nearly straight.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from .. import diffusion
from ..config import ConfigError, DistillStageConfig, Recipe
from ..data.factory import build_dataset
from ..errors import atomic_write
from ..patches import Packed, pack, unpack
from .batches import Item, sample_generator
from .distributed import Dist, barrier


class Student(nn.Module):
    """The student: a DiT and the text encoder it reads, called as `DiTTrainee` is."""

    def __init__(self, dit: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder
        self.dit = dit

    def forward(self, packed: Packed, t: Tensor, prompts: list[str]) -> Tensor:
        text, mask = self.text_encoder(prompts)
        return self.dit(packed, t, text.to(packed.tokens.device), mask.to(packed.tokens.device))


def _pair_file(root: Path, chunk: int) -> Path:
    return root / f"pairs-{chunk:05d}.safetensors"


@torch.no_grad()
def make_pairs(teacher, dataset, count: int, per_file: int, seed: int, steps: int, root: Path,
               progress: bool = False, student_steps: int = 1) -> None:
    """Write the missing pair files of samples 0..count-1 under `root` (see the module doc).

    With `steps` a multiple of `student_steps` > 1, each pair also keeps the teacher's states at
    the student's inner grid times ("mid_i", (student_steps - 1, C, T, H, W), high t first)."""
    from ..conditioning import Sampling

    root.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(teacher.diffusion, restarts=0)
    scale = teacher.diffusion.guidance_scale
    files = math.ceil(count / per_file)
    # the teacher's states are kept after steps stride, 2 stride, ... (none for a 1-step student)
    stride = steps // student_steps if student_steps > 1 and steps % student_steps == 0 else 0
    todo = [c for c in range(files) if not _pair_file(root, c).is_file()]
    for chunk in tqdm(todo, desc="teacher pairs", unit="file", disable=not progress):
        indices = range(chunk * per_file, min(count, (chunk + 1) * per_file))
        samples = [dataset.sample(i) for i in indices]
        captions = [caption for _, caption in samples]
        shapes = [teacher.latent_shape(tuple(frames.shape[:3])) for frames, _ in samples]
        g = torch.Generator().manual_seed((seed << 40) + (1 << 39) + chunk)
        state = g.get_state()
        noise, _ = teacher.prepare_latents(shapes, g)  # what `sample` draws next, drawn twice
        g.set_state(state)
        negatives = [""] * len(captions) if scale != 1 else []
        text, mask = teacher.encode_text(captions + negatives)
        states: list[Tensor] = []

        def keep_state(info) -> None:
            if stride and info.step % stride == 0 and info.step < steps:
                states.append(info.x.float())

        x0 = teacher.sample(shapes, Sampling(text, mask, g, steps, scale, config, False,
                                             keep_state))
        tensors = {}
        mids = [unpack(x, noise) for x in states]
        for i, (x, z) in enumerate(zip(unpack(x0.tokens, x0), unpack(noise.tokens, noise))):
            tensors[f"x0_{i}"], tensors[f"noise_{i}"] = x.float().cpu().contiguous(), \
                z.float().cpu().contiguous()
            if mids:
                tensors[f"mid_{i}"] = torch.stack([m[i] for m in mids]).cpu().contiguous()
        meta = {"captions": json.dumps(captions), "indices": json.dumps(list(indices))}
        atomic_write(_pair_file(root, chunk), lambda tmp: save_file(tensors, tmp, metadata=meta))


class Pairs:
    """The pair files as a dataset: `sample(k) -> ((x0, noise, mid), caption)`, k modulo count;
    `mid` is the teacher's states at the student's inner grid times ((0, ...) when not kept)."""

    is_latent = True

    def __init__(self, root: Path, count: int, per_file: int) -> None:
        self.root, self.count, self.per_file = root, count, per_file
        missing = [c for c in range(math.ceil(count / per_file))
                   if not _pair_file(root, c).is_file()]
        if missing:
            raise ConfigError(f"{root} lacks {len(missing)} pair files; rerun the same command "
                              f"to make them")

    def sample(self, index: int) -> tuple[tuple[Tensor, Tensor, Tensor], str]:
        k = index % self.count
        chunk, i = divmod(k, self.per_file)
        with safe_open(_pair_file(self.root, chunk), "pt") as f:
            captions = json.loads(f.metadata()["captions"])
            x0 = f.get_tensor(f"x0_{i}")
            mid = (f.get_tensor(f"mid_{i}") if f"mid_{i}" in f.keys()
                   else x0.new_zeros(0, *x0.shape))
            return (x0, f.get_tensor(f"noise_{i}"), mid), captions[i]


@dataclass
class DistillTask:
    """Pairs, loss and export of the distill stage."""

    recipe: Recipe
    cfg: DistillStageConfig
    teacher: Any  # TextToVideoPipeline: its VAE, text encoder and settings go into the export
    dataset: Pairs
    module: Student | None  # what the optimizer updates (set by `setup`)
    name: str = "distill"
    latents: bool = True

    @classmethod
    def setup(cls, recipe: Recipe, run_dir: Path, d: Dist, progress: bool = False
              ) -> DistillTask:
        """Load the teacher, make the missing pairs (rank 0), copy the teacher into the student."""
        from ..pipeline import TextToVideoPipeline

        cfg = recipe.train.distill
        if not cfg.teacher:
            raise ConfigError("train.distill.teacher is required: the pipeline directory to "
                              "distill")
        teacher = TextToVideoPipeline.from_pretrained(cfg.teacher).to(d.device)
        if teacher.diffusion.objective != "flow":
            raise ConfigError("train.distill distils flow teachers (reflow); this teacher's "
                              f"objective is {teacher.diffusion.objective!r}")
        if teacher.dit.config.patch_size[0] != 1:
            raise ConfigError("train.distill needs a teacher DiT with temporal patch size 1")
        sizes = cfg.sizes or recipe.data.sizes
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, sizes=sizes))
        root = run_dir / "pairs"
        steps = cfg.teacher_steps or teacher.diffusion.num_inference_steps
        if cfg.method == "piecewise" and steps % cfg.student_steps:
            raise ConfigError(f"train.distill.method = 'piecewise' needs the teacher's steps "
                              f"({steps}) to be a multiple of student_steps "
                              f"({cfg.student_steps}); set train.distill.teacher_steps")
        if d.main:
            make_pairs(teacher, build_dataset(recipe.data, cfg.seed), cfg.pairs, cfg.pair_batch,
                       cfg.seed, steps, root, progress, cfg.student_steps)
        barrier()
        task = cls(recipe, cfg, teacher, Pairs(root, cfg.pairs, cfg.pair_batch), None)
        task.module = task.fresh().train().to(d.device)
        return task

    def blocks(self) -> list[nn.Module]:
        return list(self.module.dit.blocks)

    def tokens(self, sample: tuple[Tensor, Tensor]) -> int:
        _, t, h, w = sample[0].shape
        pt, ph, pw = self.module.dit.config.patch_size
        return (t // pt) * (h // ph) * (w // pw)

    def loss(self, model: nn.Module, items: list[Item], device: torch.device) -> tuple[Tensor, int]:
        """Flow matching on the straight line from each pair's noise to its teacher latent
        (reflow), or from the teacher's state at a student grid time to the next (piecewise)."""
        patch = self.module.dit.config.patch_size
        d, starts, ends, ts = self.teacher.diffusion, [], [], []
        for index, ((x0, noise, mid), _) in items:
            g = sample_generator(self.cfg.seed, index)
            n = self.tokens((x0,))
            shift = diffusion.resolution_shift(n, d.shift_base_tokens)
            if self.cfg.method == "reflow":
                starts.append(x0)
                ends.append(noise)
                ts.append(diffusion.sample_time_logit_normal(1, g, d.logit_mean, d.logit_std,
                                                             shift))
                continue
            # window k of the student's grid: one Euler step from state k to state k + 1
            states = [noise, *mid, x0]
            if len(states) != self.cfg.student_steps + 1:
                raise ConfigError(f"pair {index} holds {len(mid)} teacher states, not "
                                  f"student_steps - 1 = {self.cfg.student_steps - 1}: pairs "
                                  f"made for reflow; distil piecewise into a new run directory")
            k = int(torch.randint(self.cfg.student_steps, (1,), generator=g))
            grid = diffusion.flow_grid(self.cfg.student_steps, shift=shift)
            t_k, t_next = float(grid[k]), float(grid[k + 1])
            v = (states[k + 1] - states[k]) / (t_next - t_k)
            # the clean and noise ends of the line through state k with velocity v, so that the
            # flow loss at t_k sees state k and targets v
            starts.append(states[k] - t_k * v)
            ends.append(states[k] + (1 - t_k) * v)
            ts.append(torch.tensor([t_k]))
        packed = pack([x.to(device, torch.float32) for x in starts], patch)
        noise = pack([z.to(device, torch.float32) for z in ends], patch).tokens
        t = torch.cat(ts).float().to(device)[packed.sample_ids]
        prompts = [caption for _, (_, caption) in items]

        def model_fn(x: Tensor, t_: Tensor) -> Tensor:
            return model(packed.with_tokens(x), t_, prompts)

        loss = diffusion.flow_loss(model_fn, packed.tokens, t, noise,
                                   sample_ids=packed.sample_ids, num_samples=packed.num_samples)
        return loss, packed.num_tokens

    def fresh(self) -> nn.Module:
        """A copy of the teacher: its DiT trainable, its text encoder frozen (the student reads
        the teacher's text embeddings)."""
        student = Student(copy.deepcopy(self.teacher.dit), copy.deepcopy(self.teacher.text_encoder))
        student.dit.requires_grad_(True)
        student.text_encoder.requires_grad_(False)
        return student

    def pipeline(self, module: Student):
        """The student as a pipeline: the teacher's VAE and sizes, few steps, no guidance."""
        from ..pipeline import TextToVideoPipeline

        t = self.teacher
        config = dataclasses.replace(t.diffusion, num_inference_steps=self.cfg.student_steps,
                                     guidance_scale=1.0, motion_guidance_scale=None, restarts=0)
        return TextToVideoPipeline(t.vae, module.dit, module.text_encoder, config,
                                   default_size=t.default_size, sizes=t.sizes, fps=t.fps)

    def export(self, module: nn.Module, out: Path) -> None:
        self.pipeline(module).save_pretrained(out)

    def preview(self, module: nn.Module, path: Path) -> None:
        """No previews: sample the exported student instead."""
