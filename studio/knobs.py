"""Concept knobs learned from examples: "make it like these", for every model family.

A knob holds units whose activation inside painted regions differs most between examples in the present state (lit
lamps) and in the wanted state (unlit lamps), and each unit's value in both states as a spatial pattern placed on the
region an edit paints (centred and scaled to it)::

    knob = learn_knob(gen, "lamp-off", present=[Example(s1, m1), ...], wanted=[Example(s5, m5), ...])
    knob.name, knob.layers, knob.units          # units: {layer: LongTensor of unit indices}
    save_knob(knob, "lamp-off.safetensors"); knob = load_knob("lamp-off.safetensors")
    knob.check(gen)                             # KnobError (one sentence) for another model or layer layout
    with gen.editor() as editor:
        editor.set_knobs([KnobEdit(knob, mask, strength=1.0)])   # 1: like the wanted examples, -1: like the present
        image = gen.render([sample])

Strength ``s`` >= 0 pulls the units towards the wanted pattern by ``s * mask``; ``s`` < 0 towards the present one by
``|s| * mask`` (a lamp-off knob at -1 lights an unlit lamp).

Several regions may belong to one knob (the light on the wall and the lamp itself): an example may name parts of its
region (``Example(sample, mask, parts={"lamp": lamp_mask})``); each part common to every example becomes a
:class:`KnobRegion` with its own units and targets, placed where the part lies in the painted region's box on
average, so one painted region still drives the whole knob.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.base import Sample

from .core.atomic import atomic_path
from .core.errors import StudioError
from .core.hooks import UnitTargets, box_crop, check_steps, mask_box, resize_mask, surround_mean
from .core.progress import ProgressCallback, Ticker
from .core.resources import RESOURCES

if TYPE_CHECKING:
    from models.base import Generator

FORMAT = "neuron-studio-knob"
#: 2 adds relative targets and several regions; version 1 files (absolute targets, one region) still read.
VERSION = 2
#: Units a knob keeps (over all its layers) unless told otherwise; chosen on the Rooms tuning scenes.
DEFAULT_UNITS = 48
#: The pattern grid a unit's target is learned on (P x P cells over the region's box); 1 is a constant.
DEFAULT_PATTERN = 6
#: Units and pattern grid of each part region (a part is smaller than the whole: a coarser grid has enough cells).
DEFAULT_PART_UNITS = 32
DEFAULT_PART_PATTERN = 4
#: Added to the within-group spread, as a share of the layer's mean activation: a unit that happens to agree within
#: both groups of a few examples does not win by a tiny spread alone (0.01 beat 0.05, 0.2 and 0.5 on tuning scenes).
SPREAD_FLOOR = 0.01
#: The least contrast (difference of means over the within-group spread) a chosen unit must have.
MIN_CONTRAST = 1.0
#: The spread floor of ``select="cells"`` (0.05 beat 0.01 and 0.2 on the tuning rooms and the default prompt's).
CELL_SPREAD_FLOOR = 0.05
#: A part region pulls each unit in each cell of its pattern by (the unit's change there between the present and the
#: wanted pattern, over its largest change) to this power (:meth:`KnobRegion.gain`): cells where the examples hardly
#: differ are pulled less. On 30 Rooms tuning rooms (two-stage weights; the app's knob, its core part): 19.14 dB against
#: 18.84 with rough boxes, 19.76 against 19.60 with the truth masks, 19.40 against 19.31 with round strokes, really off
#: the same; 0.5 gave 19.23 / 19.74 / 19.38, 1 19.27 / 19.68 / 19.32. On the whole region it kept the other lamp more
#: often (0.95 against 0.74 with rough boxes) but switched fewer lamps off with strokes (0.90 at 0.25, 0.60 at 0.5), so
#: the whole region pulls every cell alike.
PART_GAIN_POWER = 0.25
#: The whole region pulls its units fully in its inner cells and, in its first and last column of cells, by the unit's
#: change there over its largest change to this power (:meth:`Knob.gain`): a second lamp at the side of a quick box
#: stays as it is. The app's knob on 30 Rooms tuning rooms (two-stage weights): the other lamp kept in 19 of 19 rooms
#: against 14 with rough boxes (17 of 19 with strokes), relight 19.27 / 19.71 / 19.48 dB (rough / truth / strokes)
#: against 19.14 / 19.76 / 19.40; all four sides gave 19.33 / 19.64 / 18.95 (strokes leave the light above the lamp),
#: the whole region (power 0.25) 18.79 dB with strokes and 0.90 really off.
SIDE_GAIN_POWER = 1.0


class KnobError(StudioError):
    """A knob that cannot be learned, read or applied; the message says why in one sentence."""


@dataclass(frozen=True, eq=False)
class Example:
    """One example: a sample of the current model and the (H, W) region in [0, 1] that shows the concept; ``parts``
    optionally names (H, W) masks of parts of that region (e.g. ``{"lamp": ...}`` inside a lamp-and-its-light box)."""

    sample: Sample
    mask: torch.Tensor
    parts: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(eq=False)
class KnobRegion:
    """One more region of a knob: where it lies in the painted region's box (``box``: y0, x0, y1, x1 as fractions
    of that box) and, like the knob's own fields, its units, patterns, relative flags and contrast per layer."""

    name: str
    box: tuple[float, float, float, float]
    units: dict[str, torch.Tensor]
    wanted: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    relative: dict[str, torch.Tensor] = field(default_factory=dict)
    contrast: dict[str, torch.Tensor] = field(default_factory=dict)
    #: The last painted mask and its cut (masks are replaced, never changed in place): each frame of a strength drag
    #: then hands the hook engine the same region mask, so its placements are shared like the knob's own.
    _cut: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    _gains: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def gain(self, layer: str) -> torch.Tensor:
        """(K, P, P) in [0, 1]: how strongly each unit of ``layer`` is pulled in each cell, its change between the
        present and the wanted pattern there over its largest change, to the power ``PART_GAIN_POWER`` (the same for
        both signs of strength; worked out once per layer)."""
        if layer not in self._gains:
            self._gains[layer] = change_gain(self.wanted[layer], self.present[layer], PART_GAIN_POWER)
        return self._gains[layer]

    def mask_in(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` kept only inside this region's place in the box of ``mask`` (all zeros for an empty mask)."""
        if self._cut is None or self._cut[0] is not mask:
            self._cut = (mask, place_box(mask, self.box))
        return self._cut[1]


def change_gain(wanted: torch.Tensor, present: torch.Tensor, power: float) -> torch.Tensor:
    """(K, P, Q) in [0, 1]: each unit's change between its present and wanted pattern in each cell, over its
    largest change, to ``power`` (the same for both signs of strength)."""
    change = (wanted.float() - present.float()).abs()
    top = change.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
    return (change / top).clamp(0, 1) ** power


def place_box(mask: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """``mask`` (H, W) cut to the sub-box ``box`` (fractions of the box of ``mask``), pixel edges rounded."""
    outer = mask_box(mask)
    out = torch.zeros_like(mask)
    if outer is None:
        return out
    h, w = mask.shape[-2], mask.shape[-1]
    y0, x0, y1, x1 = outer
    by0, bx0, by1, bx1 = (float(v) for v in box)
    r0, r1 = int(round((y0 + by0 * (y1 - y0)) * h)), int(round((y0 + by1 * (y1 - y0)) * h))
    c0, c1 = int(round((x0 + bx0 * (x1 - x0)) * w)), int(round((x0 + bx1 * (x1 - x0)) * w))
    r1, c1 = max(r1, r0 + 1), max(c1, c0 + 1)
    out[..., r0:r1, c0:c1] = mask[..., r0:r1, c0:c1]
    return out


def part_box(mask: torch.Tensor, part: torch.Tensor) -> tuple[float, float, float, float] | None:
    """Where ``part``'s box lies in ``mask``'s box, as fractions of the latter (None if either is empty)."""
    outer, inner = mask_box(mask), mask_box(part)
    if outer is None or inner is None:
        return None
    y0, x0, y1, x1 = outer
    h, w = max(y1 - y0, 1e-6), max(x1 - x0, 1e-6)
    return ((inner[0] - y0) / h, (inner[1] - x0) / w, (inner[2] - y0) / h, (inner[3] - x0) / w)


@dataclass(eq=False)
class Knob:
    """Units of some layers and their targets in the wanted and the present state; data, saved and reloaded exactly.

    ``wanted[layer]`` and ``present[layer]`` are (K, P, P) patterns (P = 1: constants) for ``units[layer]`` (K,),
    placed on the whole painted region; ``relative[layer]`` (K,) flags the units whose patterns are measured from
    the region's surroundings (absent: absolute, as version 1 knobs). ``regions``: more regions, each placed on its
    part of the painted region with its own units (:class:`KnobRegion`). ``model``: the family, name and layer
    layout ({layer: units}) it was learned on; ``contrast[layer]``: each unit's contrast; ``examples``: the samples
    and masks it came from.
    """

    name: str
    model: dict[str, Any]
    units: dict[str, torch.Tensor]
    wanted: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    contrast: dict[str, torch.Tensor] = field(default_factory=dict)
    examples: dict[str, list[Example]] = field(default_factory=lambda: {"present": [], "wanted": []})
    relative: dict[str, torch.Tensor] = field(default_factory=dict)
    regions: list[KnobRegion] = field(default_factory=list)
    #: Whether the whole region's side columns are pulled by how much the examples changed there (:meth:`gain`):
    #: knobs learned from examples (:func:`learn_knob`) do; a knob made by hand or of dissected units (its present
    #: pattern is where they fire, not a state to leave) pulls every cell alike, as do knob files from before.
    side_gain: bool = False
    _gains: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def gain(self, layer: str) -> torch.Tensor | None:
        """(K, P, P) in [0, 1] for the whole region's units of ``layer``: 1 in the inner cells; in the first and
        last column of cells (the region's sides) the unit's change there over its largest change, to the power
        ``SIDE_GAIN_POWER``, so what stands at the side of a box and did not change between the examples (another
        lamp the box also covers) is left alone. None (every cell alike) for patterns under 3 cells wide (no inner
        cells) and for knobs without :attr:`side_gain`."""
        if not self.side_gain:
            return None
        if layer not in self._gains:
            pattern = self.wanted[layer]
            if pattern.shape[-1] < 3:
                return None
            gain = torch.ones(pattern.shape, dtype=torch.float32)
            sides = change_gain(self.wanted[layer], self.present[layer], SIDE_GAIN_POWER)
            gain[..., 0], gain[..., -1] = sides[..., 0], sides[..., -1]
            self._gains[layer] = gain
        return self._gains[layer]

    @property
    def layers(self) -> list[str]:
        """Every layer the knob edits (its own and its regions'), in the model's order."""
        order = {layer: i for i, layer in enumerate(self.model.get("layers", {}))}
        names = list(self.units) + [layer for r in self.regions for layer in r.units if layer not in self.units]
        return sorted(names, key=lambda n: order.get(n, len(order)))

    @property
    def unit_count(self) -> int:
        return sum(len(u) for u in self.units.values()) + sum(len(u) for r in self.regions for u in r.units.values())

    def check(self, generator: "Generator") -> None:
        """Raise :class:`KnobError` when this knob was learned on another model or layer layout."""
        family = self.model.get("family")
        if family not in (None, generator.family):
            raise KnobError(f"The knob '{self.name}' was learned on a {family} model ({self.model.get('name')}), "
                            f"not on {generator.name} ({generator.family}): learn it again on this model.")
        layout = {info.name: info.units for info in generator.layers()}
        for layer, count in self.model.get("layers", {}).items():
            if layout.get(layer) != int(count):
                have = f"has {layout[layer]} units" if layer in layout else "has no such layer"
                raise KnobError(f"The knob '{self.name}' needs {layer} with {count} units but {generator.name} "
                                f"{have}: it was learned on another layer layout.")
        for layer, units in [*self.units.items(), *[item for r in self.regions for item in r.units.items()]]:
            if layer not in layout or (len(units) and int(units.max()) >= layout[layer]):
                raise KnobError(f"The knob '{self.name}' names units that {generator.name}'s {layer} does not have.")

    # -- as tensors + JSON ----------------------------------------------------------------------------------------
    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (units, patterns, contrast, example masks) and the JSON-able document beside them."""
        tensors: dict[str, torch.Tensor] = {}
        _put_region(tensors, "", self.units, self.wanted, self.present, self.relative, self.contrast)
        regions = []
        for r, region in enumerate(self.regions):
            _put_region(tensors, f"region/{r}/", region.units, region.wanted, region.present, region.relative,
                        region.contrast)
            regions.append({"name": region.name, "box": [float(v) for v in region.box], "layers": list(region.units)})
        examples = {}
        for side, items in self.examples.items():
            examples[side] = []
            for j, ex in enumerate(items):
                tensors[f"example/{side}/{j}"] = ex.mask.detach().to("cpu", torch.float32).contiguous()
                entry = ex.sample.to_json()
                if ex.parts:
                    entry = {**entry, "knob_parts": list(ex.parts)}
                    for part, m in ex.parts.items():
                        tensors[f"example/{side}/{j}/part/{part}"] = m.detach().to("cpu", torch.float32).contiguous()
                examples[side].append(entry)
        doc = {"format": FORMAT, "version": VERSION, "name": self.name, "model": self.model,
               "layers": list(self.units), "regions": regions, "examples": examples}
        if self.side_gain:
            doc["side_gain"] = True
        return {k: v.detach().cpu().clone() for k, v in tensors.items()}, doc  # clone: safetensors refuses shared memory

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], doc: Mapping[str, Any]) -> "Knob":
        if doc.get("format") != FORMAT:
            raise KnobError("This is not a Neuron Studio knob (its format field is missing or other).")
        if int(doc.get("version", 0)) > VERSION:
            raise KnobError(f"The knob was written by a newer Neuron Studio (knob format {doc.get('version')}; this "
                            f"one reads up to {VERSION}): update Neuron Studio to use it.")
        try:
            units, wanted, present, relative, contrast = _get_region(tensors, "", list(doc["layers"]))
            regions = []
            for r, entry in enumerate(doc.get("regions") or []):
                box = tuple(float(v) for v in entry["box"])
                if len(box) != 4:
                    raise ValueError(f"region {r} has a box of {len(box)} numbers")
                regions.append(KnobRegion(str(entry["name"]), box,  # type: ignore[arg-type]
                                          *_get_region(tensors, f"region/{r}/", list(entry["layers"]))))

            def example(side: str, j: int, entry: Mapping) -> Example:
                parts = {p: tensors[f"example/{side}/{j}/part/{p}"] for p in entry.get("knob_parts", [])}
                sample = Sample.from_json({k: v for k, v in entry.items() if k != "knob_parts"})
                return Example(sample, tensors[f"example/{side}/{j}"], parts)

            examples = {side: [example(side, j, s) for j, s in enumerate(items)]
                        for side, items in dict(doc.get("examples") or {}).items()}
            return cls(str(doc["name"]), dict(doc["model"]), units, wanted, present, contrast,
                       {"present": [], "wanted": [], **examples}, relative, regions,
                       bool(doc.get("side_gain", False)))
        except (KeyError, TypeError, ValueError) as error:
            raise KnobError(f"The knob is damaged ({type(error).__name__}: {str(error)[:120]}); learn it again.") from error


def _put_region(tensors: dict, prefix: str, units: Mapping, wanted: Mapping, present: Mapping, relative: Mapping,
                contrast: Mapping) -> None:
    for i, layer in enumerate(units):
        tensors[f"{prefix}units/{i}"] = units[layer].to(torch.int64).contiguous()
        tensors[f"{prefix}wanted/{i}"] = wanted[layer].float().contiguous()
        tensors[f"{prefix}present/{i}"] = present[layer].float().contiguous()
        if layer in relative:
            tensors[f"{prefix}relative/{i}"] = relative[layer].float().contiguous()
        if layer in contrast:
            tensors[f"{prefix}contrast/{i}"] = contrast[layer].float().contiguous()


def _get_region(tensors: Mapping, prefix: str, layers: Sequence[str]) -> tuple[dict, dict, dict, dict, dict]:
    """units, wanted, present, relative, contrast of the region stored under ``prefix`` (KeyError if damaged)."""
    def some(kind: str) -> dict:
        return {layer: tensors[f"{prefix}{kind}/{i}"] for i, layer in enumerate(layers)
                if f"{prefix}{kind}/{i}" in tensors}

    units = {layer: tensors[f"{prefix}units/{i}"].to(torch.long) for i, layer in enumerate(layers)}
    wanted = {layer: tensors[f"{prefix}wanted/{i}"] for i, layer in enumerate(layers)}
    present = {layer: tensors[f"{prefix}present/{i}"] for i, layer in enumerate(layers)}
    for layer in layers:
        if wanted[layer].dim() != 3 or len(wanted[layer]) != len(units[layer]) or \
                present[layer].shape != wanted[layer].shape:
            raise ValueError(f"the patterns of {layer} do not fit its {len(units[layer])} units")
    return units, wanted, present, some("relative"), some("contrast")


@dataclass(frozen=True, eq=False)
class KnobEdit:
    """A knob applied inside ``mask`` (H, W) at ``strength`` (0: as it is, 1: like the wanted examples, < 0: the
    other way); goes through the hook engine with ``editor.set_knobs([...])``. ``steps=(start, stop)``: only in
    those denoising steps (diffusion; counted in the full schedule like a unit edit's window), None: every step."""

    knob: Knob
    mask: torch.Tensor
    strength: float = 1.0
    steps: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.steps is not None:
            object.__setattr__(self, "steps", (int(self.steps[0]), int(self.steps[1])))  # a JSON list in, a pair out
        check_steps(self.steps)

    def targets(self) -> list[UnitTargets]:
        """What the hook engine applies: per layer, the units pulled towards the placed pattern."""
        side = "wanted" if self.strength >= 0 else "present"
        strength = abs(float(self.strength))
        out = [UnitTargets(layer, units, getattr(self.knob, side)[layer], self.mask, strength,
                           self.knob.relative.get(layer), self.steps, self.knob.gain(layer))
               for layer, units in self.knob.units.items() if len(units)]
        for region in self.knob.regions:
            mask = region.mask_in(self.mask)
            out += [UnitTargets(layer, units, getattr(region, side)[layer], mask, strength, region.relative.get(layer),
                                self.steps, region.gain(layer))
                    for layer, units in region.units.items() if len(units)]
        return out

    @property
    def layers(self) -> list[str]:
        return [layer for layer in self.knob.layers
                if len(self.knob.units.get(layer, ())) or any(len(r.units.get(layer, ())) for r in self.knob.regions)]

    def to_json(self) -> dict:
        data = {"knob": self.knob.name, "strength": float(self.strength)}
        if self.steps is not None:
            data["steps"] = list(self.steps)
        return data


def model_layout(generator: "Generator") -> dict[str, Any]:
    """What a knob records of the model it was learned on."""
    return {"family": generator.family, "name": generator.name, "source": generator.source,
            "layers": {info.name: info.units for info in generator.layers() if info.size is not None}}


def _check_examples(generator: "Generator", side: str, examples: Sequence[Example]) -> None:
    if not examples:
        raise KnobError(f"The knob needs at least one {side} example: add an image with a region painted on it.")
    size = tuple(generator.resolution)
    for n, ex in enumerate(examples, 1):
        if tuple(ex.mask.shape[-2:]) != size:
            raise KnobError(f"The mask of {side} example {n} (seed {ex.sample.seed}) is "
                            f"{ex.mask.shape[-1]}x{ex.mask.shape[-2]}, not the model's {size[1]}x{size[0]}.")
        if mask_box(ex.mask) is None:
            raise KnobError(f"The mask of {side} example {n} (seed {ex.sample.seed}) is empty: paint the region "
                            "that shows the concept.")


def _region_stats(act: torch.Tensor, mask: torch.Tensor, pattern: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, P, P) pattern of one example's activation (1, C, h, w) over its region's box, absolute and measured from
    the surroundings (:func:`studio.core.hooks.surround_mean`), and its mean over the region."""
    crop = box_crop(act, mask_box(mask), (pattern, pattern))[0]
    around = surround_mean(act.float(), mask.to(act.device))[0]
    m = resize_mask(mask.to(act.device, torch.float32), act.shape[-2:])[0, 0]
    mean = (act[0].float() * m).sum((-1, -2)) / m.sum().clamp(min=1e-6)  # the mask-weighted mean: select="mean"
    # (3, C, P, P): absolute pattern, pattern from the surroundings, the region's mean repeated over the cells
    return torch.stack([crop, crop - around[:, None, None], mean[:, None, None].expand_as(crop)]).cpu()


def _learn_region(stats: Mapping[str, torch.Tensor], k: int, units: int, min_contrast: float,
                  order: Mapping[str, int], select: str = "mean",
                  relative: bool = False) -> tuple[dict, dict, dict, dict, dict, float]:
    """Choose the units of one region and learn their targets from per-example stats {layer: (N, 2, C, P, P)} (the
    first ``k`` examples present, the rest wanted); returns units, wanted, present, relative, contrast and the best
    contrast seen.

    ``select="mean"``: a unit's contrast is the difference of the group means of its mean over the region, over the
    within-group spread. ``select="cells"``: its largest such contrast over the pattern's cells: the unit that
    darkens a lamp's shade differs in the shade's cells even when the region's mean (mostly wall) hardly moves.
    With ``relative``, each unit's target is relative to the surroundings when the wanted examples agree better that
    way (a unit that carries the wall's colour), else absolute.
    """
    scores, contrasts = [], {}
    for layer, st in stats.items():
        absolute = st[:, 0] if select == "cells" else st[:, 2, :, :1, :1]  # (N, C, P|1, P|1)
        p, w = absolute[:k], absolute[k:]
        diff = w.mean(0) - p.mean(0)
        spread = ((p.var(0, unbiased=False) * len(p) + w.var(0, unbiased=False) * len(w)) / len(absolute)).sqrt()
        floor = SPREAD_FLOOR
        if select == "cells":
            # one spread per unit (over its cells): a single cell's spread over 4 + 4 examples is itself noise, and
            # the largest of 36 cell contrasts over such spreads picks chance differences (a bed in one cell of
            # the lit examples' rooms): on the default prompt's rooms, 8 of 47 lamps unlit against 47 this way
            spread, floor = spread.mean((-1, -2), keepdim=True), CELL_SPREAD_FLOOR
        scale = absolute.abs().mean().clamp(min=1e-8)
        cells = diff.abs() / (spread + floor * scale)
        cells[diff.abs() <= 1e-6 * scale] = 0  # identical groups: no unit differs
        contrasts[layer] = cells.flatten(1).max(1).values
        scores += [(float(c), layer, u) for u, c in enumerate(contrasts[layer])]
    scores.sort(key=lambda t: -t[0])
    top = scores[0][0] if scores else 0.0
    best = [(layer, u) for c, layer, u in scores[:max(1, int(units))] if c >= min_contrast]
    chosen: dict[str, list[int]] = {}
    for layer, u in best:
        chosen.setdefault(layer, []).append(u)
    out_units, want, have, flags, contrast = {}, {}, {}, {}, {}
    for layer in sorted(chosen, key=lambda n: order.get(n, 0)):
        idx = torch.tensor(sorted(chosen[layer]), dtype=torch.long)
        st = stats[layer][:, :, idx]  # (N, 2, K, P, P)
        agree = st[k:, :2].std(0, unbiased=False).mean((-1, -2))  # (2, K): the wanted examples' spread, each way
        rel = (agree[1] < agree[0]).float() if relative else torch.zeros(len(idx))
        pick = rel[:, None, None]
        means_p, means_w = st[:k].mean(0), st[k:].mean(0)  # (2, K, P, P)
        want[layer] = (pick * means_w[1] + (1 - pick) * means_w[0]).contiguous()
        have[layer] = (pick * means_p[1] + (1 - pick) * means_p[0]).contiguous()
        out_units[layer], contrast[layer] = idx, contrasts[layer][idx].clone()
        if relative:
            flags[layer] = rel
    return out_units, want, have, flags, contrast, top


def learn_knob(generator: "Generator", name: str, *, present: Sequence[Example], wanted: Sequence[Example],
               layers: Sequence[str] | None = None, units: int = DEFAULT_UNITS, pattern: int = DEFAULT_PATTERN,
               min_contrast: float = MIN_CONTRAST, part_layers: Sequence[str] | None = None,
               part_units: int = DEFAULT_PART_UNITS, part_pattern: int = DEFAULT_PART_PATTERN,
               select: str = "mean", relative: bool = False, progress: ProgressCallback | None = None) -> Knob:
    """Choose the units whose activation inside the regions differs most between the present and wanted examples
    (the difference of the group means over the within-group spread, pooled over ``layers``; default every spatial
    layer) and learn each one's value in both states as a (P, P) pattern over the region (``pattern=1``: constant).

    ``select="cells"`` compares the examples pattern cell by pattern cell instead of by the region's mean, and
    ``relative=True`` measures a unit's targets from the region's surroundings where the wanted examples agree
    better that way. On the Rooms tuning rooms with quick boxes shaped alike on examples and edits, both (with the
    lamp as a part region) switch a lamp really off in 0.92 of the rooms against 0.50 for the mean; the mean is the
    default because it is less sensitive to a region of another shape than the examples' (a proposed region, a
    tight outline), where the cell-by-cell units land off their cells.

    Every part named in all examples (``Example.parts``) becomes a :class:`KnobRegion` learned the same way on
    ``part_layers`` (default ``layers``) with ``part_units`` units and ``part_pattern`` cells, placed where the part
    lies in the region's box on average (the examples' part boxes, averaged); its stats are taken on that same
    placed box, so learning sees what applying will edit.

    >>> knob = learn_knob(gen, "lamp-off", present=lit_examples, wanted=unlit_examples, units=32)
    """
    if not name.strip():
        raise KnobError("A knob needs a name.")
    _check_examples(generator, "present", present)
    _check_examples(generator, "wanted", wanted)
    spatial = [info.name for info in generator.layers() if info.size is not None]
    chosen_layers = [generator.layer(n).name for n in layers] if layers else spatial
    part_chosen = [generator.layer(n).name for n in part_layers] if part_layers else chosen_layers
    if not chosen_layers:
        raise KnobError(f"{generator.name} has no spatial layer to learn a knob on.")
    pattern, part_pattern = max(1, int(pattern)), max(1, int(part_pattern))
    examples = [*present, *wanted]
    names = [p for p in examples[0].parts if all(p in ex.parts for ex in examples)]
    boxes = {}
    for part in names:
        found = [part_box(ex.mask, ex.parts[part]) for ex in examples]
        if any(b is None for b in found):
            raise KnobError(f"The part '{part}' is empty on some example: paint it on every example or on none.")
        boxes[part] = tuple(float(sum(b[i] for b in found) / len(found)) for i in range(4))  # type: ignore[index]
    traced = list(dict.fromkeys([*chosen_layers, *(part_chosen if names else [])]))
    stats: dict[str, list] = {layer: [] for layer in chosen_layers}
    part_stats: dict[str, dict[str, list]] = {part: {layer: [] for layer in part_chosen} for part in names}
    ticker = Ticker(len(examples), progress, unit="examples", message=f"learning knob {name.strip()}")
    with torch.inference_mode():
        for ex in examples:
            acts = generator.trace([ex.sample], traced)
            for layer in chosen_layers:
                stats[layer].append(_region_stats(acts[layer], ex.mask, pattern))
            for part in names:
                placed = place_box(ex.mask, boxes[part])
                for layer in part_chosen:
                    part_stats[part][layer].append(_region_stats(acts[layer], placed, part_pattern))
            ticker.advance(1)
    order = {layer: i for i, layer in enumerate(spatial)}
    k = len(present)
    if select not in ("mean", "cells"):
        raise KnobError(f"Unknown unit selection '{select}': use 'mean' or 'cells'.")
    main = _learn_region({layer: torch.stack(v) for layer, v in stats.items()}, k, units, min_contrast, order,
                         select, relative)
    if not main[0]:
        raise KnobError(f"No unit differs between the present and the wanted examples (best contrast {main[5]:.2f}, "
                        f"at least {min_contrast} needed): choose examples that show the two states.")
    regions = []
    for part in names:
        got = _learn_region({layer: torch.stack(v) for layer, v in part_stats[part].items()}, k, part_units,
                            min_contrast, order, select, relative)
        if got[0]:
            regions.append(KnobRegion(part, boxes[part], got[0], got[1], got[2], got[3], got[4]))
    knob_units, want, have, relative, contrast, _ = main
    return Knob(name.strip(), model_layout(generator), knob_units, want, have, contrast,
                {"present": list(present), "wanted": list(wanted)}, relative, regions, side_gain=True)


def save_knob(knob: Knob, path: str | os.PathLike) -> Path:
    """Write ``knob`` atomically as safetensors with its JSON document in the metadata (no pickles)."""
    path = Path(path)
    tensors, doc = knob.to_tensors()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(VERSION), "knob": json.dumps(doc)})
    return path


def load_knob(path: str | os.PathLike) -> Knob:
    """Read a knob file; :class:`KnobError` (one sentence) for anything it cannot use."""
    path = Path(path)
    if not path.is_file():
        raise KnobError(f"No knob file at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # noqa: BLE001 - any damage in the file becomes one sentence
        raise KnobError(f"{path.name} is not a readable knob file ({str(error).splitlines()[0][:120]}).") from error
    if meta.get("format") != FORMAT:
        raise KnobError(f"{path.name} is not a Neuron Studio knob (it holds no knob metadata).")
    try:
        doc = json.loads(meta["knob"])
    except (KeyError, ValueError) as error:
        raise KnobError(f"{path.name} is damaged: its knob document cannot be read.") from error
    return Knob.from_tensors(tensors, doc)


def knob_folder(generator: "Generator") -> Path:
    """Where the knobs shipped with a built-in model live (``resources/<source>/knobs``)."""
    return RESOURCES / str(generator.source) / "knobs"


def shipped_knobs(generator: "Generator") -> list[Knob]:
    """The knobs shipped for this model (Rooms: lamp-off and lamp-on), each checked against it; [] if none."""
    if Path(str(generator.source)).name != str(generator.source):
        return []  # opened from a path: only built-ins ship knobs
    folder = knob_folder(generator)
    if not folder.is_dir():
        return []
    knobs = []
    for path in sorted(folder.glob("*.safetensors")):
        knob = load_knob(path)
        knob.check(generator)
        knobs.append(knob)
    return knobs
