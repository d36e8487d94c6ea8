"""``python -m studio rank``: which units of a layer make what is under the mask (switch each off, measure).

    python -m studio rank --seeds 1,2,3 --mask lamp.png --layer blocks.1 --method fast --top 10
    python -m studio rank --seed 3 --mask lamp.png --all-layers --json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from studio.core.errors import StudioError
from studio.core.images import load_mask
from studio.core.progress import TextProgressBar
from studio.ranking import rank_layers, rank_units

from .common import add_model_args, open_from_args, parse_seeds, sample_from_args
from .edit import parse_steps


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rank", help="rank a layer's units by how specifically they change a masked region",
                       description="Switch each unit of a layer off (or to its mean), re-render, and rank the units "
                                   "by how much the change lands inside the mask rather than outside it.")
    add_model_args(p)
    p.add_argument("--seeds", help="several seeds, e.g. 1,2,5-7: scores are averaged over them (default: --seed)")
    p.add_argument("--mask", action="append", required=True, metavar="PNG",
                   help="mask image, white = inside; give it once, or once per seed")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--layer", "-l", help="the layer whose units to rank, e.g. blocks.1")
    where.add_argument("--all-layers", action="store_true", help="rank every layer and say which is most specific")
    p.add_argument("--method", choices=("exact", "fast"), default="exact",
                   help="exact: re-render every unit; fast: estimate from gradients, re-render the top candidates")
    p.add_argument("--ablation", choices=("zero", "mean"), default="zero",
                   help="switch units off (zero) or set them to their mean (default: zero)")
    p.add_argument("--candidates", type=int, default=None, help="fast: how many top units to check exactly")
    p.add_argument("--steps", help="diffusion only: switch units off in denoising steps START:STOP")
    p.add_argument("--chunk", type=int, default=None, help="images per forward pass (default: from the model)")
    p.add_argument("--top", "-k", type=int, default=20, help="how many units to print; 0 prints all (default: 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=run)


def _table(ranking, top: int) -> str:
    rows = [f"{ranking.layer}: {ranking.method} ranking, {ranking.ablation} ablation, seeds "
            f"{','.join(map(str, ranking.seeds))}, {ranking.seconds:.1f} s",
            f"{'rank':>4} {'unit':>5} {'score':>10} {'inside':>10} {'outside':>10}  measured"]
    for i, u in enumerate(ranking.top(top) if top else ranking.units, 1):
        rows.append(f"{i:>4} {u.unit:>5} {u.score:>10.5f} {u.inside:>10.5f} {u.outside:>10.5f}  "
                    f"{'exact' if u.exact else 'estimate'}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:



    if args.image and args.seeds:
        raise StudioError("Give --image or --seeds, not both: the inverted image takes the place of the seeds.")
    seeds = [args.seed] if args.image else parse_seeds(args.seeds, args.seed)
    if len(args.mask) not in (1, len(seeds)):
        raise StudioError(f"{len(args.mask)} masks for {len(seeds)} seeds: give one --mask, or one per seed.")
    if args.top < 0:
        raise StudioError("--top must be 0 (all units) or more.")
    generator = open_from_args(args)
    masks = []
    for path in args.mask:
        mask, note = load_mask(path, generator.resolution)
        if note:
            print(f"note: {note}", file=sys.stderr)
        masks.append(mask)
    mask = masks[0] if len(masks) == 1 else torch.stack(masks)
    samples = [sample_from_args(generator, args, seed) for seed in seeds]
    options = dict(method=args.method, ablation=args.ablation, candidates=args.candidates, chunk=args.chunk,
                   steps=parse_steps(args.steps), progress=TextProgressBar("rank"))
    layers, start = None, time.perf_counter()
    if args.all_layers:
        method = options.pop("method")
        layers = rank_layers(generator, samples, mask, method=method, top=max(args.top, 1), **options)
        ranking = layers[0].ranking
    else:
        ranking = rank_units(generator, samples, mask, args.layer, **options)
    for note in ranking.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        data = ranking.to_json()
        data["units"] = [u.to_json() for u in (ranking.top(args.top) if args.top else ranking.units)]
        if layers is not None:
            data["seconds"] = time.perf_counter() - start
            data["layers"] = [{"layer": s.layer, "units": s.units, "best_score": s.best_score,
                               "mean_top_score": s.mean_top_score, "seconds": s.ranking.seconds} for s in layers]
        print(json.dumps(data, indent=2))
        return 0
    if layers is not None:
        print(f"{'layer':<24} {'units':>6} {'best':>10} {'mean top':>10}")
        for s in layers:
            print(f"{s.layer:<24} {s.units:>6} {s.best_score:>10.5f} {s.mean_top_score:>10.5f}")
        print()
    print(_table(ranking, args.top))
    return 0
