"""``python -m studio export``: write a session's edited model in a format other tools load, and check it."""
from __future__ import annotations

import argparse
import json
import sys

from studio.core.device import CHOICES
from studio.core.progress import TextProgressBar
from studio.export import FORMATS, export_session
from studio.session import load_session


def register(sub: argparse._SubParsersAction) -> None:

    formats = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()) + \
        "; and the formats the model writes itself (see docs/export.md)"
    p = sub.add_parser("export", help="export a session's edited model (and check it renders the same)",
                       description="Export the model of a session with its edits, reopen what was written and "
                                   f"compare renders (max abs difference < 1e-4 in fp32). Formats: {formats}.")
    p.add_argument("--session", "-S", required=True, help="the .nstudio session to export")
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

    session = load_session(args.session)
    report = export_session(session, args.format, args.output, device=args.device, precision=args.precision,
                            progress=TextProgressBar("export", sys.stderr))
    return print_report(report, args.json)
