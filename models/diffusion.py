"""Stable Diffusion 1.x / 2.x / SDXL through diffusers, offline: folders, single files, the local HF cache.

    gen = open_model("~/models/sd15.safetensors")              # or a diffusers folder, or "org/name" if cached
    s = gen.sample(3, "a red house", steps=25, guidance=7.5, negative_prompt="blurry", scheduler="dpm++2m")
    image = gen.render([s])                                     # (1, 3, H, W) in [0, 1]; same seed, same image
    gen.layer("up_blocks.1.attentions.0")                       # LayerInfo: channels at latent resolution
    with gen.editor() as editor:                                # unit edits over all steps, or a window
        editor.set([UnitEdit("up_blocks.1.resnets.0", 7, "off", steps=(0, 10))], mask=mask)
        edited = gen.render([s], progress=callback)             # callback returning False -> Cancelled
    state = gen.denoise_prefix([s], 10)                         # steps 0..9 once (the shared prefix) ...
    images = gen.render([s] * 16, start=state)                  # ... and 16 copies continue from step 10

``Sample.options``: ``negative_prompt`` (str), ``steps`` (int, 25), ``guidance`` (float, 7.5; 5.0 for SDXL),
``scheduler`` (one of :data:`models.sd_sampling.SCHEDULERS`, default the model's own), ``size`` (int or
[height, width], default the model's), ``preview`` (bool). A preview renders :data:`PREVIEW_STEPS` steps at half
size: the GUI asks for one while a slider is dragged and re-renders without ``preview`` once the slider rests.
Edit windows are counted in the full schedule's steps, also in previews.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from studio.core.device import pick_dtype
from studio.core.errors import ModelOpenError, StudioError
from studio.core.hooks import Trace, get_module
from studio.core.progress import ProgressCallback, Ticker

from . import sd_export
from .base import (
    CrossAttention,
    FileProbe,
    Generator,
    LayerInfo,
    ModelEntry,
    NativeFormat,
    NativeWrite,
    PromptEncoding,
    Sample,
)
from .sd_invert import DDIMInversion, ddim_invert, encode, fit_latent, pack_latent, unpack_latent
from .sd_sampling import SCHEDULERS, DenoiseState, Plan, Sampler, gather_scheduler, make_scheduler
from .sd_single_file import build_pipeline, detect_kind, read_checkpoint
from .sd_tokenizer import find_clip_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, whatever a library defaults to

DEFAULT_STEPS = 25
#: What the app renders before the user types a prompt.
DEFAULT_PROMPT = "a photograph of a cozy bedroom with a bed and a lamp"
PREVIEW_STEPS = 8
PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".pkl", ".bin", ".nstudio"}


class DiffusionModel(Generator):
    """A Stable Diffusion pipeline behind the model contract; layers are the UNet's blocks, resnets, attentions."""

    family = "diffusion"
    shares_denoising_prefix = True
    supports_half = True
    takes_prompt = True

    def preview_options(self) -> dict:
        """While a slider is dragged: PREVIEW_STEPS steps at half size (see the module docstring)."""
        return {"preview": True}

    def __init__(self, pipe, kind: str, device: torch.device, dtype: torch.dtype, *, name: str,
                 source: str | None = None) -> None:
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        if dtype == torch.float16 and pipe.vae.config.force_upcast:
            pipe.vae.to(torch.float32)  # the SD VAEs overflow in fp16; diffusers upcasts them the same way
        size = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
        super().__init__(pipe.unet, name=name, device=device, dtype=dtype, resolution=(size, size), source=source)
        self.pipe, self.kind = pipe, kind
        self.sampler = Sampler(pipe, self.clock, device, dtype)
        self.default_guidance = 5.0 if kind == "sdxl" else 7.5
        self.default_prompt = DEFAULT_PROMPT
        self.progress: ProgressCallback | None = None  # used by render() when no callback is passed
        self.last_inversion: DDIMInversion | None = None  # the figures of the latest invert_image

    @property
    def unet(self):
        return self.pipe.unet

    # -- layers -------------------------------------------------------------------------------------------------
    def size_multiple(self) -> int:
        """Image sizes must be multiples of this (VAE factor x UNet downsamplings)."""
        return self.pipe.vae_scale_factor * 2 ** (len(self.unet.down_blocks) - 1)

    def layers(self) -> list[LayerInfo]:
        return self.layers_at(self.resolution)

    def layers_at(self, resolution: Sequence[int]) -> list[LayerInfo]:
        """Every editable layer with its latent resolution for images of ``resolution``."""
        f = self.pipe.vae_scale_factor
        h, w = int(resolution[0]) // f, int(resolution[1]) // f
        at = lambda level: (max(1, h >> level), max(1, w >> level))  # noqa: E731
        out: list[LayerInfo] = []

        def block_parts(prefix: str, block, size) -> None:
            attentions = getattr(block, "attentions", None) or []
            for j, resnet in enumerate(block.resnets):
                out.append(LayerInfo(f"{prefix}.resnets.{j}", resnet.out_channels, size, "resnet"))
                if j < len(attentions):
                    out.append(LayerInfo(f"{prefix}.attentions.{j}", resnet.out_channels, size, "attention"))

        for i, block in enumerate(self.unet.down_blocks):
            block_parts(f"down_blocks.{i}", block, at(i))
            if block.downsamplers:
                out.append(LayerInfo(f"down_blocks.{i}.downsamplers.0", block.resnets[-1].out_channels, at(i + 1),
                                     "block"))
        mid = self.unet.mid_block
        levels = len(self.unet.down_blocks)
        if mid is not None:
            size = at(levels - 1)
            attentions = getattr(mid, "attentions", None) or []
            for j, resnet in enumerate(mid.resnets):
                out.append(LayerInfo(f"mid_block.resnets.{j}", resnet.out_channels, size, "resnet"))
                if j < len(attentions):
                    out.append(LayerInfo(f"mid_block.attentions.{j}", resnet.out_channels, size, "attention"))
            out.append(LayerInfo("mid_block", mid.resnets[-1].out_channels, size, "block"))
        for i, block in enumerate(self.unet.up_blocks):
            level = levels - 1 - i
            block_parts(f"up_blocks.{i}", block, at(level))
            size = at(level - 1) if block.upsamplers else at(level)
            out.append(LayerInfo(f"up_blocks.{i}", block.resnets[-1].out_channels, size, "block"))
        return out

    # -- rendering ----------------------------------------------------------------------------------------------
    def plan(self, samples: Sequence[Sample]) -> Plan:
        """The options shared by a batch; samples that disagree on size, steps or scheduler are refused."""
        if not samples:
            raise StudioError("Nothing to render: give at least one sample.")
        plans = {self._plan(s) for s in samples}
        if len(plans) != 1:
            raise StudioError("Samples rendered together must share size, steps, scheduler and preview; render "
                              "them separately.")
        return plans.pop()

    def _plan(self, sample: Sample) -> Plan:
        size = sample.option("size") or self.resolution
        height, width = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        steps = int(sample.option("steps", DEFAULT_STEPS))
        if steps < 1:
            raise StudioError(f"Steps must be at least 1, not {steps}.")
        m = self.size_multiple()
        full = steps
        inverted = sample.option("init_latent") is not None
        if inverted:  # an inverted image's size is its latent's, also in previews (half a latent is no image)
            shape = unpack_latent(sample.option("init_latent")).shape
            height, width = shape[1] * self.pipe.vae_scale_factor, shape[2] * self.pipe.vae_scale_factor
        if sample.option("preview"):
            steps = min(steps, PREVIEW_STEPS)
            if not inverted:
                height, width = max(m, height // 2), max(m, width // 2)
        height, width = max(m, height // m * m), max(m, width // m * m)  # round down to what the UNet takes
        return Plan(height, width, steps, full, sample.option("scheduler"))

    def _start(self, samples: Sequence[Sample], plan: Plan):
        prompts = [s.prompt if s.prompt is not None else self.default_prompt for s in samples]
        negatives = [str(s.option("negative_prompt") or "") for s in samples]
        guidance = [float(s.option("guidance", self.default_guidance)) for s in samples]
        cond = self.sampler.condition(prompts, negatives, guidance, plan)
        scheduler = make_scheduler(self.pipe.scheduler, plan.scheduler)
        scheduler.set_timesteps(plan.steps, device=self.device)
        return cond, scheduler

    def _initial(self, samples: Sequence[Sample], plan: Plan, scheduler) -> tuple[torch.Tensor, list]:
        """The latents step 0 starts from: the seed's noise (times the scheduler's sigma), or an inverted image's
        latent (``options["init_latent"]``, made for this size), and one CPU generator per sample."""
        latents, generators = self.sampler.noise([s.seed for s in samples], plan)
        latents = latents * scheduler.init_noise_sigma
        rows = []
        for i, s in enumerate(samples):
            given = s.option("init_latent")
            if given is None:
                rows.append(latents[i:i + 1])
                continue
            latent = unpack_latent(given)
            if tuple(latent.shape) != tuple(latents.shape[1:]):
                raise StudioError(f"The inverted latent is {tuple(latent.shape)}, but this render needs "
                                  f"{tuple(latents.shape[1:])}; invert the image again at this size.")
            rows.append(latent[None].to(latents.device, latents.dtype))
        return torch.cat(rows), generators

    def render(self, samples: Sequence[Sample], *, start: DenoiseState | None = None,
               progress: ProgressCallback | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1]; ``start`` continues copies of its samples from its step."""
        samples = list(samples)
        plan = self.plan(samples)
        progress = progress or self.progress
        cond, scheduler = self._start(samples, plan)
        if start is None:
            latents, generators = self._initial(samples, plan, scheduler)
            first = 0
        else:
            if start.plan != plan:
                raise StudioError("The cached denoising prefix was made with other size/steps/scheduler options.")
            index = torch.tensor([_index_of(start.samples, s) for s in samples])
            latents = start.latents.index_select(0, index.to(start.latents.device))
            scheduler = gather_scheduler(start.scheduler, index, len(start.samples))
            generators = []
            for i in index.tolist():
                g = torch.Generator("cpu")
                g.set_state(start.generator_states[i])
                generators.append(g)
            first = start.step
        latents = self.sampler.run(cond, latents, scheduler, generators, plan, first, plan.steps, progress)
        return self.sampler.decode(latents)

    def denoise_prefix(self, samples: Sequence[Sample], step: int,
                       progress: ProgressCallback | None = None) -> DenoiseState:
        """Run steps ``[0, step)`` once (with whatever hooks are active) and keep everything needed to resume."""
        samples = list(samples)
        plan = self.plan(samples)
        step = max(0, min(int(step), plan.steps))
        cond, scheduler = self._start(samples, plan)
        latents, generators = self._initial(samples, plan, scheduler)
        latents = self.sampler.run(cond, latents, scheduler, generators, plan, 0, step, progress)
        return DenoiseState(samples, step, latents, scheduler, [g.get_state() for g in generators], plan)

    def trace(self, samples: Sequence[Sample], layers: Sequence[str], *, before_edits: bool = False,
              stop: bool = True, step: int | None = None) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` at denoising ``step`` (default: the last), for the text-conditioned half of
        a guided batch, so row ``i`` belongs to ``samples[i]``. ``stop``: no step after it runs, nor the VAE."""
        samples = list(samples)
        plan = self.plan(samples)
        step = plan.steps - 1 if step is None else max(0, min(int(step), plan.steps - 1))
        cond, scheduler = self._start(samples, plan)
        latents, generators = self._initial(samples, plan, scheduler)
        with Trace(self.module, layers, before_edits=before_edits) as trace:  # keeps each layer's latest call
            latents = self.sampler.run(cond, latents, scheduler, generators, plan, 0, step + 1, None)
        if not stop:  # the later steps run too (for other hooks), untraced
            self.sampler.run(cond, latents, scheduler, generators, plan, step + 1, plan.steps, None)
        n = len(samples)
        return {k: (v[-n:] if v.shape[0] == 2 * n else v) for k, v in trace.outputs.items()}

    def denoising_steps(self, sample: Sample) -> int:
        return self._plan(sample).full_steps

    def prefix_step(self, window_start: int, sample: Sample) -> int:
        """The render step at which edits windowed from full-schedule step ``window_start`` begin for ``sample``."""
        plan = self._plan(sample)
        return next((i for i in range(plan.steps) if i * plan.full_steps // plan.steps >= window_start), plan.steps)

    # -- inversion ----------------------------------------------------------------------------------------------
    def invert_image(self, image: torch.Tensor, prompt: str | None = None, steps: int = 40,
                     progress: ProgressCallback | None = None, cancel: Callable[[], bool] | None = None, *,
                     denoise_steps: int | None = None, preview: Callable[[int, torch.Tensor], None] | None = None,
                     start: Sample | None = None) -> Sample:
        """A sample whose DDIM render under ``prompt`` redraws ``image`` ((3, H, W) in [0, 1]), by DDIM inversion
        (models/sd_invert.py): ``steps`` Adam steps fit the VAE latent, then ``denoise_steps`` (default the
        sample default, 25) DDIM steps run backwards with fixed-point refinement.

        ``start``: an inverted sample to continue from (its latent is fitted ``steps`` more, then inverted again).
        ``progress`` returning False raises Cancelled; ``cancel()`` True ends the fit early (the latent so far is
        inverted and returned, as ``studio.invert`` stops early).
        ``preview(i, image)`` sees the decoded latent while it is fitted. :attr:`last_inversion` keeps the figures.
        """
        if image.dim() == 4:
            image = image[0]
        if image.dim() != 3 or image.shape[0] != 3:
            raise StudioError(f"An image to invert is (3, height, width), not {tuple(image.shape)}.")
        m = self.size_multiple()
        height, width = int(image.shape[1]) // m * m, int(image.shape[2]) // m * m
        if not height or not width:
            raise StudioError(f"The image is {image.shape[2]}x{image.shape[1]} pixels; this model needs at least "
                              f"{m}x{m}.")
        image = image[:, :height, :width].to(self.device, torch.float32)[None]
        if start is not None:
            prompt = start.prompt if prompt is None else prompt
            denoise_steps = denoise_steps or int(start.option("steps", DEFAULT_STEPS))
        prompt = prompt if prompt is not None else self.default_prompt
        denoise_steps = int(denoise_steps or DEFAULT_STEPS)

        def report(update):
            return progress(update) if progress is not None else True

        ticker = Ticker(max(0, int(steps)) + denoise_steps * (2 if start is not None else 1), report, unit="steps")
        ticker.report()
        with torch.no_grad():
            if start is not None:  # the latent the previous inversion's path ends at
                begin = self._denoised(start, ticker)
            else:
                begin = encode(self.pipe, image)
        decode = lambda z: self.sampler.decode(z.to(self.dtype), clamp=False)  # noqa: E731
        clean, losses = fit_latent(decode, image, begin, int(steps), ticker, preview, cancel)
        sample = self.invert_latent(clean, prompt, denoise_steps, ticker=ticker,
                                    seed=start.seed if start is not None else 0)
        self.last_inversion.vae_losses = losses
        return sample

    @torch.no_grad()
    def invert_latent(self, clean: torch.Tensor, prompt: str, denoise_steps: int, *, ticker: Ticker | None = None,
                      seed: int = 0) -> Sample:
        """The sample whose DDIM loop of ``denoise_steps`` under ``prompt`` ends at the VAE latent ``clean``
        ((1, C, h, w), scaled as the pipeline's latents), by DDIM inversion with fixed-point refinement."""
        f = self.pipe.vae_scale_factor
        options = {"steps": int(denoise_steps), "scheduler": "ddim", "guidance": 1.0,
                   "size": [int(clean.shape[2]) * f, int(clean.shape[3]) * f]}
        plan_sample = Sample(seed, prompt, options)
        plan = self._plan(plan_sample)
        cond, scheduler = self._start([plan_sample], plan)

        def noise_of(x: torch.Tensor, t, i: int) -> torch.Tensor:
            self.clock.step = i  # edit windows count as in the render (an inversion runs with no edits set)
            try:
                return self.unet(x.to(self.dtype), t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added,
                                 return_dict=False)[0]
            finally:
                self.clock.step = None

        latent, residuals = ddim_invert(noise_of, scheduler, clean.to(self.device), ticker or Ticker(plan.steps))
        self.last_inversion = DDIMInversion(latent, clean, [], residuals)
        return Sample(seed, prompt, {**options, "init_latent": pack_latent(latent[0])})

    def _denoised(self, sample: Sample, ticker: Ticker) -> torch.Tensor:
        """The latent ``sample``'s DDIM loop ends at, before the VAE (what its image decodes from)."""
        plan = self._plan(sample)
        cond, scheduler = self._start([sample], plan)
        latents, generators = self._initial([sample], plan, scheduler)

        def tick(_step: int) -> None:
            ticker.advance(message="retracing the previous inversion")

        return self.sampler.run(cond, latents, scheduler, generators, plan, 0, plan.steps, None, on_step=tick).float()

    # -- export -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def bake_unit_scale(self, layer: str, unit: int, gain: float) -> bool:
        """Exact (over all steps) where the layer ends in a convolution with no identity path: downsamplers,
        upsampling block outputs, and resnets with a shortcut convolution; attention outputs and identity-shortcut
        resnets add their input back, so they stay hooks."""
        name = self.layer(layer).name
        module = get_module(self.unet, name)
        if name.endswith(".downsamplers.0"):
            convs = [module.conv]
        elif name.startswith("up_blocks.") and name.count(".") == 1:
            if module.upsamplers:
                convs = [module.upsamplers[0].conv]
            elif getattr(module, "attentions", None):
                return False
            else:
                module = module.resnets[-1]
                convs = [module.conv2, module.conv_shortcut] if module.conv_shortcut is not None else []
        elif ".resnets." in name and getattr(module, "conv_shortcut", None) is not None:
            convs = [module.conv2, module.conv_shortcut]
        else:
            convs = []
        if not all(isinstance(c, torch.nn.Conv2d) for c in convs) or not convs:
            return False
        for conv in convs:  # (out, in, k, k): row ``unit`` makes output channel ``unit``
            conv.weight[unit] *= gain
            if conv.bias is not None:
                conv.bias[unit] *= gain
        return True

    # -- text conditioning --------------------------------------------------------------------------------------
    def cross_attention(self) -> list[CrossAttention]:
        return [CrossAttention(name, module.to_k, module.to_v) for name, module in self.unet.named_modules()
                if name.endswith("attn2") and hasattr(module, "to_k")]

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> PromptEncoding:
        """The hidden states every ``attn2.to_k``/``to_v`` reads (SDXL: both encoders, 2048 wide), per token."""
        pipe = self.pipe
        if self.sampler.xl:
            embeds = pipe.encode_prompt(prompt=prompt, device=self.device, num_images_per_prompt=1,
                                        do_classifier_free_guidance=False)[0]
        else:
            embeds = pipe.encode_prompt(prompt, self.device, 1, False)[0]
        tok = pipe.tokenizer
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
        special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
        content = torch.tensor([i not in special for i in ids], dtype=torch.bool, device=self.device)
        return PromptEncoding(embeds[0].detach(), tok.convert_ids_to_tokens(ids), content)

    def native_formats(self) -> list[NativeFormat]:
        return list(sd_export.FORMATS)

    def write_native(self, format: str, path: Path) -> NativeWrite:
        if format not in sd_export.WRITERS:
            return super().write_native(format, path)
        return sd_export.WRITERS[format](self.pipe, Path(path))

    def lora_metadata(self) -> dict[str, str]:
        """kohya sd-scripts' names and values (train_network.py metadata; model_util.get_model_version_str_for_sd1_sd2,
        sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0), which AUTOMATIC1111's Lora extension reads to tell SD 1, SD 2
        and SDXL LoRAs apart."""
        if self.kind == "sdxl":
            version = "sdxl_base_v1-0"
        else:
            v_prediction = self.pipe.scheduler.config.get("prediction_type") == "v_prediction"
            version = ("sd_v2" if self.kind == "sd2" else "sd_v1") + ("_v" if v_prediction else "")
        return {"ss_v2": str(self.kind == "sd2"), "ss_base_model_version": version}

    def pinned_options(self) -> dict[str, Any]:
        """The image size and the scheduler the model renders with now (a single file records neither)."""
        own = type(self.pipe.scheduler).__name__
        pins: dict[str, Any] = {"size": list(self.resolution)}
        pins.update({"scheduler": key for key, name in SCHEDULERS.items() if name == own})
        return pins

    def info(self) -> dict[str, Any]:
        data = super().info()
        data.update({"kind": self.kind, "scheduler": type(self.pipe.scheduler).__name__,
                     "unet_parameters": sum(p.numel() for p in self.unet.parameters())})
        return data


def _index_of(samples: Sequence[Sample], sample: Sample) -> int:
    for i, s in enumerate(samples):
        if s == sample:
            return i
    raise StudioError(f"Sample seed {sample.seed} is not in the cached denoising prefix; run denoise_prefix for it.")


# -- opening --------------------------------------------------------------------------------------------------------
def _kind_of(pipe) -> str:
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.text_encoder.config.hidden_act == "gelu" else "sd1"


def _check_folder(folder: Path) -> str:
    """The pipeline class of a diffusers folder, after checking that each component's files are there."""
    index = json.loads((folder / "model_index.json").read_text())
    cls = index.get("_class_name", "?")
    if cls not in PIPELINES:
        raise ModelOpenError(f"{folder.name} holds a {cls}; Neuron Studio opens Stable Diffusion 1.x/2.x and SDXL "
                             "text-to-image pipelines (StableDiffusionPipeline, StableDiffusionXLPipeline).")
    for part, spec in index.items():
        if part.startswith("_") or not isinstance(spec, list) or spec[0] is None or part in (
                "safety_checker", "feature_extractor", "image_encoder"):
            continue
        sub = folder / part
        if part.startswith("tokenizer"):
            need = ["vocab.json", "merges.txt"] if not (sub / "tokenizer.json").exists() else ["tokenizer.json"]
            missing = [n for n in need if not (sub / n).exists()]
        elif part.startswith("scheduler"):
            missing = [] if (sub / "scheduler_config.json").exists() else ["scheduler_config.json"]
        else:
            weights = [p for p in sub.glob("*") if p.suffix in (".safetensors", ".bin")] if sub.is_dir() else []
            missing = ([] if (sub / "config.json").exists() else ["config.json"]) + ([] if weights else ["weights"])
        if missing:
            raise ModelOpenError(f"The diffusers folder {folder.name} is incomplete: '{part}' lacks "
                                 f"{' and '.join(missing)}; copy the whole model folder again.")
    return cls


def _quiet() -> None:
    """No download progress bars or accelerate hints from the libraries: the studio reports its own progress."""
    import diffusers  # heavy import (seconds): only diffusion models need it
    import transformers  # heavy import (seconds): only diffusion models need it

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def open_folder(folder: Path, device: torch.device, precision: str, *, source: str | None = None) -> DiffusionModel:
    import diffusers  # heavy import (seconds): only diffusion models need it

    cls = _check_folder(folder)
    _quiet()
    dtype = pick_dtype(device, True, precision)
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} \
        if cls == "StableDiffusionPipeline" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch_dtype's rename: the old name works in every version
        pipe = getattr(diffusers, cls).from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype, **extra)
    return DiffusionModel(pipe, _kind_of(pipe), device, dtype, name=folder.name, source=source or str(folder))


def open_single_file(path: Path, device: torch.device, precision: str) -> DiffusionModel:

    _quiet()
    state = read_checkpoint(path)
    kind = detect_kind(state)
    tokenizer = find_clip_tokenizer(path)
    dtype = pick_dtype(device, True, precision)
    pipe = build_pipeline(state, kind, tokenizer_files=tokenizer, dtype=dtype)
    del state
    return DiffusionModel(pipe, kind, device, dtype, name=path.stem, source=str(path))


def resolve_repo(spec: str) -> Path | None:
    """The local Hugging Face cache snapshot of repository id ``spec`` ("org/name"), offline; None if not an id.

    A well-formed id that is not cached raises one sentence saying so (nothing is downloaded).
    """
    if not _REPO_ID.match(spec) or Path(spec).expanduser().exists() or Path(spec).suffix.lower() in _FILE_SUFFIXES:
        return None  # a mistyped file name is not a repository id
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE")))
    except Exception as error:  # LocalEntryNotFoundError and friends: all mean "not in the cache"
        raise ModelOpenError(f"'{spec}' is neither a file or folder nor a model in the local Hugging Face cache, "
                             "and Neuron Studio never downloads: fetch it once on a connected machine "
                             f"(huggingface-cli download {spec}), or open a local folder or checkpoint file.") from error


class DiffusionFamily:
    """Registry entry: diffusers folders (``model_index.json``), SD single files, cached repository ids."""

    name = "diffusion"

    def builtins(self) -> list[ModelEntry]:
        return []

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        raise ModelOpenError(f"There is no built-in diffusion model named '{name}'.")

    def resolve(self, spec: str) -> Path | None:
        return resolve_repo(spec)

    def sniff(self, probe: FileProbe) -> bool:
        if probe.is_dir:
            return (Path(probe.path) / "model_index.json").is_file()
        if probe.safetensors_keys is not None:
            return any(k.startswith("model.diffusion_model.") for k in probe.safetensors_keys)
        return probe.suffix == ".ckpt"

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        path = Path(probe.path)
        if probe.is_dir:
            return open_folder(path, device, precision)
        return open_single_file(path, device, precision)


FAMILY = DiffusionFamily()
