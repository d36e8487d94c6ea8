"""``python -m studio dissect``: what every unit of a layer does over many samples; ``dissect show``: a unit's gallery.

    python -m studio dissect --layer blocks.1 --samples 2000 --concepts rooms -o dissection.safetensors
    python -m studio dissect ... --ray                  # the same tasks on a local Ray cluster (or --ray ADDRESS)
    python -m studio dissect ... --resume               # continue a stopped run from its .partial file
    python -m studio dissect show dissection.safetensors --unit 208 -o gallery.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from studio.core.errors import StudioError
from studio.core.images import save_image
from studio.core.progress import TextProgressBar
from studio.dissect import IOU_FLOOR, Plan, dissect, gallery_image, gallery_tiles, load_dissection
from studio.dissect_ray import ray_runner

from .common import add_model_args, open_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dissect", help="label every unit of a layer over many samples (dissect show: a gallery)",
                       description="Dissect layers: per-unit statistics, top-k galleries and concept labels over "
                                   "many samples. 'dissect show FILE --unit U' writes a unit's gallery.")
    add_model_args(p, seed=False)
    p.add_argument("target", nargs="*", help="'show FILE' to draw a unit's gallery from a dissection file")
    p.add_argument("--layer", "-l", default=None, help="layer(s), comma-separated (default: blocks.1 for rooms)")
    p.add_argument("--samples", "-n", type=int, default=2000, help="number of seeds (default: 2000)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--concepts", default=None,
                   help="'rooms' (the world's truth masks), 'faces' (facial parts found on each image: the optional "
                        "faces extra) or an examples JSON file")
    p.add_argument("--top", type=int, default=12, help="gallery samples kept per unit (default: 12)")
    p.add_argument("--task-size", type=int, default=250, help="samples per task (default: 250)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the tasks on a Ray cluster (a local one when no address is given)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (CPUs of a local cluster; default: 2)")
    p.add_argument("--worker-cpus", type=int, default=1,
                   help="CPUs each Ray worker asks for, and its torch threads (default: 1)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT's .partial file")
    p.add_argument("--unit", "-u", type=int, default=None, help="show: the unit")
    p.add_argument("--json", action="store_true", help="print the unit-label table as JSON")
    p.add_argument("--output", "-o", required=True, help="dissection file (.safetensors), or show's PNG")
    p.set_defaults(run=run)


def partial_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".partial.safetensors")


def run(args: argparse.Namespace) -> int:
    if args.target:
        return show(args)
    generator = open_from_args(args)
    layers = args.layer.split(",") if args.layer else [_default_layer(generator)]
    plan = Plan(generator.source, layers, args.samples, args.first_seed, args.prompt, args.concepts, args.top,
                args.task_size)
    runner, close = (None, None) if args.ray is None else ray_runner(plan, args.ray or None, args.workers,
                                                                             cpus_per_worker=args.worker_cpus)
    partial = partial_path(args.output)
    try:
        result = dissect(generator, plan, partial=partial, resume=args.resume, runner=runner,
                         progress=TextProgressBar("dissect"))
    finally:
        if close is not None:
            close()
    result.save(args.output)
    partial.unlink(missing_ok=True)
    print(f"wrote {args.output}", file=sys.stderr)
    if result.concepts:
        print_labels(result, layers, args.json)
    return 0


def _default_layer(generator) -> str:
    spatial = [info.name for info in generator.layers() if info.size]
    if not spatial:
        raise StudioError(f"{generator.name} has no layers with a spatial map to dissect.")
    return "blocks.1" if "blocks.1" in spatial else spatial[len(spatial) // 2]


def print_labels(result, layers: list[str], as_json: bool) -> None:
    tables = {layer: result.labels(layer) for layer in layers}
    if as_json:
        print(json.dumps({layer: [row.to_json() for row in rows] for layer, rows in tables.items()}, indent=1))
        return
    for layer, rows in tables.items():
        labelled = sorted((r for r in rows if r.concept), key=lambda r: -r.iou)
        print(f"{layer}: {len(labelled)} of {len(rows)} units labelled (IoU >= {IOU_FLOOR})")
        print("unit  concept   IoU    second    IoU")
        for r in labelled:
            print(f"{r.unit:4d}  {r.concept:8s} {r.iou:.3f}  {r.second or '-':8s} {r.second_iou:.3f}")


def show(args: argparse.Namespace) -> int:
    if len(args.target) != 2 or args.target[0] != "show":
        raise StudioError("Use 'dissect show FILE --unit U -o gallery.png' (or no positional arguments to dissect).")
    if args.unit is None:
        raise StudioError("Say which unit's gallery to draw with --unit.")
    result = load_dissection(args.target[1])
    if not result.complete:
        raise StudioError(f"{Path(args.target[1]).name} is a partial dissection; finish it with --resume first.")
    args.model = args.model or result.plan.model
    generator = open_from_args(args)
    layer = args.layer or result.plan.layers[0]
    save_image(gallery_image(gallery_tiles(generator, result, layer, args.unit)), args.output)
    if result.concepts:
        row = result.labels(layer)[args.unit]
        print(f"{layer} unit {args.unit}: {row.concept or 'no label'} (best {row.best} IoU {row.iou:.3f}, "
              f"second {row.second} {row.second_iou:.3f})", file=sys.stderr)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
