"""The denoising loop of Stable Diffusion pipelines, step by step, so edits can know the step and resume.

It follows diffusers' ``StableDiffusionPipeline.__call__`` / ``StableDiffusionXLPipeline.__call__`` (same
prompt encoding, scheduler calls, guidance and VAE decoding; a test checks the images are the same) and adds:

- ``clock.step = i`` before each UNet call, so ``UnitEdit(steps=(a, b))`` windows apply;
- progress per step and cancellation through a :class:`studio.core.progress.Ticker` (the step callback's job);
- per-sample CPU ``torch.Generator`` s: a sample's image depends on its seed only, not its batch or device;
- resuming: :class:`DenoiseState` holds the latents, scheduler and generator states after ``k`` steps, and a
  batch of copies of those samples continues from step ``k`` (the shared prefix of a step-window ranking).
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from studio.core.errors import StudioError
from studio.core.progress import ProgressCallback, Ticker

#: Scheduler names users pick (``Sample.options["scheduler"]``) -> diffusers class.
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
              "euler-a": "EulerAncestralDiscreteScheduler", "dpm++2m": "DPMSolverMultistepScheduler",
              "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler", "unipc": "UniPCMultistepScheduler",
              "ddpm": "DDPMScheduler"}


@dataclass(frozen=True)
class Plan:
    """What one batch renders with: options shared by its samples."""

    height: int
    width: int
    steps: int  # steps this render runs (fewer for previews)
    full_steps: int  # the schedule edit windows are written against
    scheduler: str | None


@dataclass
class Conditioning:
    embeds: torch.Tensor  # (2B | B, T, D): [uncond, cond] when guided
    guidance: torch.Tensor | None  # (B, 1, 1, 1) or None (no classifier-free guidance)
    added: dict[str, torch.Tensor] | None  # SDXL's pooled text and size ids


@dataclass
class DenoiseState:
    """Latents of ``samples`` before step ``step``, with the scheduler and noise generators as they were then.

    >>> state = gen.denoise_prefix([sample], 10)          # steps 0..9 once
    >>> images = gen.render([sample] * 32, start=state)   # 32 copies continue from step 10 (edits apply)
    """

    samples: list  # the Samples, in latents order
    step: int
    latents: torch.Tensor
    scheduler: Any
    generator_states: list[torch.Tensor]
    plan: Plan


def make_scheduler(template, name: str | None):
    """A fresh scheduler for one render: the model's own, or a named one built from its config."""
    if name is None:
        return copy.deepcopy(template)
    if name not in SCHEDULERS:
        raise StudioError(f"Unknown scheduler '{name}': use one of {', '.join(SCHEDULERS)}.")
    import diffusers  # heavy import (seconds): only diffusion models need it

    return getattr(diffusers, SCHEDULERS[name]).from_config(template.config)


def _step_kwargs(scheduler, generators: list[torch.Generator]) -> dict[str, Any]:
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0  # DDIM without added noise: deterministic
    if "generator" in params:
        kwargs["generator"] = generators
    return kwargs


def _pick(value: Any, index: torch.Tensor, batch: int) -> Any:
    """Scheduler state for a new batch: per-sample tensors (the latents' shape) are gathered by ``index``."""
    if isinstance(value, torch.Tensor) and value.dim() >= 4 and value.shape[0] == batch:
        return value.index_select(0, index.to(value.device))
    if isinstance(value, list):
        return [_pick(v, index, batch) for v in value]
    if isinstance(value, tuple):
        return tuple(_pick(v, index, batch) for v in value)
    return value


def gather_scheduler(scheduler, index: torch.Tensor, batch: int):
    """A copy of ``scheduler`` whose per-sample history (multistep solvers keep some) follows ``index``."""
    fresh = copy.deepcopy(scheduler)
    for key, value in vars(fresh).items():
        setattr(fresh, key, _pick(value, index, batch))
    return fresh


