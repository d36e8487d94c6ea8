"""The hook engine: address layers by dotted path, trace them, and edit their units.

Tracing (hooks live only inside the ``with``; ``stop=True`` skips the layers after the last one traced)::

    with Trace(generator.module, ["blocks.3"], stop=True) as trace:
        generator.render(samples)
    activation = trace["blocks.3"]            # (B, C, H, W)

Editing (one hook per edited layer, holding per-unit tensors that sliders change in place)::

    with Editor(generator.module, {"blocks.3": 256}) as editor:
        editor.set([UnitEdit("blocks.3", 17, "off"), UnitEdit("blocks.3", 4, "scale", 2.0, local=True)],
                   mask=mask)                  # mask: (H, W) in [0, 1] at image resolution
        image = generator.render(samples)
        editor.layer("blocks.3").set_unit(4, "scale", 2.5)   # a slider frame: in place, nothing re-registered

Unit targets (what a knob applies: chosen units pulled towards a per-unit spatial pattern placed on a region, by
``strength * mask``) go through the same hook::

    editor.set_targets([UnitTargets("blocks.1", units, pattern, mask, strength=1.0)])

Every hook is removed when the ``with`` block ends, also when it ends with an exception.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LayerNotFound, StudioError

Op = Literal["scale", "set", "off"]
OPS: tuple[str, ...] = ("scale", "set", "off")
# Step windows are half-open [start, stop); "no window" is the whole range.
_NO_STOP = 2**31 - 1


def layer_names(root: nn.Module) -> list[str]:
    """Every addressable (dotted) module path under ``root``."""
    return [name for name, _ in root.named_modules() if name]


def get_module(root: nn.Module, name: str) -> nn.Module:
    """The module at dotted path ``name``; an unknown name raises with the nearest names."""
    modules = dict(root.named_modules())
    if name in modules and name:
        return modules[name]
    near = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
    hint = f" Nearest names: {', '.join(near)}." if near else ""
    raise LayerNotFound(f"The model has no layer '{name}'.{hint}")


def first_tensor(output: object) -> torch.Tensor:
    """The activation inside a module's output (a tensor, a tuple, or a diffusers output object)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise StudioError(f"Cannot edit a layer whose output is a {type(output).__name__}, not a tensor.")


def replace_first(output: object, tensor: torch.Tensor) -> object:
    """``output`` with its activation replaced by ``tensor``, keeping the container type."""
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    if isinstance(output, list):
        return [tensor, *output[1:]]
    output.sample = tensor  # diffusers BaseOutput
    return output


