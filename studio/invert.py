"""Your own image as a sample: find the model input that reproduces it, then rank, slide, knob and dissect it.

    target, note = prepare_image("photo.png", gen.resolution)        # (3, H, W) in [0, 1]; note: cropped, ...
    inv = invert(gen, target, steps=200, progress=bar, preview=show)  # preview(step, image) every few steps
    inv.sample, inv.psnr, inv.caption                                 # a models.base.Sample, dB against the target
    gen.render([inv.sample])                                          # the reconstruction, through the normal path
    more = invert(gen, target, steps=100, start=inv)                  # continue optimising
    data, tensors = inv.to_json(), inv.to_tensors()                   # a session keeps both
    same = Inversion.from_json(data, tensors)

Families that invert in their own way (diffusion: DDIM inversion) answer :meth:`models.base.Generator.invert_image`;
the others declare an :class:`models.base.InversionSpace` (a GAN's latent, the Rooms caption) and :func:`invert`
optimises it: the starting points are screened by loss, the best few optimised side by side, the best of them
optimised on (in a wider space when the family has one: StyleGAN's W, then W+), and the family's discrete
alternatives (the Rooms captions one fact away) tried with the latent found.

The loss is the pixel mean squared error plus a feature loss from a small fixed network made here from a fixed seed
(random-weight convolutions at four scales, each map compared after normalising by the target's magnitude): random conv
features track edges and layout much as a trained perceptual network does, and nothing is downloaded or trained.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from models.base import RESIDUAL, Generator, InversionSpace, Sample

from .core import payload
from .core.errors import StudioError, UnsupportedOperation
from .core.hooks import first_tensor, get_module, replace_first
from .core.progress import ProgressCallback, Ticker

#: Optimisation steps when the caller names none (about 30 s for a Rooms image on one CPU core).
DEFAULT_STEPS = 200
#: The smallest side an image may have: below this there is too little of the picture to reproduce.
MIN_SIDE = 16
#: Pixel spread (standard deviation, in [0, 1]) under which an image counts as one flat colour.
FLAT_STD = 2.0 / 255
#: Aspect ratios closer than this (relative) are resized without cropping.
ASPECT_TOLERANCE = 0.01
#: Share of the steps the best few starting points are optimised side by side before one is kept.
EXPLORE_SHARE = 0.25
#: Weight of the feature loss against the pixel loss.
FEATURE_WEIGHT = 0.05
#: Steps between two preview calls.
PREVIEW_EVERY = 10
FEATURE_SEED = 20_261_202
#: Fine-tune steps when the caller names a layer but no count.
DEFAULT_FINETUNE_STEPS = 60
#: The fine-tune's Adam step, as a share of the layer activation's spread (root mean square).
FINETUNE_RATE = 0.05
#: Weight of the fine-tune's penalty on the correction's size (relative to the activation's mean square): small, so
#: the correction reproduces the image, but not zero, so entries the image does not constrain stay at zero.
FINETUNE_DECAY = 1e-3
#: Where an inversion's tensors (its sample's payload) sit among :meth:`Inversion.to_tensors`.
SAMPLE_TENSORS = "sample/"
VERSION = 1


class InvertError(StudioError):
    """An image that cannot be inverted (unreadable, flat, tiny), or an inversion record that cannot be read."""


# -- the target image ---------------------------------------------------------------------------------------------
def prepare_image(image: Any, size: Sequence[int], *, fit: str = "crop") -> tuple[torch.Tensor, str]:
    """``image`` (a path, PIL image, (H, W, 3) array in [0, 1] or 0..255, or (3, H, W) tensor in [0, 1]) as the
    model's (3, H, W) float32 tensor in [0, 1] at ``size`` (h, w), and a note saying what was done to it ("" when
    nothing but a resize).

    Another aspect ratio is centre-cropped (``fit="crop"``) or padded with the border's mean colour (``"pad"``);
    an unreadable file, an image under :data:`MIN_SIDE` pixels or one flat colour raise :class:`InvertError`.
    """
    if fit not in ("crop", "pad"):
        raise InvertError(f"fit is 'crop' or 'pad', not {fit!r}.")
    name, array = _read(image)
    h, w = int(size[0]), int(size[1])
    ih, iw = array.shape[:2]
    if min(ih, iw) < MIN_SIDE:
        raise InvertError(f"{name} is only {iw}x{ih} pixels: give an image at least {MIN_SIDE} pixels on each side.")
    notes = []
    if abs(iw * h - ih * w) > ASPECT_TOLERANCE * max(iw * h, ih * w):
        if fit == "crop":
            if iw * h > ih * w:  # wider than the model's images: cut the sides
                cw = max(1, round(ih * w / h))
                x0 = (iw - cw) // 2
                array = array[:, x0:x0 + cw]
                where = "left and right"
            else:
                ch = max(1, round(iw * h / w))
                y0 = (ih - ch) // 2
                array = array[y0:y0 + ch]
                where = "top and bottom"
            notes.append(f"{name} is {iw}x{ih} and the model makes {w}x{h} images, so its centre "
                         f"{array.shape[1]}x{array.shape[0]} was used (cut at the {where}).")
        else:
            border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]]).mean(axis=0)
            if iw * h > ih * w:
                ph = round(iw * h / w)
                top = (ph - ih) // 2
                canvas = np.broadcast_to(border, (ph, iw, 3)).copy()
                canvas[top:top + ih] = array
                where = "above and below"
            else:
                pw = round(ih * w / h)
                left = (pw - iw) // 2
                canvas = np.broadcast_to(border, (ih, pw, 3)).copy()
                canvas[:, left:left + iw] = array
                where = "left and right"
            array = canvas
            notes.append(f"{name} is {iw}x{ih} and the model makes {w}x{h} images, so it was padded {where} "
                         "with its border colour.")
    if array.shape[:2] != (h, w):
        pil = Image.fromarray((np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8))
        array = np.asarray(pil.resize((w, h), Image.LANCZOS), np.float32) / 255.0
    if float(array.std()) < FLAT_STD:
        raise InvertError(f"{name} is one flat colour: there is nothing in it to reproduce; give a picture.")
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), np.float32))
    return tensor, " ".join(notes)


def _read(image: Any) -> tuple[str, np.ndarray]:
    """(a name for messages, (H, W, 3) float32 in [0, 1])."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            with Image.open(path) as img:
                img.load()
                array = _rgb(img)
        except FileNotFoundError as error:
            raise InvertError(f"No image file at {path}.") from error
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise InvertError(f"{path.name} is not a readable image: open a PNG, JPEG or WebP file.") from error
        return path.name, array
    if isinstance(image, Image.Image):
        return "The image", _rgb(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise InvertError(f"The image tensor has shape {tuple(image.shape)}; give (3, H, W) in [0, 1].")
        t = t[:3] if t.shape[0] != 1 else t.repeat(3, 1, 1)
        array = t.permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image, np.float32)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise InvertError(f"The image array has shape {array.shape}; give (H, W, 3).")
        array = array[..., :3]
        if array.max() > 1.0:
            array = array / 255.0
    if not np.isfinite(array).all():
        raise InvertError("The image holds NaN or infinite values; give a picture.")
    return "The image", np.clip(array.astype(np.float32), 0.0, 1.0)


