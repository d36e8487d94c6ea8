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
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from models.base import Sample

from .core.atomic import atomic_path
from .core.errors import StudioError
from .core.hooks import UnitTargets, box_grid, check_steps, mask_box, resize_mask
from .core.progress import ProgressCallback, Ticker
from .core.resources import RESOURCES

if TYPE_CHECKING:
    from models.base import Generator

FORMAT = "neuron-studio-knob"
VERSION = 1
#: Units a knob keeps (over all its layers) unless told otherwise; chosen on the Rooms tuning scenes.
DEFAULT_UNITS = 48
#: The pattern grid a unit's target is learned on (P x P cells over the region's box); 1 is a constant.
DEFAULT_PATTERN = 6
#: Added to the within-group spread, as a share of the layer's mean activation: a unit that happens to agree within
#: both groups of a few examples does not win by a tiny spread alone (0.01 beat 0.05, 0.2 and 0.5 on tuning scenes).
SPREAD_FLOOR = 0.01
#: The least contrast (difference of means over the within-group spread) a chosen unit must have.
MIN_CONTRAST = 1.0


class KnobError(StudioError):
    """A knob that cannot be learned, read or applied; the message says why in one sentence."""


@dataclass(frozen=True, eq=False)
class Example:
    """One example: a sample of the current model and the (H, W) region in [0, 1] that shows the concept."""

    sample: Sample
    mask: torch.Tensor


