"""``python -m studio bench rooms``: does a lamp really go dark, as a user sees it, and as the truth says?

For held-out Rooms scenes with a lit lamp (seeds from ``HELD_OUT_FIRST``, disjoint from training's < 10**9), the lamp
is switched off two ways, each with the truth mask (its ``glow<i>`` | ``lamp<i>`` region) and a rough one (that
region's bounding box dilated by 3 px, what a hand paints): ``ranked_off``, the best units of the fast ranking over
every layer switched off inside the mask; and ``knob``, a lamp-off knob learned by :func:`studio.knobs.learn_knob`
from 8 examples on tuning seeds (4 lit, 4 unlit lamps, rough masks, each with the lamp itself, shade and pole, as a
part region boxed tight) and applied at strength 1 through the app's :class:`studio.live.LiveRenderer`::

    python -m studio bench rooms --seeds 20 --json
    {"ceiling_psnr": 23.7, "lit_psnr": 24.0, "methods": {"ranked_off": {"masks": {"truth": {...}, "rough": {...}}},
     "knob": {"masks": {"truth": {"really_off": ..., "lamp_off_rate": ..., "relight_psnr": ..., "outside_change": ...,
     "other_lamp_kept": ..., "units_used": ...}, "rough": {...}}}}, ...}

Figures of each method and mask (:func:`user_figures`): ``really_off`` (the world's detectors on the edited image:
lamp still counted, its shade unlit, the region nearer the unlit truth than the lit truth and the unedited image are,
wall/bed/window/other lamps read as before: a dark hole or an erased lamp fails), ``lamp_off_rate`` (region nearer
the unlit truth than the lit one), ``relight_psnr`` (region against the unlit truth), ``outside_change`` (mean
absolute change outside the truth region), ``other_lamp_kept`` (on scenes with another lit lamp: it still reads lit
and the lamp itself, shade and pole, changed by at most 0.05 on average or by no more than the ceiling changed it;
its light on the wall is not judged, as neighbouring glows overlap and the model re-renders both: see
:func:`user_figures`), ``units_used``. At the top, ``ceiling_psnr``: the model's render with the
lamp's lit flag flipped in the latent, against the unlit truth (the best an edit of this model can do), and
``lit_psnr``: the unedited image against the lit truth. The knob's settings (``KNOB_*``: units compared cell by
cell, targets relative to the surroundings where the examples agree better so, 48 units on ``blocks.0``-``blocks.2``
with 6x6 patterns over the whole region, 32 on ``blocks.1``-``blocks.3`` with 4x4 patterns over the lamp part) were
chosen on 12 tuning rooms (seeds from ``TUNING_FIRST + 2*10**6``, as ``--tuning-scenes``), never on the reported
seeds. ``met`` says which of the issue's targets (``KNOB_TARGETS``) the knob with rough masks meets, and ``all``:
the gap to the ceiling counts only together with ``lit_psnr`` (:func:`target_verdict`).

The older ranking-only figures (``evaluate``, ``--tune``) follow.

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
from typing import Mapping, Sequence

import numpy as np
import torch

from studio.commands.common import add_model_args, open_from_args
from studio.core.errors import StudioError
from studio.core.hooks import UnitEdit
from studio.core.images import save_image
from studio.core.rooms import world
from studio.knob_regions import learn_app_knob
from studio.knobs import Example, KnobEdit, learn_knob
from studio.live import LiveRenderer
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
        caption = world.natural_caption(seed)
        scene = world.seed_scene(seed, caption)
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


# -- the truth benchmark of what a user sees: ranked units switched off against a knob learned from examples ----------

#: The knob's examples come from here (lit lamps) and ``+ UNLIT_OFFSET`` (unlit lamps): tuning seeds, never reported.
KNOB_FIRST = TUNING_FIRST
UNLIT_OFFSET = 1_000_000
KNOB_EXAMPLES = 4  # per side: 4 lit + 4 unlit
#: Chosen on tuning scenes (TUNING_FIRST + 2*10**6, 12 scenes, rough masks); see the model card.
KNOB_LAYERS = ("blocks.0", "blocks.1", "blocks.2")
KNOB_UNITS = 48
KNOB_PATTERN = 6
#: The knob's second region, the lamp itself (shade and pole), with its own units down to the 64x64 layer.
KNOB_PART = "lamp"
KNOB_PART_LAYERS = ("blocks.1", "blocks.2", "blocks.3")
KNOB_PART_UNITS = 32
KNOB_PART_PATTERN = 4
#: Units compared cell by cell, targets relative to the surroundings where the examples agree better so.
KNOB_SELECT = "cells"
ROUGH_PX = 3
#: How much the other lit lamp itself (shade and pole, outside the switched lamp's region) may change on average,
#: unless the model's own lamp-off render (the ceiling) changes it more. A lit and an unlit shade differ by about
#: 0.7; the ceiling changes the other lamp by 0.006-0.16 (median 0.012) on the tuning rooms, switching both lamps
#: off by 0.32-0.50 and darkening the image to 60 % by 0.21-0.31.
OTHER_LAMP_TOLERANCE = 0.05
#: The issue's targets for the knob with rough masks on held-out rooms, and for the model (``lit_psnr``: the unedited
#: image against the lit truth in the lamp's region).
KNOB_TARGETS = {"really_off": 0.9, "relight_gap_db": 2.5, "outside_change": 0.005, "other_lamp_kept": 0.95,
                "lit_psnr": 26.0}


def target_verdict(result: Mapping) -> dict[str, bool | None]:
    """Which of :data:`KNOB_TARGETS` the knob with rough masks (``methods.knob.masks.rough``) meets in ``result``,
    and ``all``. ``other_lamp_kept`` is None when no room had another lit lamp (it does not fail ``all``).

    The gap to the ceiling is relative: a worse model closes it by a fallen ceiling, not a better edit, so ``all``
    also needs ``lit_psnr``, which falls with such a model."""
    rough = result["methods"]["knob"]["masks"]["rough"]
    t = KNOB_TARGETS
    kept = rough["other_lamp_kept"]
    met = {"really_off": rough["really_off"] >= t["really_off"],
           "relight_gap_db": result["ceiling_psnr"] - rough["relight_psnr"] <= t["relight_gap_db"],
           "outside_change": rough["outside_change"] <= t["outside_change"],
           "other_lamp_kept": None if kept is None else kept >= t["other_lamp_kept"],
           "lit_psnr": result["lit_psnr"] >= t["lit_psnr"]}
    met["all"] = all(v for v in met.values() if v is not None)
    return met


def rough_mask(region: np.ndarray, px: int = ROUGH_PX) -> np.ndarray:
    """What a hand paints: the region's bounding box dilated by ``px`` pixels (clipped to the image)."""
    ys, xs = np.nonzero(region)
    out = np.zeros_like(region, dtype=bool)
    if len(ys):
        out[max(ys.min() - px, 0):ys.max() + px + 1, max(xs.min() - px, 0):xs.max() + px + 1] = True
    return out