def count_hooks(root: nn.Module) -> int:
    """Number of forward hooks registered anywhere under ``root`` (tests assert it returns to zero)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in root.modules())



def check_unit(layer: str, unit: int, units: int) -> None:
    """Raise :class:`StudioError` (one sentence) unless ``unit`` is one of a layer's ``units``.

        check_unit("blocks.1", 70, 64)   # StudioError: Unit 70 is out of range: blocks.1 has units 0..63.
    """
    if not 0 <= unit < units:
        raise StudioError(f"Unit {unit} is out of range: {layer} has units 0..{units - 1}.")

def check_steps(steps: tuple[int, int] | None) -> None:
    """Raise :class:`StudioError` (one sentence) unless ``steps`` is None or a half-open window ``start < stop``."""
    if steps is not None and not (len(steps) == 2 and 0 <= steps[0] < steps[1]):
        raise StudioError(f"Step window {tuple(steps)} is empty: give start < stop, both from 0.")


class StopForward(Exception):
    """Raised by a stopping Trace once every traced layer has run; swallowed by the Trace."""


class Trace:
    """Record the outputs of some layers during one forward pass.

    ``before_edits=True`` registers ahead of existing hooks, so it sees a layer's output before an
    :class:`Editor` changes it (how the live renderer caches the unedited activation).
    """

    def __init__(self, root: nn.Module, layers: Sequence[str], *, stop: bool = False,
                 detach: bool = True, before_edits: bool = False) -> None:
        self.root, self.layers, self.stop, self.detach = root, list(layers), stop, detach
        self.before_edits = before_edits
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modules = [get_module(root, name) for name in self.layers]  # fail before registering

    def __enter__(self) -> "Trace":
        for name, module in zip(self.layers, self._modules):
            self._handles.append(module.register_forward_hook(self._make_hook(name), prepend=self.before_edits))
        return self

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            tensor = first_tensor(output)
            self.outputs[name] = tensor.detach() if self.detach else tensor
            if self.stop and len(self.outputs) == len(self.layers):
                raise StopForward
        return hook

    def __exit__(self, exc_type, exc, tb) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return exc_type is StopForward

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.outputs:
            raise StudioError(f"Layer '{name}' did not run during the traced forward pass.")
        return self.outputs[name]


@dataclass(frozen=True)
class UnitEdit:
    """One edit of one unit: ``scale`` by ``value``, ``set`` to ``value``, or switch ``off``.

    ``local`` limits the edit to the mask; ``steps=(start, stop)`` to those denoising steps (diffusion).
    """

    layer: str
    unit: int
    op: Op = "scale"
    value: float = 1.0
    local: bool = False
    steps: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise StudioError(f"Unknown unit edit '{self.op}': use one of {', '.join(OPS)}.")
        check_steps(self.steps)

    def gain_offset(self) -> tuple[float, float]:
        """The per-unit affine map ``x -> gain * x + offset`` this edit stands for."""
        if self.op == "off":
            return 0.0, 0.0
        if self.op == "set":
            return 0.0, float(self.value)
        return float(self.value), 0.0

    def to_json(self) -> dict:
        data = {"layer": self.layer, "unit": self.unit, "op": self.op, "value": self.value, "local": self.local}
        if self.steps is not None:
            data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> "UnitEdit":
        steps = data.get("steps")
        return cls(str(data["layer"]), int(data["unit"]), data.get("op", "scale"), float(data.get("value", 1.0)),
                   bool(data.get("local", False)), tuple(steps) if steps is not None else None)


class StepClock:
    """The current denoising step, written by diffusion adapters and read by edits with step windows.

    ``step is None`` (GANs) means every windowed edit is active.
    """

    def __init__(self) -> None:
        self.step: int | None = None


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A (H, W) or (B, H, W) mask in [0, 1] resized to ``size`` as (1|B, 1, h, w): area average when shrinking."""
    m = mask if mask.dim() == 4 else (mask[None, None] if mask.dim() == 2 else mask[:, None])
    h, w = int(size[0]), int(size[1])
    if tuple(m.shape[-2:]) == (h, w):
        return m
    m = m.float()
    if m.shape[-2] >= h and m.shape[-1] >= w:
        return F.interpolate(m, size=(h, w), mode="area")
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def _per_unit(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) or (B', C) tensor shaped to broadcast against ``x`` (B, C, ...), repeating B' to B."""
    t = t.to(device=x.device, dtype=x.dtype)
    if t.dim() == 1:
        t = t[None]
    if t.shape[0] not in (1, x.shape[0]):
        if x.shape[0] % t.shape[0]:
            raise StudioError(f"Batch of {x.shape[0]} cannot take {t.shape[0]} per-sample edits.")
        t = t.repeat(x.shape[0] // t.shape[0], 1)  # classifier-free guidance stacks [uncond, cond]
    return t.reshape(t.shape[0], t.shape[1], *([1] * (x.dim() - 2)))


def edit_activation(x: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
                    local: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Apply per-unit ``gain * x + offset``; units with ``local`` set change only inside ``mask``.

    gain, offset: (C,) or (B, C). local: (C,) bool. mask: (H, W) or (B, H, W) in [0, 1], any resolution.
    """
    edited = x * _per_unit(gain, x) + _per_unit(offset, x)
    if local is None or mask is None or x.dim() != 4 or not bool(local.any()):
        return edited
    m = resize_mask(mask.to(x.device), x.shape[-2:]).to(x.dtype)
    if m.shape[0] not in (1, x.shape[0]):
        m = m.repeat(x.shape[0] // m.shape[0], 1, 1, 1)
    blended = x + m * (edited - x)
    return torch.where(local.to(x.device).view(1, -1, 1, 1), blended, edited)


def mask_box(mask: torch.Tensor, threshold: float = 0.5) -> tuple[float, float, float, float] | None:
    """The bounding box (y0, x0, y1, x1) of ``mask > threshold`` as fractions of the image (pixel edges); None if empty."""
    m = mask.reshape(mask.shape[-2], mask.shape[-1]) > threshold
    rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
    if not len(rows):
        return None
    h, w = m.shape
    return (float(rows[0]) / h, float(cols[0]) / w, float(rows[-1] + 1) / h, float(cols[-1] + 1) / w)


def box_grid(box: tuple[float, float, float, float], size: Sequence[int]) -> torch.Tensor:
    """A (1, P, Q, 2) ``grid_sample`` grid of P x Q cell centres spread over ``box`` (fractions of the image)."""
    y0, x0, y1, x1 = box
    p, q = int(size[0]), int(size[1])
    ys = y0 + (torch.arange(p, dtype=torch.float32) + 0.5) / p * (y1 - y0)
    xs = x0 + (torch.arange(q, dtype=torch.float32) + 0.5) / q * (x1 - x0)
    gy, gx = torch.meshgrid(2 * ys - 1, 2 * xs - 1, indexing="ij")
    return torch.stack([gx, gy], dim=-1)[None]


def box_crop(x: torch.Tensor, box: tuple[float, float, float, float], size: Sequence[int]) -> torch.Tensor:
    """(B, C, P, Q): ``x`` (B, C, h, w) sampled bilinearly at the P x Q cell centres of ``box`` (fractions of the
    grid), the border value repeated outside it: what a pattern of that box reads (:func:`place_pattern` puts it
    back)."""
    grid = box_grid(box, size).to(x.device).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def surround_ring(mask: torch.Tensor, size: Sequence[int], width: int = 1) -> torch.Tensor:
    """(h, w) weights of the cells just outside the box of ``mask`` (``width`` cells wide) on an (h, w) grid.

    The ring is taken around the box, not the painted shape, so a quick box and a careful outline of the same thing
    see the same surroundings; cells off the grid are simply missing.
    """
    h, w = int(size[0]), int(size[1])
    box = mask_box(mask)
    ring = torch.zeros(h, w)
    if box is None:
        return ring
    y0, x0, y1, x1 = box
    r0, c0 = int(math.floor(y0 * h)), int(math.floor(x0 * w))
    r1, c1 = max(int(math.ceil(y1 * h)), r0 + 1), max(int(math.ceil(x1 * w)), c0 + 1)
    ring[max(r0 - width, 0):min(r1 + width, h), max(c0 - width, 0):min(c1 + width, w)] = 1
    ring[r0:r1, c0:c1] = 0
    return ring


def surround_mean(x: torch.Tensor, mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """(B, C): each channel's mean of ``x`` (B, C, h, w) on :func:`surround_ring` of ``mask``; the mean over the whole
    grid when the box fills it (nothing is outside)."""
    ring = surround_ring(mask, x.shape[-2:], width).to(x.device, x.dtype)
    if float(ring.sum()) < 1:
        return x.mean((-1, -2))
    return (x * ring).sum((-1, -2)) / ring.sum()


def place_pattern(pattern: torch.Tensor, box: tuple[float, float, float, float], size: Sequence[int]) -> torch.Tensor:
    """(K, P, Q) pattern stretched over ``box`` of an (h, w) grid: (K, h, w), the border value repeated outside it."""
    h, w = int(size[0]), int(size[1])
    y0, x0, y1, x1 = box
    us = ((torch.arange(h, dtype=torch.float32) + 0.5) / h - y0) / max(y1 - y0, 1e-6)
    vs = ((torch.arange(w, dtype=torch.float32) + 0.5) / w - x0) / max(x1 - x0, 1e-6)
    gy, gx = torch.meshgrid(2 * us - 1, 2 * vs - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None].to(pattern.device, torch.float32)
    placed = F.grid_sample(pattern[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return placed[0]


@dataclass(eq=False)
class UnitTargets:
    """Some units of one layer pulled towards a target: ``x + strength * m * (target - x)`` on those units.

    ``pattern`` (K, P, Q) is placed on the box of ``mask`` (centred and scaled to it; P = Q = 1 is a constant);
    ``m`` is ``mask`` at the layer's resolution. Strength 0 is the identity, 1 the target, beyond 1 past it.
    ``relative`` (K,) in [0, 1]: a unit with 1 has its pattern measured from the unit's mean on the ring just outside
    the mask's box (:func:`surround_mean`), so its target follows this image's surroundings (a wall's own colour)
    instead of the examples' average; 0 (the default) is an absolute value.
    ``steps=(start, stop)`` limits it to those denoising steps, as for a :class:`UnitEdit` (None: every step).
    ``gain`` (K, P, Q) in [0, 1], placed like the pattern: how strongly each unit is pulled in each cell (the pull is
    ``strength * m * gain``); None pulls every cell alike.
    """

    layer: str
    units: torch.Tensor  # (K,) long
    pattern: torch.Tensor  # (K, P, Q)
    mask: torch.Tensor  # (H, W) in [0, 1] at image resolution
    strength: float = 1.0
    relative: torch.Tensor | None = None  # (K,) in [0, 1]; None: every unit absolute
    steps: tuple[int, int] | None = None
    gain: torch.Tensor | None = None  # (K, P, Q) in [0, 1]; None: 1 in every cell
    #: The mask's box and, per activation shape, the placed target and the mask at that size: they depend on the
    #: pattern and the mask only, so :meth:`Editor.set_knobs` shares one dict between the frames of a drag.
    placements: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_steps(self.steps)
        self.units = torch.as_tensor(self.units, dtype=torch.long).reshape(-1)
        if self.pattern.dim() != 3 or self.pattern.shape[0] != len(self.units):
            raise StudioError(f"A target pattern for {len(self.units)} units must be (K, P, Q), "
                              f"not {tuple(self.pattern.shape)}.")
        if self.gain is not None and tuple(self.gain.shape) != tuple(self.pattern.shape):
            raise StudioError(f"A target's gain must be shaped like its pattern {tuple(self.pattern.shape)}, "
                              f"not {tuple(self.gain.shape)}.")
        if self.relative is not None:
            self.relative = torch.as_tensor(self.relative, dtype=torch.float32).reshape(-1)
            if len(self.relative) != len(self.units):
                raise StudioError(f"A target for {len(self.units)} units needs {len(self.units)} relative flags, "
                                  f"not {len(self.relative)}.")
            if not bool(self.relative.any()):
                self.relative = None

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        """The mask's box (see :func:`mask_box`), found once per placements dict."""
        if "box" not in self.placements:
            self.placements["box"] = mask_box(self.mask)
        return self.placements["box"]

    def _at(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, h, w) target and the pull's weight (1 or K, h, w) for an activation like ``x``: the mask at that size,
        times the placed gain if any (both cached in ``placements``; strength is applied by the caller)."""
        key = (tuple(x.shape[-2:]), x.device, x.dtype)
        if key not in self.placements:
            size = x.shape[-2:]
            target = place_pattern(self.pattern.to(x.device), self.box, size).to(x.dtype)
            m = resize_mask(self.mask.to(x.device, torch.float32), size).to(x.dtype)[0]
            if self.gain is not None:
                m = m * place_pattern(self.gain.to(x.device), self.box, size).to(x.dtype)
            self.placements[key] = (target, m)
        return self.placements[key]

    def active(self, step: int | None) -> bool:
        """Whether this applies at denoising ``step`` (None, as in a GAN: always)."""
        return step is None or self.steps is None or self.steps[0] <= step < self.steps[1]

    def blend(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, h, w) with the units pulled towards the placed target inside the mask (any step: the
        caller checks :meth:`active`)."""
        if self.strength == 0 or x.dim() != 4 or self.box is None:
            return x
        target, m = self._at(x)
        weight = m[None] * float(self.strength)
        units = self.units.to(x.device)
        chosen = x[:, units]
        target = target[None]
        if self.relative is not None:  # per image: the surroundings of the region in this very activation
            around = surround_mean(chosen, self.mask)  # (B, K)
            target = target + (self.relative.to(x.device, x.dtype)[None] * around)[..., None, None]
        out = x.clone()
        out[:, units] = chosen + weight * (target - chosen)
        return out


class LayerEdit:
    """The single hook on one layer; its per-unit tensors are changed in place by sliders.

    (Switching off a different unit in every image of a batch is the ranking's own hook,
    ``studio.ablation.BatchAblation``.)
    """

    def __init__(self, module: nn.Module, units: int, clock: StepClock | None = None) -> None:
        self.module, self.units, self.clock = module, units, clock
        self.gain = torch.ones(units)
        self.offset = torch.zeros(units)
        self.local = torch.zeros(units, dtype=torch.bool)
        self.step_start = torch.zeros(units, dtype=torch.long)
        self.step_stop = torch.full((units,), _NO_STOP, dtype=torch.long)
        self.mask: torch.Tensor | None = None
        self.targets: list[UnitTargets] = []
        self._edited = False
        self._windowed = False
        self.handle = module.register_forward_hook(self._hook)

    def _check(self, unit: int) -> None:
        check_unit("this layer", unit, self.units)

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the identity (no edit)."""
        self.gain.fill_(1.0)
        self.offset.zero_()
        self.local.zero_()
        self.step_start.zero_()
        self.step_stop.fill_(_NO_STOP)
        self._edited = self._windowed = False

    @torch.no_grad()
    def set_unit(self, unit: int, op: Op = "scale", value: float = 1.0, local: bool = False,
                 steps: tuple[int, int] | None = None) -> None:
        """Write one unit's edit in place (the per-frame slider path)."""
        self._check(unit)
        gain, offset = UnitEdit("", unit, op, value, local, steps).gain_offset()
        self.gain[unit] = gain
        self.offset[unit] = offset
        self.local[unit] = local
        self.step_start[unit] = steps[0] if steps else 0
        self.step_stop[unit] = steps[1] if steps else _NO_STOP
        self._edited = True
        self._windowed = self._windowed or steps is not None

    @property
    def edited(self) -> bool:
        return self._edited or bool(self.targets)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """This layer's edit applied to an activation (used by the hook and by partial re-renders): unit edits
        first, then unit targets in order."""
        x = self._apply_units(x)
        step = self.clock.step if self.clock is not None else None
        for targets in self.targets:
            if targets.active(step):
                x = targets.blend(x)
        return x

    def _apply_units(self, x: torch.Tensor) -> torch.Tensor:
        if not self._edited:
            return x
        gain, offset = self.gain, self.offset
        step = self.clock.step if self.clock is not None else None
        if self._windowed and step is not None:
            inside = (self.step_start <= step) & (step < self.step_stop)
            gain = torch.where(inside, gain, torch.ones_like(gain))
            offset = torch.where(inside, offset, torch.zeros_like(offset))
        return edit_activation(x, gain, offset, self.local, self.mask)

    def _hook(self, module: nn.Module, args: object, output: object) -> object | None:
        if not self.edited:
            return None
        return replace_first(output, self.apply(first_tensor(output)))

    def remove(self) -> None:
        self.handle.remove()


class Editor:
    """All unit edits on one model: one :class:`LayerEdit` hook per edited layer, removed on exit."""

    def __init__(self, root: nn.Module, units: Mapping[str, int], clock: StepClock | None = None) -> None:
        self.root, self.units, self.clock = root, dict(units), clock
        self.layers: dict[str, LayerEdit] = {}
        self.mask: torch.Tensor | None = None
        self._placements: dict[tuple, tuple] = {}  # (layer, id(pattern), id(mask)) -> (pattern, mask, placements)

    def __enter__(self) -> "Editor":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def layer(self, name: str) -> LayerEdit:
        """The hook for ``name``, registered on first use and reused after."""
        if name not in self.layers:
            module = get_module(self.root, name)
            if name not in self.units:
                raise StudioError(f"Layer '{name}' has no units to edit (it is not one of the model's layers).")
            edit = LayerEdit(module, self.units[name], self.clock)
            edit.mask = self.mask
            self.layers[name] = edit
        return self.layers[name]

    def set(self, edits: Iterable[UnitEdit], mask: torch.Tensor | None = None) -> None:
        """Replace every edit by ``edits`` (and the mask used by local ones)."""
        edits = list(edits)
        self.set_mask(mask)
        for layer in self.layers.values():
            layer.reset()
        for e in edits:
            self.layer(e.layer).set_unit(e.unit, e.op, e.value, e.local, e.steps)

    def set_mask(self, mask: torch.Tensor | None) -> None:
        self.mask = mask
        for layer in self.layers.values():
            layer.mask = mask

    def set_targets(self, targets: Iterable[UnitTargets]) -> None:
        """Replace every layer's unit targets by ``targets`` (unit edits stay as they are)."""
        targets = list(targets)
        for t in targets:
            units = self.units.get(t.layer)
            if units is not None and len(t.units) and not (0 <= int(t.units.min()) and int(t.units.max()) < units):
                raise StudioError(f"A target names units outside {t.layer}'s 0..{units - 1}.")
        for layer in self.layers.values():
            layer.targets = []
        for t in targets:
            self.layer(t.layer).targets.append(t)

    def set_knobs(self, knob_edits: Iterable) -> None:
        """Replace every knob edit (each has ``targets() -> list[UnitTargets]``, e.g. ``studio.knobs.KnobEdit``).

        Each frame of a strength drag makes new targets; those of the same layer, pattern and mask share the
        placements of earlier calls (pattern placed, mask resized once per drag, not per frame). Only placements on
        the masks this call uses are kept (both patterns of a knob whose strength crosses 0), so a new mask places
        anew and the old one's placements go."""
        targets = [t for edit in knob_edits for t in edit.targets()]
        masks = {id(t.mask): t.mask for t in targets}
        kept = {key: entry for key, entry in self._placements.items() if masks.get(key[2]) is entry[1]}
        for t in targets:
            key = (t.layer, id(t.pattern), id(t.mask))
            entry = self._placements.get(key)
            if entry is None or entry[0] is not t.pattern or entry[1] is not t.mask:  # held, so ids stay theirs
                entry = (t.pattern, t.mask, t.placements)
            kept[key] = entry
            t.placements = entry[2]
        self._placements = kept
        self.set_targets(targets)

    def clear(self) -> None:
        """No edits, hooks kept (cheap: an unedited hook returns at once)."""
        for layer in self.layers.values():
            layer.reset()
            layer.targets = []

    @property
    def edited_layers(self) -> list[str]:
        return [name for name, layer in self.layers.items() if layer.edited]

    def close(self) -> None:
        for layer in self.layers.values():
            layer.remove()
        self.layers.clear()
        self._placements = {}
