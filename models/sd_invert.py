"""DDIM inversion: the starting latent from which a Stable Diffusion model's own DDIM loop redraws a given image.

    sample = gen.invert_image(image, "a red house", steps=4)        # image (3, H, W) in [0, 1]
    again = gen.render([sample])                                    # the image, up to the VAE's reconstruction

Three stages, each checked against the one the render runs:

1. the VAE encodes the image (the posterior mean, scaled as the pipeline scales latents), then a few Adam steps on
   that latent bring its *decoding* closer to the image (``steps``; the encoder alone is not the decoder's inverse,
   least of all for a random test VAE);
2. DDIM's update run backwards, step by step, with the pipeline's own scheduler config (diffusers'
   ``DDIMInverseScheduler`` makes the same first guess: the noise prediction of the step's *output* stands in for
   that of its input);
3. each backward step is then refined by fixed-point iteration (Pan et al. 2023, "Effective real image editing
   with accelerated iterative diffusion inversion"): the noise is predicted again at the guessed input until one
   forward DDIM step from it lands on the step's output, so denoising from the result retraces the path. The
   residual of the forward step, measured with the scheduler's own ``step``, decides when to stop.

The inverted latent travels in ``Sample.options["init_latent"]`` (:func:`pack_latent`: float32 bytes in base64,
exact and JSON-safe), with ``scheduler="ddim"``, the step count, the image size and ``guidance=1`` (the inversion
and the redraw both predict noise for the prompt alone: classifier-free guidance amplifies the inversion's error).
Every render path (``render``, ``trace``, ``denoise_prefix``) starts from it instead of the seed's noise, so unit
edits apply over a step window as they do for seeds.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.progress import Ticker

#: Fixed-point refinements per backward step at most; each costs one UNet call.
FIXED_POINT_ITERATIONS = 12
#: A backward step is exact enough when one forward step from it misses its output by less than this (max abs).
FIXED_POINT_TOLERANCE = 1e-4
#: Where the fixed-point iteration stalls (far from the model's own paths it need not contract), at most this many
#: Adam steps on the step's input minimise the forward step's miss directly (gradients through one UNet call).
GRADIENT_STEPS = 40
GRADIENT_LR = 0.02
#: Adam's learning rate on the VAE latent.
LATENT_LR = 0.1


def pack_latent(latent: torch.Tensor) -> dict:
    """(C, h, w) latent -> a JSON-safe dict that :func:`unpack_latent` reads back bit for bit."""
    array = latent.detach().to("cpu", torch.float32).contiguous().numpy()
    return {"shape": list(array.shape), "float32": base64.b64encode(array.astype("<f4").tobytes()).decode("ascii")}


def unpack_latent(data: Any) -> torch.Tensor:
    """The (C, h, w) float32 latent that :func:`pack_latent` packed; a damaged one raises one sentence."""
    try:
        shape = [int(n) for n in data["shape"]]
        raw = base64.b64decode(data["float32"], validate=True)
        array = np.frombuffer(raw, dtype="<f4").reshape(shape)
    except (KeyError, TypeError, ValueError) as error:
        raise StudioError("The sample's inverted latent (init_latent) is damaged; invert the image again.") from error
    if len(shape) != 3:
        raise StudioError(f"An inverted latent has 3 dimensions (channels, height, width), this one {len(shape)}.")
    return torch.from_numpy(array.copy())


@dataclass
class DDIMInversion:
    """What one inversion found, with the figures that say how well."""

    latent: torch.Tensor  # (1, C, h, w): x_T, the latent the render starts from
    clean: torch.Tensor  # (1, C, h, w): z_0, the VAE latent the DDIM path ends at
    vae_losses: list[float] = field(default_factory=list)  # decode(z_0) vs the image, per Adam step (MSE)
    residuals: list[float] = field(default_factory=list)  # per backward step: max abs miss of its forward step


def encode(pipe, image: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> the pipeline's scaled latent z_0 (SDXL's latents_mean/std as its decode undoes)."""
    vae = pipe.vae
    config = vae.config
    x = (image.to(vae.device, vae.dtype) * 2 - 1)
    z = vae.encode(x).latent_dist.mean.float()
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        return (z - torch.tensor(mean, device=z.device).view(shape)) * config.scaling_factor \
            / torch.tensor(std, device=z.device).view(shape)
    return z * config.scaling_factor


def fit_latent(decode: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, start: torch.Tensor, steps: int,
               ticker: Ticker, preview: Callable[[int, torch.Tensor], None] | None = None,
               cancel: Callable[[], bool] | None = None) -> tuple[torch.Tensor, list]:
    """Up to ``steps`` Adam steps on the latent so that ``decode(latent)`` matches ``image`` (:func:`clamped_mse`);
    the best latent seen and the losses. ``cancel()`` True ends it early."""
    with torch.inference_mode(False):  # a caller's inference mode would forbid the gradients (clones leave it)
        return _fit(decode, image.detach().clone().float(), start.detach().clone().float(), steps, ticker, preview,
                    cancel)


