"""Command line: `zoetrope <command> ...`. Parses arguments and delegates; nothing else lives here.

Errors a user can cause (bad preset, missing file, impossible size...) end with one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, OSError)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoetrope", description="Open text-to-video: VAE + packed DiT.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="parameter count and GFLOPs of a DiT preset")
    p.add_argument("preset", help="e.g. DiT-XL/2, shapes-demo, sora-3B")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zoetrope` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return func(args) or 0
    except KeyboardInterrupt:
        print("zoetrope: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        message = str(e).strip().splitlines()
        print(f"zoetrope {args.command}: error: {message[0] if message else type(e).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