def lamp_region(scene, index: int, size: int) -> np.ndarray:
    """Where lamp ``index`` and its light are when it is lit (glow and lamp truth masks), whatever its state now."""
    t = world.truth(world.with_lamp(scene, index, lit=True), size)
    return t.masks[f"glow{index}"] | t.masks[f"lamp{index}"]


def stroke_mask(scene, index: int, size: int, px: int = ROUGH_PX) -> np.ndarray:
    """A round brush stroke over lamp ``index``, what a quick user paints: a disc centred on the lamp's shade, its
    radius half the width of the lamp's light region plus ``px`` (covering the shade, the glow around it and the top
    of the pole; not the whole glow above nor the pole's foot)."""
    region = lamp_region(scene, index, size)
    shade = world._shade_regions(world._geometry(scene), size) == index
    ys, xs = np.nonzero(shade if shade.any() else region)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    _, rx = np.nonzero(region)
    radius = (rx.max() - rx.min() + 1) / 2 + px
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


#: The masks a user may paint on a lamp: the truth region, a quick box over it, a round stroke over the lamp.
USER_MASKS = ("truth", "rough", "stroke")


def user_mask(scene, index: int, size: int, kind: str) -> np.ndarray:
    """(H, W) bool: lamp ``index``'s light region painted as ``kind`` (one of :data:`USER_MASKS`), lit or not."""
    region = lamp_region(scene, index, size)
    if kind == "truth":
        return region
    if kind == "rough":
        return rough_mask(region)
    if kind == "stroke":
        return stroke_mask(scene, index, size)
    raise StudioError(f"Unknown mask kind '{kind}': use one of {', '.join(USER_MASKS)}.")


