"""Arguments and helpers shared by subcommands."""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from studio.core.device import CHOICES, describe
from studio.core.errors import StudioError
from studio.core.progress import TextProgressBar
from studio.exported import open_model
from studio.invert import DEFAULT_STEPS, invert
from studio.seeds import parse_seeds  # noqa: F401  (the subcommands read seeds the way the app does)


def add_model_args(parser: argparse.ArgumentParser, *, seed: bool = True, prompt: bool = True,
                   image: bool = True) -> None:
    """``--model``, ``--device``, ``--precision`` and, optionally, ``--seed`` and ``--prompt``; with a seed, also
    ``--image`` (your own picture instead of the seed) unless ``image`` is False."""
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
        if image:
            add_image_args(parser)


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """``--image PHOTO.png`` (instead of a seed: the model's inversion of that picture) and ``--invert-steps``."""
    group = parser.add_argument_group("your own image (instead of a seed)")
    group.add_argument("--image", default=None, metavar="PHOTO.png",
                       help="invert this picture into the model first and use the result instead of a seed "
                            "(another aspect ratio is centre-cropped); text models search the caption unless "
                            "--prompt is given")
    group.add_argument("--invert-steps", type=int, default=DEFAULT_STEPS, metavar="N",
                       help=f"optimisation steps of the inversion (default: {DEFAULT_STEPS})")


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
    """The :class:`Sample` for ``seed`` (default ``--seed``), ``--prompt`` and the sample-option flags; with
    ``--image``, the inversion of that picture instead (run once per command, with a progress bar)."""
    if getattr(args, "image", None):
        return inverted_sample(generator, args)
    return generator.sample(args.seed if seed is None else seed, args.prompt,
                            **sample_options_from_args(generator, args))


def inverted_sample(generator, args: argparse.Namespace):
    """The sample that reproduces ``--image`` (inverted on first use, kept on ``args`` for the command's run)."""
    inversion = getattr(args, "inversion_result", None)
    if inversion is None:
        inversion = invert(generator, args.image, prompt=args.prompt, steps=args.invert_steps,
                           progress=TextProgressBar("invert"))
        print(f"note: {inversion.note}", file=sys.stderr)
        args.inversion_result = inversion
    return inversion.sample


def open_from_args(args: argparse.Namespace):
    """Open the model named by ``--model`` and say on stderr which device runs it."""

    generator = open_model(args.model, device=args.device, precision=args.precision)
    print(f"model: {generator.name} ({generator.family}) on {describe(generator.device, generator.dtype)}",
          file=sys.stderr)
    return generator


def no_grad():
    return torch.inference_mode()
