"""Render many images with one unit ablated in each, in batches that fit memory (the exact path of ranking).

    ablator = Ablator(gen, samples, masks, gen.layer("blocks.1"), "zero", steps=None)
    inside, outside, chunk = run_chunked(ablator, units=[0, 1, 2], chunk=64, ticker=Ticker(3), notes=[])

A work item is a (unit, image) pair. With ``LayerInfo.partial`` the layer's activation is traced once and only
the later layers re-run (``forward_from``) on copies with one unit replaced; otherwise (diffusion, or a step
window) the model renders in full with a hook that ablates a different unit in every batch element.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .core.device import is_out_of_memory
from .core.errors import StudioError
from .core.hooks import edit_activation, first_tensor, get_module, replace_first, resize_mask
from .core.progress import Ticker

#: Pixels per forward pass when no GPU memory figure guides the batch size (CPU/MPS): caches, not memory, limit.
_CPU_PIXELS = 2**17
_MAX_CHUNK = 1024


def measure_effect(before: Tensor, after: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, the mean absolute change per pixel inside the mask and outside it.

    before, after: (B, 3, H, W) images. mask: (H, W) or (B, H, W) weights in [0, 1] at image resolution (a soft
    mask weights pixels). A pixel's change is ``|after - before|`` averaged over the colour channels; inside is
    ``sum(m * change) / sum(m)``, outside ``sum((1 - m) * change) / sum(1 - m)`` (0 when the mask covers all).

    >>> inside, outside = measure_effect(image, edited, mask)     # each (B,)
    """
    change = (after.float() - before.float()).abs().mean(dim=1)  # (B, H, W)
    m = mask.to(device=change.device, dtype=change.dtype)
    if m.shape[-2:] != change.shape[-2:]:
        m = resize_mask(m, change.shape[-2:])[:, 0]
    m = m.expand_as(change) if m.dim() == 2 else m
    tiny = torch.finfo(change.dtype).tiny
    inside = (change * m).sum(dim=(-2, -1)) / m.sum(dim=(-2, -1)).clamp_min(tiny)
    outside = (change * (1 - m)).sum(dim=(-2, -1)) / (1 - m).sum(dim=(-2, -1)).clamp_min(tiny)
    return inside, outside


def _unit_mean(x: Tensor) -> Tensor:
    """(C,) mean of every unit over the batch and all positions (units on dim 1)."""
    dims = [d for d in range(x.dim()) if d != 1]
    return x.float().mean(dim=dims)


class BatchAblation:
    """One forward hook on the layer: batch element i gets ``gain[i] * x + offset[i]`` within the step window.

    While ``recording`` it stores each call's per-unit mean instead, keyed by (denoising step, call within the
    step), so the mean ablation of a diffusion model sets a unit to its mean at that step. Removed on exit.
    It is the one per-batch editing hook: ranking renders and the ranking's thumbnails both use it::

        hook = BatchAblation(get_module(generator.module, "blocks.1"), generator.clock, None)
        hook.gain, hook.offset = gain, torch.zeros_like(gain)   # (n, C): image i has its own unit switched off
        with hook:
            images = generator.render([sample] * n)
    """

    def __init__(self, module: nn.Module, clock, window: tuple[int, int] | None) -> None:
        self.module, self.clock, self.window = module, clock, window
        self.gain: Tensor | None = None
        self.offset: Tensor | None = None  # (n, C); with use_means, the weight of the call's mean
        self.use_means = False
        self.recording = False
        self.means: dict[tuple, Tensor] = {}
        self._seen: dict[object, int] = {}

    def __enter__(self) -> "BatchAblation":
        self._seen.clear()
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def key(self) -> tuple:
        """(step, n): the n-th call of the layer at the clock's current step (None for GANs)."""
        step = self.clock.step if self.clock is not None else None
        n = self._seen.get(step, 0)
        self._seen[step] = n + 1
        return step, n

    def mean_at(self, key: tuple) -> Tensor:
        """The recorded mean for ``key``; the mean over all calls for a call the recording never saw."""
        if key in self.means:
            return self.means[key]
        return torch.stack(list(self.means.values())).mean(0)

    def _hook(self, module: nn.Module, args: object, output: object) -> object | None:
        key = self.key()
        x = first_tensor(output)
        if self.recording:
            self.means[key] = _unit_mean(x)
            return None
        step = key[0]
        if self.gain is None or (self.window and step is not None and not self.window[0] <= step < self.window[1]):
            return None
        offset = self.offset * self.mean_at(key).to(self.offset) if self.use_means else self.offset
        return replace_first(output, edit_activation(x, self.gain, offset))