def _rgb(img: Image.Image) -> np.ndarray:
    """RGB in [0, 1]; transparent pixels are laid on white, as a viewer shows them."""
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), np.float32) / 255.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] (as the benchmarks score them)."""
    mse = float(torch.mean((a.detach().float().cpu() - b.detach().float().cpu()) ** 2))
    return 10 * math.log10(1 / max(mse, 1e-10))


# -- the loss -----------------------------------------------------------------------------------------------------
class FeatureLoss(nn.Module):
    """Distance of two images in the features of a fixed random-weight conv pyramid (made from
    :data:`FEATURE_SEED`, never trained nor downloaded): four stride-2 3x3 conv + ReLU stages; each stage's map is
    compared after dividing by the target's feature magnitude there, so every scale weighs alike.

        loss = FeatureLoss().to(device)
        feats = loss.features(target[None])
        value = loss(image, feats)          # (B,)
    """

    WIDTHS = (3, 16, 32, 48, 64)

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(FEATURE_SEED)
        self.convs = nn.ModuleList()
        for cin, cout in zip(self.WIDTHS, self.WIDTHS[1:]):
            conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2.0 / (cin * 9)))
                conv.bias.zero_()
            conv.requires_grad_(False)
            self.convs.append(conv)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x, out = images * 2 - 1, []
        for conv in self.convs:
            x = F.relu(conv(x))
            out.append(x)
        return out

    def forward(self, images: torch.Tensor, target: list[torch.Tensor]) -> torch.Tensor:
        total, used = images.new_zeros(images.shape[0]), 0
        for f, t in zip(self.features(images), target):
            if min(t.shape[-2:]) < 2:  # a stage smaller than 2x2 (tiny images) compares nothing spatial
                break
            scale = float(t.pow(2).mean().sqrt()) + 1e-3  # the target's feature magnitude at this stage
            total = total + (((f - t) / scale) ** 2).mean(dim=(1, 2, 3))
            used += 1
        return total / max(used, 1)


# -- the result ---------------------------------------------------------------------------------------------------
@dataclass
class Inversion:
    """A found input: ``sample`` renders the reconstruction through the model's normal paths (render, trace,
    forward_from), so ranking, sliders, knobs and dissection take it like a seed's sample.

    ``psnr``: the reconstruction against ``target`` in dB; ``steps``: optimisation steps so far (continuations
    add up); ``losses``: the loss after each step; ``note``: one or two sentences for the user; ``model``: the
    name of the model it was made with; ``seconds``: time spent (all runs).
    """

    sample: Sample
    psnr: float
    steps: int
    losses: list[float]
    note: str
    target: torch.Tensor  # (3, H, W) float32 in [0, 1] on the CPU
    model: str = ""
    seconds: float = 0.0
    stopped: bool = False  # cancel() ended it before its steps were done
    extra: dict[str, Any] = field(default_factory=dict)
    #: the fine-tune of a layer's activation, when one was asked: {"layer", "steps", "psnr_before", "psnr_after"}
    #: (``psnr_before``: the latent search's reconstruction; ``psnr_after`` equals ``psnr``); None otherwise
    finetune: dict[str, Any] | None = None

    @property
    def caption(self) -> str | None:
        """The prompt found or used (Rooms: the caption chosen among those its vocabulary allows)."""
        return self.sample.prompt

    def to_json(self) -> dict:
        """Everything but the target image (see :meth:`to_tensors`), as JSON-ready data."""
        return {"format": "neuron-studio-inversion", "version": VERSION, "sample": self.sample.to_json(),
                "psnr": round(float(self.psnr), 4), "steps": int(self.steps),
                "losses": [float(v) for v in self.losses], "note": self.note, "model": self.model,
                "seconds": round(float(self.seconds), 3), "stopped": bool(self.stopped), "extra": dict(self.extra),
                "finetune": dict(self.finetune) if self.finetune is not None else None}

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The target image, which :func:`invert` needs to continue, and the sample's payload (StyleGAN noise maps,
        the fine-tuned correction) under ``sample/``: a session stores them with the JSON."""
        tensors = {"target": self.target.detach().to("cpu", torch.float32).contiguous()}
        tensors.update({SAMPLE_TENSORS + k: v for k, v in payload.of(self.sample.options).items()})
        return tensors

    @classmethod
    def from_json(cls, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None = None) -> "Inversion":
        """The inversion :meth:`to_json` (and :meth:`to_tensors`) wrote; InvertError names what is wrong."""
        try:
            if data.get("format") != "neuron-studio-inversion":
                raise ValueError(f"format is {data.get('format')!r}")
            if int(data.get("version", 0)) > VERSION:
                raise ValueError(f"version {data.get('version')} is newer than this Neuron Studio's {VERSION}")
            target = (tensors or {}).get("target")
            if target is None:
                target = torch.zeros(0)
            sample = Sample.from_json(data["sample"])
            _load_payload(sample, {k[len(SAMPLE_TENSORS):]: v for k, v in (tensors or {}).items()
                                   if k.startswith(SAMPLE_TENSORS)})
            finetune = data.get("finetune")
            return cls(sample, float(data["psnr"]), int(data["steps"]),
                       [float(v) for v in data.get("losses", [])], str(data.get("note", "")),
                       target.detach().to("cpu", torch.float32), str(data.get("model", "")),
                       float(data.get("seconds", 0.0)), bool(data.get("stopped", False)), dict(data.get("extra") or {}),
                       dict(finetune) if finetune is not None else None)
        except (KeyError, TypeError, ValueError) as error:
            raise InvertError(f"The saved inversion cannot be read ({error}); invert the image again.") from error


