"""CLIP tokenizer files for Stable Diffusion checkpoints that ship without them (single files).

A single-file checkpoint holds weights only; its CLIP BPE tokenizer (``vocab.json`` + ``merges.txt``) must come
from disk, never from the network. Places looked in, first hit wins::

    folder = find_clip_tokenizer(checkpoint_path)   # a folder with vocab.json + merges.txt, or raises
    tokenizer_dir(folder, out, pad_token="!")       # + tokenizer_config.json for SD 2 / SDXL's second tokenizer

1. ``<checkpoint folder>/tokenizer/`` or ``<checkpoint folder>/<checkpoint stem>.tokenizer/``;
2. ``resources/diffusion/clip-tokenizer/`` (where an installer or the user can drop the two files);
3. the local Hugging Face cache of ``openai/clip-vit-large-patch14`` (offline look-up only);
4. the BPE merge list that the ``open-clip-torch`` package ships (``pip install open-clip-torch``), turned
   into the same ``vocab.json``/``merges.txt`` that CLIP's own tokenizer uses (OpenAI's byte-level BPE layout).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

from studio.core.atomic import atomic_write_text
from studio.core.errors import ModelOpenError
from studio.core.resources import RESOURCES

#: Where a user or installer can put CLIP's ``vocab.json`` and ``merges.txt``.
TOKENIZER_DIR = RESOURCES / "diffusion" / "clip-tokenizer"
#: The Hugging Face repository whose cached tokenizer files are used when present (never downloaded).
CLIP_REPO = "openai/clip-vit-large-patch14"
#: CLIP keeps this many merges of its BPE list (49408 tokens = 2 x 256 bytes + merges + 2 specials).
CLIP_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
FILES = ("vocab.json", "merges.txt")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte -> printable character table, printable bytes first (so '!' has id 0)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)  # unprintable bytes move past Latin-1
            extra += 1
    return table


def clip_vocab(merges: list[str]) -> dict[str, int]:
    """CLIP's token -> id map for a merge list (lines like ``"i n"``): bytes, bytes + ``</w>``, merges, specials."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def write_from_bpe(bpe_path: str | os.PathLike, out: str | os.PathLike, max_merges: int = CLIP_MERGES) -> Path:
    """Turn a CLIP BPE merge list (``bpe_simple_vocab_16e6.txt[.gz]``: one version line, then merges) into
    ``vocab.json`` + ``merges.txt`` in ``out``; returns ``out``."""
    raw = Path(bpe_path).read_bytes()
    text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
    merges = [line for line in text.split("\n")[1:] if line.strip()][:max_merges]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "vocab.json", json.dumps(clip_vocab(merges), ensure_ascii=False))
    atomic_write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return out


def tokenizer_dir(files: Path, out: Path, *, pad_token: str = EOS, max_length: int = 77) -> Path:
    """A loadable ``CLIPTokenizer`` folder in ``out``: the vocabulary files of ``files`` plus the settings a
    family needs (SD 1 pads with the end token, SD 2 and SDXL's second tokenizer with '!')."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = out / name
        if not target.exists():
            try:
                target.symlink_to((files / name).resolve())
            except OSError:  # no symlinks (Windows without developer mode): copy instead
                target.write_bytes((files / name).read_bytes())
    config = {"model_max_length": max_length, "do_lower_case": True, "bos_token": BOS, "eos_token": EOS,
              "unk_token": EOS, "pad_token": pad_token, "tokenizer_class": "CLIPTokenizer"}
    atomic_write_text(out / "tokenizer_config.json", json.dumps(config, indent=1))
    return out


def _has_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def _cached_clip() -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(CLIP_REPO, local_files_only=True, allow_patterns=list(FILES)))
    except Exception:  # not cached, or huggingface_hub missing: both mean "not here"
        return None
    return path if _has_files(path) else None


def _open_clip_bpe() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # locate without importing (its imports need torchvision)
    if spec is None or not spec.submodule_search_locations:
        return None
    bpe = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    return bpe if bpe.is_file() else None


def cache_root() -> Path:
    """Where files built by Neuron Studio are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neuron-studio"


def find_clip_tokenizer(checkpoint: str | os.PathLike | None = None) -> Path:
    """A folder holding CLIP's ``vocab.json`` and ``merges.txt``; raises one clear sentence when none exists."""
    candidates: list[Path] = []
    if checkpoint is not None:
        path = Path(checkpoint)
        candidates += [path.parent / "tokenizer", path.parent / f"{path.stem}.tokenizer"]
    candidates.append(TOKENIZER_DIR)
    for folder in candidates:
        if _has_files(folder):
            return folder
    cached = _cached_clip()
    if cached is not None:
        return cached
    bpe = _open_clip_bpe()
    if bpe is not None:
        built = cache_root() / "clip-tokenizer"
        return built if _has_files(built) else write_from_bpe(bpe, built)
    raise ModelOpenError(
        "This single-file checkpoint carries no text tokenizer, and Stable Diffusion's CLIP tokenizer files "
        f"(vocab.json and merges.txt) were not found: run 'pip install open-clip-torch' (it ships them), or put "
        f"the two files in {TOKENIZER_DIR} or in a 'tokenizer' folder beside the checkpoint, or open the model's "
        "diffusers folder instead.")