def knob_examples(generator, count: int = KNOB_EXAMPLES, first: int = KNOB_FIRST, masks: str = "rough",
                  part: str | None = KNOB_PART):
    """``count`` lit and ``count`` unlit lamps on tuning seeds: the knob's present and wanted examples, with rough
    masks (a quick box) or the truth regions (``masks="truth"``: carefully painted, or a proposed region accepted).

    With ``part``, each example also names the lamp itself (shade and pole: the ``lamp<i>`` truth mask, or with
    rough masks its bounding box, a quick box drawn tight round the lamp), a second region of the knob. (Dilated by
    1 px that box gave 0.83 instead of 0.92 really off on the tuning rooms: the part's place in the region blurs.)"""
    size = int(generator.resolution[0])

    def lamp_part(scene, i: int) -> dict:
        if not part:
            return {}
        lamp = world.truth(world.with_lamp(scene, i, lit=True), size).masks[f"lamp{i}"]
        return {part: torch.from_numpy((lamp if masks == "truth" else rough_mask(lamp, 0)).astype(np.float32))}

    def pick(start: int, lit: bool) -> list:
        out, seed = [], start
        while len(out) < count:
            caption = world.natural_caption(seed)
            scene = world.seed_scene(seed, caption)
            lamps = [i for i, lamp in enumerate(scene.lamps) if lamp.lit == lit]
            if lamps:
                mask = user_mask(scene, lamps[0], size, masks).astype(np.float32)
                out.append(Example(generator.sample(seed, caption), torch.from_numpy(mask), lamp_part(scene, lamps[0])))
            seed += 1
        return out

    return pick(first, True), pick(first + UNLIT_OFFSET, False)


def bench_knob(generator, *, layers: Sequence[str] = KNOB_LAYERS, units: int = KNOB_UNITS,
               pattern: int = KNOB_PATTERN, first: int = KNOB_FIRST, name: str = "lamp-off",
               example_masks: str = "rough", part: str | None = KNOB_PART,
               part_layers: Sequence[str] = KNOB_PART_LAYERS, part_units: int = KNOB_PART_UNITS,
               part_pattern: int = KNOB_PART_PATTERN):
    """The lamp-off knob learned from 8 tuning examples (4 lit, 4 unlit) through the app's :func:`learn_knob`."""
    present, wanted = knob_examples(generator, first=first, masks=example_masks, part=part)
    return learn_knob(generator, name, present=present, wanted=wanted, layers=list(layers), units=units,
                      pattern=pattern, part_layers=list(part_layers), part_units=part_units,
                      part_pattern=part_pattern, select=KNOB_SELECT, relative=True)


def user_figures(model: np.ndarray, edited: np.ndarray, scene: TruthScene, room,
                 ceiling: np.ndarray | None = None) -> dict:
    """What a user sees in one edited image (H, W, 3), judged by the world's own detectors.

    ``really_off``: the lamp is still there (lamp count unchanged), its shade reads unlit, the region is nearer the
    unlit truth than both the lit truth and the unedited image are, and wall, bed, window and the other lamps' states
    read as in the unedited image. A dark hole fails the third test, an erased lamp the first.

    ``kept`` (one entry per other lit lamp): it still reads lit (``detect_lit``) and the lamp itself (its
    ``lamp<j>`` shade and pole, outside the switched lamp's region) changed by at most ``OTHER_LAMP_TOLERANCE`` on
    average, or at most as much as in ``ceiling`` (the model's own lamp-off render) when that is more. The lamp's
    light on the wall is left out: neighbouring lamps' glows overlap, and the model re-renders both when either
    changes, so the ceiling itself changed it by more than 0.01 in most rooms. Switching both lamps off or darkening
    the image fails (the lamp reads unlit and its shade changes by 0.2 or more).
    """
    r, i = scene.region, scene.lamp
    inside = edited[r]
    to_unlit = float(np.abs(inside - scene.unlit[r]).mean())
    nearer = to_unlit < float(np.abs(inside - scene.lit[r]).mean()) and \
        to_unlit < float(np.abs(model[r] - scene.unlit[r]).mean())
    before, after = world.detect_fields(model, room), world.detect_fields(edited, room)
    others = [j for j in range(len(room.lamps)) if j != i]
    same_others = all(world.detect_lit(edited, room, j) == world.detect_lit(model, room, j) for j in others)
    really = bool(nearer and before == after and not world.detect_lit(edited, room, i) and same_others)
    size = edited.shape[0]
    kept = []
    lamps = world.truth(room, size).masks if any(room.lamps[j].lit for j in others) else {}
    for j in others:
        if room.lamps[j].lit:
            other = lamps[f"lamp{j}"] & ~r
            change = float(np.abs(edited[other] - model[other]).mean()) if other.any() else 0.0
            allowed = OTHER_LAMP_TOLERANCE
            if ceiling is not None and other.any():
                allowed = max(allowed, float(np.abs(ceiling[other] - model[other]).mean()))
            kept.append(bool(world.detect_lit(edited, room, j) and change <= allowed))
    return {"really_off": really, "off": nearer or to_unlit < float(np.abs(inside - scene.lit[r]).mean()),
            "psnr": _psnr(inside, scene.unlit[r]),
            "outside": float(np.abs(edited[~r] - model[~r]).mean()) if (~r).any() else 0.0, "kept": kept}


