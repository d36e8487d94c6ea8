"""``python -m studio bench slider``: how fast a slider frame is, re-rendering only the layers after the edit.

Drags a slider over ``--frames`` values from -1x to 3x on one unit (with a second unit switched off) through
the app's :class:`studio.live.LiveRenderer`, and renders the same edits in full in the same process, interleaved
frame by frame so that both see the same machine load::

    python -m studio bench slider --json
    {"partial_ms": 6.1, "full_ms": 14.8, "speedup": 2.4, "layer": "blocks.2", ...}

``partial_ms``/``full_ms`` are medians per frame including the copy to the CPU (what the window shows); the
partial frames are checked against the full renders (``max_abs_diff``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from studio.bench.timing import timed
from studio.commands.common import add_model_args, open_from_args
from studio.core.device import describe
from studio.core.hooks import UnitEdit
from studio.live import LiveRenderer, default_layer


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("slider", help="slider frame time: partial re-render against a full render",
                           description="Median slider frame time on the default model: partial re-render from "
                                       "the cached layer against a full render of the same edit.")
    add_model_args(p, seed=True, prompt=True, image=False)  # it times seeds' samples
    p.add_argument("--layer", help="layer of the edited units (default: the app's default, a middle layer)")
    p.add_argument("--frames", type=int, default=50, help="slider values per measurement (default: 50)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def measure(generator, sample, layer: str, frames: int = 50) -> dict:
    """Median partial and full frame times (ms) of the same slider sweep, and their agreement."""

    info = generator.layer(layer)
    values = torch.linspace(-1.0, 3.0, max(frames, 2)).tolist()

    def edits(v: float) -> list[UnitEdit]:
        return [UnitEdit(layer, 0, "scale", v), UnitEdit(layer, min(1, info.units - 1), "off")]

    live = LiveRenderer(generator)
    partial, full, used = [], [], None
    # Interleaved (one partial, then one full frame per value): both see the same machine load.
    with torch.inference_mode(), generator.editor() as editor:
        try:
            for i, v in enumerate(values[:3] + values):  # three warm-up values first
                editor.clear()
                p = 1000 * timed(lambda: live.render(sample, edits(v))[0].cpu())[0]
                editor.set(edits(v))
                f = 1000 * timed(lambda: generator.render([sample]).cpu())[0]
                if i >= 3:
                    partial.append(p)
                    full.append(f)
            last_full = generator.render([sample])
            editor.clear()
            last_partial, used = live.render(sample, edits(values[-1]))
        finally:
            live.close()
    partial_ms, full_ms = statistics.median(partial), statistics.median(full)
    return {"partial_ms": round(partial_ms, 3), "full_ms": round(full_ms, 3),
            "speedup": round(full_ms / partial_ms, 3) if partial_ms > 0 else None,
            "partial_p90_ms": round(sorted(partial)[int(0.9 * (len(partial) - 1))], 3),
            "full_p90_ms": round(sorted(full)[int(0.9 * (len(full) - 1))], 3),
            "partial_from": used, "max_abs_diff": float((last_partial - last_full).abs().max()),
            "frames": len(values), "layer": layer}


def run(args: argparse.Namespace) -> int:

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = open_from_args(args)
    layer = args.layer or default_layer(generator.layers())
    sample = generator.sample(args.seed, args.prompt)
    result = measure(generator, sample, layer, args.frames)
    result.update({"model": generator.name, "device": describe(generator.device, generator.dtype),
                   "threads": torch.get_num_threads()})
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{generator.name} {layer} on {result['device']}, {result['frames']} slider values:")
        print(f"  partial re-render from {result['partial_from']}: median {result['partial_ms']:.2f} ms "
              f"(p90 {result['partial_p90_ms']:.2f})")
        print(f"  full render, same edits:          median {result['full_ms']:.2f} ms "
              f"(p90 {result['full_p90_ms']:.2f})")
        print(f"  speedup {result['speedup']}x, max |partial - full| = {result['max_abs_diff']:.2e}")
    if result["partial_from"] is None:
        print(f"note: {layer} cannot re-render partially; both figures are full renders.", file=sys.stderr)
    return 0
