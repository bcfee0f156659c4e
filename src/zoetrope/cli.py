"""Command line: `zoetrope <command> ...`. Parses arguments and delegates; nothing else lives here.

Errors a user can cause (bad preset, missing file, impossible size, full disk...) end with one
line on stderr and exit status 2, never a traceback. Anything else is a bug in zoetrope and keeps
its traceback, so it can be reported and fixed rather than mistaken for bad input.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from typing import Callable, NoReturn, Sequence

from . import checks
from .checks import MAX_RESTARTS, MAX_STEPS, SEED_MAX
from .errors import UserError

# zoetrope.task_eval.TASKS, spelled out so that `zoetrope --help` imports no torch
EVAL_TASKS = ("animate", "extend-forward", "extend-backward", "long", "loop", "connect", "edit")
# task_eval.CONTINUATIONS
EVAL_CONTINUATIONS = ("model", "prompt", "empty", "undirected", "moving", "moving-start")
EVAL_SPLITS = ("in", "ood-slow", "ood-fast", "ood-small", "ood-large", "combo")  # task_eval.SPLITS


def _is_user_error(e: BaseException) -> bool:
    """Whether `e` is the user's to fix: a UserError, or an OS error about their path or disk.

    Only these OS errors: a missing, unreadable or mistyped path, or a full disk. Any other
    exception (a plain ValueError, KeyError, TypeError, ...) is a bug and must show its traceback.
    """
    path_errors = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    if isinstance(e, (UserError, *path_errors)):
        return True
    return isinstance(e, OSError) and e.errno == errno.ENOSPC


def cmd_info(args: argparse.Namespace) -> None:
    """Parameter count and forward GFLOPs (multiply-adds, as in the DiT paper) of a preset."""
    import torch

    from .config import PRESET_INPUTS, dit_preset, to_dict
    from .dit import DiT, count_params, forward_flops

    config = dit_preset(args.preset)
    with torch.device("meta"):
        params = count_params(DiT(config))
    shape = PRESET_INPUTS[args.preset]
    text_len = 77 if config.text_dim else 0  # a typical prompt length (CLIP's context)
    gflops = forward_flops(config, shape, text_len) / 1e9
    tokens = (shape[1] // config.patch_size[0]) * (shape[2] // config.patch_size[1]) * (shape[3] // config.patch_size[2])
    if args.json:
        print(json.dumps({"preset": args.preset, "params": params, "gflops": round(gflops, 4),
                          "latent_shape": list(shape), "tokens": tokens, "text_tokens": text_len,
                          "config": to_dict(config)}))
        return
    print(f"{args.preset}: {params / 1e6:.1f}M parameters, {gflops:.2f} GFLOPs per forward "
          f"(multiply-adds) on a latent {tuple(shape)} = {tokens} tokens"
          + (f" with {text_len} text tokens" if text_len else ""))


def _model_dir(args: argparse.Namespace):
    """--model, or the bundled model; a directory without pipeline.json is a one-line error."""
    from pathlib import Path

    from .pipeline import BUNDLED_MODEL

    model = Path(args.model) if args.model else BUNDLED_MODEL
    if not (model / "pipeline.json").is_file():
        raise FileNotFoundError(f"no pipeline.json in {model}; pass --model DIR with a pipeline "
                                f"directory")
    return model


def cmd_generate(args: argparse.Namespace) -> None:
    """Generate a video from a prompt with a pipeline directory (default: the bundled model)."""
    import re
    from pathlib import Path

    from .data.video import SUPPORTED_WRITE
    from .hardware import resolve_device
    from .pipeline import BUNDLED_MODEL, FAST_MODEL, TextToVideoPipeline

    if args.class_label:
        return cmd_generate_class(args)
    if args.prompt is None or not args.prompt.strip():
        raise UserError("the prompt is empty; describe the video to generate")
    slug = "-".join(re.findall(r"[a-z0-9]+", args.prompt.lower()))[:60].strip("-") or "video"
    out = Path(args.output) if args.output else Path("outputs") / f"{slug}.mp4"
    if out.suffix.lower() not in SUPPORTED_WRITE:  # checked before any work is done
        raise UserError(f"cannot write {str(out)!r}: unsupported extension "
                        f"{out.suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_WRITE)}")
    height = width = None
    if args.size:
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", args.size)
        if not match:
            raise UserError(f"--size must look like HEIGHTxWIDTH (e.g. 64x64), got {args.size!r}")
        height, width = int(match[1]), int(match[2])
    if args.fast and args.model:
        raise UserError("--fast picks the bundled few-step student; it cannot be combined with "
                        "--model (a student's directory samples in its own steps already)")
    model = Path(args.model) if args.model else FAST_MODEL if args.fast else BUNDLED_MODEL
    if not args.model and not (model / "pipeline.json").is_file():
        raise FileNotFoundError(f"the bundled {'student' if args.fast else 'model'} is not "
                                f"installed (looked in {model}); pass --model DIR with a "
                                f"pipeline directory")
    device = resolve_device(args.device, "--device")
    pipe = TextToVideoPipeline.from_pretrained(model).to(device)
    video = pipe(args.prompt, negative_prompt=args.negative, num_frames=args.frames,
                 height=height, width=width, num_inference_steps=args.steps,
                 guidance_scale=args.cfg, seed=args.seed, restarts=args.restarts,
                 force=args.force, task=_task(args))
    path = video.save(out)[0]
    frames, h, w = video.frames[0].shape[:3]
    print(f"wrote {path} ({frames} frames, {h}x{w}, {video.fps:g} fps, seed {video.seed})")


def _task(args: argparse.Namespace):
    """The `conditioning.Task` the flags ask for (conflicts refused before a file is read), or
    None for text alone."""
    from .conditioning import Task
    from .data.video import read_video

    task = Task(image=args.image, video=args.video, extend=args.extend, loop=args.loop,
                connect=args.connect, strength=args.strength, crop=args.crop,
                overlap=args.overlap, continuation_prompt=args.continuation_prompt,
                loop_tries=args.loop_tries, trim=args.trim)
    if args.follow_motion:
        from .critic import moving_now
        if args.continuation_prompt is not None:
            raise UserError("--follow-motion and --continuation-prompt both set the prompt of "
                            "later windows: give one")
        task.continuation_prompt = moving_now(args.prompt)
    if task == Task():
        return None
    task.check()  # the flags alone, on the file names
    read = lambda path: read_video(path)[0]  # noqa: E731
    task.image = None if args.image is None else read(args.image)[0]
    task.video = None if args.video is None else read(args.video)
    task.connect = None if args.connect is None else (read(args.connect[0]), read(args.connect[1]))
    return task


def cmd_generate_class(args: argparse.Namespace) -> None:
    """Generate an image grid from class labels with a class-conditional DiT (a converted one)."""
    from pathlib import Path

    from .class_pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, ClassToImagePipeline
    from .hardware import resolve_device

    if not args.model or not args.vae:
        raise UserError("--class-label needs --model (a DiT directory from `zoetrope convert dit`) "
                        "and --vae (a diffusers AutoencoderKL directory)")
    out = Path(args.output or "outputs/classes.png")
    if out.suffix.lower() != ".png":
        raise UserError(f"an image grid is written as .png, not {str(out)!r}")
    names = _read_class_names(args.class_names) if args.class_names else {}
    labels = [_class_label(text, names) for text in args.class_label]
    device = resolve_device(args.device, "--device")
    pipe = ClassToImagePipeline.from_pretrained(args.model, args.vae).to(device)
    channels = "model" if args.guided_channels is None else (
        None if args.guided_channels == "all" else _positive_int(args.guided_channels))
    images = pipe(labels, num_inference_steps=args.steps or DEFAULT_STEPS,
                  guidance_scale=DEFAULT_GUIDANCE if args.cfg is None else args.cfg,
                  sampler=args.sampler or "ddpm", seed=args.seed, guided_channels=channels)
    path = images.save_grid(out)
    print(f"wrote {path} ({len(labels)} images of classes {labels}, seed {images.seed})")


def _read_class_names(path: str) -> dict[str, int]:
    """A class-names file (line i names class i) -> {lowercased name: i}."""
    from pathlib import Path

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {name.strip().lower(): i for i, line in enumerate(lines)
            for name in line.split(",") if name.strip()}


def _class_label(text: str, names: dict[str, int]) -> int:
    """A class number, or a name from --class-names."""
    if text.strip().isdigit():
        return int(text)
    if text.strip().lower() in names:
        return names[text.strip().lower()]
    hint = "not in --class-names" if names else "give --class-names FILE to use names"
    raise UserError(f"--class-label {text!r} is not a class number ({hint})")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"--guided-channels must be a positive number or 'all', got {text!r}")
    return int(text)


def cmd_convert(args: argparse.Namespace) -> None:
    """Convert an official DiT checkpoint into a zoetrope DiT directory."""
    from .convert import convert_dit

    config = convert_dit(args.checkpoint, args.out, num_heads=args.num_heads)
    print(f"wrote {args.out}: DiT depth {config.depth}, width {config.dim}, {config.num_heads} "
          f"heads, patch {config.patch_size[1]}, learned sigma {config.learn_sigma}")


def cmd_critique(args: argparse.Namespace) -> int:
    """Check a clip against its prompt and the world's physics; exit 1 when it fails."""
    from .critic import critique_file

    verdict = critique_file(args.video, args.prompt)
    print(json.dumps(verdict.to_dict(), indent=2) if args.json else verdict.summary())
    return 0 if verdict.passed else 1


