"""``python -m studio bench rooms``: does switching off the units the ranking finds turn a lamp off, as the truth says?

For held-out Rooms scenes with a lit lamp (seeds from ``HELD_OUT_FIRST``, disjoint from training's < 10**9), the light
region of that lamp (its ``glow<i>`` and ``lamp<i>`` truth masks) is the mask; the project's ranking ranks the units
of the model's layers for that one image (:func:`studio.ranking.rank_layers`, every spatial layer), the best units
over all layers are pooled by score (:func:`studio.ranking.best_units`, at most ``--top``), switched off by a real
:class:`~studio.core.hooks.Editor` edit, and the model renders the room again. The result is compared with the exact render
of the same room with that lamp off (``world.with_lamp(scene, i, lit=False)``)::

    python -m studio bench rooms --seeds 20 --json
    {"scenes": 20, "lamp_off_rate": 0.85, "relight_psnr": 15.8, "outside_change": 0.0019, "units_used": 20, ...}

Figures (region = the lamp's light region; images in [0, 1]):

- ``lamp_off_rate``: share of scenes whose edited region is nearer (mean absolute difference) the unlit truth than
  the lit one;
- ``relight_psnr``: PSNR of the edited image against the unlit truth inside the region (mean over scenes);
- ``outside_change``: mean absolute change (RGB mean) outside the region, the model's own image against the edited;
- ``units_used``: mean number of units switched off per scene; ``units_per_layer``: where they were;
- ``baseline``: the same figures for the unedited model image (what the edit gained), and its ``lit_psnr`` against
  the lit truth in the region (the model's own fidelity there: a ceiling for ``relight_psnr``); ``darkening``: the
  share of the truth's brightness drop in the region that the edit reproduces;
- ``alternative``: the same figures for the other variant (global switch-off instead of local, or the reverse),
  from the same rankings.

``--layer`` names one layer, several (comma-separated) or ``all``; ``--local`` switches units off only inside the
mask (the "only inside the mask" of the app's sliders), ``--global`` everywhere; ``--method``, ``--ablation`` and
``--rounds`` (one layer only) as in the ranking. ``--min-share`` keeps only units scoring at least that share of the
best one.

Defaults were chosen on 8 tuning scenes (seeds from ``TUNING_FIRST`` = 3*10**9; ``--tune`` prints the sweep over
each layer and ``all``, top 1..20 and min-share 0/0.1/0.3, both variants), never on the reported held-out seeds: the
rule was the highest ``lamp_off_rate`` with ``outside_change`` <= 0.02 while switching off a minority of a layer's
units. With the fast ranking that is ``all``, top 20, local: 1.0 lamp-off, 0.0018 outside change, 83 % of the truth's
darkening (per layer at most 0.75: ``blocks.1`` top 20 global; ``blocks.3``/``blocks.4`` local reach 1.0 only by
overwriting 20 of 32 or all 16 of their units in the region, painting rather than finding units). The pooled units
come mostly from ``blocks.1`` (about 13) and ``blocks.0`` (about 4): the light is spread over many ``blocks.1``
units, and the coarse ``blocks.0`` units carry what the rest miss. Switched off globally, the same units reach the
lamp-off target too but dim the room's other lamps (0.035 outside change), hence local. The exact ranking's pooled
top 20 turned fewer lamps off (0.75 on the tuning scenes): it scores each unit alone, and units that carry the light
redundantly each change little alone; the first-order estimate adds their contributions the way switching them off
together does. Held-out results for every variant: ``resources/rooms/MODEL_CARD.md`` ("Truth benchmark").
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from studio.commands.common import add_model_args, open_from_args
from studio.core.errors import StudioError
from studio.core.hooks import UnitEdit
from studio.core.images import save_image
from studio.core.rooms import world
from studio.ranking import best_units, rank_layers, rank_units

#: Reported scenes start here (training seeds lie below 10**9, the model card's held-out set at 10**9).
HELD_OUT_FIRST = 2_000_000_000
#: Scenes used to choose layer, top and min-share (``--tune``); never reported as the result.
TUNING_FIRST = 3_000_000_000
#: ``--layer all``: rank every spatial layer and switch off the best units over all of them.
ALL_LAYERS = "all"
DEFAULT_LAYER = ALL_LAYERS
DEFAULT_TOP = 20
DEFAULT_MIN_SHARE = 0.0
DEFAULT_LOCAL = True
DEFAULT_ABLATION = "zero"
DEFAULT_METHOD = "fast"
DEFAULT_ROUNDS = 1
TARGETS = {"lamp_off_rate": 0.8, "outside_change": 0.02}


@dataclass
class TruthScene:
    """One held-out room: the sample the model renders, the lamp to switch off, its light region and both truths."""

    seed: int
    caption: str
    lamp: int
    sample: object  # models.base.Sample
    region: np.ndarray  # (H, W) bool: glow<i> | lamp<i>
    lit: np.ndarray  # (H, W, 3) float32 truth, lamp on
    unlit: np.ndarray  # (H, W, 3) float32 truth, lamp off


def truth_scenes(generator, count: int, first: int = HELD_OUT_FIRST) -> list[TruthScene]:
    """The first ``count`` seeds from ``first`` whose room has a lit lamp (the first lit lamp is the one used).

    >>> [s.seed for s in truth_scenes(gen, 2)]        # seeds whose rooms hold a lit lamp
    """

    size = int(generator.resolution[0])
    out, seed = [], first
    while len(out) < count:
        natural = world.sample_scene(np.random.default_rng(seed))  # what sample_latent(seed) encodes
        caption = world.caption(natural)
        scene = world.scene_from(world.sample_latent(seed), caption)
        lit = [i for i, lamp in enumerate(scene.lamps) if lamp.lit]
        if lit:
            i = lit[0]
            t = world.truth(scene, size)
            region = t.masks[f"glow{i}"] | t.masks[f"lamp{i}"]
            unlit = world.render(world.with_lamp(scene, i, lit=False), size)
            out.append(TruthScene(seed, caption, i, generator.sample(seed, caption), region, t.image, unlit))
        seed += 1
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10 * math.log10(1 / max(mse, 1e-10))


def scene_figures(model: np.ndarray, edited: np.ndarray, scene: TruthScene) -> dict:
    """Per-scene figures of one edited image (H, W, 3) against the model's own image and both truths."""
    r, out = scene.region, ~scene.region
    inside_e, lit, unlit = edited[r], scene.lit[r], scene.unlit[r]
    to_unlit, to_lit = float(np.abs(inside_e - unlit).mean()), float(np.abs(inside_e - lit).mean())
    truth_drop = float(lit.mean() - unlit.mean())
    return {"off": to_unlit < to_lit, "psnr": _psnr(inside_e, unlit), "psnr_lit": _psnr(inside_e, lit),
            "outside": float(np.abs(edited[out] - model[out]).mean()) if out.any() else 0.0,
            "brightness": float(inside_e.mean()),
            "darkening": float(model[r].mean() - inside_e.mean()) / truth_drop if truth_drop > 1e-6 else 0.0}


