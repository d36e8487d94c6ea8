"""Live re-rendering for sliders: one editor, a cached activation, and only the later layers re-run.

The worker thread that owns the model keeps one :class:`LiveRenderer`; the GUI posts the newest slider state
into a :class:`Mailbox` and the worker renders whatever is newest, so a fast drag never queues a render
per value and the GUI thread never waits on the model::

    live = LiveRenderer(generator)
    frame = live.frame(LiveRequest(sample, (UnitEdit("blocks.1", 7, "scale", 2.5),), stamp=1))
    frame.partial        # True: blocks.1's unedited activation came from the cache, only later blocks ran
    frame = live.frame(LiveRequest(sample, knobs=(KnobEdit(knob, mask, 0.7),)))   # knob edits, live the same way
    live.close()         # removes the hooks

    box = Mailbox()
    box.post(request)    # GUI thread: overwrites any request not yet taken, returns its stamp
    box.take()           # worker thread: the newest request, or None when it was already taken
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from models.base import Generator, LayerInfo, Sample

from .ablation import BatchAblation
from .concept import applied_labels, loaded_weights
from .core.errors import UnsupportedOperation
from .core.hooks import Editor, UnitEdit, get_module
from .knobs import KnobEdit


@dataclass(frozen=True, eq=False)
class LiveRequest:
    """Everything one live frame depends on; ``stamp`` orders requests (newer is larger)."""

    sample: Sample
    edits: tuple[UnitEdit, ...] = ()
    mask: torch.Tensor | None = None  # (H, W) in [0, 1]; local edits stay inside it
    knobs: tuple[KnobEdit, ...] = ()  # each with its own mask and strength
    stamp: int = 0
    original: bool = False  # also return the unedited image (side-by-side, press-and-hold)
    preview: bool = False  # a quick frame while a slider moves (the model's preview_options), shown at full size


@dataclass(frozen=True, eq=False)
class Frame:
    """One rendered frame, on the CPU, with how it was made and how long it took."""

    stamp: int
    image: torch.Tensor  # (3, H, W) float32 in [0, 1]
    original: torch.Tensor | None
    partial: bool  # True when only the layers after the earliest edited one ran
    layer: str | None  # the layer re-rendered from (None for a full render)
    ms: float
    sample: Sample | None = None
    preview: bool = False  # rendered with the model's preview options (upscaled to the model's resolution)


def default_layer(layers: Sequence[LayerInfo], start: str | None = None) -> str | None:
    """What the app opens on: the model's declared ``start`` layer (``Generator.start_layer``) when it has it, else
    a middle spatial layer (objects and parts rather than textures or layout)."""
    if start is not None and any(info.name == start for info in layers):
        return start
    spatial = [info for info in layers if info.size is not None]
    pool = spatial or list(layers)
    return pool[len(pool) // 2].name if pool else None


class Mailbox:
    """A single slot holding the newest request: posting overwrites, taking empties it (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._request: LiveRequest | None = None
        self._stamp = 0

    def post(self, request: LiveRequest) -> int:
        """Store ``request`` with the next stamp (replacing any request not yet taken); returns the stamp."""
        with self._lock:
            self._stamp += 1
            self._request = replace(request, stamp=self._stamp)
            return self._stamp

    def take(self) -> LiveRequest | None:
        with self._lock:
            request, self._request = self._request, None
            return request

    @property
    def stamp(self) -> int:
        """The stamp of the newest request ever posted."""
        with self._lock:
            return self._stamp


@dataclass
class _Cache:
    sample: Sample | None = None
    layer: str | None = None
    activation: torch.Tensor | None = None
    original: torch.Tensor | None = None
    original_sample: Sample | None = None
    mask_source: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    hits: int = field(default=0)


class LiveRenderer:
    """Renders a sample with unit edits, re-running only the layers after the earliest edited one.

    Not thread-safe: one thread (the model's worker) calls it. Call :meth:`invalidate` after weights change.
    """

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.editor: Editor | None = None
        self._order = {info.name: i for i, info in enumerate(generator.layers())}
        self._cache = _Cache()

    # -- state ------------------------------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Forget cached activations and images (the weights or the model changed)."""
        self._cache = _Cache()

    def release(self) -> None:
        """Remove every hook and forget the caches; the next render registers what it needs again."""
        if self.editor is not None:
            self.editor.close()
            self.editor = None
        self.invalidate()

    close = release

    @property
    def cache_hits(self) -> int:
        """How many renders reused the cached activation (tests and benchmarks read it)."""
        return self._cache.hits

    def _editor(self) -> Editor:
        if self.editor is None:
            self.editor = self.generator.editor()
        return self.editor

    def _device_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        if mask is None:
            return None
        if self._cache.mask_source is not mask:  # copy to the device once per painted mask, not per frame
            self._cache.mask_source = mask
            self._cache.mask = mask.to(self.generator.device, torch.float32)
        return self._cache.mask

    def earliest_layer(self, edits: Sequence[UnitEdit], knobs: Sequence[KnobEdit] = ()) -> str | None:
        """The edited layer that runs first (unit edits and knob edits); the cached activation is taken there."""
        layers = {e.layer for e in edits} | {layer for k in knobs if k.strength != 0 for layer in k.layers}
        return min(layers, key=lambda name: self._order.get(name, len(self._order))) if layers else None

    # -- rendering --------------------------------------------------------------------------------------------
    def render(self, sample: Sample, edits: Sequence[UnitEdit] = (), mask: torch.Tensor | None = None,
               knobs: Sequence[KnobEdit] = ()) -> tuple[torch.Tensor, str | None]:
        """The edited image (1, 3, H, W) on the model's device, and the layer re-rendered from (None: full)."""
        with torch.inference_mode():  # grad mode is thread-local: enter it in the thread that renders
            editor = self._editor()
            editor.set(edits, mask=self._device_mask(mask))  # per-unit tensors written in place
            try:
                editor.set_knobs(knobs)
                return self._render_edited(editor, sample, edits, knobs)
            finally:
                editor.clear()  # hooks stay registered but idle: other renders of the model see no edits

    def _render_edited(self, editor: Editor, sample: Sample, edits: Sequence[UnitEdit],
                       knobs: Sequence[KnobEdit] = ()) -> tuple[torch.Tensor, str | None]:
        layer = self.earliest_layer(edits, knobs)
        if layer is None or not self.generator.layer(layer).partial:
            return self.generator.render([sample]), None
        cache = self._cache
        if cache.activation is None or cache.layer != layer or cache.sample != sample:
            traced = self.generator.trace([sample], [layer], before_edits=True)
            cache.sample, cache.layer, cache.activation = sample, layer, traced[layer]
        else:
            cache.hits += 1
        edited = editor.layer(layer).apply(cache.activation)
        return self.generator.forward_from(layer, edited, [sample]), layer

    def original(self, sample: Sample) -> torch.Tensor:
        """The model as loaded (no unit edit, no concept edit): (3, H, W) on the CPU, cached per sample."""
        cache = self._cache
        if cache.original is None or cache.original_sample != sample:
            with loaded_weights(self.generator), torch.inference_mode():  # weights written outside inference mode
                image = self.generator.render([sample])[0].float().cpu()
            cache.original, cache.original_sample = image, sample
        return cache.original

    def frame(self, request: LiveRequest) -> Frame:
        """Render ``request`` into a CPU :class:`Frame` at the model's resolution."""
        start = time.perf_counter()
        options = self.generator.preview_options() if request.preview else {}
        sample = replace(request.sample, options={**request.sample.options, **options}) if options else request.sample
        edited = bool(request.edits or request.knobs)
        concept_edited = bool(applied_labels(self.generator))  # then the loaded model is not today's weights
        original = self.original(sample) if request.original or not (edited or concept_edited) else None
        if edited:
            image, layer = self.render(sample, request.edits, request.mask, request.knobs)
            image = image[0].float().cpu()
        elif concept_edited:
            with torch.inference_mode():
                image, layer = self.generator.render([sample])[0].float().cpu(), None
        else:
            image, layer = original, None
        size = tuple(self.generator.resolution)
        image = _fit(image, size)
        original = _fit(original, size) if original is not None else None
        ms = 1000 * (time.perf_counter() - start)
        return Frame(request.stamp, image, original if request.original else None, layer is not None, layer, ms,
                     request.sample, bool(options))


def _fit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (3, h, w) image at ``size`` (previews render smaller; the canvas and the mask stay full size)."""
    if tuple(image.shape[-2:]) == size:
        return image
    return torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def unit_off_images(generator: Generator, sample: Sample, layer: str, units: Sequence[int], *,
                    chunk: int = 8) -> torch.Tensor:
    """(N, 3, H, W) CPU images of ``sample`` with each of ``units`` switched off in turn (ranking thumbnails).

    Re-renders from the cached layer when the family can (only later layers run), in batches of ``chunk``.
    """
    units = list(units)
    info = generator.layer(layer)
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        base = generator.trace([sample], [layer])[layer] if info.partial else None
        for start in range(0, len(units), chunk):
            part = torch.tensor(units[start:start + chunk])
            n = len(part)
            if base is not None:
                acts = base.repeat(n, *([1] * (base.dim() - 1))).clone()
                acts[torch.arange(n), part] = 0
                images = generator.forward_from(layer, acts, [sample] * n)
            else:
                hook = BatchAblation(get_module(generator.module, info.name), generator.clock, None)
                hook.gain = torch.ones(n, info.units, device=generator.device)
                hook.gain[torch.arange(n), part.to(hook.gain.device)] = 0
                hook.offset = torch.zeros_like(hook.gain)
                with hook:
                    images = generator.render([sample] * n)
            out.append(images.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, *generator.resolution)


def unit_activation(generator: Generator, sample: Sample, layer: str, unit: int) -> torch.Tensor:
    """(H, W) CPU map in [0, 1] of where ``unit`` fires, upsampled to the image (positive part over its max)."""
    info = generator.unit_layer(layer, unit)
    with torch.inference_mode():
        act = generator.trace([sample], [layer])[layer]
        if act.dim() != 4:
            raise UnsupportedOperation(f"{layer} is a vector layer: its units have no position to show.")
        a = act[:1, unit:unit + 1].float().clamp(min=0)
        a = torch.nn.functional.interpolate(a, size=generator.resolution, mode="bilinear", align_corners=False)
        peak = float(a.max())
        return (a[0, 0] / peak if peak > 0 else a[0, 0]).cpu()