def _method_summary(rows: list[dict], units: list[int]) -> dict:
    kept = [k for row in rows for k in row["kept"]]
    return {"really_off": round(sum(r["really_off"] for r in rows) / len(rows), 3),
            "lamp_off_rate": round(sum(r["off"] for r in rows) / len(rows), 3),
            "relight_psnr": round(statistics.mean(r["psnr"] for r in rows), 2),
            "outside_change": round(statistics.mean(r["outside"] for r in rows), 4),
            "other_lamp_kept": round(sum(kept) / len(kept), 3) if kept else None,
            "other_lamp_scenes": len(kept),
            "units_used": round(statistics.mean(units), 2) if units else 0.0}


def lamp_off_sample(generator, scene: TruthScene, room):
    """The scene's sample with its lamp's lit flag flipped in the latent (what the ceiling renders)."""
    off_latent = world.encode_latent(world.with_lamp(room, scene.lamp, lit=False))
    return generator.sample(scene.seed, scene.caption, latent=[float(v) for v in off_latent])


def model_and_ceiling(generator, scene: TruthScene, ceiling: list, lit: list, ceiling_rows: list) -> tuple:
    """The scene's room, the model's image of it and the ceiling: the model's image with the lamp's lit flag flipped
    in the latent (the best any edit of this model can do), both (H, W, 3); appends the ceiling's PSNR, the unedited
    image's PSNR against the lit truth and the ceiling's user figures to the three lists."""
    room = world.seed_scene(scene.seed, scene.caption)
    with torch.inference_mode():
        model = _image(generator.render([scene.sample]))
        ceil = _image(generator.render([lamp_off_sample(generator, scene, room)]))
    r = scene.region
    ceiling.append(_psnr(ceil[r], scene.unlit[r]))
    ceiling_rows.append(user_figures(model, ceil, scene, room, ceil))
    lit.append(_psnr(model[r], scene.lit[r]))
    return room, model, ceil


