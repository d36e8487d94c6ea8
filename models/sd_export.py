"""The diffusion family's own export formats: a diffusers folder and an original-layout single file.

    written = gen.write_native("diffusers", Path("edited"))               # save_pretrained, safetensors
    written = gen.write_native("sd-single-file", Path("edited.safetensors"))  # + edited.tokenizer/ beside it
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from studio.core.folders import atomic_folder

from .base import NativeFormat, NativeWrite
from .sd_convert import save_single_file

#: What a diffusion model writes besides the studio's own formats.
FORMATS = (
    NativeFormat("diffusers", "a diffusers pipeline folder (save_pretrained, safetensors)", ""),
    NativeFormat("sd-single-file", "one .safetensors in the original SD key layout (AUTOMATIC1111, ComfyUI)",
                 ".safetensors", unrecorded=("size", "scheduler")),
)


def write_diffusers(pipe: Any, path: Path) -> NativeWrite:
    """``save_pretrained`` into a folder swapped in whole (only a folder holding ``model_index.json`` is replaced)."""
    with atomic_folder(path, marker="model_index.json") as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        for part in ("text_encoder", "text_encoder_2"):
            if (tmp / part / "config.json").is_file():
                clip_keys_for_every_loader(tmp / part)
    return NativeWrite([path])


#: CLIP text encoders whose weights transformers 4.x, ComfyUI and diffusers' converters read as ``text_model.*``.
_CLIP_TEXT = {"CLIPTextModel", "CLIPTextModelWithProjection"}


def _prefixed(key: str) -> str:
    # transformers 4.x (CLIPTextModel.text_model = CLIPTextTransformer) and ComfyUI's comfy/clip_model.py keep
    # the transformer under ``text_model``; only the projection of CLIPTextModelWithProjection sits beside it
    if key.startswith(("text_model.", "text_projection.")):
        return key
    return "text_model." + key


def clip_keys_for_every_loader(folder: Path) -> None:
    """Rewrite a saved CLIP text encoder's safetensors (single or sharded) in the ``text_model.`` key layout.

    transformers 5 saves ``embeddings.*``, ``encoder.*``, ``final_layer_norm.*`` without the prefix; transformers
    4.x then re-initialises every weight at random and ComfyUI's diffusers loader leaves them unset, while
    transformers 5 reads the prefixed layout too (every hub checkpoint has it).
    """
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not _CLIP_TEXT.intersection(config.get("architectures") or []):
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        shards = sorted(set(data["weight_map"].values()))
        data["weight_map"] = {_prefixed(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2), encoding="utf-8")
    else:
        shards = ["model.safetensors"] if (folder / "model.safetensors").is_file() else []
    for shard in shards:
        tensors = load_file(str(folder / shard))
        save_file({_prefixed(k): v for k, v in tensors.items()}, str(folder / shard), metadata={"format": "pt"})


def write_single_file(pipe: Any, path: Path) -> NativeWrite:
    """The original-layout file, its tokenizer beside it (``NAME.tokenizer/``, where the studio looks) so it
    reopens offline as it was, and ``NAME.config/`` (every component's config and the tokenizers, no weights),
    what diffusers' ``from_single_file(config=...)`` needs offline; the note gives that call."""
    save_single_file(pipe, path)
    tokenizers = path.with_name(path.stem + ".tokenizer")
    with atomic_folder(tokenizers, marker="vocab.json") as tmp:
        write_clip_files(pipe.tokenizer, tmp)
    config = path.with_name(path.stem + ".config")
    with atomic_folder(config, marker="model_index.json") as tmp:
        write_configs(pipe, tmp)
    return NativeWrite([path, tokenizers, config], [f"open it in diffusers offline: {diffusers_call(pipe, path)}"])


def diffusers_call(pipe: Any, path: Path) -> str:
    """The exact diffusers call that opens the single file ``path`` offline (with ``NAME.config/`` beside it)."""
    config = path.with_name(path.stem + ".config")
    return (f"diffusers.{type(pipe).__name__}.from_single_file({str(path)!r}, config={str(config)!r}, "
            "local_files_only=True)")


def write_configs(pipe: Any, folder: Path) -> None:
    """A diffusers folder without weights: ``model_index.json``, each model's config, scheduler and tokenizers."""
    pipe.save_config(str(folder))  # model_index.json
    for name, component in pipe.components.items():
        if component is None:
            continue
        if name.startswith("tokenizer"):
            write_clip_files(component, folder / name)
        elif name.startswith("text_encoder"):
            component.config.save_pretrained(str(folder / name))  # a transformers config
        else:
            component.save_config(str(folder / name))  # diffusers models and schedulers


def write_clip_files(tokenizer: Any, folder: Path) -> None:
    """CLIP's ``vocab.json`` + ``merges.txt`` (what single-file loaders read) for a slow or fast tokenizer."""
    tokenizer.save_pretrained(str(folder))
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(tokenizer.get_vocab(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


WRITERS = {"diffusers": write_diffusers, "sd-single-file": write_single_file}
