"""Concept edits as a LoRA file in the kohya layout that AUTOMATIC1111 and ComfyUI load.

A concept edit changes each cross-attention projection by a low-rank ``ΔW = up @ down``, so a LoRA holds it
exactly. Keys, for a projection at module path ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k``::

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight     (out, r)
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight   (r, in)
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha              () = r

and a loader adds ``strength · alpha / r · up @ down`` to the weight (alpha = r: scale 1)::

    write_lora(editor.lora(), "concept.safetensors")
    patched = merge_lora(fresh_generator, "concept.safetensors")    # the same merge, for checking
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .core.atomic import atomic_path
from .core.errors import StudioError

if TYPE_CHECKING:
    from models.base import Generator

PREFIX = "lora_unet_"
_PARTS = (".lora_up.weight", ".lora_down.weight", ".alpha")
#: Wrapper prefixes an adapter's module may put before the UNet's own module paths.
_WRAPPERS = ("unet.", "model.diffusion_model.", "diffusion_model.")


class LoraError(StudioError):
    """A LoRA file that cannot be written, read or matched to the model."""


def lora_name(module_path: str) -> str:
    """The kohya name of the module at ``module_path`` (dots become underscores, wrapper prefixes dropped)."""
    for wrapper in _WRAPPERS:
        if module_path.startswith(wrapper):
            module_path = module_path[len(wrapper):]
            break
    return PREFIX + module_path.replace(".", "_")


def write_lora(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], path: str | os.PathLike, *,
               metadata: Mapping[str, str] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``{module path: (up (out, r), down (r, in))}`` as a kohya-layout LoRA, atomically."""

    if not factors:
        raise LoraError("There is no concept edit to write as a LoRA: apply one first.")
    tensors: dict[str, torch.Tensor] = {}
    ranks = set()
    for module_path, (up, down) in factors.items():
        if up.dim() != 2 or down.dim() != 2 or up.shape[1] != down.shape[0]:
            raise LoraError(f"The factors of {module_path} do not form up (out, r) @ down (r, in).")
        name = lora_name(module_path)
        rank = int(down.shape[0])
        ranks.add(rank)
        tensors[name + ".lora_up.weight"] = up.detach().to("cpu", dtype).contiguous()
        tensors[name + ".lora_down.weight"] = down.detach().to("cpu", dtype).contiguous()
        tensors[name + ".alpha"] = torch.tensor(float(rank), dtype=dtype)  # alpha = rank: scale 1
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(max(ranks)),
            "ss_network_alpha": str(max(ranks)), "neuron_studio": json.dumps({"kind": "concept-edit"})}
    meta.update(metadata or {})
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_lora(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """``{kohya name: (up, down, alpha)}`` from a LoRA file (safetensors only: nothing is unpickled)."""

    path = Path(path)
    try:
        tensors = load_file(str(path))
    except FileNotFoundError as error:
        raise LoraError(f"No LoRA file at {path}.") from error
    except Exception as error:  # noqa: BLE001 - damage becomes one sentence
        raise LoraError(f"{path.name} is not a readable safetensors LoRA ({str(error)[:160]}).") from error
    names = {key[: -len(part)] for key in tensors for part in _PARTS if key.endswith(part)}
    out = {}
    for name in sorted(names):
        up, down = tensors.get(name + ".lora_up.weight"), tensors.get(name + ".lora_down.weight")
        if up is None or down is None:
            raise LoraError(f"{path.name} has half of the LoRA pair {name}; the file is incomplete.")
        rank = int(down.shape[0])
        alpha = float(tensors[name + ".alpha"]) if name + ".alpha" in tensors else float(rank)
        out[name] = (up.float(), down.float(), alpha)
    return out


def lora_targets(generator: "Generator") -> dict[str, nn.Linear]:
    """Kohya name -> linear layer, for every linear layer of the model (the loaders' model-first mapping)."""
    return {lora_name(name): module for name, module in generator.module.named_modules()
            if isinstance(module, nn.Linear)}


@torch.no_grad()
def merge_lora(generator: "Generator", path: str | os.PathLike, strength: float = 1.0) -> list[str]:
    """Add ``strength · alpha / r · up @ down`` to each targeted weight, as A1111 and ComfyUI do; returns names."""
    entries = read_lora(path)
    targets = lora_targets(generator)
    missing = [name for name in entries if name not in targets]
    if missing:
        raise LoraError(f"{Path(path).name} changes {len(missing)} layers {generator.name} does not have "
                        f"(first: {missing[0]}): it was made for another model.")
    for name, (up, down, alpha) in entries.items():
        weight = targets[name].weight
        delta = (up @ down) * (strength * alpha / down.shape[0])
        if tuple(delta.shape) != tuple(weight.shape):
            raise LoraError(f"{Path(path).name} does not fit {name} (shape {tuple(weight.shape)}): "
                            "it was made for another model.")
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return sorted(entries)
