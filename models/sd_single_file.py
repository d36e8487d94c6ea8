"""Open a Stable Diffusion single-file checkpoint (original key layout) offline, with no hub look-up.

    state = read_checkpoint(path)            # safetensors, or .ckpt through torch.load(weights_only=True)
    kind = detect_kind(state)                # "sd1" | "sd2" | "sdxl", from the key names
    pipe = build_pipeline(state, kind, tokenizer_files=find_clip_tokenizer(path), dtype=torch.float32)

Configs start from ``resources/diffusion/<kind>/`` (written from the families' public sizes) and every size the
weights reveal (channels, blocks, depths, text widths) is read from the tensors, so fine-tunes and small test
models open too. What tensors cannot tell is the family's convention: SD 1 uses 8 attention heads, SD 2/SDXL
and every CLIP text encoder use 64-wide heads.
"""
from __future__ import annotations

import copy
import json
import pickle
import re
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from studio.core.errors import ModelOpenError
from studio.core.resources import RESOURCES

from .sd_convert import SD1_TEXT, SD2_TEXT, UNET, VAE, XL_TEXT, XL_TEXT2
from .sd_tokenizer import tokenizer_dir

CONFIGS = RESOURCES / "diffusion"
KIND_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "Stable Diffusion XL"}


def shipped_config(kind: str, part: str) -> dict:
    """A shipped config: ``part`` is e.g. ``"unet/config.json"`` or ``"model_index.json"``."""
    return json.loads((CONFIGS / kind / part).read_text())


# -- reading ---------------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a single-file checkpoint; a pickle holding anything but tensors is refused."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as error:
        what = re.search(r"GLOBAL ([\w.]+)", str(error))
        found = f" (it holds a pickled {what.group(1)})" if what else ""
        raise ModelOpenError(
            f"{path.name} contains pickled Python objects besides tensors{found}, and Neuron Studio never runs "
            "code from a checkpoint: open its .safetensors version, or convert it with a tool you trust.") from error
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # Lightning checkpoints nest the weights
    if not isinstance(data, dict):
        raise ModelOpenError(f"{path.name} holds a {type(data).__name__}, not a dictionary of weights.")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


