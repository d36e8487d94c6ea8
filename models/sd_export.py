"""The diffusion family's own export formats: a diffusers folder and an original-layout single file.

    written = gen.write_native("diffusers", Path("edited"))               # save_pretrained, safetensors
    written = gen.write_native("sd-single-file", Path("edited.safetensors"))  # + edited.tokenizer/ beside it
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    return NativeWrite([path])


def write_single_file(pipe: Any, path: Path) -> NativeWrite:
    """The original-layout file, and its tokenizer beside it (``NAME.tokenizer/``, where the studio looks) so it
    reopens offline as it was."""
    save_single_file(pipe, path)
    tokenizers = path.with_name(path.stem + ".tokenizer")
    with atomic_folder(tokenizers, marker="vocab.json") as tmp:
        write_clip_files(pipe.tokenizer, tmp)
    return NativeWrite([path, tokenizers])


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