def cmd_eval(args: argparse.Namespace) -> None:
    """Generate clips over the whole vocabulary, critique each, write a report directory."""
    from .eval import run_eval
    from .hardware import resolve_device
    from .pipeline import TextToVideoPipeline

    model = _model_dir(args)
    sizes = [_parse_size(s) for s in args.size] if args.size else None
    pipe = TextToVideoPipeline.from_pretrained(model).to(resolve_device("auto"))
    sizes = sizes or [tuple(pipe.default_size)]

    def generate(prompts: list[str], seed: int, size: tuple[int, int, int]):
        frames, height, width = size
        out = pipe(prompts, num_frames=frames, height=height, width=width, seed=seed,
                   num_inference_steps=args.steps, guidance_scale=args.cfg, progress=False,
                   restarts=args.restarts)
        return out.frames

    if args.task:
        return _eval_task(args, pipe, sizes)
    if args.split or args.holdout or args.frames or args.strength is not None \
            or args.overlap is not None or args.continuation is not None or args.loop_tries != 1 \
            or args.trim:
        raise UserError("--split, --holdout, --frames, --strength, --overlap, --continuation, "
                        "--loop-tries and --trim set what a --task renders: give a --task")
    report = run_eval(generate, args.out, clips=args.clips, seed=args.seed, sizes=sizes,
                      vocabulary=args.vocabulary, batch_size=args.batch_size)
    totals = report["totals"]
    print(json.dumps(totals, indent=2) if args.json else
          f"{totals['pass_rate'] * 100:.1f}% of {args.clips} clips pass; "
          f"{totals['followed_and_intact_rate'] * 100:.1f}% follow the prompt with every object "
          f"intact; report in {args.out}")