def _load_payload(sample: Sample, tensors: Mapping[str, torch.Tensor]) -> None:
    """Put the saved payload tensors back in the store, checking they are the ones the sample names."""
    key = sample.options.get(payload.OPTION)
    if key is None:
        return
    if not tensors:
        raise ValueError("its sample needs tensors (noise maps or a fine-tuned correction) that were not saved")
    if payload.key_of(tensors) != key:
        raise ValueError("its saved tensors are not the ones its sample was made with")
    payload.put(tensors)


def without_residuals(sample: Sample) -> Sample:
    """``sample`` without the fine-tuned corrections in its payload (the noise maps stay): what a new latent search
    or fine-tune starts from, since a correction fits only the latent it was learnt on."""
    tensors = payload.of(sample.options)
    kept = {k: v for k, v in tensors.items() if not k.startswith(RESIDUAL)}
    if len(kept) == len(tensors):
        return sample
    options = {k: v for k, v in sample.options.items() if k != payload.OPTION}
    if kept:
        options[payload.OPTION] = payload.put(kept)
    return Sample(sample.seed, sample.prompt, options)


# -- the optimisation ---------------------------------------------------------------------------------------------
def invert(generator: Generator, image: Any, *, prompt: str | None = None, steps: int = DEFAULT_STEPS,
           progress: ProgressCallback | None = None, cancel: Callable[[], bool] | None = None,
           preview: Callable[[int, torch.Tensor], Any] | None = None, start: Inversion | None = None,
           fit: str = "crop", space: InversionSpace | None = None, finetune_layer: str | None = None,
           finetune_steps: int = DEFAULT_FINETUNE_STEPS) -> Inversion:
    """Find the sample of ``generator`` that reproduces ``image`` (anything :func:`prepare_image` takes).

    ``prompt``: text models only, the prompt to invert under (Rooms: otherwise the caption is searched too).
    ``progress``: a :data:`studio.core.progress.ProgressCallback` over the steps; returning False raises
    :class:`Cancelled` (nothing is kept, as with every long job). ``cancel()``: polled each step; True stops
    early and returns what was found so far (``stopped``), which the user may continue. ``preview(step, image)``:
    called every :data:`PREVIEW_EVERY` steps with the current best reconstruction ((3, H, W) on the CPU).
    ``start``: an earlier :class:`Inversion` of the same image to continue from (its target is used when
    ``image`` is None). ``space``: search this :class:`InversionSpace` instead of the family's own (a cheaper
    search, e.g. ``dataclasses.replace(gen.inversion_space(), sweeps=1)``).
    ``finetune_layer``: after the latent search, learn a correction added to this layer's activation for
    ``finetune_steps`` steps (:func:`finetune`), so edits of that layer act on a closer reconstruction; not when
    ``cancel()`` stopped the search (the user may continue, with the fine-tune asked again).
    """
    began = time.perf_counter()
    steps = int(steps)
    if steps < 1:
        raise InvertError(f"An inversion needs at least one step, not {steps}.")
    if image is None:
        if start is None or start.target.numel() == 0:
            raise InvertError("There is no image to invert: open one first.")
        target, prep_note = start.target, ""
    else:
        target, prep_note = prepare_image(image, generator.resolution, fit=fit)
    device = generator.device
    tuning = 0
    if finetune_layer is not None:
        tuning = int(finetune_steps)
        _check_finetune(generator, finetune_layer, tuning)
    ticker = Ticker(steps + tuning, progress, unit="steps", message="starting")
    ticker.report()
    if start is not None:  # the old correction fits the old latent: the search moves it, so it is learnt again
        start = replace(start, sample=without_residuals(start.sample))
    inversion = None
    if start is None and space is None:
        own = generator.invert_image(target.to(device), prompt, steps, progress, cancel)
        if own is not None:
            inversion = _finish(generator, own, target, steps, [], prep_note, began, False,
                                "the family's own inversion")
    if inversion is None:
        space = space or generator.inversion_space()
        if space is None:
            raise UnsupportedOperation(f"{generator.name} cannot invert an image: its family declares no latent to "
                                       "optimise and no inversion of its own.")
        inversion = _optimise(generator, space, target, prompt, steps, ticker, cancel, preview, start, prep_note,
                              began)
    if finetune_layer is None or inversion.stopped:
        return inversion
    return finetune(generator, inversion, finetune_layer, tuning, ticker=ticker, cancel=cancel, preview=preview)