@dataclass(eq=False)
class Knob:
    """Units of some layers and their targets in the wanted and the present state; data, saved and reloaded exactly.

    ``wanted[layer]`` and ``present[layer]`` are (K, P, P) patterns (P = 1: constants) for ``units[layer]`` (K,).
    ``model``: the family, name and layer layout ({layer: units}) it was learned on; ``contrast[layer]``: each
    unit's contrast; ``examples``: the samples and masks it came from.
    """

    name: str
    model: dict[str, Any]
    units: dict[str, torch.Tensor]
    wanted: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    contrast: dict[str, torch.Tensor] = field(default_factory=dict)
    examples: dict[str, list[Example]] = field(default_factory=lambda: {"present": [], "wanted": []})

    @property
    def layers(self) -> list[str]:
        return list(self.units)

    @property
    def unit_count(self) -> int:
        return sum(len(u) for u in self.units.values())

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
        for layer, units in self.units.items():
            if layer not in layout or (len(units) and int(units.max()) >= layout[layer]):
                raise KnobError(f"The knob '{self.name}' names units that {generator.name}'s {layer} does not have.")

    # -- as tensors + JSON ----------------------------------------------------------------------------------------
    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (units, patterns, contrast, example masks) and the JSON-able document beside them."""
        tensors: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            tensors[f"units/{i}"] = self.units[layer].to(torch.int64).contiguous()
            tensors[f"wanted/{i}"] = self.wanted[layer].float().contiguous()
            tensors[f"present/{i}"] = self.present[layer].float().contiguous()
            if layer in self.contrast:
                tensors[f"contrast/{i}"] = self.contrast[layer].float().contiguous()
        examples = {}
        for side, items in self.examples.items():
            examples[side] = []
            for j, ex in enumerate(items):
                tensors[f"example/{side}/{j}"] = ex.mask.detach().to("cpu", torch.float32).contiguous()
                examples[side].append(ex.sample.to_json())
        doc = {"format": FORMAT, "version": VERSION, "name": self.name, "model": self.model, "layers": self.layers,
               "examples": examples}
        return {k: v.detach().cpu().clone() for k, v in tensors.items()}, doc  # clone: safetensors refuses shared memory

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], doc: Mapping[str, Any]) -> "Knob":
        if doc.get("format") != FORMAT:
            raise KnobError("This is not a Neuron Studio knob (its format field is missing or other).")
        if int(doc.get("version", 0)) > VERSION:
            raise KnobError(f"The knob was written by a newer Neuron Studio (knob format {doc.get('version')}; this "
                            f"one reads up to {VERSION}): update Neuron Studio to use it.")
        try:
            layers = list(doc["layers"])
            units = {layer: tensors[f"units/{i}"].to(torch.long) for i, layer in enumerate(layers)}
            wanted = {layer: tensors[f"wanted/{i}"] for i, layer in enumerate(layers)}
            present = {layer: tensors[f"present/{i}"] for i, layer in enumerate(layers)}
            contrast = {layer: tensors[f"contrast/{i}"] for i, layer in enumerate(layers) if f"contrast/{i}" in tensors}
            examples = {side: [Example(Sample.from_json(s), tensors[f"example/{side}/{j}"]) for j, s in enumerate(items)]
                        for side, items in dict(doc.get("examples") or {}).items()}
            return cls(str(doc["name"]), dict(doc["model"]), units, wanted, present, contrast,
                       {"present": [], "wanted": [], **examples})
        except (KeyError, TypeError, ValueError) as error:
            raise KnobError(f"The knob is damaged ({type(error).__name__}: {str(error)[:120]}); learn it again.") from error


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
        patterns = self.knob.wanted if self.strength >= 0 else self.knob.present
        return [UnitTargets(layer, units, patterns[layer], self.mask, abs(float(self.strength)), self.steps)
                for layer, units in self.knob.units.items() if len(units)]

    @property
    def layers(self) -> list[str]:
        return [layer for layer, units in self.knob.units.items() if len(units)]

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
    """(C,) mask-weighted mean and (C, P, P) pattern of one example's activation (1, C, h, w) inside its region."""
    m = resize_mask(mask.to(act.device, torch.float32), act.shape[-2:])[0, 0]
    mean = (act[0] * m).sum((-1, -2)) / m.sum().clamp(min=1e-6)
    grid = box_grid(mask_box(mask), (pattern, pattern)).to(act.device)
    crop = F.grid_sample(act.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return mean, crop


def learn_knob(generator: "Generator", name: str, *, present: Sequence[Example], wanted: Sequence[Example],
               layers: Sequence[str] | None = None, units: int = DEFAULT_UNITS, pattern: int = DEFAULT_PATTERN,
               min_contrast: float = MIN_CONTRAST, progress: ProgressCallback | None = None) -> Knob:
    """Choose the units whose activation inside the regions differs most between the present and wanted examples
    (difference of the group means over the within-group spread, pooled over ``layers``; default every spatial
    layer) and learn each one's value in both states as a (P, P) pattern over the region (``pattern=1``: constant).

    >>> knob = learn_knob(gen, "lamp-off", present=lit_examples, wanted=unlit_examples, units=32)
    """
    if not name.strip():
        raise KnobError("A knob needs a name.")
    _check_examples(generator, "present", present)
    _check_examples(generator, "wanted", wanted)
    spatial = [info.name for info in generator.layers() if info.size is not None]
    chosen_layers = [generator.layer(n).name for n in layers] if layers else spatial
    if not chosen_layers:
        raise KnobError(f"{generator.name} has no spatial layer to learn a knob on.")
    pattern = max(1, int(pattern))
    examples = [*present, *wanted]
    stats: dict[str, tuple[list, list]] = {layer: ([], []) for layer in chosen_layers}
    ticker = Ticker(len(examples), progress, unit="examples", message=f"learning knob {name.strip()}")
    with torch.inference_mode():
        for ex in examples:
            acts = generator.trace([ex.sample], chosen_layers)
            for layer in chosen_layers:
                mean, crop = _region_stats(acts[layer], ex.mask, pattern)
                stats[layer][0].append(mean.float().cpu())
                stats[layer][1].append(crop.float().cpu())
            ticker.advance(1)
    k = len(present)
    scores, pooled = [], {}
    for layer in chosen_layers:
        means, crops = torch.stack(stats[layer][0]), torch.stack(stats[layer][1])
        mp, mw = means[:k], means[k:]
        diff = mw.mean(0) - mp.mean(0)
        spread = ((mp.var(0, unbiased=False) * len(mp) + mw.var(0, unbiased=False) * len(mw)) / len(means)).sqrt()
        scale = means.abs().mean().clamp(min=1e-8)
        contrast = diff.abs() / (spread + SPREAD_FLOOR * scale)
        contrast[diff.abs() <= 1e-6 * scale] = 0  # identical groups: no unit differs
        pooled[layer] = (contrast, crops[:k].mean(0), crops[k:].mean(0))
        scores += [(float(c), layer, u) for u, c in enumerate(contrast)]
    scores.sort(key=lambda t: -t[0])
    best = [(layer, u) for c, layer, u in scores[:max(1, int(units))] if c >= min_contrast]
    if not best:
        top = scores[0][0] if scores else 0.0
        raise KnobError(f"No unit differs between the present and the wanted examples (best contrast {top:.2f}, "
                        f"at least {min_contrast} needed): choose examples that show the two states.")
    chosen: dict[str, list[int]] = {}
    for layer, u in best:
        chosen.setdefault(layer, []).append(u)
    order = {layer: i for i, layer in enumerate(spatial)}
    knob_units, want, have, contrast = {}, {}, {}, {}
    for layer in sorted(chosen, key=lambda n: order.get(n, 0)):
        idx = torch.tensor(sorted(chosen[layer]), dtype=torch.long)
        c, present_pattern, wanted_pattern = pooled[layer]
        knob_units[layer], contrast[layer] = idx, c[idx].clone()
        want[layer], have[layer] = wanted_pattern[idx].clone(), present_pattern[idx].clone()
    return Knob(name.strip(), model_layout(generator), knob_units, want, have, contrast,
                {"present": list(present), "wanted": list(wanted)})


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