def _eval_task(args: argparse.Namespace, pipe, sizes: list) -> None:
    """`zoetrope eval --task NAME`: given frames cut from renders, judged (`task_eval`)."""
    from .conditioning import Task, roundtrip
    from .task_eval import merge_tasks, run_splits, run_task_eval

    if len(sizes) != 1 or args.vocabulary != "shapes":
        raise UserError("--task takes one --size (the window) and the shapes vocabulary")
    if args.frames is not None and args.task not in ("long", "loop"):
        raise UserError("--frames sets the length of a long clip or a loop: use it with --task "
                        "long or loop")
    if args.strength is not None and args.task != "edit":
        raise UserError("--strength sets an edit's strength: use it with --task edit")
    if (args.overlap is not None or args.continuation is not None or args.trim) \
            and args.task not in ("long", "loop"):
        raise UserError("--overlap, --continuation and --trim set how windows continue: use them "
                        "with --task long or loop")

    def generate(cases, seed: int):
        out = pipe([c.prompt for c in cases], num_frames=cases[0].frames, height=sizes[0][1],
                   width=sizes[0][2], seed=seed, num_inference_steps=args.steps,
                   guidance_scale=args.cfg, progress=False, restarts=args.restarts,
                   task=merge_tasks(cases))
        return out.frames

    kw = dict(clips=args.clips, seed=args.seed, size=sizes[0], frames=args.frames,
              overlap=pipe.diffusion.window_overlap if args.overlap is None else args.overlap,
              continuation=args.continuation or "model", loop_tries=args.loop_tries,
              trim=args.trim,
              batch_size=args.batch_size, holdout=args.holdout or (),
              strength=0.6 if args.strength is None else args.strength,
              roundtrip=lambda clip: roundtrip(pipe, clip[None])[0])
    reports = (run_splits(args.task, generate, args.out, list(dict.fromkeys(args.split)), **kw)
               if args.split else {"in": run_task_eval(args.task, generate, args.out, **kw)})
    totals = {name: r["totals"] for name, r in reports.items()}
    if args.json:
        print(json.dumps(totals if args.split else totals["in"], indent=2))
        return
    for name, t in totals.items():
        print(f"{args.task} ({name}): {t['pass_rate'] * 100:.1f}% of {args.clips} clips pass ("
              + ", ".join(f"{k} {v}" for k, v in t["checks"].items()) + ")")
    print(f"report in {args.out}" + (" (splits.md: the splits side by side)" if args.split
                                      else ""))


