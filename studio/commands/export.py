"""``python -m studio export``: write an edited model in a format other tools load, and check it.

The edits come from a session (``--session work.nstudio``) or from edit files on a model
(``--model M --edits red2blue.safetensors lamp-off.json``: concept edits, edit recipes; see studio.edit_files).
"""
from __future__ import annotations

import argparse
import json
import sys

from studio.core.device import CHOICES
from studio.core.progress import TextProgressBar
from studio.core.errors import StudioError
from studio.edit_files import KINDS, read_edit_files
from studio.export import FORMATS, export, export_session
from studio.exported import open_model
from studio.session import load_session


def register(sub: argparse._SubParsersAction) -> None:

    formats = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()) + \
        "; and the formats the model writes itself (see docs/export.md)"
    p = sub.add_parser("export", help="export an edited model (and check it renders the same)",
                       description="Export a model with its edits (a session's, or edit files on a model), reopen "
                                   "what was written and compare renders (max abs difference < 1e-4 in fp32). "
                                   f"Formats: {formats}.")
    p.add_argument("--session", "-S", default=None, help="the .nstudio session to export")
    p.add_argument("--model", "-m", default=None, help="with --edits: the model to edit (built-in name or path)")
    p.add_argument("--edits", "-e", nargs="+", metavar="FILE", default=None,
                   help="edit files to put on --model, in order: " + ", ".join(k.name for k in KINDS))
    p.add_argument("--format", "-f", default="studio",
                   help="what to write (default: studio); a format the model does not write is refused")
    p.add_argument("--output", "-o", required=True, help="output path (a file, or a folder for folder formats)")
    p.add_argument("--device", default="auto", choices=CHOICES,
                   help="auto picks CUDA, then MPS, then CPU (default: auto)")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "fp16"),
                   help="precision of the export and its check (default: fp32)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def print_report(report, as_json: bool) -> int:
    """Print an ExportReport; exit status 1 when the check found a different image."""
    print(json.dumps(report.to_json(), indent=2) if as_json else report.text())
    return 0 if report.verified else 1


def run(args: argparse.Namespace) -> int:
    progress = TextProgressBar("export", sys.stderr)
    if args.session and (args.edits or args.model):
        raise StudioError("Export either a session (--session) or edit files on a model (--model, --edits), "
                          "not both.")
    if args.session:
        report = export_session(load_session(args.session), args.format, args.output, device=args.device,
                                precision=args.precision, progress=progress)
        return print_report(report, args.json)
    if not args.edits or not args.model:
        raise StudioError("Say what to export: --session work.nstudio, or --model M --edits FILE...")
    generator = open_model(args.model, device=args.device, precision=args.precision)
    return export_edit_files(generator, args.edits, args.format, args.output, args.json, progress)


def export_edit_files(generator, files, format: str, output: str, as_json: bool, progress) -> int:
    """Put the edit files on ``generator`` and export it (``export --edits`` and ``apply --edits``)."""
    recipe = read_edit_files(files, generator)
    concepts = recipe.as_session().restore_concepts(generator)
    report = export(generator, recipe.unit_edits, concepts, format, output, mask=recipe.mask,
                    samples=recipe.samples or None, progress=progress, knob_edits=recipe.knob_edits)
    return print_report(report, as_json)