def _fit(decode, target, start, steps, ticker, preview, cancel):
    latent = start.requires_grad_(True)
    optimiser = torch.optim.Adam([latent], lr=LATENT_LR)
    losses: list[float] = []
    best, best_loss = latent.detach().clone(), float("inf")
    for i in range(steps):
        if cancel is not None and cancel():
            break
        with torch.enable_grad():
            decoded = decode(latent)
            loss = clamped_mse(decoded, target)
            (latent.grad,) = torch.autograd.grad(loss, [latent])  # not backward(): the VAE's weights keep no grads
        value = float(loss.detach())
        losses.append(value)
        if value < best_loss:  # the loss is of the latent before this step: keep the best one seen
            best, best_loss = latent.detach().clone(), value
        optimiser.step()
        if preview is not None and (i % 4 == 0 or i == steps - 1):
            preview(i, decoded.detach()[0].clamp(0, 1))
        ticker.advance(message=f"fitting the latent {i + 1}/{steps}")
    if losses:
        with torch.no_grad():
            last = float(clamped_mse(decode(latent), target))
        if last < best_loss:
            best = latent.detach().clone()
    return best, losses


def clamped_mse(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the clamped image and ``target``, with gradients where the clamp would have none: a decoded
    value past 0 or 1 is only wrong towards the inside, so a saturated pixel still pulls the latent."""
    low, high = target <= 0, target >= 1
    miss = torch.where(high, (raw - 1).clamp(max=0), torch.where(low, raw.clamp(min=0), raw - target))
    return miss.square().mean()


def _alpha(scheduler, t: int) -> torch.Tensor:
    return scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod


def _epsilon(scheduler, output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The noise that the UNet's ``output`` at ``x`` implies, for the scheduler's prediction type."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return output
    if kind == "v_prediction":
        return alpha.sqrt() * output + (1 - alpha).sqrt() * x
    if kind == "sample":
        return (x - alpha.sqrt() * output) / (1 - alpha).sqrt()
    raise StudioError(f"DDIM inversion does not know the prediction type '{kind}'.")


def ddim_invert(noise_of: Callable[[torch.Tensor, Any, int], torch.Tensor], scheduler, clean: torch.Tensor,
                ticker: Ticker, *, iterations: int = FIXED_POINT_ITERATIONS,
                tolerance: float = FIXED_POINT_TOLERANCE,
                gradient_steps: int | None = None) -> tuple[torch.Tensor, list[float]]:
    """x_T from which ``scheduler``'s DDIM steps (eta 0, timesteps already set) end at ``clean``.

    ``noise_of(x, t, i)`` is the UNet's prediction for the batch at step ``i`` (timestep ``t``). Returns the latent
    and, per step from the last to the first, the max abs miss of one forward ``scheduler.step`` from it.
    """
    if getattr(scheduler.config, "clip_sample", False) or getattr(scheduler.config, "thresholding", False):
        raise StudioError("DDIM inversion needs a scheduler that neither clips nor thresholds its predicted image; "
                          "this model's does.")
    gradient_steps = GRADIENT_STEPS if gradient_steps is None else gradient_steps
    timesteps = [int(t) for t in scheduler.timesteps]
    ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    x_prev = clean.float()
    residuals: list[float] = []
    for i in reversed(range(len(timesteps))):
        t = timesteps[i]
        a_t, a_prev = _alpha(scheduler, t).float(), _alpha(scheduler, t - ratio).float()
        a_t, a_prev = a_t.to(x_prev.device), a_prev.to(x_prev.device)
        x_t = x_prev  # the inverse scheduler's first guess: predict the noise at the step's output
        output = noise_of(x_t, scheduler.timesteps[i], i)
        best, miss, damping = None, float("inf"), 1.0
        for _ in range(iterations + 1):
            eps = _epsilon(scheduler, output.float(), x_t, a_t)
            x0 = (x_prev - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            guess = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
            if best is not None:
                guess = x_t + damping * (guess - x_t)
            out = noise_of(guess, scheduler.timesteps[i], i)  # also the next refinement's prediction
            forward = scheduler.step(out, scheduler.timesteps[i], guess, eta=0.0, return_dict=False)[0]
            guess_miss = float((forward.float() - x_prev).abs().max())
            if guess_miss < miss:
                best, miss, x_t, output = guess, guess_miss, guess, out
            else:  # the iteration overshot (it need not contract far from the data): smaller steps from the best
                damping /= 2
            if miss < tolerance:
                break
        if miss >= tolerance and gradient_steps:
            best, miss = _descend(noise_of, scheduler, i, best, x_prev, miss, gradient_steps, tolerance)
        x_t = best
        residuals.append(miss)
        ticker.advance(message=f"inverting step {len(timesteps) - i}/{len(timesteps)}")
        x_prev = x_t
    return x_prev, residuals


def _descend(noise_of, scheduler, i: int, start: torch.Tensor, x_prev: torch.Tensor, miss: float, steps: int,
             tolerance: float) -> tuple[torch.Tensor, float]:
    """Adam on step ``i``'s input so that one forward DDIM step from it lands on ``x_prev``; the best input seen
    (by max abs miss, starting from ``start`` and its ``miss``) and its miss."""
    t = scheduler.timesteps[i]
    best, best_miss = start, miss
    with torch.inference_mode(False), torch.enable_grad():
        x = start.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=GRADIENT_LR)
        for _ in range(steps):
            forward = scheduler.step(noise_of(x, t, i), t, x, eta=0.0, return_dict=False)[0].float()
            gap = forward - x_prev
            now = float(gap.detach().abs().max())
            if now < best_miss:
                best, best_miss = x.detach().clone(), now
            if best_miss < tolerance:
                break
            (x.grad,) = torch.autograd.grad(gap.square().mean(), [x])
            optimiser.step()
    return best, best_miss