def cmd_train(args: argparse.Namespace) -> int:
    """Train what a recipe names into --out; rerunning the same command resumes."""
    from .config import load_recipe
    from .train import Interrupted, train

    recipe = load_recipe(args.recipe, args.overrides)
    try:
        final = train(recipe, args.out, progress=not args.quiet)
    except Interrupted as e:
        print(f"zoetrope train: {e}", file=sys.stderr)
        return 128 + int(e.signum)
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"trained model written to {final}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train a grid of runs, measure each, fit the scaling law; rerunning resumes."""
    from .sweep import sweep
    from .train import Interrupted

    try:
        report = sweep(args.recipe, args.grid, args.out, args.overrides, progress=not args.quiet)
    except Interrupted as e:
        print(f"zoetrope sweep: {e}", file=sys.stderr)
        return 128 + int(e.signum)
    import torch.distributed as dist
    fit = report["fits"]["heldout_loss"]["fit"]
    done = len(report["runs"]) - len(report["failed"])
    if not dist.is_initialized() or dist.get_rank() == 0:  # one summary, not one per process
        print(f"{done} of {len(report['runs'])} runs done"
              + (f", fitted exponent b = {fit['b']:.3f}" if fit else "")
              + f"; reports in {args.out}/scaling.md")
    return 1 if report["failed"] else 0


def _parse_size(text: str) -> tuple[int, int, int]:
    """'FRAMESxHEIGHTxWIDTH' (e.g. 17x64x64) -> (frames, height, width)."""
    import re
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UserError(f"--size must look like FRAMESxHEIGHTxWIDTH (e.g. 17x64x64), got {text!r}")
    return int(match[1]), int(match[2]), int(match[3])


