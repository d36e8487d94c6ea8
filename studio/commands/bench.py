"""``python -m studio bench NAME``: benchmarks that measure (ratios against a baseline in the same process).

Each benchmark is a module in ``studio/bench/`` exposing ``register(subparsers)``; list it in ``BENCHES``.
"""
from __future__ import annotations

import argparse
import importlib

BENCHES: list[str] = [
    "concept",
    "diffusion",
    "slider",
    "stylegan",
    "faces",
    "rank",
    "rooms",
    "dissect",
    "invert",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark", description="Run a benchmark and print its figures.")
    benches = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name in BENCHES:
        importlib.import_module(f"studio.bench.{name}").register(benches)
