"""Device choice in one place: ``auto`` picks CUDA, then MPS, then CPU.

>>> dev = resolve_device("auto"); dtype = pick_dtype(dev, supports_half=True)
>>> describe(dev, dtype)   # e.g. 'cpu (float32)' or 'cuda:0 NVIDIA H100 (float16)'
"""
from __future__ import annotations

import torch

from .errors import StudioError

CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's ``--device`` choice into a torch device, failing clearly if it is absent."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in CHOICES:
        raise StudioError(f"Unknown device '{name}': choose one of {', '.join(CHOICES)}.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise StudioError("CUDA was asked for but no CUDA GPU is available here; use --device cpu or auto.")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StudioError("MPS was asked for but this machine has no Apple GPU; use --device cpu or auto.")
    return torch.device(name)


def pick_dtype(device: torch.device, supports_half: bool, precision: str = "auto") -> torch.dtype:
    """Half precision on GPUs for families that support it; fp32 on the CPU (CPU fp16 is slow and lossy)."""
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if supports_half and device.type in ("cuda", "mps"):
        return torch.float16
    return torch.float32


def describe(device: torch.device, dtype: torch.dtype | None = None) -> str:
    """One short label for status bars and CLI output."""
    label = str(device)
    if device.type == "cuda":
        label += " " + torch.cuda.get_device_name(device)
    if dtype is not None:
        label += f" ({str(dtype).removeprefix('torch.')})"
    return label


def is_out_of_memory(error: BaseException) -> bool:
    """True for the allocator's out-of-memory errors on any backend."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "mps backend out of memory" in text)
