"""Conversions between model outputs, arrays, files and masks.

>>> save_image(gen.render([sample])[0], "out.png")
>>> mask = load_mask("mask.png", gen.resolution)      # (H, W) float32 tensor in {0..1}
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write_bytes
from .errors import MaskError, StudioError


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) tensor or (H, W, 3) array in [0, 1] -> (H, W, 3) uint8; NaNs become black."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu()
        if image.dim() == 4:
            image = image[0]
        image = image.permute(1, 2, 0).numpy()
    image = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(image))


def png_bytes(image: torch.Tensor | np.ndarray | Image.Image) -> bytes:
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(image: torch.Tensor | np.ndarray | Image.Image, path: str | os.PathLike) -> Path:
    """Save as PNG atomically (the extension decides the format for .jpg/.webp)."""
    path = Path(path)
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    if path.suffix.lower() in ("", ".png"):
        atomic_write_bytes(path, png_bytes(pil))
    else:
        buffer = io.BytesIO()
        try:
            pil.save(buffer, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        except (KeyError, ValueError, OSError) as error:
            raise StudioError(f"Cannot write images as {path.suffix}: {error}.") from error
        atomic_write_bytes(path, buffer.getvalue())
    return path


def check_finite(image: torch.Tensor, what: str = "The model") -> None:
    """Raise one clear sentence when a render produced NaN or infinite values."""
    if not bool(torch.isfinite(image).all()):
        raise StudioError(f"{what} produced NaN or infinite pixels; the edit values may be too extreme "
                          "(try smaller scales) or half precision overflowed (try --precision fp32).")


def mask_from_array(array: np.ndarray, size: tuple[int, int], name: str = "The mask") -> tuple[torch.Tensor, str]:
    """A (H, W) float mask from any greyscale/RGB(A) array, resized to ``size``; returns (mask, note).

    Empty masks and masks of another aspect ratio raise :class:`MaskError`; a mask of the same
    aspect ratio but another size is resized, and ``note`` says so.
    """
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[..., 3] if a.shape[-1] == 4 and a[..., 3].min() < a[..., 3].max() else a[..., :3].max(axis=-1)
    a = a.astype(np.float32)
    if a.max() > 1.0:
        a = a / 255.0
    if not np.isfinite(a).all():
        raise MaskError(f"{name} contains NaN values; repaint it.")
    note = ""
    h, w = size
    if a.shape != (h, w):
        if abs(a.shape[0] * w - a.shape[1] * h) > max(a.shape[0], a.shape[1]) // 50 + 1:
            raise MaskError(f"{name} is {a.shape[1]}x{a.shape[0]} but the image is {w}x{h}: the shapes differ, "
                            "so it cannot be resized onto the image; paint it on this image.")
        note = f"{name} was {a.shape[1]}x{a.shape[0]}; resized to the image's {w}x{h}."
        a = np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR), dtype=np.float32)
    a = np.clip(a, 0.0, 1.0)
    if float(a.max()) < 0.5 / 255:
        raise MaskError(f"{name} is empty: paint over the region you want to explain before ranking.")
    return torch.from_numpy(a.copy()), note


def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """Read a mask image (white = inside) and fit it to ``size`` (see :func:`mask_from_array`)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            array = np.asarray(img.convert("RGBA") if img.mode in ("RGBA", "LA", "P") else img.convert("L"))
    except FileNotFoundError as error:
        raise MaskError(f"No mask file at {path}.") from error
    except OSError as error:
        raise MaskError(f"{path.name} is not a readable image ({error}).") from error
    return mask_from_array(array, size, name=f"Mask {path.name}")


def feather_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Soften a (H, W) mask's edges with a Gaussian of ``radius`` pixels (about 2 sigma); values stay in [0, 1].

    >>> soft = feather_mask(hard, 4)      # the inside stays 1, the edge ramps over about 8 px
    """
    values = np.asarray(mask, np.float32)
    if radius <= 0:
        return values.copy()
    sigma = radius / 2
    offsets = np.arange(-int(np.ceil(3 * sigma)), int(np.ceil(3 * sigma)) + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    pad = len(offsets) // 2
    out = values
    for axis in (0, 1):  # separable: blur rows, then columns, with the edge pixels repeated
        padded = np.pad(out, [(pad, pad) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        out = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="valid"), axis, padded)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