def user_benchmark(generator, scenes: Sequence[TruthScene], knob, *, top: int = DEFAULT_TOP,
                   method: str = DEFAULT_METHOD, layer: str = ALL_LAYERS, keep_images: bool = False,
                   progress=None) -> dict:
    """Both methods, both masks, on every scene: the figures of the issue's JSON layout (see :func:`run`).

    ``knob`` is applied with strength 1 through :class:`studio.live.LiveRenderer`, as the app's slider does.
    """

    start = time.perf_counter()
    layers = resolve_layers(generator, layer)
    rows = {(m, k): [] for m in ("ranked_off", "knob") for k in ("truth", "rough")}
    units = {key: [] for key in rows}
    ceiling, lit, images, ceiling_rows = [], [], [], []
    live = LiveRenderer(generator)
    try:
        for n, scene in enumerate(scenes):
            room, model, ceil = model_and_ceiling(generator, scene, ceiling, lit, ceiling_rows)
            r = scene.region
            shown = {}
            for kind, region in (("truth", r), ("rough", rough_mask(r))):
                mask = torch.from_numpy(region.astype(np.float32))
                pairs = choose_pairs(generator, scene, mask, layers, top, DEFAULT_MIN_SHARE, method,
                                     DEFAULT_ABLATION, DEFAULT_ROUNDS)
                edits = [UnitEdit(name, u, "off", local=True) for name, u in pairs]
                ranked = _image(live.render(scene.sample, edits, mask)[0])
                knobbed = _image(live.render(scene.sample, (), None, [KnobEdit(knob, mask, 1.0)])[0])
                for m, image, used in (("ranked_off", ranked, len(pairs)), ("knob", knobbed, knob.unit_count)):
                    rows[(m, kind)].append(user_figures(model, image, scene, room, ceil))
                    units[(m, kind)].append(used)
                shown[kind] = (ranked, knobbed)
            if keep_images:
                images.append((model, *shown["rough"], ceil, scene.unlit))
            if progress is not None:
                progress(n + 1, len(scenes), scene.seed, knob.unit_count)
    finally:
        live.close()
    methods = {m: {"masks": {k: _method_summary(rows[(m, k)], units[(m, k)]) for k in ("truth", "rough")}}
               for m in ("ranked_off", "knob")}
    methods["ranked_off"].update({"layers": layer, "top": top, "ranking": method, "local": True})
    methods["knob"].update({"name": knob.name, "layers": {layer: len(u) for layer, u in knob.units.items()},
                            "regions": {r.name: {layer: len(u) for layer, u in r.units.items()} for r in knob.regions},
                            "examples": {side: [e.sample.seed for e in items] for side, items in knob.examples.items()},
                            "strength": 1.0})
    result = {"ceiling_psnr": round(statistics.mean(ceiling), 2), "lit_psnr": round(statistics.mean(lit), 2),
              # the lit flag flipped in the latent, judged like the edits: what this model allows at best
              "ceiling": {k: v for k, v in _method_summary(ceiling_rows, []).items() if k != "units_used"},
              "scenes": len(scenes), "seeds": [s.seed for s in scenes], "methods": methods,
              "targets": dict(KNOB_TARGETS), "seconds": round(time.perf_counter() - start, 2)}
    result["met"] = target_verdict(result)
    if keep_images:
        result["images"] = images
    return result


def app_knob(generator, example_masks: str = "rough", first: int = KNOB_FIRST, name: str = "lamp-off"):
    """The lamp-off knob the app learns (:func:`studio.knob_regions.learn_app_knob`) from the 8 tuning examples,
    each with one mask as a user paints it (``example_masks``: rough box or round stroke) and no parts."""
    present, wanted = knob_examples(generator, first=first, masks=example_masks, part=None)
    return learn_app_knob(generator, name, present, wanted)