def _check_finetune(generator: Generator, layer: str, steps: int) -> None:
    if steps < 1:
        raise InvertError(f"A fine-tune needs at least one step, not {steps}.")
    if not generator.applies_corrections:
        raise UnsupportedOperation(f"{generator.name} cannot fine-tune a layer's activation: its renders do not "
                                   "apply a sample's corrections.")
    info = generator.layer(layer)  # LayerNotFound names the nearest layers
    if not info.partial and info.kind != "conv":
        raise InvertError(f"{layer} is not a layer whose activation can be fine-tuned.")


def finetune(generator: Generator, inversion: Inversion, layer: str, steps: int = DEFAULT_FINETUNE_STEPS, *,
             ticker: Ticker | None = None, progress: ProgressCallback | None = None,
             cancel: Callable[[], bool] | None = None,
             preview: Callable[[int, torch.Tensor], Any] | None = None) -> Inversion:
    """``inversion`` with a learnt correction added to ``layer``'s activation: Adam on one additive tensor the
    shape of that layer's output for the sample (the loss of the search, a small penalty on the correction's size),
    the best point kept. The correction rides in the sample's payload as ``residual/LAYER``; the family's render
    adds it ahead of every edit hook, so unit and knob edits of that layer act on the corrected activation.
    ``finetune`` records the PSNR before and after; ``cancel()`` stops early and keeps the best so far.
    """
    steps = int(steps)
    _check_finetune(generator, layer, steps)
    began = time.perf_counter()
    if ticker is None:
        ticker = Ticker(steps, progress, unit="steps", message="fine-tuning")
    base = without_residuals(inversion.sample)
    device = generator.device
    goal = inversion.target.to(device, torch.float32)[None]
    if goal.numel() == 0:
        raise InvertError("There is no image to fine-tune towards: the inversion kept no target.")
    features = FeatureLoss().to(device)
    with torch.no_grad():
        goal_features = features.features(goal)
        activation = generator.trace([base], [layer])[layer]
        before = psnr(generator.render([base])[0], inversion.target)
    spread = float(activation.float().pow(2).mean().sqrt()) + 1e-6
    delta = torch.zeros(activation.shape[1:], device=device, dtype=torch.float32, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=FINETUNE_RATE * spread, betas=(0.9, 0.999))
    def add(module, args, output):
        x = first_tensor(output)
        return replace_first(output, x + delta.to(x.dtype)[None])

    handle = get_module(generator.module, layer).register_forward_hook(add, prepend=True)
    kept_loss, kept = math.inf, torch.zeros_like(delta)
    done = 0
    ticker.message = f"fine-tuning {layer}"
    try:
        for step in range(steps):
            if cancel is not None and cancel():
                break
            for group in optimiser.param_groups:
                group["lr"] = FINETUNE_RATE * spread * _schedule(step / steps)
            images = generator.render([base])
            fit = ((images - goal) ** 2).mean() + FEATURE_WEIGHT * features(images, goal_features)[0]
            if float(fit.detach()) < kept_loss:
                kept_loss, kept = float(fit.detach()), delta.detach().clone()
            loss = fit + FINETUNE_DECAY * delta.pow(2).mean() / spread ** 2
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            done = step + 1
            if preview is not None and (done % PREVIEW_EVERY == 0 or done == steps):
                preview(inversion.steps + done, images.detach()[0].to("cpu", torch.float32).clamp(0, 1))
            ticker.advance(1, f"fine-tune loss {float(fit.detach()):.5f}")
    finally:
        handle.remove()
    tensors = dict(payload.of(base.options))
    tensors[RESIDUAL + layer] = kept
    options = {**base.options, payload.OPTION: payload.put(tensors)}
    sample = Sample(base.seed, base.prompt, options)
    with torch.inference_mode():
        after = psnr(generator.render([sample])[0], inversion.target)
    record = {"layer": layer, "steps": done, "psnr_before": round(before, 4), "psnr_after": round(after, 4)}
    note = (f"{inversion.note} Fine-tuning {layer} for {done} steps took it from {before:.1f} to {after:.1f} dB.")
    return replace(inversion, sample=sample, psnr=after, note=note, finetune=record,
                   seconds=inversion.seconds + time.perf_counter() - began)