def cmd_encode(args: argparse.Namespace) -> None:
    """Encode a dataset through a frozen VAE into a latent cache; rerunning continues it."""
    from pathlib import Path

    from .config import DataConfig
    from .data.cache import encode_dataset
    from .data.factory import build_dataset
    from .hardware import resolve_device
    from .train.dit_task import load_frozen_vae

    sizes = [_parse_size(s) for s in args.size or ["17x64x64"]]
    if args.count is not None and args.count < 1:
        raise UserError(f"--count must be at least 1, got {args.count}")
    if args.fps is not None and args.fps <= 0:
        raise UserError(f"--fps must be > 0, got {args.fps}")
    if not Path(args.vae).is_dir():
        raise FileNotFoundError(f"--vae {args.vae!r} is not a directory (a trained VAE, e.g. "
                                f"RUN_DIR/final/vae)")
    vae = load_frozen_vae(args.vae, resolve_device(args.device, "--device"))
    for size in sizes:  # fail before any work on a size the VAE cannot take
        try:
            vae.latent_shape(*size)
        except ValueError as e:
            raise UserError(f"--size {'x'.join(map(str, size))}: {e}") from None
    if args.dataset in ("shapes", "mnist"):
        if args.count is None:
            raise UserError(f"--count is required for {args.dataset} (the world is endless)")
        data = DataConfig(dataset=args.dataset, two_objects=args.two_objects)
    elif Path(args.dataset).is_dir():  # fps 0: each clip at its own rate
        data = DataConfig(dataset="folder", path=args.dataset, fps=args.fps or 0.0)
    else:
        raise FileNotFoundError(f"DATASET must be shapes, mnist or a caption folder; "
                                f"{args.dataset!r} is none of these")
    dataset = build_dataset(data, args.seed, sizes)
    count = args.count if args.count is not None else len(dataset)  # a folder: one epoch
    out = encode_dataset(dataset, vae, args.out, count, batch_size=args.batch_size,
                         dtype=args.dtype, progress=not args.quiet)
    print(f"latent cache of {count} samples written to {out}; train a DiT on it with "
          f"--data.dataset=cache --data.path={out}")


def cmd_serve(args: argparse.Namespace) -> None:
    """Serve the web studio for a pipeline directory until Ctrl-C."""
    from .hardware import resolve_device
    from .serve import serve

    model = _model_dir(args)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    device = resolve_device(args.device, "--device")
    try:
        serve(model, args.out, host=args.host, port=args.port, device=str(device))
    except KeyboardInterrupt:
        print("zoetrope serve: stopped", file=sys.stderr)


