"""Arguments and helpers shared by subcommands."""
from __future__ import annotations

import argparse
import sys

import torch

from studio.core.device import CHOICES, describe
from studio.exported import open_model
from studio.state import parse_seeds  # noqa: F401  (the CLI's seed lists read like the GUI's)


def add_model_args(parser: argparse.ArgumentParser, *, seed: bool = True, prompt: bool = True) -> None:
    """``--model``, ``--device``, ``--precision`` and, optionally, ``--seed`` and ``--prompt``."""
    parser.add_argument("--model", "-m", default=None,
                        help="built-in model name or path to a file/folder (default: the embedded 'rooms' model)")
    parser.add_argument("--device", default="auto", choices=CHOICES,
                        help="auto picks CUDA, then MPS, then CPU (default: auto)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"),
                        help="auto uses fp16 on GPUs for families that support it (default: auto)")
    if seed:
        parser.add_argument("--seed", "-s", type=int, default=0, help="random seed of the sample (default: 0)")
    if prompt:
        parser.add_argument("--prompt", "-p", default=None,
                            help="text prompt for text-to-image models (default: the model's default prompt)")


def open_from_args(args: argparse.Namespace):
    """Open the model named by ``--model`` and say on stderr which device runs it."""

    generator = open_model(args.model, device=args.device, precision=args.precision)
    print(f"model: {generator.name} ({generator.family}) on {describe(generator.device, generator.dtype)}",
          file=sys.stderr)
    return generator


def no_grad():
    return torch.inference_mode()
