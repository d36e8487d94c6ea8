"""Arguments and helpers shared by subcommands."""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from studio.core.device import CHOICES, describe
from studio.core.errors import StudioError
from studio.exported import open_model
from studio.seeds import parse_seeds  # noqa: F401  (the subcommands read seeds the way the app does)


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
    if seed:
        add_sample_option_args(parser)


def add_sample_option_args(parser: argparse.ArgumentParser) -> None:
    """``--class``, ``--psi`` and ``--noise-mode``: the sample options of the families that declare them."""
    group = parser.add_argument_group("sample options (families that take them, e.g. StyleGAN)")
    group.add_argument("--class", dest="sample_class", type=int, default=None, metavar="N",
                       help="the class of a conditional model (default: 0)")
    group.add_argument("--psi", type=float, default=None,
                       help="truncation psi: 1 is none, 0 the mean image (StyleGAN default: 0.7, like NVIDIA's "
                            "--trunc=0.7)")
    group.add_argument("--noise-mode", default=None, metavar="MODE",
                       help="const (default) | random (seeded per sample) | none")


def sample_options_from_args(generator, args: argparse.Namespace) -> dict[str, Any]:
    """The sample options given on the command line, checked against what ``generator`` takes."""
    given = {"class": getattr(args, "sample_class", None), "psi": getattr(args, "psi", None),
             "noise": getattr(args, "noise_mode", None)}
    declared = {option.name: option for option in generator.sample_options()}
    options: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        option = declared.get(name)
        if option is None:
            flag = "--noise-mode" if name == "noise" else f"--{name}"
            takes = ", ".join(o.option_flag for o in declared.values()) or "no sample options"
            raise StudioError(f"{generator.name} ({generator.family}) does not take {flag}; it takes {takes}.")
        options[name] = option.check(value)
    return options


def sample_from_args(generator, args: argparse.Namespace, seed: int | None = None):
    """The :class:`Sample` for ``seed`` (default ``--seed``), ``--prompt`` and the sample-option flags."""
    return generator.sample(args.seed if seed is None else seed, args.prompt,
                            **sample_options_from_args(generator, args))


def open_from_args(args: argparse.Namespace):
    """Open the model named by ``--model`` and say on stderr which device runs it."""

    generator = open_model(args.model, device=args.device, precision=args.precision)
    print(f"model: {generator.name} ({generator.family}) on {describe(generator.device, generator.dtype)}",
          file=sys.stderr)
    return generator


def no_grad():
    return torch.inference_mode()