def _add_info(sub: argparse._SubParsersAction) -> None:
    """`zoetrope info PRESET`."""
    p = sub.add_parser("info", help="parameter count and GFLOPs of a DiT preset")
    p.add_argument("preset", help="e.g. DiT-XL/2, shapes-demo, sora-3B")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def _add_critique(sub: argparse._SubParsersAction) -> None:
    """`zoetrope critique VIDEO --prompt P`."""
    p = sub.add_parser("critique", help="check a clip against its prompt and the world's physics")
    p.add_argument("video", help="a video file (mp4, gif, webm, ...)")
    p.add_argument("--prompt", required=True, help='e.g. "a red circle moving right"')
    p.add_argument("--json", action="store_true", help="print the full verdict as JSON")
    p.set_defaults(func=cmd_critique)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    """`zoetrope eval`."""
    p = sub.add_parser("eval", help="generate over the whole vocabulary and critique every clip")
    p.add_argument("--model", help="pipeline directory (default: the bundled model)")
    p.add_argument("--clips", type=_integer(1), default=84,
                   help="number of clips (84 = every prompt once)")
    p.add_argument("--seed", type=_integer(0, SEED_MAX), default=0)
    p.add_argument("--size", action="append", help="FRAMESxHEIGHTxWIDTH, repeatable (default: the model's)")
    p.add_argument("--steps", type=_integer(1, MAX_STEPS), default=None,
                   help="denoising steps (default: the model's)")
    p.add_argument("--cfg", type=_real(), default=None,
                   help="guidance scale of every window (default: the model's, and with --task "
                   "its motion_guidance_scale where given frames move)")
    p.add_argument("--restarts", type=_integer(0, MAX_RESTARTS), default=None,
                   help="restart-sampling rounds after the ODE (default: the model's)")
    p.add_argument("--vocabulary", choices=["shapes", "mnist", "shapes-rich"], default="shapes",
                   help="shapes-rich: one or two objects, with or without the gray bar (a model "
                   "of configs/shapes-world2.toml)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--task", choices=EVAL_TASKS, help="prompt with given frames cut from renders "
                   "of the shapes world and judge what the task promises (zoetrope.task_eval)")
    p.add_argument("--split", action="append", choices=EVAL_SPLITS, help="--task: render the "
                   "given frames from this generalization split (repeatable: side by side in "
                   "OUT/splits.md; default: in distribution, straight into OUT)")
    p.add_argument("--holdout", action="append", metavar="'COLOR SHAPE DIRECTION'",
                   help="--task: a combination the model's recipe held out (data.holdout; "
                   "repeatable, * = any): the combo split asks only these, the others never")
    p.add_argument("--frames", type=_integer(2), help="--task long or loop: output frames "
                   "(default 257 for long; for loop, found where each clip comes back to its "
                   "start, one to four windows)")
    p.add_argument("--strength", type=_real(), help="--task edit: SDEdit strength (default 0.6)")
    p.add_argument("--loop-tries", type=_integer(1), default=1, metavar="K", help="--task loop "
                   "with no --frames: generate's --loop-tries (default 1)")
    p.add_argument("--trim", type=_integer(0), default=0, metavar="T", help="--task long or "
                   "loop: generate's --trim (default 0)")
    p.add_argument("--overlap", type=_integer(1), help="--task long or loop: latent frames a "
                   "window holds of the one before (default: the model's "
                   "diffusion.window_overlap)")
    p.add_argument("--continuation", choices=EVAL_CONTINUATIONS, help="--task long or loop: "
                   "what windows holding the output's own frames are prompted with: the model's "
                   "diffusion.continuation (default), the prompt, the empty prompt, the prompt "
                   "without its direction (generate's --continuation-prompt), or the prompt with "
                   "the direction the object moves in at the end of the frames held (generate's "
                   "--follow-motion) or at their start")
    p.add_argument("--out", default="outputs/eval", help="report directory")
    p.add_argument("--json", action="store_true", help="print the totals as JSON")
    p.set_defaults(func=cmd_eval)


