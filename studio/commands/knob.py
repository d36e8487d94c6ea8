"""``python -m studio knob``: learn a concept knob from examples, or apply one to an image.

    python -m studio knob learn --name lamp-off --present 3:lit3.png --wanted 8:unlit8.png ... -o lamp-off.safetensors
    python -m studio knob apply --knob lamp-off.safetensors --seed 5 --mask lamp.png --strength 1 -o out.png
"""
from __future__ import annotations

import argparse
import sys

from studio.core.errors import StudioError
from studio.core.images import check_finite, load_mask, save_image
from studio.knob_regions import learn_app_knob
from studio.knobs import (DEFAULT_PART_PATTERN, DEFAULT_PART_UNITS, DEFAULT_PATTERN, DEFAULT_UNITS, Example, KnobEdit,
                          learn_knob, load_knob, save_knob)

from .common import add_model_args, no_grad, open_from_args, sample_from_args
from .edit import parse_steps


def parse_example(text: str, generator, prompt: str | None) -> Example:
    """``SEED:MASK.png[,PART=PART.png...]`` -> an :class:`Example` of ``generator`` (masks fitted to its
    resolution); each ``PART=PART.png`` names a part of the region (e.g. ``lamp=lamp17.png``)."""
    seed, sep, rest = text.partition(":")
    path, *extra = rest.split(",")
    try:
        number = int(seed)
    except ValueError:
        number = None
    if not sep or number is None or not path or any("=" not in e or not e.partition("=")[2] for e in extra):
        raise StudioError(f"Cannot read example '{text}': write SEED:MASK.png or SEED:MASK.png,PART=PART.png, "
                          "e.g. 17:lamp17.png,lamp=shade17.png.")
    masks = {}
    for name, file in [("", path), *[tuple(e.split("=", 1)) for e in extra]]:
        mask, note = load_mask(file, generator.resolution)
        if note:
            print(f"note: {note}", file=sys.stderr)
        masks[name.strip()] = mask
    region = masks.pop("")
    return Example(generator.sample(number, prompt), region, masks)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knob", help="learn a concept knob from examples, or apply one",
                       description="Concept knobs: units whose activation differs between examples in the present "
                                   "and in the wanted state, set to their wanted values inside a painted region.")
    knob = p.add_subparsers(dest="knob_command", metavar="ACTION", required=True)

    learn = knob.add_parser("learn", help="learn a knob from present and wanted examples",
                            description="Learn a knob: each example is SEED:MASK.png (white = the region showing "
                                        "the concept) rendered with --prompt.")
    add_model_args(learn, seed=False)
    learn.add_argument("--name", required=True, help="the knob's name, e.g. lamp-off")
    learn.add_argument("--present", action="append", required=True, metavar="SEED:MASK.png",
                       help="an example in the present state (e.g. a lit lamp); repeat for several")
    learn.add_argument("--wanted", action="append", required=True, metavar="SEED:MASK.png",
                       help="an example in the wanted state (e.g. an unlit lamp); repeat for several")
    learn.add_argument("--layer", action="append", default=None,
                       help="learn on this layer only; repeat for several (default: every spatial layer)")
    learn.add_argument("--units", type=int, default=DEFAULT_UNITS,
                       help=f"units the knob keeps over all its layers (default: {DEFAULT_UNITS})")
    learn.add_argument("--pattern", type=int, default=DEFAULT_PATTERN,
                       help=f"target grid per unit over the region, 1 = a constant (default: {DEFAULT_PATTERN})")
    learn.add_argument("--select", default="mean", choices=("mean", "cells"),
                       help="compare units by their mean over the region or cell by cell of the pattern "
                            "(default: mean)")
    learn.add_argument("--relative", action="store_true",
                       help="measure a unit's targets from the region's surroundings where the examples agree "
                            "better so")
    learn.add_argument("--part-layer", action="append", default=None,
                       help="layer of the part regions (examples' PART=PART.png); repeat (default: --layer's)")
    learn.add_argument("--part-units", type=int, default=DEFAULT_PART_UNITS,
                       help=f"units of each part region (default: {DEFAULT_PART_UNITS})")
    learn.add_argument("--part-pattern", type=int, default=DEFAULT_PART_PATTERN,
                       help=f"target grid of each part region (default: {DEFAULT_PART_PATTERN})")
    learn.add_argument("--app", action="store_true",
                       help="learn as the app's Seeds tab does (one quick mask per example, a self-found core "
                            "part, the app's layers and settings); the tuning options above are then not used")
    learn.add_argument("--output", "-o", required=True, help="the knob file to write (.safetensors)")
    learn.set_defaults(run=run_learn)

    apply = knob.add_parser("apply", help="render a sample with a knob applied inside a mask",
                            description="Apply a knob inside --mask at --strength (0: as it is, 1: like the wanted "
                                        "examples, above 1: stronger, below 0: the other way).")
    add_model_args(apply)
    apply.add_argument("--knob", "-k", required=True, help="the knob file (.safetensors)")
    apply.add_argument("--mask", required=True, help="mask image (white = where the knob applies)")
    apply.add_argument("--strength", type=float, default=1.0, help="(default: 1)")
    apply.add_argument("--steps", help="diffusion only: apply the knob in denoising steps START:STOP (default: all)")
    apply.add_argument("--output", "-o", required=True, help="output image path (.png)")
    apply.set_defaults(run=run_apply)


def run_learn(args: argparse.Namespace) -> int:
    generator = open_from_args(args)
    present = [parse_example(t, generator, args.prompt) for t in args.present]
    wanted = [parse_example(t, generator, args.prompt) for t in args.wanted]
    if args.app:
        knob = learn_app_knob(generator, args.name, present=present, wanted=wanted)
    else:
        knob = learn_knob(generator, args.name, present=present, wanted=wanted, layers=args.layer, units=args.units,
                          pattern=args.pattern, select=args.select, relative=args.relative, part_layers=args.part_layer,
                          part_units=args.part_units, part_pattern=args.part_pattern)
    path = save_knob(knob, args.output)
    where = ", ".join(f"{layer}: {len(u)}" for layer, u in knob.units.items())
    where += "".join(f"; region {r.name}: " + ", ".join(f"{layer}: {len(u)}" for layer, u in r.units.items())
                     for r in knob.regions)
    print(f"knob '{knob.name}': {knob.unit_count} units ({where}) from {len(present)} present and "
          f"{len(wanted)} wanted examples -> {path}")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    knob = load_knob(args.knob)
    generator = open_from_args(args)
    knob.check(generator)
    mask, note = load_mask(args.mask, generator.resolution)
    if note:
        print(f"note: {note}", file=sys.stderr)
    sample = sample_from_args(generator, args)
    with no_grad(), generator.editor() as editor:
        editor.set_knobs([KnobEdit(knob, mask.to(generator.device), args.strength, parse_steps(args.steps))])
        image = generator.render([sample])
    check_finite(image)
    save_image(image[0], args.output)
    print(f"wrote {args.output} ('{knob.name}' at strength {args.strength:g})")
    return 0