def _optimise(generator: Generator, space: InversionSpace, target: torch.Tensor, prompt: str | None, steps: int,
              ticker: Ticker, cancel, preview, start: Inversion | None, prep_note: str, began: float) -> Inversion:
    device = generator.device
    goal = target.to(device, torch.float32)[None]
    features = FeatureLoss().to(device)
    with torch.no_grad():
        goal_features = features.features(goal)

    def loss_of(images: torch.Tensor) -> torch.Tensor:  # (B,)
        pixel = ((images - goal) ** 2).mean(dim=(1, 2, 3))
        return pixel + FEATURE_WEIGHT * features(images, goal_features)

    alternatives = space.alternatives
    if start is not None:
        samples = [start.sample]
    else:
        starts = list(space.starts)
        if prompt and generator.takes_prompt:  # the caller's prompt: only the continuous part is searched
            unique = {}
            for s in starts:
                unique.setdefault(repr(sorted(s.options.items())), replace(s, prompt=prompt))
            starts, alternatives = list(unique.values()), None
        ticker.message = f"screening {len(starts)} starting points"
        ticker.report()
        samples = _screen(space, starts, loss_of, space.keep)
    tensors = space.init(samples)
    if start is not None and space.widen is not None:
        tensors = space.widen(tensors)
    if start is None and space.coordinates:
        for sweep in range(max(1, space.sweeps)):
            ticker.message = f"coordinate sweep {sweep + 1} of {space.sweeps}"
            ticker.report()
            tensors = _sweep(space, tensors, samples, loss_of, space.coordinates, cancel)
            if len(samples) > 1:
                row = _best_row(space, tensors, samples, loss_of)
                samples, tensors = [samples[row]], {k: v[row:row + 1].clone() for k, v in tensors.items()}
            samples, tensors = _try_alternatives(space, alternatives, tensors, samples, loss_of)
    losses: list[float] = list(start.losses) if start is not None else []
    explore = 0 if start is not None or len(samples) == 1 else max(1, int(steps * EXPLORE_SHARE))
    widen_step = None if space.widen is None or start is not None else max(explore, int(steps * space.widen_at))
    optimiser, params = _optimiser(tensors, space.learning_rate, space.rates)
    stopped = False
    done = 0
    best = 0
    kept_loss, kept = math.inf, None
    for step in range(steps):
        if cancel is not None and cancel():
            stopped = True
            break
        if step == explore and len(samples) > 1:  # keep the best of the side-by-side runs
            best_row = _best_row(space, tensors, samples, loss_of)
            samples, tensors = [samples[best_row]], {k: v.detach()[best_row:best_row + 1].clone()
                                                     for k, v in tensors.items()}
            samples, tensors = _try_alternatives(space, alternatives, tensors, samples, loss_of)
            optimiser, params = _optimiser(tensors, space.learning_rate, space.rates)
        if widen_step is not None and step == widen_step:
            tensors = {k: v.detach().clone() for k, v in space.widen(tensors).items()}
            optimiser, params = _optimiser(tensors, space.learning_rate, space.rates)
        factor = _schedule(step / steps)
        for group in optimiser.param_groups:
            group["lr"] = group["base_lr"] * factor
        images = space.render(tensors, samples)
        per_row = loss_of(images)
        if space.regularise is not None:
            per_row = per_row + space.regularise(tensors)
        if len(samples) == 1 and float(per_row.detach()[0]) < kept_loss:  # the best point so far, before stepping
            kept_loss = float(per_row.detach()[0])
            kept = ({k: v.detach().clone() for k, v in tensors.items()}, samples)
        optimiser.zero_grad(set_to_none=True)
        per_row.sum().backward()
        optimiser.step()
        if space.project is not None:
            space.project(tensors)
        best = int(torch.argmin(per_row.detach()))
        losses.append(float(per_row.detach()[best]))
        done = step + 1
        if preview is not None and (done % PREVIEW_EVERY == 0 or done == steps):
            preview(len(losses), images.detach()[best].to("cpu", torch.float32).clamp(0, 1))
        ticker.advance(1, f"loss {losses[-1]:.4f}")
    if len(samples) > 1:
        best_row = _best_row(space, tensors, samples, loss_of)
        samples, tensors = [samples[best_row]], {k: v.detach()[best_row:best_row + 1] for k, v in tensors.items()}
    if kept is not None and float(_losses(space, tensors, samples, loss_of)[0]) > kept_loss:
        tensors, samples = kept  # Adam's last steps may overshoot: the best point seen is the result
    if not stopped:
        samples, tensors = _try_alternatives(space, alternatives, tensors, samples, loss_of)
    sample = space.to_samples({k: v.detach() for k, v in tensors.items()}, samples)[0]
    earlier = start.steps if start is not None else 0
    inversion = _finish(generator, sample, target, earlier + done, losses, prep_note, began, stopped,
                        space.description, seconds_before=start.seconds if start is not None else 0.0)
    return inversion


