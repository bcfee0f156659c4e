"""Quality against the number of DiT evaluations: the teacher's samplers and a few-step student.

Each setting generates the same balanced prompts (`zoetrope.eval.build_prompts`, 84 = every
colour x shape x direction once per seed) at the model's default size and is scored by the
world-consistency critic: "followed and intact" (every attribute right, no object vanishing,
duplicating, morphing or teleporting) and "pass" (no error of any kind). Evaluations are the DiT
forward calls counted by a hook, per clip; guided steps run the conditional and unconditional
halves in one call of twice the batch, counted as two.

    python benchmarks/steps_quality.py                               # bundled teacher
    python benchmarks/steps_quality.py --student RUN_DIR/final --seeds 8 9 --json out.json

Settings: "euler N" (the ODE alone, N steps, the teacher's guidance), "euler N + restarts" (the
teacher's own restart rounds), and for a student "student N". DDIM needs a DDPM teacher; the
bundled one is a flow model, so DDIM rows appear only for DDPM models.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from zoetrope.eval import run_eval
from zoetrope.hardware import cpu_name
from zoetrope.pipeline import BUNDLED_MODEL, TextToVideoPipeline


def evaluate(pipe: TextToVideoPipeline, clips: int, seeds: list[int], **kw) -> dict:
    """Followed-and-intact and pass counts over `seeds`, and DiT evaluations per clip."""
    calls = []

    def count(module, args, output):
        calls.append(output.shape[0])  # tokens of the call; the batch is counted below

    hook = pipe.dit.register_forward_hook(count)
    totals = {"clips": 0, "followed_and_intact": 0, "passed": 0}
    per_clip = []
    try:
        for seed in seeds:
            def generate(prompts, s, size):
                before = len(calls)
                frames, h, w = size
                out = pipe(prompts, num_frames=frames, height=h, width=w, seed=s, progress=False,
                           **kw).frames
                tokens_per_clip = pipe.latent_shape(size)
                per = (tokens_per_clip[1] * tokens_per_clip[2] * tokens_per_clip[3]
                       // (pipe.dit.config.patch_size[1] * pipe.dit.config.patch_size[2]))
                per_clip.append(sum(calls[before:]) / per / len(prompts))
                return out

            with tempfile.TemporaryDirectory() as tmp:
                t = run_eval(generate, tmp, clips=clips, seed=seed, progress=False)["totals"]
            for k in totals:
                totals[k] += t[k]
    finally:
        hook.remove()
    totals["evaluations"] = sum(per_clip) / len(per_clip)
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="teacher pipeline directory (default: the bundled one)")
    parser.add_argument("--student", help="a distilled student's pipeline directory")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 20])
    parser.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--teacher-default", action=argparse.BooleanOptionalAction, default=True,
                        help="also the teacher's own settings (its restarts)")
    parser.add_argument("--clips", type=int, default=84)
    parser.add_argument("--seeds", type=int, nargs="+", default=[8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    teacher = TextToVideoPipeline.from_pretrained(args.model or BUNDLED_MODEL)
    settings = [(f"euler {n}", teacher, {"num_inference_steps": n, "restarts": 0})
                for n in args.steps]
    if teacher.diffusion.restarts and args.teacher_default:
        n = teacher.diffusion.num_inference_steps
        settings.append((f"euler {n} + {teacher.diffusion.restarts} restarts", teacher, {}))
    if args.student:
        student = TextToVideoPipeline.from_pretrained(args.student)
        settings += [(f"student {n}", student, {"num_inference_steps": n})
                     for n in args.student_steps]
    cpu = cpu_name()
    print(f"{args.clips} clips x seeds {args.seeds} per setting, {cpu}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'setting':>26} {'DiT evals':>10} {'followed+intact':>16} {'pass':>8}")
    rows = []
    for name, pipe, kw in settings:
        r = evaluate(pipe, args.clips, args.seeds, **kw)
        r["setting"] = name
        rows.append(r)
        n = r["clips"]
        print(f"{name:>26} {r['evaluations']:>10.1f} "
              f"{100 * r['followed_and_intact'] / n:>15.1f}% {100 * r['passed'] / n:>7.1f}%",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "seeds": args.seeds, "clips": args.clips, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
