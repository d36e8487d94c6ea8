"""The fast ranking's estimate: every unit's inside/outside effect from four backward passes.

First-order (attribution patching): ablating unit c of image b moves its activation by ``d = target - a``
(``target`` 0, or the unit's mean), so a weighted pixel sum ``<w, image>`` moves by about ``<J^T w, d>``, and one
backward pass of ``<w, image>`` gives ``J^T w`` for every unit of every image at once. The part that position q
of the layer contributes, ``(J^T w)[c, q] * d[c, q]``, lands in the image near q, so the mask resized to the
layer's resolution says how much of it lands inside.

A mean *absolute* change is not linear, so the estimate combines two kinds of weighting (chosen by measuring
top-20 recall against the exact ranking on the Rooms model, ``python -m studio bench rank``):

- ``w`` = one colour channel, every pixel (three passes, their absolute values summed): exact for changes that
  keep one sign per channel, too low where signs mix;
- ``w`` = random signs per pixel and colour (one pass, fixed seed): blind to sign, but noisy and scaled otherwise.

Per region, the estimate is the geometric mean of the two (the random one rescaled to the same total over units);
either alone found 70-80 % of the exact top 20 on Rooms lamp masks, together 85-90 %. A layer without spatial
positions (vector layers) weights the inside and the outside of the mask separately instead (eight passes).

    inside, outside = estimate_effects(ablator)        # (C,) each, averaged over the images
"""
from __future__ import annotations

import torch
from torch import Tensor

from .core.device import is_out_of_memory
from .core.errors import StudioError, UnsupportedOperation
from .core.hooks import first_tensor, get_module, replace_first, resize_mask

#: Seed of the random-sign weighting: the same inputs give the same fast ranking.
SIGN_SEED = 0


def _random_signs(shape: tuple[int, ...], device: torch.device) -> Tensor:
    generator = torch.Generator().manual_seed(SIGN_SEED)
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).float().to(device)


def _partial_contributions(ablator, images: Tensor, weights: Tensor) -> Tensor:
    """(K, n, C, *positions): ``|(J^T w_k) * d|`` for each weighting, via ``forward_from``."""
    gen, name = ablator.generator, ablator.info.name
    x = ablator.acts[images.to(ablator.acts.device)].clone().requires_grad_(True)
    shape = (1, -1, *([1] * (x.dim() - 2)))
    target = torch.zeros_like(x) if ablator.ablation == "zero" else ablator.mean.to(x).view(shape).expand_as(x)
    move = target - x.detach()
    with torch.enable_grad():
        out = gen.forward_from(name, x, [ablator.samples[int(i)] for i in images])
        if not out.requires_grad:
            raise UnsupportedOperation(f"{gen.name} gives no gradients from layer {name}.")
        if len(images) == len(ablator.samples):
            ablator.offer_base(out)
        rows = []
        for k in range(len(weights)):
            (grad,) = torch.autograd.grad(out, x, grad_outputs=weights[k].to(out), retain_graph=k + 1 < len(weights))
            rows.append((grad * move).abs().float())
    return torch.stack(rows)


