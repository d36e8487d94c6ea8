"""Diffusers -> original (CompVis/Stability "LDM") key layout for Stable Diffusion 1.x, 2.x and SDXL.

The way back (original -> diffusers) is diffusers' own converters, used by :mod:`models.sd_single_file`;
tests check that the two are inverse. This direction writes single-file checkpoints that the family's own
tools (A1111, ComfyUI, ``from_single_file``) load::

    state = pipeline_to_original(pipe)           # {"model.diffusion_model.input_blocks.0.0.weight": ..., ...}
    save_single_file(pipe, "model.safetensors")  # atomic
"""
from __future__ import annotations

import os
from typing import Callable, Mapping

import torch

from studio.core.atomic import atomic_path
from studio.core.errors import StudioError

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer.text_model."
SD2_TEXT = "cond_stage_model.model."
XL_TEXT = "conditioner.embedders.0.transformer.text_model."
XL_TEXT2 = "conditioner.embedders.1.model."

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}


class _Mapper:
    """Moves keys by prefix and checks that every source key was moved exactly once."""

    def __init__(self, source: Mapping[str, torch.Tensor], target_prefix: str) -> None:
        self.source, self.prefix = dict(source), target_prefix
        self.out: dict[str, torch.Tensor] = {}
        self.done: set[str] = set()

    def move(self, src: str, dst: str, renames: Mapping[str, str] | None = None,
             value: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> None:
        for key, tensor in self.source.items():
            if key != src and not key.startswith(src + "."):
                continue
            rest = key[len(src):].lstrip(".")
            for old, new in (renames or {}).items():
                if rest == old or rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            name = f"{self.prefix}{dst}.{rest}" if rest else f"{self.prefix}{dst}"
            self.out[name] = value(rest, tensor) if value else tensor
            self.done.add(key)

    def result(self, what: str) -> dict[str, torch.Tensor]:
        left = sorted(set(self.source) - self.done)
        if left:
            raise StudioError(f"Cannot write the {what} in the original layout: {len(left)} weights have no place "
                              f"in it (e.g. {', '.join(left[:3])}).")
        return self.out


def unet_to_original(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict in the original ``model.diffusion_model.*`` layout."""
    m = _Mapper(state, UNET)
    per = int(config["layers_per_block"]) + 1  # resnets per level, plus the downsampler's slot
    m.move("time_embedding.linear_1", "time_embed.0")
    m.move("time_embedding.linear_2", "time_embed.2")
    m.move("add_embedding.linear_1", "label_emb.0.0")
    m.move("add_embedding.linear_2", "label_emb.0.2")
    m.move("conv_in", "input_blocks.0.0")
    m.move("conv_norm_out", "out.0")
    m.move("conv_out", "out.2")
    levels = len(config["block_out_channels"])
    for i in range(levels):
        for j in range(per - 1):
            m.move(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{1 + i * per + j}.0", _RESNET)
            m.move(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{1 + i * per + j}.1")
        m.move(f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(i + 1) * per}.0.op")
    m.move("mid_block.resnets.0", "middle_block.0", _RESNET)
    m.move("mid_block.attentions.0", "middle_block.1")
    m.move("mid_block.resnets.1", "middle_block.2", _RESNET)
    for i in range(levels):
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        for j in range(per):
            m.move(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{i * per + j}.0", _RESNET)
            m.move(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{i * per + j}.1")
        m.move(f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{i * per + per - 1}.{2 if has_attention else 1}.conv")
    return m.result("UNet")


def vae_to_original(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in the original ``first_stage_model.*`` layout."""
    m = _Mapper(state, VAE)
    to_conv = lambda rest, t: t[:, :, None, None] if t.dim() == 2 else t  # noqa: E731  (LDM attention is 1x1 conv)
    levels = len(config["block_out_channels"])
    for part in ("encoder", "decoder"):
        m.move(f"{part}.conv_in", f"{part}.conv_in")
        m.move(f"{part}.conv_out", f"{part}.conv_out")
        m.move(f"{part}.conv_norm_out", f"{part}.norm_out")
        for k in range(2):
            m.move(f"{part}.mid_block.resnets.{k}", f"{part}.mid.block_{k + 1}", {"conv_shortcut": "nin_shortcut"})
        m.move(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTN, to_conv)
    for i in range(levels):
        m.move(f"encoder.down_blocks.{i}.resnets", f"encoder.down.{i}.block", _shortcut_renames(state, "encoder", i))
        m.move(f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv")
        up = levels - 1 - i  # the original numbers decoder levels from the lowest resolution up
        m.move(f"decoder.up_blocks.{i}.resnets", f"decoder.up.{up}.block", _shortcut_renames(state, "decoder", i))
        m.move(f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{up}.upsample.conv")
    m.move("quant_conv", "quant_conv")
    m.move("post_quant_conv", "post_quant_conv")
    return m.result("VAE")


def _shortcut_renames(state: Mapping[str, torch.Tensor], part: str, level: int) -> dict[str, str]:
    kind = "down_blocks" if part == "encoder" else "up_blocks"
    prefix = f"{part}.{kind}.{level}.resnets."
    indices = {k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)}
    return {f"{j}.conv_shortcut": f"{j}.nin_shortcut" for j in indices}


def clip_to_original(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel`` state dict under ``prefix`` (the HF layout that SD 1 and SDXL keep)."""
    return {prefix + key.removeprefix("text_model."): t for key, t in state.items()}


def openclip_to_original(state: Mapping[str, torch.Tensor], prefix: str, *, extra_layer: bool = False,
                         hidden: int | None = None) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model in OpenCLIP's layout (``resblocks``, fused ``in_proj``) under ``prefix``.

    ``extra_layer`` appends a copy of the last block: SD 2 keeps 24 blocks but reads the 23rd, so diffusers drops
    the last one; the copy is never read. A missing ``text_projection`` (SD 2) is written as the identity.
    """
    flat = {key.removeprefix("text_model."): t for key, t in state.items()}
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(k.split(".")[2]) for k in flat if k.startswith("encoder.layers.")})
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    for key, name in fixed.items():
        out[prefix + name] = flat.pop(key)
    width = out[prefix + "token_embedding.weight"].shape[1]
    projection = flat.pop("text_projection.weight", None)
    out[prefix + "text_projection"] = (projection.T.contiguous() if projection is not None
                                       else torch.eye(hidden or width, dtype=out[prefix + "ln_final.weight"].dtype))
    for n in layers:
        src = f"encoder.layers.{n}."
        dst = f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            parts = [flat.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(parts, 0)
        for key in [k for k in flat if k.startswith(src)]:
            rest = key[len(src):]
            for old, new in _OPENCLIP.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
            out[dst + rest] = flat.pop(key)
    if flat:
        raise StudioError(f"Cannot write the text encoder in OpenCLIP's layout: {sorted(flat)[:3]} have no place.")
    if extra_layer and layers:
        last, new = f"{prefix}transformer.resblocks.{layers[-1]}.", f"{prefix}transformer.resblocks.{layers[-1] + 1}."
        out.update({new + k[len(last):]: t.clone() for k, t in list(out.items()) if k.startswith(last)})
    return out


def pipeline_to_original(pipe) -> dict[str, torch.Tensor]:
    """Every weight of an SD 1.x / 2.x / SDXL pipeline in the original single-file layout."""
    state = {**unet_to_original(pipe.unet.state_dict(), pipe.unet.config),
             **vae_to_original(pipe.vae.state_dict(), pipe.vae.config)}
    text = pipe.text_encoder.state_dict()
    if getattr(pipe, "text_encoder_2", None) is not None:
        state.update(clip_to_original(text, XL_TEXT))
        state.update(openclip_to_original(pipe.text_encoder_2.state_dict(), XL_TEXT2))
    elif pipe.text_encoder.config.hidden_act == "gelu":  # OpenCLIP-trained text encoder: SD 2
        state.update(openclip_to_original(text, SD2_TEXT, extra_layer=True))
    else:
        state.update(clip_to_original(text, SD1_TEXT))
    return state


def save_single_file(pipe, path: str | os.PathLike, *, ckpt: bool = False) -> None:
    """Write ``pipe`` as one original-layout checkpoint: safetensors, or a ``.ckpt`` (``{"state_dict": ...}``)."""
    state = {k: v.detach().contiguous().cpu() for k, v in pipeline_to_original(pipe).items()}
    with atomic_path(path) as tmp:
        if ckpt:
            torch.save({"state_dict": state}, tmp)
        else:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt"})