def _schedule(t: float) -> float:
    """Learning-rate factor at share ``t`` of the run: a short ramp up, flat, then a cosine ramp down over the
    last quarter (NVIDIA's projector does the same)."""
    up = min(1.0, t / 0.05)
    down = 1.0 if t < 0.75 else 0.5 * (1 + math.cos(math.pi * (t - 0.75) / 0.25))
    return max(up * down, 0.02)


def _optimiser(tensors: dict[str, torch.Tensor], lr: float, rates: Mapping[str, float] | None = None):
    """Adam over the tensors (made leaves in place), one group each so a tensor may have its own step."""
    groups, params = [], []
    for key, value in tensors.items():
        leaf = value.detach().clone().requires_grad_(True)
        tensors[key] = leaf
        params.append(leaf)
        rate = float((rates or {}).get(key, lr))
        groups.append({"params": [leaf], "lr": rate, "base_lr": rate})
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999)), params


@torch.no_grad()
def _losses(space: InversionSpace, tensors: dict[str, torch.Tensor], samples: Sequence[Sample], loss_of) -> torch.Tensor:
    return loss_of(space.render({k: v.detach() for k, v in tensors.items()}, samples))


def _best_row(space, tensors, samples, loss_of) -> int:
    return int(torch.argmin(_losses(space, tensors, samples, loss_of)))


