"""Where a knob's limit lies: its own units, but each room's own lamp-off activations as targets.

``python -m studio bench rooms --oracle`` learns the app's lamp-off knob as ``--app`` does and applies, through the
same :class:`studio.live.LiveRenderer` and :class:`studio.knobs.KnobEdit` path, knobs that keep its layers and units
but take their targets from the truth the examples cannot give: the activations of the same room rendered with the
lamp's lit flag flipped in the latent (the ceiling), read over the rough box:

- ``own``: the room's own lamp-off activations at the layer's full resolution over the box;
- ``own_cells_P``: the same pooled to P x P cells of the box (the knob's pattern form, P = 6 for its region part);
- ``others_cells_P``: the mean of the *other* rooms' own P x P patterns (what a single mean pattern of that form could
  reach from endlessly many well-aligned examples; with two rooms or more).

If ``own`` comes near the ceiling, the knob chose the right units and layers and what is missing is its targets;
if ``own_cells_P`` falls far below ``own``, the pattern form itself loses it.
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from studio.bench.rooms import _image, _method_summary, lamp_off_sample, model_and_ceiling, user_figures, user_mask
from studio.core.hooks import Trace, box_crop, mask_box
from studio.knobs import Knob, KnobEdit
from studio.live import LiveRenderer

ORACLE_CELLS: tuple[int, ...] = (6, 12)


def knob_units(knob: Knob) -> dict[str, torch.Tensor]:
    """Every unit the knob edits per layer, its own and its regions', sorted (K,)."""
    chosen: dict[str, set[int]] = {}
    for units in [knob.units, *[r.units for r in knob.regions]]:
        for layer, u in units.items():
            chosen.setdefault(layer, set()).update(int(v) for v in u)
    return {layer: torch.tensor(sorted(u), dtype=torch.long) for layer, u in chosen.items() if u}


def box_patterns(acts: dict[str, torch.Tensor], units: dict[str, torch.Tensor], mask: torch.Tensor,
                 cells: int | None) -> dict[str, torch.Tensor]:
    """(K, P, P) of each layer's ``units`` over the box of ``mask``: the activation averaged over each of P x P
    cells; ``cells`` None: the activation itself, sampled finely enough that placing it back changes nothing."""
    box = mask_box(mask)
    out = {}
    for layer, u in units.items():
        act = acts[layer][:1, u].float()
        h, w = act.shape[-2:]
        if cells is None:  # 8 samples per activation pixel: placed back bilinearly they give its values again
            p, q = max(1, round(8 * (box[2] - box[0]) * h)), max(1, round(8 * (box[3] - box[1]) * w))
            out[layer] = box_crop(act, box, (p, q))[0]
        else:  # 4 x 4 samples per cell, averaged: the cell's mean, not its centre's value
            out[layer] = F.avg_pool2d(box_crop(act, box, (4 * cells, 4 * cells)), 4)[0]
    return out


def oracle_knob(knob: Knob, units: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor]) -> Knob:
    """A knob with ``knob``'s model, layers and units, one region (the painted one) and the given patterns."""
    return Knob(name=f"{knob.name} (oracle)", model=knob.model, units=dict(units), wanted=dict(wanted),
                present=dict(present))


def oracle_benchmark(generator, scenes: Sequence, knob: Knob, cells: Sequence[int] = ORACLE_CELLS,
                     keep_images: bool = False, progress=None) -> dict:
    """The figures of ``own``, ``own_cells_P`` and ``others_cells_P`` (rough boxes), beside the knob itself and the
    ceiling; the per-method keys of :func:`studio.bench.rooms.user_benchmark` (``really_off``, ``relight_psnr``...).
    ``keep_images``: ``images`` holds a row per room: model | knob | own_cells_P for each P | own | ceiling | unlit
    truth."""
    start = time.perf_counter()
    units = knob_units(knob)
    layers = list(units)
    size = int(generator.resolution[0])
    ceiling, lit, ceiling_rows, rooms = [], [], [], []
    for n, scene in enumerate(scenes):
        room, model, ceil = model_and_ceiling(generator, scene, ceiling, lit, ceiling_rows)
        mask = torch.from_numpy(user_mask(room, scene.lamp, size, "rough").astype(np.float32))
        acts = {}
        for side, sample in (("present", scene.sample), ("off", lamp_off_sample(generator, scene, room))):
            with torch.inference_mode(), Trace(generator.module, layers) as trace:
                generator.render([sample])
            acts[side] = {layer: trace[layer].detach().cpu() for layer in layers}
        patterns = {P: {side: box_patterns(acts[side], units, mask, P) for side in acts} for P in (None, *cells)}
        rooms.append(dict(scene=scene, room=room, model=model, ceil=ceil, mask=mask, patterns=patterns))
        if progress is not None:
            progress(n + 1, 2 * len(scenes), scene.seed, knob.unit_count)
    others = len(rooms) > 1  # the other rooms' mean needs other rooms
    rows: dict[str, list] = {"knob": [], "own": [], **{f"own_cells_{P}": [] for P in cells},
                             **{f"others_cells_{P}": [] for P in cells if others}}
    images = []
    live = LiveRenderer(generator)
    try:
        for n, d in enumerate(rooms):
            knobs = {"knob": knob, "own": oracle_knob(knob, units, d["patterns"][None]["off"],
                                                      d["patterns"][None]["present"])}
            for P in cells:
                knobs[f"own_cells_{P}"] = oracle_knob(knob, units, d["patterns"][P]["off"], d["patterns"][P]["present"])
                if others:
                    rest = [e["patterns"][P] for e in rooms if e is not d]
                    mean = {side: {layer: torch.stack([o[side][layer] for o in rest]).mean(0) for layer in units}
                            for side in ("off", "present")}
                    knobs[f"others_cells_{P}"] = oracle_knob(knob, units, mean["off"], mean["present"])
            shown = {}
            for name, k in knobs.items():
                shown[name] = _image(live.render(d["scene"].sample, (), None, [KnobEdit(k, d["mask"], 1.0)])[0])
                rows[name].append(user_figures(d["model"], shown[name], d["scene"], d["room"], d["ceil"]))
            if keep_images:
                images.append((d["model"], shown["knob"], *[shown[f"own_cells_{P}"] for P in cells], shown["own"],
                               d["ceil"], d["scene"].unlit))
            if progress is not None:
                progress(len(rooms) + n + 1, 2 * len(rooms), d["scene"].seed, knob.unit_count)
    finally:
        live.close()
    keys = ("really_off", "relight_psnr", "outside_change", "other_lamp_kept")
    methods = {}
    for name, r in rows.items():
        summary = _method_summary(r, [knob.unit_count] * len(r))
        methods[name] = {k: summary[k] for k in keys}
    ceiling_psnr = round(statistics.mean(ceiling), 2)
    for figures in methods.values():
        figures["gap_db"] = round(ceiling_psnr - figures["relight_psnr"], 2)
    result = {"scenes": len(rooms), "mask": "rough", "ceiling_psnr": ceiling_psnr,
              "lit_psnr": round(statistics.mean(lit), 2), "units": {layer: len(u) for layer, u in units.items()},
              "cells": list(cells), "methods": methods, "seconds": round(time.perf_counter() - start, 1)}
    if keep_images:
        result["images"] = images
    return result