def app_benchmark(generator, scenes: Sequence[TruthScene], knob, kinds: Sequence[str] = USER_MASKS,
                  progress=None) -> dict:
    """The knob alone (as the app learned it) on every scene, with each mask kind a user may paint; the figures and
    JSON layout of :func:`user_benchmark` (``methods.knob.masks.<kind>``), without the ranked-off method."""
    start = time.perf_counter()
    rows = {kind: [] for kind in kinds}
    ceiling, lit, ceiling_rows = [], [], []
    size = int(generator.resolution[0])
    live = LiveRenderer(generator)
    try:
        for n, scene in enumerate(scenes):
            room, model, ceil = model_and_ceiling(generator, scene, ceiling, lit, ceiling_rows)
            for kind in kinds:
                mask = torch.from_numpy(user_mask(room, scene.lamp, size, kind).astype(np.float32))
                knobbed = _image(live.render(scene.sample, (), None, [KnobEdit(knob, mask, 1.0)])[0])
                rows[kind].append(user_figures(model, knobbed, scene, room, ceil))
            if progress is not None:
                progress(n + 1, len(scenes), scene.seed, knob.unit_count)
    finally:
        live.close()
    knob_figures = {"masks": {k: _method_summary(rows[k], [knob.unit_count] * len(rows[k])) for k in kinds},
                    "name": knob.name, "layers": {layer: len(u) for layer, u in knob.units.items()},
                    "regions": {r.name: {"box": [round(float(v), 3) for v in r.box],
                                         **{layer: len(u) for layer, u in r.units.items()}} for r in knob.regions},
                    "examples": {side: [e.sample.seed for e in items] for side, items in knob.examples.items()},
                    "strength": 1.0, "learned_by": "studio.knob_regions.learn_app_knob"}
    result = {"ceiling_psnr": round(statistics.mean(ceiling), 2), "lit_psnr": round(statistics.mean(lit), 2),
              "ceiling": {k: v for k, v in _method_summary(ceiling_rows, []).items() if k != "units_used"},
              "scenes": len(scenes), "seeds": [s.seed for s in scenes], "methods": {"knob": knob_figures},
              "targets": dict(KNOB_TARGETS), "seconds": round(time.perf_counter() - start, 2)}
    if "rough" in kinds:
        result["met"] = target_verdict(result)
    return result


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("rooms", help="truth benchmark: ranked units switched off and a lamp-off knob against "
                                         "the lamp-off render",
                           description="On held-out Rooms scenes, switch a lit lamp off two ways (ranked units off; "
                                       "a knob learned from 4 lit and 4 unlit example lamps), with truth and rough "
                                       "masks, and judge the result with the world's own detectors and renders.")
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
    p.add_argument("--picture", default=None,
                   help="save model | ranked-off | knob | ceiling | unlit truth rows of the first 4 scenes (rough "
                        "masks) to this PNG (with --oracle: model | knob | own targets in 6x6 and 12x12 cells | "
                        "own targets | ceiling | unlit truth)")
    p.add_argument("--knob-layers", default=",".join(KNOB_LAYERS),
                   help=f"layers the knob is learned on, comma-separated (default: {','.join(KNOB_LAYERS)})")
    p.add_argument("--knob-units", type=int, default=KNOB_UNITS, help=f"units the knob keeps (default: {KNOB_UNITS})")
    p.add_argument("--knob-pattern", type=int, default=KNOB_PATTERN,
                   help=f"knob target grid, 1 = constant (default: {KNOB_PATTERN})")
    p.add_argument("--example-masks", default="rough", choices=USER_MASKS,
                   help="masks on the knob's 8 examples: quick boxes, the truth regions or (with --app) round "
                        "strokes over the lamps (default: rough)")
    p.add_argument("--knob-from", default="app", choices=("app", "tuned"),
                   help="app: the knob as the app learns it (learn_app_knob, one quick mask per example, a self-found "
                        "core part); tuned: learn_knob with --knob-* settings and the lamp's tight truth box named as "
                        "a part on every example (default: app)")
    p.add_argument("--app", action="store_true",
                   help="the knob the app learns (learn_app_knob: one mask per example, a self-found core part) "
                        "applied with truth, rough and stroke masks; no ranked-off method")
    p.add_argument("--oracle", action="store_true",
                   help="where the app's knob loses: its own units with each room's own lamp-off activations as "
                        "targets (full resolution, pooled to 6x6 and 12x12 cells, and the other rooms' mean), rough "
                        "boxes (studio/bench/rooms_oracle.py)")
    p.add_argument("--tuning-scenes", action="store_true",
                   help="report on the tuning scenes (choosing knob settings) instead of the held-out ones")
    p.add_argument("--tune", action="store_true",
                   help="sweep the ranked-off method's layers/top/min-share on the tuning seeds instead")
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
        print(f"\rrooms truth: {done}/{total} scenes (seed {seed})", end="\n" if done == total else "",
              file=sys.stderr, flush=True)

    first = TUNING_FIRST + 2 * UNLIT_OFFSET if args.tuning_scenes else HELD_OUT_FIRST
    if args.oracle:
        return run_oracle(generator, args, first, report)
    if args.app:
        return run_app(generator, args, first, report)
    if args.knob_from == "app":
        knob = app_knob(generator, args.example_masks)
    else:
        if args.example_masks == "stroke":
            raise StudioError("Stroke masks on the examples need --knob-from app (the tuned knob takes tight lamp "
                              "boxes as parts).")
        knob_layers = [n.strip() for n in args.knob_layers.split(",") if n.strip()]
        knob = bench_knob(generator, layers=knob_layers, units=args.knob_units, pattern=args.knob_pattern,
                          example_masks=args.example_masks)
    scenes = truth_scenes(generator, args.seeds, first)
    result = user_benchmark(generator, scenes, knob, top=args.top, method=args.method, layer=args.layer,
                            keep_images=bool(args.picture), progress=report)
    result["methods"]["knob"]["example_masks"] = args.example_masks
    result["methods"]["knob"]["learned_by"] = ("studio.knob_regions.learn_app_knob" if args.knob_from == "app" else
                                               "studio.knobs.learn_knob with the lamp's truth box as a part")
    if _printed_as_json(result, args, first):
        return 0
    print(f"{result['scenes']} {'tuning' if args.tuning_scenes else 'held-out'} rooms; ceiling (lit flag flipped in "
          f"the latent) {result['ceiling_psnr']:.1f} dB, unedited vs lit truth {result['lit_psnr']:.1f} dB")
    for m, figures in result["methods"].items():
        for kind, f in figures["masks"].items():
            kept = "n/a" if f["other_lamp_kept"] is None else f"{f['other_lamp_kept']:.2f}"
            print(f"  {m:>10} {kind:>5} masks: really off {f['really_off']:.2f}, lamp off {f['lamp_off_rate']:.2f}, "
                  f"relight {f['relight_psnr']:.1f} dB, outside {f['outside_change']:.4f}, other lamp kept {kept}, "
                  f"{f['units_used']:g} units")
    print(f"targets (knob, rough masks): {_targets_text()}: {_verdict_text(result['met'])}; {result['seconds']:.0f} s")
    return 0