class Ablator:
    """The unedited images of ``samples`` and renders of them with single units ablated.

    ablation: ``zero`` switches a unit off; ``mean`` sets it to its mean over the images and positions.
    """

    def __init__(self, generator, samples: Sequence, masks: Tensor, info, ablation: str,
                 steps: tuple[int, int] | None, *, eager: bool = True) -> None:
        self.generator, self.samples, self.masks, self.info = generator, list(samples), masks, info
        self.ablation, self.steps = ablation, steps
        self.partial = bool(info.partial) and steps is None
        self.prefix = None
        self.per_image_bytes: float | None = None
        device = generator.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            if self.partial:
                self.acts = generator.trace(self.samples, [info.name], before_edits=True)[info.name]
                self.mean = _unit_mean(self.acts)
                # not eager: the fast path's gradient pass renders the unedited images anyway (see base)
                self._base = generator.forward_from(info.name, self.acts, self.samples) if eager else None
            else:
                self.prefix = self._shared_prefix()
                self.hook = BatchAblation(get_module(generator.module, info.name), generator.clock, steps)
                self.hook.recording = True
                with self.hook:
                    self._base = self.render_full(self.samples)
                self.hook.recording = False
                if not self.hook.means:
                    raise StudioError(f"Layer '{info.name}' did not run while rendering, so it cannot be ranked.")
                self.mean = torch.stack(list(self.hook.means.values())).mean(0)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) - before
            self.per_image_bytes = max(peak, 1) / len(self.samples)

    def _shared_prefix(self):
        """Diffusion with a window starting at step k: steps before k are the same for every copy, run them once."""
        gen, steps = self.generator, self.steps
        if not steps or steps[0] <= 0 or not gen.shares_denoising_prefix:
            return None
        first = min(int(gen.prefix_step(steps[0], s)) for s in self.samples)
        return gen.denoise_prefix(self.samples, first) if first > 0 else None

    def render_full(self, samples: Sequence) -> Tensor:
        """A full render (continuing from the shared denoising prefix when there is one)."""
        if self.prefix is not None:
            return self.generator.render(samples, start=self.prefix)
        return self.generator.render(samples)

    @property
    def base(self) -> Tensor:
        """The unedited images (B, 3, H, W)."""
        if self._base is None:
            with torch.inference_mode():
                self._base = self.generator.forward_from(self.info.name, self.acts, self.samples)
        return self._base

    def offer_base(self, images: Tensor) -> None:
        """Keep the unedited images a gradient pass rendered, when none were rendered yet."""
        if self._base is None and len(images) == len(self.samples):
            self._base = images.detach()

    @property
    def units(self) -> int:
        return self.info.units

    def default_chunk(self) -> int:
        """Images per forward pass: half the free GPU memory over the measured cost of one image, else a pixel budget."""
        if self.per_image_bytes is not None:
            free, _ = torch.cuda.mem_get_info(self.generator.device)
            size = int(0.5 * free / self.per_image_bytes)
        else:
            h, w = self.generator.resolution
            size = _CPU_PIXELS // max(1, h * w)
        return max(1, min(_MAX_CHUNK, size))

    def render(self, units: Tensor, images: Tensor) -> Tensor:
        """Images ``images[i]`` with unit ``units[i]`` ablated, (n, 3, H, W)."""
        samples = [self.samples[int(i)] for i in images]
        if self.partial:
            batch = self.acts[images.to(self.acts.device)].clone()
            rows = torch.arange(len(units), device=batch.device)
            cols = units.to(batch.device)
            if self.ablation == "zero":
                batch[rows, cols] = 0
            else:
                fill = self.mean.to(batch)[cols]
                batch[rows, cols] = fill.view(-1, *([1] * (batch.dim() - 2))).expand_as(batch[rows, cols])
            return self.generator.forward_from(self.info.name, batch, samples)
        gain = torch.ones(len(units), self.units, device=self.generator.device)
        gain[torch.arange(len(units)), units.to(gain.device)] = 0.0
        self.hook.gain, self.hook.use_means = gain, self.ablation == "mean"
        self.hook.offset = 1.0 - gain if self.ablation == "mean" else torch.zeros_like(gain)
        with self.hook:
            return self.render_full(samples)

    def effects(self, units: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
        """Inside and outside effect of each (unit, image) pair, each (n,)."""
        with torch.inference_mode():
            after = self.render(units, images)
            return measure_effect(self.base[images], after, self.masks[images])


def run_chunked(ablator: Ablator, units: Sequence[int], chunk: int, ticker: Ticker,
                notes: list[str]) -> tuple[Tensor, Tensor, int]:
    """Mean inside/outside effect over the images of each unit in ``units``, ``chunk`` images per pass.

    An out-of-memory error halves the chunk and retries the same pairs (noted once); returns the chunk that worked.
    """
    count = len(ablator.samples)
    pairs = torch.tensor([(u, b) for u in units for b in range(count)], dtype=torch.long).view(-1, 2)
    inside = torch.zeros(len(pairs))
    outside = torch.zeros(len(pairs))
    start, reported, first_chunk = 0, 0, chunk
    while start < len(pairs):
        stop = min(start + chunk, len(pairs))
        try:
            ins, outs = ablator.effects(pairs[start:stop, 0], pairs[start:stop, 1])
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            if chunk == 1:
                raise StudioError("The model ran out of memory rendering a single image; close other programs "
                                  "using the GPU or rank on the CPU (--device cpu).") from error
            chunk = max(1, (stop - start) // 2)
            if ablator.generator.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        inside[start:stop], outside[start:stop] = ins.float().cpu(), outs.float().cpu()
        start = stop
        finished = start // count
        ticker.advance(finished - reported)
        reported = finished
    if chunk != first_chunk:
        notes.append(f"Memory ran out at {first_chunk} images per pass; ranked with {chunk} images per pass.")
    return inside.view(-1, count).mean(1), outside.view(-1, count).mean(1), chunk
