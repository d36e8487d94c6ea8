"""``python -m studio apply``: put edits on a model (a recipe, or edit files), then render an image or export it.

``--recipe edits.json`` or ``--edits FILE...`` (concept edits from ``concept --save-edit``, recipes; see
studio.edit_files), on ``--model`` (default: the model the recipe names).

``-o`` ending in .png/.jpg/.jpeg/.webp renders the recipe's first sample (or ``--seed``/``--prompt``);
any other path exports the edited model (``--format``, default from the suffix: .json recipe, .safetensors studio).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from studio.core.device import CHOICES, describe
from studio.core.errors import StudioError
from studio.core.images import check_finite, save_image
from studio.core.progress import TextProgressBar
from studio.edit_files import KINDS, read_edit_files
from studio.export import export
from studio.exported import open_model
from studio.recipe import apply_recipe, check_recipe, load_recipe

from .common import add_sample_option_args, sample_options_from_args
from .export import print_report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("apply", help="re-apply an edit recipe to a model; render or export the result",
                       description="Re-apply an edit recipe (unit and concept edits) to the original model. "
                                   "-o IMAGE.png renders a sample; any other -o exports the edited model "
                                   "(then reopened and checked, like 'export').")
    p.add_argument("--model", "-m", default=None, help="the model to edit (default: the one the recipe names)")
    p.add_argument("--recipe", "-r", default=None, help="the recipe .json (from 'export --format recipe')")
    p.add_argument("--edits", "-e", nargs="+", metavar="FILE", default=None,
                   help="edit files to put on --model, in order: " + ", ".join(k.name for k in KINDS))
    p.add_argument("--output", "-o", required=True, help="an image (.png, .jpg, .webp) or an export path")
    p.add_argument("--format", "-f", default=None,
                   help="export format, one the model writes (default: recipe for .json, studio otherwise)")
    p.add_argument("--seed", "-s", type=int, default=None, help="image only: seed (default: the recipe's sample)")
    p.add_argument("--prompt", "-p", default=None, help="image only: prompt (default: the recipe's sample)")
    add_sample_option_args(p)  # image only: override the recipe sample's options
    p.add_argument("--device", default="auto", choices=CHOICES,
                   help="auto picks CUDA, then MPS, then CPU (default: auto)")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "fp16"), help="(default: fp32)")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:



    if bool(args.recipe) == bool(args.edits):
        raise StudioError("Give the edits as --recipe edits.json or as --edits FILE... (one of the two).")
    if args.edits and not args.model:
        raise StudioError("With --edits, name the model to edit: --model M.")
    recipe = load_recipe(args.recipe) if args.recipe else None
    generator = open_model(args.model or recipe.model.source, device=args.device, precision=args.precision)
    print(f"model: {generator.name} ({generator.family}) on {describe(generator.device, generator.dtype)}",
          file=sys.stderr)
    if recipe is None:
        recipe = read_edit_files(args.edits, generator)
    check_recipe(generator, recipe)
    mismatch = recipe.model.mismatch(generator)
    if mismatch:
        print(f"note: {mismatch}", file=sys.stderr)
    out = Path(args.output)
    if out.suffix.lower() in IMAGE_SUFFIXES:
        base = recipe.samples[0] if recipe.samples else generator.sample(0)
        sample = generator.sample(args.seed if args.seed is not None else base.seed,
                                  args.prompt if args.prompt is not None else base.prompt,
                                  **{**base.options, **sample_options_from_args(generator, args)})
        applied = apply_recipe(generator, recipe)
        try:
            with torch.inference_mode():
                image = generator.render([sample])[0]
        finally:
            applied.close()
        check_finite(image)
        save_image(image, out)
        print(f"wrote {out} ({len(recipe.unit_edits)} unit edits, "
              f"{'with' if recipe.concept else 'no'} concept edits)", file=sys.stderr)
        return 0
    if args.seed is not None or args.prompt is not None or sample_options_from_args(generator, args):
        raise StudioError("--seed, --prompt and the sample options choose the rendered image; an export is checked on the recipe's "
                          "samples. Drop them, or write an image (-o out.png).")
    fmt = args.format or ("recipe" if out.suffix.lower() == ".json" else "studio")
    concepts = recipe.as_session().restore_concepts(generator)
    report = export(generator, recipe.unit_edits, concepts, fmt, out, mask=recipe.mask,
                    samples=recipe.samples or None, progress=TextProgressBar("export", sys.stderr),
                    knob_edits=recipe.knob_edits)
    return print_report(report, args.json)
