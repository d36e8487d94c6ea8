"""``python -m studio generate``: render one image from a seed (and prompt)."""
from __future__ import annotations

import argparse
import sys

from studio.core.images import check_finite, save_image

from .common import add_model_args, no_grad, open_from_args, sample_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="render an image from a seed (and a prompt)",
                       description="Render one image from a seed and, for text models, a prompt.")
    add_model_args(p)
    p.add_argument("--output", "-o", required=True, help="output image path (.png)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    generator = open_from_args(args)
    sample = sample_from_args(generator, args)
    with no_grad():
        image = generator.render([sample])[0]
    check_finite(image)
    save_image(image, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