@torch.no_grad()
def _sweep(space: InversionSpace, tensors: dict[str, torch.Tensor], samples: Sequence[Sample], loss_of,
           values: Sequence[float], cancel=None) -> dict[str, torch.Tensor]:
    """One coordinate sweep: each entry of each row, in turn, set to each of ``values`` (and kept as it is), the
    others fixed; the value with the lowest loss stays. One batched render per entry."""
    tensors = {k: v.detach().clone() for k, v in tensors.items()}
    rows = len(samples)
    tries = torch.tensor([float(v) for v in values])
    count = len(values) + 1  # the current value is a candidate too
    batch_samples = [s for s in samples for _ in range(count)]
    for key, value in tensors.items():
        flat = value.reshape(rows, -1)
        for j in range(flat.shape[1]):
            if cancel is not None and cancel():
                return tensors
            trial = {k: v.repeat_interleave(count, dim=0) for k, v in tensors.items()}
            t = trial[key].reshape(rows * count, -1)
            grid = torch.cat([flat[:, j:j + 1], tries.to(flat).expand(rows, -1)], dim=1)  # (rows, count)
            t[:, j] = grid.reshape(-1)
            scores = loss_of(space.render(trial, batch_samples)).reshape(rows, count)
            flat[:, j] = grid[torch.arange(rows), scores.argmin(dim=1)]
        tensors[key] = flat.reshape(value.shape)
    return tensors


