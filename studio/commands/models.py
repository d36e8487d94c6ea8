"""``python -m studio models``: what can be opened, built-in and installed."""
from __future__ import annotations

import argparse
import json

from models.registry import DEFAULT_MODEL, available_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models that can be opened",
                       description="List built-in models (and those needing an optional package).")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    entries = available_models()
    if args.json:
        print(json.dumps([{"name": e.name, "family": e.family, "description": e.description,
                           "available": e.available, "reason": e.reason} for e in entries], indent=2))
        return 0
    for e in entries:
        state = "installed" if e.available else f"not installed: {e.reason}"
        default = " (default)" if e.name == DEFAULT_MODEL else ""
        print(f"{e.name:<14} {e.family:<12} {e.description}{default} [{state}]")
    print("\nAlso opens files: Neuron Studio exports, StyleGAN .pkl/.pt, Stable Diffusion folders, "
          ".safetensors and .ckpt (--model PATH).")
    return 0
