"""Open a model from a built-in name or a path; detect the format; explain failures in one sentence.

>>> gen = open_model("rooms")                    # the embedded default
>>> gen = open_model("~/ckpt/network-snapshot.pkl", device="cuda")
>>> [e.name for e in available_models()]

A family is a module in ``FAMILY_MODULES`` exposing ``FAMILY`` (see :class:`models.base.Family`).
"""
from __future__ import annotations

import importlib
import json
import struct
import zipfile
from pathlib import Path
from typing import Sequence

import torch

from studio.core.device import pick_dtype, resolve_device  # noqa: F401  (re-exported for adapters)
from studio.core.errors import ModelOpenError, StudioError

from .base import Family, FileProbe, Generator, ModelEntry

#: The model the GUI and CLI open when none is named.
DEFAULT_MODEL = "rooms"

#: Family modules, in the order they are asked whether a file is theirs.
FAMILY_MODULES: list[str] = [
    # each family adds its module here, e.g. "models.rooms"
    "models.rooms",
    "models.diffusion",
    "models.stylegan",
    "models.dcgan_faces",
    "models.mobilestylegan",
]

_MAX_HEADER = 100 * 1024 * 1024


def families() -> list[Family]:
    """Every family adapter (importing them is cheap: heavy packages load on open)."""
    return [importlib.import_module(name).FAMILY for name in FAMILY_MODULES]


def available_models() -> list[ModelEntry]:
    """Built-in models of every family, with those needing an optional package marked unavailable."""
    return [entry for family in families() for entry in family.builtins()]


def read_safetensors_header(path: Path) -> tuple[dict[str, str], list[str]]:
    """Metadata and tensor names of a safetensors file, without loading tensors; raises on corruption."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError("file shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length <= 0 or length > _MAX_HEADER:
            raise ValueError("header length out of range")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return {str(k): str(v) for k, v in metadata.items()}, list(header)


def probe(path: Path) -> FileProbe:
    """Look at a path just enough to tell families apart; a damaged file raises ModelOpenError."""
    if path.is_dir():
        return FileProbe(path=path, is_dir=True, suffix="")
    suffix = path.suffix.lower()
    with open(path, "rb") as f:
        head = f.read(64)
    found = FileProbe(path=path, is_dir=False, suffix=suffix, head=head)
    if suffix == ".safetensors":
        try:
            found.safetensors_metadata, found.safetensors_keys = read_safetensors_header(path)
        except (ValueError, UnicodeDecodeError, struct.error) as error:
            raise ModelOpenError(f"{path.name} is not a readable safetensors file ({error}): "
                                 "it may be truncated or corrupt; re-export or re-download it.") from error
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                found.zip_names = archive.namelist()
        except zipfile.BadZipFile as error:
            raise ModelOpenError(f"{path.name} is a damaged archive ({error}); it cannot be read.") from error
    return found


def open_model(spec: str | Path | None = None, device: str | torch.device = "auto",
               precision: str = "auto", extra_families: Sequence[Family] = ()) -> Generator:
    """A generator from a built-in name (``rooms``) or a file/folder path, on ``device``.

    ``extra_families`` are asked first whether a file is theirs: the layers above add their own formats this way
    (``studio.exported`` adds Neuron Studio's export), so this module never imports them.
    """
    spec = str(spec or DEFAULT_MODEL)
    dev = resolve_device(device)
    for family in families():
        for entry in family.builtins():
            if entry.name == spec:
                if not entry.available:
                    raise ModelOpenError(f"Model '{spec}' is not installed: {entry.reason}")
                return _guard(spec, lambda: family.open_builtin(spec, dev, precision))
    path = Path(spec).expanduser()
    if not path.exists():
        path = _resolve(spec) or path
    if not path.exists():
        names = ", ".join(e.name for e in available_models())
        raise ModelOpenError(f"No model named '{spec}': it is not a built-in ({names}) and no file or folder "
                             "exists at that path.")
    found = probe(path)
    if not found.is_dir and path.stat().st_size == 0:
        raise ModelOpenError(f"{path.name} is empty (0 bytes): the file was not written completely.")
    for family in [*extra_families, *families()]:
        if family.sniff(found):
            return _guard(path.name, lambda: family.open_path(found, dev, precision))
    kinds = "a Neuron Studio export, a StyleGAN .pkl/.pt, or a Stable Diffusion folder/.safetensors/.ckpt"
    raise ModelOpenError(f"{path.name} is not a model format Neuron Studio knows: expected {kinds}.")


def _resolve(spec: str) -> Path | None:
    """A local path for a name that is not a file, from families with an optional ``resolve(spec)`` (e.g. a cached
    Hugging Face repository id); their errors say why the name cannot be opened."""
    for family in families():
        resolve = getattr(family, "resolve", None)
        found = resolve(spec) if resolve is not None else None
        if found is not None:
            return Path(found)
    return None


def _guard(label: str, opener) -> Generator:
    """Run a family's opener, turning low-level failures into one sentence for the user."""
    try:
        return opener()
    except StudioError:
        raise
    except torch.cuda.OutOfMemoryError as error:
        raise ModelOpenError(f"{label} does not fit in GPU memory; close other GPU programs or use "
                             "--device cpu.") from error
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile, EOFError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelOpenError(f"Could not open {label}: {detail[:300]}.") from error
