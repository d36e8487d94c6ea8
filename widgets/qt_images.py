"""Conversions between tensors/arrays and Qt images (copies: Qt never points into numpy memory).

    pixmap = pixmap_from(generator_image)             # (3, H, W) tensor in [0, 1] -> QPixmap
    mask = mask_array(qimage)                         # Grayscale8 QImage -> (H, W) float32 in [0, 1]
    overlay = heatmap_image(activation)               # (H, W) in [0, 1] -> translucent ARGB QImage
"""
from __future__ import annotations

import numpy as np
import torch
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap

from studio.core.images import to_uint8

# A perceptual dark-blue -> teal -> yellow ramp (viridis-like), sampled at five stops.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)


def rgb_image(image: torch.Tensor | np.ndarray) -> QImage:
    """(3, H, W) tensor in [0, 1] or (H, W, 3) uint8/float array -> RGB888 QImage."""
    array = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    array = np.ascontiguousarray(array)
    h, w, _ = array.shape
    return QImage(array.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def pixmap_from(image: torch.Tensor | np.ndarray) -> QPixmap:
    return QPixmap.fromImage(rgb_image(image))


def gray_image(values: np.ndarray) -> QImage:
    """(H, W) float in [0, 1] -> Grayscale8 QImage."""
    array = np.ascontiguousarray((np.clip(values, 0, 1) * 255 + 0.5).astype(np.uint8))
    h, w = array.shape
    return QImage(array.data, w, h, w, QImage.Format.Format_Grayscale8).copy()


def gray_array(image: QImage) -> np.ndarray:
    """Grayscale8 QImage -> (H, W) uint8 array (a copy, rows without padding)."""
    image = image.convertToFormat(QImage.Format.Format_Grayscale8)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    raw = np.frombuffer(image.constBits(), np.uint8, count=h * stride).reshape(h, stride)
    return raw[:, :w].copy()


def mask_array(image: QImage) -> np.ndarray:
    """Grayscale8 mask QImage -> (H, W) float32 in [0, 1]."""
    return gray_array(image).astype(np.float32) / 255.0


def rgba_image(array: np.ndarray) -> QImage:
    """(H, W, 4) uint8 RGBA -> QImage (non-premultiplied)."""
    array = np.ascontiguousarray(array)
    h, w, _ = array.shape
    return QImage(array.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def mask_overlay(mask: np.ndarray, color: tuple[int, int, int] = (255, 64, 32)) -> QImage:
    """The mask as a coloured translucent layer: alpha follows the mask (opacity is the painter's)."""
    h, w = mask.shape
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = mask
    return rgba_image(rgba)


def colormap(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 through a viridis-like ramp."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0, 1) * (len(_RAMP) - 1)
    low = np.minimum(v.astype(np.int64), len(_RAMP) - 2)
    t = (v - low)[..., None]
    return (_RAMP[low] * (1 - t) + _RAMP[low + 1] * t + 0.5).astype(np.uint8)


def heatmap_image(values: np.ndarray, alpha: float = 0.75) -> QImage:
    """An activation map as a translucent colour layer: weak activations fade out, strong ones show."""
    rgba = np.empty((*values.shape, 4), np.uint8)
    rgba[..., :3] = colormap(values)
    rgba[..., 3] = (np.clip(values, 0, 1) ** 0.5 * 255 * alpha).astype(np.uint8)
    return rgba_image(rgba)


def dice_icon(size: int = 16) -> QIcon:
    """A die showing five: the random-seed button's icon (drawn, so no emoji font is needed)."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor(60, 60, 60), 1.2))
    painter.setBrush(QColor(250, 250, 250))
    painter.drawRoundedRect(QRectF(1, 1, size - 2, size - 2), 3, 3)
    painter.setBrush(QColor(40, 40, 40))
    painter.setPen(Qt.PenStyle.NoPen)
    r = size / 10
    for fx, fy in ((0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7)):
        painter.drawEllipse(QPointF(fx * size, fy * size), r, r)
    painter.end()
    return QIcon(pixmap)