def _add_train(sub: argparse._SubParsersAction) -> None:
    """`zoetrope train RECIPE --out DIR [--a.b=value ...]`."""
    p = sub.add_parser("train", help="train the stages (VAE, DiT or both) a TOML recipe lists",
                       description="Train from a recipe; extra --section.key=value arguments "
                                   "override the recipe (e.g. --train.dit.steps=100). An "
                                   "existing --out resumes.")
    p.add_argument("recipe", help="TOML recipe, e.g. configs/tiny.toml")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, final/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train, accepts_overrides=True)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    """`zoetrope sweep RECIPE --grid GRID.toml --out DIR [--a.b=value ...]`."""
    p = sub.add_parser("sweep", help="train a grid of runs and fit loss against compute",
                       description="Train every run of a grid (sizes x steps x lr x batch size) "
                                   "from a recipe, measure each on held-out clips, and write "
                                   "DIR/scaling.json, .md and .png. Rerunning resumes; extra "
                                   "--section.key=value arguments override the recipe.")
    p.add_argument("recipe", help="TOML recipe, e.g. configs/tiny.toml")
    p.add_argument("--grid", required=True, help="TOML grid, e.g. configs/tiny-grid.toml")
    p.add_argument("--out", required=True, help="sweep directory (runs/, scaling.*)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_sweep, accepts_overrides=True)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    """`zoetrope generate PROMPT`."""
    p = sub.add_parser("generate", help="generate a video from a text prompt")
    p.add_argument("prompt", nargs="?", help='what to show, e.g. "a red circle moving right"')
    p.add_argument("-o", "--output", help="output file: .mp4, .webm, .gif or .png "
                   "(default: outputs/<prompt>.mp4)")
    p.add_argument("--frames", type=_integer(1), help="number of frames, 1 + 4k (1 = an image)")
    p.add_argument("--size", help="HEIGHTxWIDTH in pixels, e.g. 64x64")
    p.add_argument("--steps", type=_integer(1, MAX_STEPS), help="denoising steps")
    p.add_argument("--cfg", type=_real(), help="classifier-free guidance scale of every window "
                   "(1 = off; default: the model's, and its motion_guidance_scale for windows "
                   "holding given frames in motion)")
    p.add_argument("--restarts", type=_integer(0, MAX_RESTARTS), help="restart-sampling rounds "
                   "after the ODE: each jumps back to a low noise level and denoises again "
                   "(default: the model's)")
    p.add_argument("--seed", type=_integer(0, SEED_MAX), help="random seed, 0 .. 2^63 - 1 "
                   "(default: fresh, printed)")
    p.add_argument("--force", action="store_true", help="generate even when the memory estimate "
                   "exceeds the memory available")
    p.add_argument("--image", metavar="FIRST.png", help="animate: the output starts with this image")
    p.add_argument("--video", metavar="CLIP.mp4", help="a clip to continue (--extend) or edit "
                   "(--strength)")
    p.add_argument("--extend", choices=["forward", "backward"], help="with --video: the output "
                   "holds the clip at its start (forward) or end (backward) and continues it")
    p.add_argument("--loop", action="store_true", help="the last frame leads into the first; "
                   "with no --frames its length is found where the clip comes back closest to "
                   "its start (one to four windows: 17..65 frames for the bundled model)")
    p.add_argument("--loop-tries", type=_integer(1), default=1, metavar="K", help="with --loop "
                   "and no --frames: make the clip forward K times (K times the work) and keep, "
                   "per prompt, the one that comes back closest to its start (default 1)")
    p.add_argument("--connect", nargs=2, metavar=("A.mp4", "B.mp4"), help="the output starts as "
                   "A and ends as B")
    p.add_argument("--strength", type=float, metavar="S", help="with --video: SDEdit, noise the "
                   "clip to t = S in (0, 1] and denoise it with the prompt")
    p.add_argument("--crop", action="store_true", help="centre-crop given frames of another "
                   "aspect ratio (else an error)")
    p.add_argument("--overlap", type=_integer(1), help="clips longer than the model's window: "
                   "latent frames each window holds of the one before (each is 4 frames; "
                   "default: the model's diffusion.window_overlap, 2 for the bundled model)")
    p.add_argument("--trim", type=_integer(0), default=0, metavar="T", help="clips longer than "
                   "the model's window: each window but the last leaves its last T latent frames "
                   "(4T frames) to the next, which makes them again (a window's last latent frame "
                   "is its least steady); about twice the windows at 1 (default 0)")
    p.add_argument("--continuation-prompt", metavar="TEXT", help="the prompt of windows that "
                   "hold the output's own frames (long clips, loops), guided as the prompt is; "
                   "'' gives them the empty prompt and no guidance (default: the model's "
                   "diffusion.continuation: the prompt, or for the bundled model "
                   "--follow-motion)")
    p.add_argument("--follow-motion", action="store_true", help="shapes-world prompts: prompt "
                   "each window that holds the output's own frames with the direction its "
                   "object moves in there, read by the critic (after a bounce at the right "
                   "wall, 'moving right' becomes 'moving left')")
    p.add_argument("--model", help="pipeline directory (default: the bundled shapes-demo model)")
    p.add_argument("--fast", action="store_true", help="the bundled model's few-step student "
                   "(4 DiT calls instead of 66; see docs/benchmarks.md for its quality)")
    p.add_argument("--negative", help="negative prompt (the unconditional branch of guidance)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.add_argument("--class-label", nargs="+", metavar="LABEL", help="class-conditional models "
                   "(a converted DiT): class numbers or names; writes a .png grid")
    p.add_argument("--class-names", metavar="FILE", help="text file naming class i on line i "
                   "(comma-separated synonyms allowed), for names in --class-label")
    p.add_argument("--vae", help="with --class-label: a diffusers AutoencoderKL directory")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], help="with --class-label (default ddpm)")
    p.add_argument("--guided-channels", metavar="N|all", help="with --class-label: guide only the "
                   "first N latent channels (default: the model's; 3 for converted DiT checkpoints)")
    p.set_defaults(func=cmd_generate)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    """`zoetrope convert dit CHECKPOINT --out DIR`."""
    p = sub.add_parser("convert", help="convert published weights into a zoetrope directory")
    p.add_argument("kind", choices=["dit"], help="dit: a facebookresearch/DiT checkpoint (.pt)")
    p.add_argument("checkpoint", help="e.g. DiT-XL-2-256x256.pt (read as tensors only)")
    p.add_argument("--out", required=True, help="directory to write (config.json + safetensors)")
    p.add_argument("--num-heads", type=int, help="attention heads, for sizes not in the paper")
    p.set_defaults(func=cmd_convert)


def _add_encode(sub: argparse._SubParsersAction) -> None:
    """`zoetrope encode DATASET --out DIR --vae VAE`."""
    p = sub.add_parser("encode", help="encode a dataset into a latent cache for DiT training",
                       description="Encode clips through a frozen VAE once; train with "
                                   "--data.dataset=cache. Rerunning continues an interrupted "
                                   "cache (or extends it to a larger --count).")
    p.add_argument("dataset", metavar="DATASET", help="shapes, mnist or a caption folder")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--vae", required=True, help="trained VAE directory (config.json + weights)")
    p.add_argument("--count", type=int, help="samples to encode (default for a folder: one "
                   "epoch; required for shapes and mnist)")
    p.add_argument("--size", action="extend", nargs="+", metavar="FxHxW",
                   help="clip sizes FRAMESxHEIGHTxWIDTH, one drawn per sample (default 17x64x64)")
    p.add_argument("--fps", type=float, help="frame rate to read folder clips at (default: each "
                   "clip's own)")
    p.add_argument("--seed", type=_integer(0, SEED_MAX), default=0,
                   help="dataset seed (use the training seed)")
    p.add_argument("--two-objects", action="store_true", help="shapes: sometimes two objects")
    p.add_argument("--batch-size", type=int, default=8, help="clips per VAE call (default 8)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="storage type of the latents (default float32)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    """`zoetrope serve [--model DIR] [--host H] [--port P] [--out DIR]`."""
    p = sub.add_parser("serve", help="a local web studio: prompt, generate, watch, critique")
    p.add_argument("--model", help="pipeline directory (default: the bundled shapes-demo model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: "
                   "this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--out", default="outputs/studio", help="folder for the clips it makes "
                   "(default outputs/studio); nothing is written elsewhere")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.set_defaults(func=cmd_serve)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other user error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; argparse names the flag in the error."""
    def parse(text: str) -> int:
        try:
            return checks.integer("the value", int(text), low, high)
        except ValueError as e:  # int("2.5"), or a UserError from the range check
            raise argparse.ArgumentTypeError(
                str(e) if isinstance(e, UserError) else f"expected an integer, got {text!r}")
    return parse


def _real() -> Callable[[str], float]:
    """An argparse type: a finite number (not nan or inf)."""
    def parse(text: str) -> float:
        try:
            return checks.real("the value", float(text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                str(e) if isinstance(e, UserError) else f"expected a number, got {text!r}")
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoetrope", description="Open text-to-video: VAE + packed DiT.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_info, _add_critique, _add_eval, _add_train, _add_sweep, _add_generate,
                _add_encode, _add_serve, _add_convert):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zoetrope` console script; returns the exit status."""
    from .log import configure
    configure()  # warnings print as `zoetrope: warning: ...`, one line each
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, or a bad flag (already reported in one line)
        return int(e.code or 0)
    args.overrides = extra
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return func(args) or 0
    except KeyboardInterrupt:
        print("zoetrope: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not _is_user_error(e):
            raise  # a bug: the traceback is what a report needs
        message = str(e).strip().splitlines()
        print(f"zoetrope {args.command}: error: {message[0] if message else type(e).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
