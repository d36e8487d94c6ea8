"""``python -m studio concept``: rewrite what words mean to a text model, then render.

    python -m studio concept --replace red=blue --preserve green,yellow --prompt "a bedroom with red walls" \\
        --seed 3 -o blue.png --save-edit red-to-blue.safetensors
    python -m studio concept --load-edit red-to-blue.safetensors --prompt "a red bedroom" -o again.png
"""
from __future__ import annotations

import argparse
import sys

import torch

from studio.concept import (
    DEFAULT_LAMBDA,
    DEFAULT_TOKENS,
    TOKEN_MODES,
    ConceptEdit,
    ConceptEditSpec,
    EditSummary,
    editor_for,
    load_edits,
    save_edits,
)
from studio.core.errors import StudioError
from studio.core.images import check_finite, save_image

from .common import add_model_args, no_grad, open_from_args, sample_from_args


class _EditAction(argparse.Action):
    """Keeps --erase and --replace in the order given, in one list."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        edits = list(getattr(namespace, self.dest) or [])
        edits.append((self.const, values))
        setattr(namespace, self.dest, edits)


def parse_edit(kind: str, text: str):
    """``--erase C`` / ``--erase C=GUIDE`` / ``--replace C=T`` -> :class:`studio.concept.ConceptEdit`."""

    concept, sep, target = text.partition("=")
    if kind == "replace" and not sep:
        raise StudioError(f"Cannot read --replace '{text}': write CONCEPT=TARGET, e.g. --replace red=blue.")
    return ConceptEdit(kind, concept.strip(), target.strip())


def parse_preserve(text: str | None) -> list[str]:
    """``"green, yellow walls"`` -> ["green", "yellow walls"]; given but empty raises."""
    if text is None:
        return []
    concepts = [c.strip() for c in text.split(",") if c.strip()]
    if not concepts:
        raise StudioError("--preserve lists no concepts: give them comma-separated (e.g. --preserve green,yellow) "
                          "or leave the option out.")
    return concepts


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("concept", help="rewrite what words mean to a text model (closed-form concept edit)",
                       description="Edit every cross-attention key/value projection in closed form so that a "
                                   "concept maps to another (--replace) or to a guide (--erase), keeping the "
                                   "--preserve concepts as they were, then render --prompt.")
    add_model_args(p)
    p.add_argument("--erase", dest="edits", action=_EditAction, const="erase", metavar="CONCEPT[=GUIDE]",
                   help="erase a concept towards GUIDE (default: the empty prompt); repeat for several")
    p.add_argument("--replace", dest="edits", action=_EditAction, const="replace", metavar="CONCEPT=TARGET",
                   help="make CONCEPT mean TARGET, e.g. red=blue; repeat for several (solved together)")
    p.add_argument("--preserve", metavar="C1,C2", help="comma-separated concepts whose outputs must not change")
    p.add_argument("--lambda", dest="lambda_", type=float, default=DEFAULT_LAMBDA,
                   help=f"pull towards the original weights; larger = gentler (default: {DEFAULT_LAMBDA})")
    p.add_argument("--edit-scale", type=float, default=1.0, help="weight of the edits (default: 1)")
    p.add_argument("--preserve-scale", type=float, default=1.0, help="weight of the preserved concepts (default: 1)")
    p.add_argument("--tokens", choices=TOKEN_MODES, default=DEFAULT_TOKENS,
                   help=f"embedding rows that stand for a concept (default: {DEFAULT_TOKENS})")
    p.add_argument("--load-edit", action="append", metavar="FILE",
                   help="apply an edit saved with --save-edit first (repeatable)")
    p.add_argument("--save-edit", metavar="FILE", help="save the applied edits (.safetensors, loadable again)")
    p.add_argument("--output", "-o", required=True, help="output image path (.png)")
    p.add_argument("--side-by-side", action="store_true", help="write the original and the edit side by side")
    p.set_defaults(run=run, edits=None)


def run(args: argparse.Namespace) -> int:


    edits = [parse_edit(kind, text) for kind, text in (args.edits or [])]
    preserve = parse_preserve(args.preserve)
    loaded = [applied for path in (args.load_edit or []) for applied in load_edits(path)]
    if not edits and not loaded:
        raise StudioError("Nothing to edit: give --erase CONCEPT or --replace CONCEPT=TARGET (or --load-edit FILE).")
    spec = ConceptEditSpec(edits, preserve, args.lambda_, args.edit_scale, args.preserve_scale, args.tokens) \
        if edits else None
    generator = open_from_args(args)
    editor = editor_for(generator)
    sample = sample_from_args(generator, args)
    with no_grad():
        before = generator.render([sample])[0] if args.side_by_side else None
        if loaded:
            editor.push(*loaded)
            print(f"loaded {len(loaded)} edit{'s' if len(loaded) != 1 else ''}: "
                  f"{'; '.join(a.spec.label() for a in loaded)}", file=sys.stderr)
        if spec is not None:
            applied = editor.apply(spec)
            print(EditSummary.of(applied).sentence(), file=sys.stderr)
        image = generator.render([sample])[0]
    check_finite(image)
    if before is not None:
        image = torch.cat([before, image], dim=-1)
    save_image(image, args.output)
    if args.save_edit:
        save_edits(args.save_edit, editor.stack, generator)
        print(f"saved the edit to {args.save_edit}", file=sys.stderr)
    print(f"wrote {args.output} (prompt: {sample.prompt!r}, seed {sample.seed})", file=sys.stderr)
    return 0