class _GainHook:
    """Replaces the layer's output by ``target + gain * (x - target)`` (within the step window); ``gain`` is a
    per-image, per-unit, per-position leaf at 1, made on the first call, so its gradient is ``J^T w * (x - target)``
    summed over the calls (denoising steps)."""

    def __init__(self, ablator, count: int) -> None:
        self.ablator, self.count = ablator, count
        self.gain: Tensor | None = None

    def __call__(self, module, args, output):
        key = self.ablator.hook.key()  # the same (step, call) keys as the recorded means
        window = self.ablator.steps
        if window and key[0] is not None and not window[0] <= key[0] < window[1]:
            return None
        x = first_tensor(output)
        if self.gain is None:
            self.gain = torch.ones(self.count, *x.shape[1:], device=x.device, dtype=torch.float32, requires_grad=True)
        gain = self.gain.to(x.dtype)
        if gain.shape[0] != x.shape[0]:  # classifier-free guidance stacks [uncond, cond]
            gain = gain.repeat(x.shape[0] // gain.shape[0], *([1] * (x.dim() - 1)))
        if self.ablator.ablation == "zero":
            return replace_first(output, gain * x)
        target = self.ablator.hook.mean_at(key).to(x).view(1, -1, *([1] * (x.dim() - 2)))
        return replace_first(output, target + gain * (x - target))


def _hooked_contributions(ablator, images: Tensor, weights: Tensor) -> Tensor:
    """Like :func:`_partial_contributions` through a full render (no ``forward_from``, or a step window)."""
    gen = ablator.generator
    hook = _GainHook(ablator, len(images))
    ablator.hook._seen.clear()
    handle = get_module(gen.module, ablator.info.name).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = ablator.render_full([ablator.samples[int(i)] for i in images])
            if hook.gain is None or not out.requires_grad:
                raise UnsupportedOperation(f"{gen.name} renders without gradients through {ablator.info.name}.")
            rows = []
            for k in range(len(weights)):
                (grad,) = torch.autograd.grad(out, hook.gain, grad_outputs=weights[k].to(out),
                                              retain_graph=k + 1 < len(weights))
                rows.append(grad.abs())  # the gain goes from 1 to 0: the change is -grad
    finally:
        handle.remove()
    return torch.stack(rows)


def contributions(ablator, weights: Tensor, chunk: int | None = None) -> Tensor:
    """(K, B, C, *positions) absolute first-order contributions of each unit and position to ``<weights[k], image>``
    (weights (K, B, 3, H, W)), in batches of ``chunk`` images (halved on out-of-memory)."""
    count = len(ablator.samples)
    chunk = max(1, min(chunk or count, count))
    compute = _partial_contributions if ablator.partial else _hooked_contributions
    parts, start = [], 0
    while start < count:
        images = torch.arange(start, min(start + chunk, count))
        try:
            # the GUI's model thread runs in inference mode; gradients need it off (it is thread-local)
            with torch.inference_mode(False), torch.enable_grad():
                parts.append(compute(ablator, images, weights[:, images.to(weights.device)]).cpu())
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            if chunk == 1:
                raise StudioError("The model ran out of memory computing gradients for one image; use the exact "
                                  "ranking or the CPU (--device cpu).") from error
            chunk //= 2
            if ablator.generator.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        start += len(images)
    return torch.cat(parts, dim=1)


def _combine(signed: Tensor, random: Tensor) -> Tensor:
    """Geometric mean of the two estimates, the random one rescaled to the signed one's total over units."""
    scale = float(signed.sum()) / max(float(random.sum()), 1e-30)
    return (signed * random * scale).clamp_min(0).sqrt()


#: How the gradient passes weight the colour channels (see :func:`estimate_effects`), and the default.
COLOURS = ("each", "together")
DEFAULT_COLOURS = "each"


def estimate_effects(ablator, chunk: int | None = None, colours: str | None = None) -> tuple[Tensor, Tensor]:
    """Estimated mean absolute change per pixel inside and outside the masks for every unit, each (C,).

    colours: ``each`` weights every colour channel in its own pass (3 passes); ``together`` weights their sum
    (1 pass: the same where a change moves R, G and B the same way, as light does).
    Raises :class:`UnsupportedOperation` when the model gives no gradients (the caller then ranks exactly).
    """
    colours = colours or DEFAULT_COLOURS
    if colours not in COLOURS:
        raise ValueError(f"colours is one of {', '.join(COLOURS)}, not {colours!r}")
    masks = ablator.masks.float()
    b, h, w = masks.shape
    if colours == "each":
        ones = torch.eye(3, device=masks.device).view(3, 1, 3, 1, 1).expand(3, b, 3, h, w)  # one pass per colour
    else:
        ones = torch.ones(1, b, 3, h, w, device=masks.device)
    k = len(ones)
    signs = _random_signs((1, b, 3, h, w), masks.device)
    area_in = masks.sum(dim=(-2, -1)).clamp_min(1e-6).cpu()[:, None]
    area_out = (1 - masks).sum(dim=(-2, -1)).clamp_min(1e-6).cpu()[:, None]
    parts = contributions(ablator, torch.cat([ones, signs]), chunk) if ablator.info.size else None
    if parts is not None and parts.dim() == 5:  # whole-image passes, split by where each position's change lands
        inside_map = resize_mask(masks, parts.shape[-2:])[:, 0].cpu()[None, :, None]  # (1, B, 1, h', w')
        inside = (parts * inside_map).flatten(3).sum(-1)
        outside = (parts * (1 - inside_map)).flatten(3).sum(-1)
        inside, outside = (torch.stack([t[:k].sum(0), t[k]]) for t in (inside, outside))
    else:  # no spatial positions: weight the inside and the outside separately
        m = masks[None, :, None]
        parts = contributions(ablator, torch.cat([ones * m, signs * m, ones * (1 - m), signs * (1 - m)]), chunk)
        parts = parts.flatten(3).sum(-1) if parts.dim() > 3 else parts
        n = k + 1
        inside = torch.stack([parts[:k].sum(0), parts[k]])
        outside = torch.stack([parts[n:n + k].sum(0), parts[n + k]])
    inside = inside / (3 * area_in)
    outside = outside / (3 * area_out)
    return _combine(inside[0].mean(0), inside[1].mean(0)), _combine(outside[0].mean(0), outside[1].mean(0))