def detect_kind(keys) -> str:
    """``sd1``, ``sd2`` or ``sdxl`` from the checkpoint's key names (the probe's safetensors keys suffice)."""
    keys = list(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if not has(UNET):
        if has("lora_unet_") or has("lora_te"):
            raise ModelOpenError("This file is a LoRA, not a full model: open its base model first.")
        if has("encoder.down.") or has("decoder.up."):
            raise ModelOpenError("This file is a VAE only, not a full Stable Diffusion model.")
        raise ModelOpenError("This file has no 'model.diffusion_model.*' weights: it is not a Stable Diffusion "
                             "checkpoint.")
    if has(XL_TEXT2):
        return "sdxl"
    if has("conditioner.embedders.0.model."):
        raise ModelOpenError("This is an SDXL refiner checkpoint (image-to-image only); open an SDXL base model.")
    if has(SD2_TEXT):
        return "sd2"
    if has("cond_stage_model.transformer."):
        return "sd1"
    raise ModelOpenError("This checkpoint has a UNet but no text encoder weights ('cond_stage_model' or "
                         "'conditioner'): it cannot be run from text; use a full checkpoint.")


# -- configs from tensor shapes -----------------------------------------------------------------------------------
def _indices(keys, prefix: str) -> list[int]:
    found = set()
    for k in keys:
        if k.startswith(prefix):
            head = k[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def unet_config(state: Mapping[str, torch.Tensor], kind: str, pooled_dim: int | None = None) -> dict:
    """The diffusers UNet config for the checkpoint's UNet, read from its tensor shapes."""
    u = {k[len(UNET):]: v for k, v in state.items() if k.startswith(UNET)}
    config = shipped_config(kind, "unet/config.json")
    n_input = len(_indices(u, "input_blocks."))
    levels = 1 + sum(f"input_blocks.{i}.0.op.weight" in u for i in range(n_input))
    per = n_input // levels
    first = [1 + i * per for i in range(levels)]  # first input block of each level
    channels = [int(u[f"input_blocks.{b}.0.out_layers.3.weight"].shape[0]) for b in first]
    attention = [f"input_blocks.{b}.1.proj_in.weight" in u for b in first]
    depth = [max(1, len(_indices(u, f"input_blocks.{b}.1.transformer_blocks."))) for b in first]
    if "middle_block.1.proj_in.weight" in u:
        depth[-1] = max(depth[-1], len(_indices(u, "middle_block.1.transformer_blocks.")))
    proj = next((t for k, t in u.items() if k.endswith("proj_in.weight")), None)
    context = next((t for k, t in u.items() if k.endswith("attn2.to_k.weight")), None)
    in_channels = int(u["input_blocks.0.0.weight"].shape[1])
    if in_channels != 4:
        raise ModelOpenError(f"This UNet takes {in_channels} input channels (an inpainting or image-conditioned "
                             "model); open a text-to-image checkpoint.")
    config.update({
        "block_out_channels": channels, "layers_per_block": per - 1, "in_channels": in_channels,
        "out_channels": int(u["out.2.weight"].shape[0]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "transformer_layers_per_block": depth,
        "use_linear_projection": bool(proj is not None and proj.dim() == 2),
    })
    if context is not None:
        config["cross_attention_dim"] = int(context.shape[1])
    if kind != "sd1":  # SD 2 and SDXL: 64-wide heads; SD 1 keeps its 8 heads
        config["attention_head_dim"] = [max(1, c // 64) for c in channels]
    if "label_emb.0.0.weight" in u:
        width = int(u["label_emb.0.0.weight"].shape[1])
        config["projection_class_embeddings_input_dim"] = width
        if pooled_dim is not None:
            config["addition_time_embed_dim"] = (width - pooled_dim) // 6  # pooled text + 6 size/crop numbers
    return config


def vae_config(state: Mapping[str, torch.Tensor], kind: str) -> dict:
    v = {k[len(VAE):]: t for k, t in state.items() if k.startswith(VAE)}
    if not v:
        raise ModelOpenError("This checkpoint has no VAE weights ('first_stage_model.*'); it cannot turn latents "
                             "into images: use a checkpoint that includes its VAE.")
    config = shipped_config(kind, "vae/config.json")
    levels = _indices(v, "encoder.down.")
    config.update({
        "block_out_channels": [int(v[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels],
        "layers_per_block": len(_indices(v, "encoder.down.0.block.")),
        "latent_channels": int(v["post_quant_conv.weight"].shape[0]),
        "in_channels": int(v["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(v["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * len(levels), "up_block_types": ["UpDecoderBlock2D"] * len(levels),
    })
    return config


def clip_config(state: Mapping[str, torch.Tensor], kind: str, prefix: str, part: str) -> dict:
    """A ``CLIPTextConfig`` dict for a text encoder in HF layout (``prefix``) or OpenCLIP layout."""
    config = shipped_config(kind, f"{part}/config.json")
    if prefix.endswith("text_model."):
        emb = state[prefix + "embeddings.token_embedding.weight"]
        positions = state[prefix + "embeddings.position_embedding.weight"].shape[0]
        layers = len(_indices(state, prefix + "encoder.layers."))
        inner = state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    else:
        emb = state[prefix + "token_embedding.weight"]
        positions = state[prefix + "positional_embedding"].shape[0]
        layers = len(_indices(state, prefix + "transformer.resblocks."))
        inner = state[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        if kind == "sd2":
            layers -= 1  # SD 2 reads the penultimate block; diffusers keeps only the blocks it reads
        if prefix + "text_projection" in state and kind == "sdxl":
            config["projection_dim"] = int(state[prefix + "text_projection"].shape[1])
    hidden = int(emb.shape[1])
    config.update({"vocab_size": int(emb.shape[0]), "hidden_size": hidden, "max_position_embeddings": int(positions),
                   "num_hidden_layers": layers, "intermediate_size": int(inner),
                   "num_attention_heads": max(1, hidden // 64)})
    return config


# -- building -----------------------------------------------------------------------------------------------------
def _materialize(model: torch.nn.Module, converted: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Load ``converted`` into a model built on the meta device, naming what is missing."""
    missing, unexpected = model.load_state_dict(dict(converted), strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise ModelOpenError(f"The checkpoint lacks {len(missing)} {what} weights (e.g. {', '.join(missing[:2])}): "
                             "it is incomplete or of another architecture.")
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if unexpected:
        raise ModelOpenError(f"The checkpoint's {what} has {len(unexpected)} weights this architecture does not "
                             f"use (e.g. {', '.join(unexpected[:2])}); it is not a supported variant.")
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                if name != "position_ids":
                    raise ModelOpenError(f"Internal: {what} buffer '{name}' was not loaded.")
                module.register_buffer(name, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
    return model.eval()


def _on_meta(factory):
    with torch.device("meta"):
        return factory()


def build_pipeline(state: Mapping[str, torch.Tensor], kind: str, *, tokenizer_files: Path,
                   dtype: torch.dtype = torch.float32):
    """A diffusers pipeline (``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``) on the CPU."""
    import diffusers  # heavy import (seconds): only diffusion models need it
    from diffusers import AutoencoderKL, UNet2DConditionModel  # heavy import (seconds): only diffusion models need it
    from diffusers.loaders.single_file_utils import (  # heavy import (seconds): only diffusion models need it
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from transformers import (  # heavy import (seconds): only diffusion models need it
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    def text_model(cls, prefix: str, part: str):
        config = CLIPTextConfig(**clip_config(state, kind, prefix, part))
        model = _on_meta(lambda: cls(config))
        if prefix.endswith("text_model."):
            converted = convert_ldm_clip_checkpoint(dict(state), prefix.removesuffix("text_model."))
        else:
            converted = convert_open_clip_checkpoint(model, dict(state), prefix=prefix)
            keep = config.num_hidden_layers
            converted = {k: t for k, t in converted.items()
                         if not (".layers." in k and int(k.split(".layers.")[1].split(".")[0]) >= keep)}
            if cls is CLIPTextModel:
                converted.pop("text_projection.weight", None)
        if cls is CLIPTextModel:  # transformers >= 5.6 keeps CLIPTextModel's weights without "text_model."
            names = set(model.state_dict())
            converted = {(k if k in names else k.removeprefix("text_model.")): t for k, t in converted.items()}
        return _materialize(model, converted, f"text encoder ({part})").to(dtype)

    def tokenizer(part: str):
        settings = shipped_config(kind, f"{part}/tokenizer_config.json")
        with tempfile.TemporaryDirectory() as tmp:
            folder = tokenizer_dir(tokenizer_files, Path(tmp), pad_token=settings["pad_token"],
                                   max_length=settings["model_max_length"])
            return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)

    pooled = None
    if kind == "sdxl":
        te2 = text_model(CLIPTextModelWithProjection, XL_TEXT2, "text_encoder_2")
        pooled = int(te2.config.projection_dim)
        te1 = text_model(CLIPTextModel, XL_TEXT, "text_encoder")
    else:
        te1 = text_model(CLIPTextModel, SD1_TEXT if kind == "sd1" else SD2_TEXT, "text_encoder")

    ucfg = unet_config(state, kind, pooled)
    unet = _on_meta(lambda: UNet2DConditionModel.from_config(ucfg))
    unet = _materialize(unet, convert_ldm_unet_checkpoint(dict(state), copy.deepcopy(ucfg)), "UNet").to(dtype)
    vcfg = vae_config(state, kind)
    vae = _on_meta(lambda: AutoencoderKL.from_config(vcfg))
    vae = _materialize(vae, convert_ldm_vae_checkpoint(dict(state), vcfg), "VAE")
    vae = vae.to(torch.float32 if vcfg.get("force_upcast", True) else dtype)  # SD VAEs overflow in fp16
    scfg = shipped_config(kind, "scheduler/scheduler_config.json")
    scheduler = getattr(diffusers, scfg["_class_name"]).from_config(scfg)
    if kind == "sdxl":
        return diffusers.StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2,
                                                   tokenizer=tokenizer("tokenizer"), tokenizer_2=tokenizer("tokenizer_2"),
                                                   unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=te1, tokenizer=tokenizer("tokenizer"), unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