class Sampler:
    """Runs the loop for one pipeline; :class:`models.diffusion.DiffusionModel` owns one."""

    def __init__(self, pipe, clock, device: torch.device, dtype: torch.dtype) -> None:
        self.pipe, self.clock, self.device, self.dtype = pipe, clock, device, dtype
        self.xl = getattr(pipe, "text_encoder_2", None) is not None

    # -- conditioning ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def condition(self, prompts: list[str], negatives: list[str], guidance: list[float], plan: Plan) -> Conditioning:
        guided = any(g > 1.0 for g in guidance)
        pipe = self.pipe
        if self.xl:
            negative = None if not any(negatives) else negatives  # None: SDXL's zero embedding for "no negative"
            embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
                prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=guided,
                negative_prompt=negative)
            projection = int(pipe.text_encoder_2.config.projection_dim)
            ids = pipe._get_add_time_ids((plan.height, plan.width), (0, 0), (plan.height, plan.width),
                                         dtype=embeds.dtype, text_encoder_projection_dim=projection)
            if guided:
                embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
            added = {"text_embeds": pooled.to(self.device), "time_ids": ids.to(self.device).repeat(len(pooled), 1)}
        else:
            embeds, neg = pipe.encode_prompt(prompts, self.device, 1, guided, negatives)
            if guided:
                embeds = torch.cat([neg, embeds])
            added = None
        scale = torch.tensor(guidance, device=self.device, dtype=embeds.dtype).view(-1, 1, 1, 1) if guided else None
        return Conditioning(embeds.to(self.device), scale, added)

    # -- the loop -------------------------------------------------------------------------------------------------
    def noise(self, seeds: Sequence[int], plan: Plan) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Initial latents, one CPU generator per sample (device- and batch-independent)."""
        factor = self.pipe.vae_scale_factor
        shape = (1, self.pipe.unet.config.in_channels, plan.height // factor, plan.width // factor)
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        latents = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return latents.to(self.device, self.dtype), generators

    def run(self, cond: Conditioning, latents: torch.Tensor, scheduler, generators: list[torch.Generator],
            plan: Plan, start: int, stop: int, progress: ProgressCallback | None,
            on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        """Steps ``[start, stop)`` of the schedule; ``scheduler`` must already have its timesteps set.

        Grad mode is the caller's (gradient-based ranking differentiates through the steps)."""
        unet = self.pipe.unet
        timesteps = scheduler.timesteps
        extra = _step_kwargs(scheduler, generators)
        ticker = Ticker(stop - start, progress, unit="steps")
        try:
            for i in range(start, stop):
                t = timesteps[i]
                # edit windows count in full-schedule steps, also while a preview runs fewer
                self.clock.step = i * plan.full_steps // plan.steps
                x = torch.cat([latents] * 2) if cond.guidance is not None else latents
                x = scheduler.scale_model_input(x, t)
                noise = unet(x, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added,
                             return_dict=False)[0]
                if cond.guidance is not None:
                    uncond, text = noise.chunk(2)
                    noise = uncond + cond.guidance * (text - uncond)
                latents = scheduler.step(noise, t, latents, **extra, return_dict=False)[0].to(latents.dtype)
                if on_step is not None:
                    on_step(i)
                ticker.advance(message=f"step {i + 1}/{plan.steps}")
        finally:
            self.clock.step = None
        return latents

    def decode(self, latents: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """Latents -> images (B, 3, H, W) float32 in [0, 1] (``clamp=False``: before clamping, for gradients)."""
        vae = self.pipe.vae
        config = vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        latents = latents.to(vae.dtype)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            latents = (latents * torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
                       / config.scaling_factor + torch.tensor(mean, device=latents.device,
                                                               dtype=latents.dtype).view(shape))
        else:
            latents = latents / config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        image = image.float() / 2 + 0.5
        return image.clamp(0, 1) if clamp else image