def run_app(generator, args: argparse.Namespace, first: int, report) -> int:
    """``bench rooms --app``: the app's knob (:func:`app_knob`) on the scenes, with every kind of user mask."""
    knob = app_knob(generator, args.example_masks)
    scenes = truth_scenes(generator, args.seeds, first)
    result = app_benchmark(generator, scenes, knob, progress=report)
    result["app"] = True
    result["methods"]["knob"]["example_masks"] = args.example_masks
    if _printed_as_json(result, args, first):
        return 0
    print(f"{result['scenes']} {'tuning' if args.tuning_scenes else 'held-out'} rooms, the app's knob from "
          f"{args.example_masks} example masks; ceiling {result['ceiling_psnr']:.1f} dB")
    for kind, f in result["methods"]["knob"]["masks"].items():
        kept = "n/a" if f["other_lamp_kept"] is None else f"{f['other_lamp_kept']:.2f}"
        print(f"  {kind:>6} masks: really off {f['really_off']:.2f}, lamp off {f['lamp_off_rate']:.2f}, relight "
              f"{f['relight_psnr']:.1f} dB, outside {f['outside_change']:.4f}, other lamp kept {kept}")
    print(f"targets (knob, rough masks): {_targets_text()}: {_verdict_text(result['met'])}")
    return 0


def run_oracle(generator, args: argparse.Namespace, first: int, report) -> int:
    """``bench rooms --oracle``: the app's knob against knobs of its units with the rooms' own lamp-off targets."""
    from studio.bench.rooms_oracle import oracle_benchmark

    knob = app_knob(generator, args.example_masks)
    result = oracle_benchmark(generator, truth_scenes(generator, args.seeds, first), knob,
                              keep_images=bool(args.picture), progress=report)
    if _printed_as_json(result, args, first):
        return 0
    print(f"{result['scenes']} {'tuning' if args.tuning_scenes else 'held-out'} rooms, rough boxes, the app's knob's "
          f"{sum(result['units'].values())} units; ceiling {result['ceiling_psnr']:.2f} dB")
    for name, f in result["methods"].items():
        print(f"  {name:>16}: really off {f['really_off']:.2f}, relight {f['relight_psnr']:.2f} dB "
              f"(ceiling - {f['gap_db']:.2f}), outside {f['outside_change']:.4f}")
    return 0


def _printed_as_json(result: dict, args: argparse.Namespace, first: int) -> bool:
    """Saves the first 4 rows of ``result``'s images to ``--picture`` (if asked; the images leave ``result``), adds
    the run's first seed and threads; prints it as one JSON object if ``--json`` asked."""
    if args.picture and "images" in result:
        result["picture"] = str(save_strip(result.pop("images")[:4], args.picture))
    result["first_seed"] = first
    result["threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(result))
    return bool(args.json)


def _targets_text() -> str:
    """:data:`KNOB_TARGETS` in words, e.g. "really_off >= 0.9, relight_psnr >= ceiling - 2.5 dB, ..."."""
    t = KNOB_TARGETS
    return (f"really_off >= {t['really_off']:g}, relight_psnr >= ceiling - {t['relight_gap_db']:g} dB, "
            f"outside_change <= {t['outside_change']:g}, other_lamp_kept >= {t['other_lamp_kept']:g}, "
            f"lit_psnr >= {t['lit_psnr']:g} dB")


def _verdict_text(met: Mapping) -> str:
    """``met`` in words: "all met" or the targets missed."""
    missed = [name for name, ok in met.items() if name != "all" and ok is False]
    return "all met" if met["all"] else "missed: " + ", ".join(missed)