def _summary(rows: list[dict], units: list[int]) -> dict:
    return {"lamp_off_rate": round(sum(r["off"] for r in rows) / len(rows), 3),
            "relight_psnr": round(statistics.mean(r["psnr"] for r in rows), 2),
            "outside_change": round(statistics.mean(r["outside"] for r in rows), 4),
            "darkening": round(statistics.mean(r["darkening"] for r in rows), 3),
            "units_used": round(statistics.mean(units), 2) if units else 0.0}


def _rounds_of_ranking(generator, scene: TruthScene, mask: torch.Tensor, layer: str, top: int, min_share: float,
                       method: str, ablation: str, rounds: int) -> list[int]:
    """Units chosen over ``rounds`` rankings, ``top / rounds`` per round, the units already chosen held off.

    One round is the plain top-k. Later rounds see the image with the earlier units off, so units that carry the
    same light redundantly (each alone changes little) are found. The held units are folded into the weights
    (``bake_unit_scale``, exact on Rooms) because the ranking traces the layer before hook edits; the weights are
    restored afterwards.
    """

    rounds = max(1, int(rounds))
    if rounds > 1 and ablation != "zero":
        raise ValueError("Rounds of ranking hold units off, so they need the zero ablation.")
    saved = {k: v.detach().clone() for k, v in generator.module.state_dict().items()} if rounds > 1 else None
    chosen: list[int] = []
    try:
        for r in range(rounds):
            quota = -(-top // rounds) if r < rounds - 1 else top - len(chosen)
            ranking = rank_units(generator, [scene.sample], mask, layer, method=method, ablation=ablation)
            new = [u for _, u in best_units([ranking], top, min_share) if u not in chosen][:quota]
            if not new:
                break
            chosen += new
            if r < rounds - 1:
                with torch.no_grad():
                    for u in new:
                        if not generator.bake_unit_scale(layer, u, 0.0):
                            raise ValueError(f"{generator.name} cannot hold {layer} units off for another round.")
    finally:
        if saved is not None:
            generator.module.load_state_dict(saved)
    return chosen


def resolve_layers(generator, spec: str) -> list[str]:
    """``all`` (every spatial layer), a comma-separated list, or one layer name -> layer names (checked)."""
    if spec == ALL_LAYERS:
        return [i.name for i in generator.layers() if i.size]
    return [generator.layer(name.strip()).name for name in spec.split(",") if name.strip()]


def choose_pairs(generator, scene: TruthScene, mask: torch.Tensor, layers: Sequence[str], top: int,
                 min_share: float, method: str, ablation: str, rounds: int) -> list[tuple[str, int]]:
    """(layer, unit) pairs to switch off: one layer's ranking (optionally in rounds), or the best of several
    layers' rankings pooled by score (:func:`studio.ranking.best_units`)."""
    if len(layers) == 1:
        units = _rounds_of_ranking(generator, scene, mask, layers[0], top, min_share, method, ablation, rounds)
        return [(layers[0], u) for u in units]
    if rounds > 1:
        raise ValueError("Rounds of ranking work on one layer; give --layer with a single name.")

    summaries = rank_layers(generator, [scene.sample], mask, layers, method=method, ablation=ablation)
    return best_units([s.ranking for s in summaries], top, min_share)


def _unit_means(generator, sample, layers) -> dict[str, torch.Tensor]:
    """Per layer, (C,) each unit's mean over the image's positions: what ``mean`` ablation sets a unit to (as the
    ranking); one trace for all the layers."""
    acts = generator.trace([sample], list(layers))
    return {name: a.float().mean(dim=tuple(d for d in range(a.dim()) if d != 1)).cpu() for name, a in acts.items()}


def _image(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu()[0].permute(1, 2, 0).numpy()


def evaluate(generator, scenes: Sequence[TruthScene], *, layer: str = DEFAULT_LAYER, top: int = DEFAULT_TOP,
             min_share: float = DEFAULT_MIN_SHARE, local: bool = DEFAULT_LOCAL, method: str = DEFAULT_METHOD,
             ablation: str = DEFAULT_ABLATION, rounds: int = DEFAULT_ROUNDS, keep_images: bool = False, progress=None, cache: dict | None = None) -> dict:
    """Rank, switch off and compare on every scene; the chosen variant's figures and the other variant's.

    >>> result = evaluate(gen, truth_scenes(gen, 2), top=5)
    >>> result["lamp_off_rate"], result["alternative"]["local"]

    cache: a dict kept across calls so a sweep ranks each (layer, seed) once.
    """

    start = time.perf_counter()
    layers = resolve_layers(generator, layer)
    per_layer = {name: 0 for name in layers}
    rows = {local: [], not local: []}
    units_per_scene, baseline, images = [], [], []
    for n, scene in enumerate(scenes):
        mask = torch.from_numpy(scene.region.astype(np.float32))
        key = (layer, scene.seed, method, ablation, rounds, top, min_share)
        pairs = cache.get(key) if cache is not None else None
        if pairs is None:
            pairs = choose_pairs(generator, scene, mask, layers, top, min_share, method, ablation, rounds)
            if cache is not None:
                cache[key] = pairs
        units_per_scene.append(len(pairs))
        for name, _ in pairs:
            per_layer[name] += 1
        with torch.inference_mode(), generator.editor() as editor:
            model = _image(generator.render([scene.sample]))
            means = _unit_means(generator, scene.sample, {n for n, _ in pairs}) if ablation == "mean" else None
            edited = {}
            for variant in (local, not local):
                editor.set([UnitEdit(name, u, "off", local=variant) if means is None else
                            UnitEdit(name, u, "set", float(means[name][u]), local=variant) for name, u in pairs],
                           mask=mask.to(generator.device))
                edited[variant] = _image(generator.render([scene.sample]))
        for variant in rows:
            rows[variant].append(scene_figures(model, edited[variant], scene))
        baseline.append(scene_figures(model, model, scene))
        if keep_images:
            images.append((scene.lit, model, edited[local], scene.unlit))
        if progress is not None:
            progress(n + 1, len(scenes), scene.seed, len(pairs))
    result = {"scenes": len(scenes), **_summary(rows[local], units_per_scene), "local": local,
              "alternative": {"local": not local, **_summary(rows[not local], units_per_scene)},
              "baseline": {**{k: v for k, v in _summary(baseline, []).items() if k != "units_used"},
                           # the model's own fidelity in the region: a ceiling for relight_psnr
                           "lit_psnr": round(statistics.mean(b["psnr_lit"] for b in baseline), 2)},
              "layer": layer, "method": method, "rounds": rounds, "top": top, "min_share": min_share, "ablation": ablation,
              "seeds": [s.seed for s in scenes], "lamps": [s.lamp for s in scenes],
              "units_per_scene": units_per_scene, "layers": layers,
              "units_per_layer": {name: round(n / len(scenes), 2) for name, n in per_layer.items()},
              "brightness_drop": round(statistics.mean(b["brightness"] - r["brightness"]
                                                       for b, r in zip(baseline, rows[local])), 4),
              "seconds": round(time.perf_counter() - start, 2), "targets": dict(TARGETS)}
    if keep_images:
        result["images"] = images
    return result


def save_strip(images: Sequence[tuple[np.ndarray, ...]], path: str | Path) -> Path:
    """Rows of lit truth | model | edited | unlit truth, 2 px apart, saved atomically as PNG."""

    gap = 2
    rows = [np.concatenate([np.pad(im, ((0, 0), (0, gap), (0, 0)), constant_values=1.0) for im in row], axis=1)
            for row in images]
    grid = np.concatenate([np.pad(r, ((0, gap), (0, 0), (0, 0)), constant_values=1.0) for r in rows], axis=0)
    return save_image(np.clip(grid, 0, 1), path)


def tune(generator, count: int, layers: Sequence[str], tops: Sequence[int], shares: Sequence[float],
         method: str, ablation: str = DEFAULT_ABLATION, rounds: int = DEFAULT_ROUNDS) -> list[dict]:
    """The sweep on tuning seeds (``TUNING_FIRST``): one row per layer, top, min-share; both variants in each."""
    scenes = truth_scenes(generator, count, TUNING_FIRST)
    out, cache = [], {}
    for layer in layers:
        for top in tops:
            for share in shares:
                r = evaluate(generator, scenes, layer=layer, top=top, min_share=share, method=method,
                             ablation=ablation, rounds=rounds, cache=cache)
                out.append({k: r[k] for k in ("layer", "ablation", "rounds", "top", "min_share", "lamp_off_rate", "relight_psnr",
                                              "outside_change", "darkening", "units_used", "local")}
                           | {"alternative": r["alternative"]})
                print(json.dumps(out[-1]), file=sys.stderr)
    return out


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("rooms", help="truth benchmark: switched-off units against the lamp-off render",
                           description="Rank units for a lamp's light on held-out Rooms scenes, switch the top units "
                                       "off and compare with the exact render of the room with that lamp off.")
    add_model_args(p, seed=False, prompt=False)
    p.add_argument("--seeds", type=int, default=20, help="held-out scenes with a lit lamp (default: 20)")
    p.add_argument("--layer", default=DEFAULT_LAYER,
                   help=f"layer to rank, several (comma-separated), or '{ALL_LAYERS}': the best units over every "
                        f"layer, pooled by score (default: {DEFAULT_LAYER})")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"most units switched off (default: {DEFAULT_TOP})")
    p.add_argument("--min-share", type=float, default=DEFAULT_MIN_SHARE,
                   help=f"keep units scoring at least this share of the best (default: {DEFAULT_MIN_SHARE})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--local", dest="local", action="store_true", default=DEFAULT_LOCAL,
                       help="switch units off only inside the mask")
    group.add_argument("--global", dest="local", action="store_false", help="switch units off everywhere")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=("exact", "fast"),
                   help=f"ranking method (default: {DEFAULT_METHOD})")
    p.add_argument("--ablation", default=DEFAULT_ABLATION, choices=("zero", "mean"),
                   help="zero switches units off, mean sets them to their mean over the image (default: "
                        f"{DEFAULT_ABLATION})")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help="rank again with the chosen units off, top/rounds units per round (default: "
                        f"{DEFAULT_ROUNDS}; zero ablation only)")
    p.add_argument("--picture", default=None, help="save lit | model | edited | unlit rows of 4 scenes to this PNG")
    p.add_argument("--tune", action="store_true", help="sweep layers/top/min-share on the tuning seeds instead")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; 0: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = open_from_args(args)
    if generator.family != "rooms":
        raise StudioError(f"The truth benchmark needs the Rooms model (it has exact lamp-off renders), "
                          f"not {generator.name}; run it with --model rooms.")
    if args.seeds < 1:
        raise StudioError("The truth benchmark needs at least one scene: give --seeds 1 or more.")
    if args.tune:
        layers = [i.name for i in generator.layers() if i.size and i.units > 3] + [ALL_LAYERS]
        rows = tune(generator, args.seeds, layers, (1, 3, 5, 10, 20), (0.0, 0.1, 0.3), args.method, args.ablation,
                    args.rounds)
        print(json.dumps({"tuning_first_seed": TUNING_FIRST, "scenes": args.seeds, "rows": rows}))
        return 0

    def report(done: int, total: int, seed: int, units: int) -> None:
        print(f"\rrooms truth: {done}/{total} scenes (seed {seed}: {units} units)", end="\n" if done == total else "",
              file=sys.stderr, flush=True)

    scenes = truth_scenes(generator, args.seeds)
    result = evaluate(generator, scenes, layer=args.layer, top=args.top, min_share=args.min_share, local=args.local,
                      method=args.method, ablation=args.ablation, rounds=args.rounds, keep_images=bool(args.picture), progress=report)
    if args.picture:
        result["picture"] = str(save_strip(result.pop("images")[:4], args.picture))
    result["threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(result))
        return 0
    alt, base = result["alternative"], result["baseline"]
    print(f"{result['scenes']} held-out rooms, {result['layer']}, {result['method']} ranking, "
          f"{'local' if result['local'] else 'global'} switch-off of {result['units_used']} units on average")
    for name, figures in (("edited", result), (f"{'global' if result['local'] else 'local'} (alt)", alt),
                          ("unedited model", base)):
        print(f"  {name:>16}: lamp off {figures['lamp_off_rate']:.2f}, PSNR vs unlit {figures['relight_psnr']:.1f} dB, "
              f"outside change {figures['outside_change']:.4f}, darkening {figures['darkening']:.2f}")
    print(f"targets: lamp_off_rate >= {TARGETS['lamp_off_rate']}, outside_change <= {TARGETS['outside_change']}; "
          f"{result['seconds']:.0f} s")
    return 0
