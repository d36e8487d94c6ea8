"""``python -m studio edit``: render with unit edits, e.g. ``--unit blocks.3:17=off``."""
from __future__ import annotations

import argparse
import re
import sys

import torch

from studio.core.errors import StudioError
from studio.core.hooks import UnitEdit
from studio.core.images import check_finite, load_mask, save_image

from .common import add_model_args, no_grad, open_from_args, sample_from_args

_UNIT = re.compile(r"^(?P<layer>[^:=]+):(?P<unit>\d+)=(?P<value>.+)$")


def parse_unit(text: str, *, local: bool = False, steps: tuple[int, int] | None = None) -> UnitEdit:
    """``LAYER:INDEX=VALUE`` where VALUE is ``off``, ``xK`` (scale by K) or a number (set to it)."""
    match = _UNIT.match(text.strip())
    if not match:
        raise StudioError(f"Cannot read unit edit '{text}': write LAYER:INDEX=VALUE, e.g. blocks.3:17=off, "
                          "blocks.3:17=x2 (scale) or blocks.3:17=0.5 (set).")
    layer, unit, value = match["layer"], int(match["unit"]), match["value"].strip().lower()
    try:
        if value == "off":
            return UnitEdit(layer, unit, "off", 0.0, local, steps)
        if value[0] in "x*":
            return UnitEdit(layer, unit, "scale", float(value[1:]), local, steps)
        return UnitEdit(layer, unit, "set", float(value), local, steps)
    except ValueError as error:
        raise StudioError(f"Cannot read the value in '{text}': use off, xK or a number.") from error


def parse_steps(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError as error:
        raise StudioError(f"Cannot read step window '{text}': write START:STOP, e.g. 0:10.") from error
    return start, stop


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="render with unit edits (scale, set, switch off)",
                       description="Render a sample with edits on units. VALUE: off | xK (scale by K) | "
                                   "a number (set the unit to it).")
    add_model_args(p)
    p.add_argument("--unit", "-u", action="append", required=True, metavar="LAYER:INDEX=VALUE",
                   help="an edit; repeat for several units")
    p.add_argument("--mask", help="mask image (white = inside); with --local the edits apply only inside it")
    p.add_argument("--local", action="store_true", help="apply the edits only inside --mask")
    p.add_argument("--steps", help="diffusion only: apply the edits in denoising steps START:STOP")
    p.add_argument("--output", "-o", required=True, help="output image path (.png)")
    p.add_argument("--side-by-side", action="store_true", help="write the original and the edit side by side")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:


    if args.local and not args.mask:
        raise StudioError("--local needs --mask: give the mask the edits should stay inside.")
    steps = parse_steps(args.steps)
    edits = [parse_unit(text, local=args.local, steps=steps) for text in args.unit]
    generator = open_from_args(args)
    for e in edits:
        generator.unit_layer(e.layer, e.unit)
    mask = None
    if args.mask:
        mask, note = load_mask(args.mask, generator.resolution)
        if note:
            print(f"note: {note}", file=sys.stderr)
    sample = sample_from_args(generator, args)
    with no_grad(), generator.editor() as editor:
        editor.set(edits, mask=mask.to(generator.device) if mask is not None else None)
        image = generator.render([sample])[0]
        if args.side_by_side:
            editor.clear()
            image = torch.cat([generator.render([sample])[0], image], dim=-1)
    check_finite(image)
    save_image(image, args.output)
    print(f"wrote {args.output} ({len(edits)} unit edit{'s' if len(edits) != 1 else ''})", file=sys.stderr)
    return 0