def _screen(space: InversionSpace, starts: Sequence[Sample], loss_of, keep: int, batch: int = 16) -> list[Sample]:
    """The ``keep`` starting samples with the lowest loss (rendered in batches, no gradients)."""
    scores = []
    for i in range(0, len(starts), batch):
        chunk = list(starts[i:i + batch])
        scores.append(_losses(space, space.init(chunk), chunk, loss_of).cpu())
    order = torch.argsort(torch.cat(scores))[:max(1, keep)]
    return [starts[int(i)] for i in order]


def _try_alternatives(space, alternatives, tensors, samples, loss_of):
    """Switch to a discrete alternative (another caption, with the tensors its sample carries) when it reproduces
    the image better; repeated until none is better (each round moves one fact)."""
    if alternatives is None or len(samples) != 1:
        return samples, tensors
    current = float(_losses(space, tensors, samples, loss_of)[0])
    seen = {samples[0].prompt}
    for _ in range(8):
        now = space.to_samples({k: v.detach() for k, v in tensors.items()}, samples)[0]
        options = [a for a in alternatives(now) if a.prompt not in seen]
        if not options:
            break
        seen.update(a.prompt for a in options)
        scores = torch.cat([_losses(space, space.init(options[i:i + 16]), options[i:i + 16], loss_of).cpu()
                            for i in range(0, len(options), 16)])
        i = int(torch.argmin(scores))
        if float(scores[i]) >= current:
            break
        current = float(scores[i])
        samples = [options[i]]
        tensors = {k: v.detach().clone() for k, v in space.init(samples).items()}
    return samples, tensors


def _finish(generator: Generator, sample: Sample, target: torch.Tensor, steps: int, losses: list[float],
            prep_note: str, began: float, stopped: bool, what: str, seconds_before: float = 0.0) -> Inversion:
    """Render the sample through the normal path and score it: the figure is what the user will see."""
    with torch.inference_mode():
        image = generator.render([sample])[0]
    value = psnr(image, target)
    caption = f" The caption found: '{sample.prompt}'." if sample.prompt and generator.takes_prompt else ""
    how = f"stopped after {steps} steps, as asked" if stopped else f"{steps} steps"
    note = f"Inverted into {what} ({how}): {value:.1f} dB PSNR against the image.{caption}"
    if prep_note:
        note = f"{prep_note} {note}"
    return Inversion(sample, value, steps, losses, note, target.detach().to("cpu", torch.float32), generator.name,
                     seconds_before + time.perf_counter() - began, stopped)
