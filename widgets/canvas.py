"""The image canvas: zoom and pan, mask painting (brush, eraser), overlays, and undoable mask changes.

    canvas = Canvas()
    canvas.set_image(image)                  # (3, H, W) tensor; a new size starts an empty mask
    canvas.tool = "brush"; canvas.brush_size = 12
    # ... the user paints with the left button; each stroke is one QUndoStack command
    canvas.undo_stack.undo()
    mask = canvas.mask()                     # (H, W) float32 in [0, 1]; None when nothing is painted

Mouse: left paints (brush/eraser), right erases, middle or Space+left pans, the wheel zooms around the cursor;
double-click with the middle button (or ``fit()``) fits the image to the window.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QSizePolicy, QWidget

from studio.core.images import feather_mask

from .qt_images import gray_array, mask_overlay, rgb_image

VIEWS = ("edited", "original", "side-by-side")
_GAP = 8  # image pixels between the two halves of the side-by-side view


def _gray(values: np.ndarray) -> QImage:
    array = np.ascontiguousarray((np.clip(values, 0, 1) * 255 + 0.5).astype(np.uint8))
    h, w = array.shape
    return QImage(array.data, w, h, w, QImage.Format.Format_Grayscale8).copy()


class MaskCommand(QUndoCommand):
    """One change of the mask (a stroke, clear, invert, fill), undone by restoring the pixels before it."""

    def __init__(self, canvas: "Canvas", before: QImage, after: QImage, text: str) -> None:
        super().__init__(text)
        self.canvas, self.before, self.after = canvas, before, after

    def redo(self) -> None:
        self.canvas._put_mask(self.after)

    def undo(self) -> None:
        self.canvas._put_mask(self.before)


class Canvas(QWidget):
    """Shows the edited image (or the original, or both) with the mask and an activation overlay."""

    mask_changed = Signal()
    hover = Signal(int, int)  # image pixel under the cursor
    mask_shown = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(256, 256)
        self.undo_stack = QUndoStack(self)
        self.tool = "brush"  # brush | eraser
        self.brush_size = 12  # diameter in image pixels
        self.overlay_opacity = 0.45
        self.mask_visible = True
        self.heatmap: QImage | None = None
        self.view = "edited"
        self.placeholder = "Loading model…"
        self._image: QImage | None = None
        self._original: QImage | None = None
        self._mask = QImage()
        self._pending_mask: np.ndarray | None = None  # a mask set before the first image (an opened session)
        self._overlay: QImage | None = None
        self._scale = 1.0
        self._offset = QPointF(0, 0)
        self._fitted = True  # refit on resize until the user zooms or pans
        self._stroke_before: QImage | None = None
        self._last: QPointF | None = None
        self._erasing = False
        self._pan_from: QPointF | None = None
        self._space = False
        self._cursor: QPointF | None = None

    # -- content ----------------------------------------------------------------------------------------------
    def set_image(self, image, original=None) -> None:
        """Show ``image`` (and keep ``original`` for hold/side-by-side); a new size starts an empty mask."""
        self._image = rgb_image(image)
        self._original = rgb_image(original) if original is not None else None
        size = self._image.size()
        if self._mask.size() != size:
            self._mask = QImage(size, QImage.Format.Format_Grayscale8)
            self._mask.fill(0)
            pending, self._pending_mask = self._pending_mask, None
            if pending is not None and pending.shape == (size.height(), size.width()):
                self._mask = _gray(pending)
            self._overlay = None
            self.undo_stack.clear()
            self._fitted = True
        if self._fitted:
            self.fit()
        self.update()

    def set_original(self, original) -> None:
        self._original = rgb_image(original) if original is not None else None
        self.update()

    @property
    def has_image(self) -> bool:
        return self._image is not None

    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image, or (0, 0) before the first one."""
        return (self._image.height(), self._image.width()) if self._image is not None else (0, 0)

    def set_view(self, view: str) -> None:
        self.view = view if view in VIEWS else "edited"
        if self._fitted:
            self.fit()
        self.update()

    def set_heatmap(self, heatmap: QImage | None) -> None:
        self.heatmap = heatmap
        self.update()

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay_opacity = float(np.clip(opacity, 0, 1))
        self.update()

    # -- the mask ---------------------------------------------------------------------------------------------
    def mask(self) -> np.ndarray | None:
        """(H, W) float32 in [0, 1], or None when nothing is painted."""
        if self._mask.isNull():
            return None
        array = gray_array(self._mask)
        return array.astype(np.float32) / 255.0 if array.any() else None

    def set_mask(self, mask: np.ndarray | None, text: str = "Set mask") -> None:
        """Replace the mask (undoably); ``None`` clears it. ``mask`` is (H, W) in [0, 1] at the image's size."""
        if self._image is None:
            self._pending_mask = None if mask is None else np.asarray(mask, np.float32)
            return
        h, w = self.image_size()
        values = np.zeros((h, w), np.float32) if mask is None else np.asarray(mask, np.float32)
        if values.shape != (h, w):
            raise ValueError(f"mask is {values.shape}, image is {(h, w)}")
        self._push(_gray(values), text)

    def clear_mask(self) -> None:
        self._change(lambda a: np.zeros_like(a), "Clear mask")

    def invert_mask(self) -> None:
        self._change(lambda a: 255 - a, "Invert mask")

    def fill_mask(self) -> None:
        self._change(lambda a: np.full_like(a, 255), "Fill mask")

    def feather(self, radius: float) -> None:
        """Soften the mask's edges by ``radius`` image pixels (one undoable step)."""
        self._change(lambda a: feather_mask(a / 255.0, radius) * 255.0, f"Feather mask {radius:g} px")

    def set_mask_visible(self, visible: bool) -> None:
        """Show or hide the mask overlay (the mask itself stays and still applies)."""
        if visible != self.mask_visible:
            self.mask_visible = visible
            self.update()
            self.mask_shown.emit(visible)

    def _change(self, fn, text: str) -> None:
        if self._mask.isNull():
            return
        self._push(_gray(np.asarray(fn(gray_array(self._mask).astype(np.float32)), np.float32) / 255.0), text)

    def _push(self, after: QImage, text: str) -> None:
        self.undo_stack.push(MaskCommand(self, self._mask.copy(), after, text))

    def _put_mask(self, image: QImage) -> None:
        self._mask = image.copy()
        self._overlay = None
        self.update()
        self.mask_changed.emit()

    # -- view transform -----------------------------------------------------------------------------------------
    def _content_size(self) -> tuple[float, float]:
        h, w = self.image_size()
        return (2 * w + _GAP if self.view == "side-by-side" else w), h

    def fit(self) -> None:
        """Scale the image to fill the widget, centred."""
        cw, ch = self._content_size()
        if cw <= 0 or ch <= 0:
            return
        self._scale = max(min(self.width() / cw, self.height() / ch), 1e-3)
        self._offset = QPointF((self.width() - cw * self._scale) / 2, (self.height() - ch * self._scale) / 2)
        self._fitted = True
        self.update()

    def zoom(self, factor: float, around: QPointF | None = None) -> None:
        around = around if around is not None else QPointF(self.width() / 2, self.height() / 2)
        new_scale = float(np.clip(self._scale * factor, 0.05, 64.0))
        image_point = (around - self._offset) / self._scale
        self._scale = new_scale
        self._offset = around - image_point * new_scale
        self._fitted = False
        self.update()

    @property
    def scale(self) -> float:
        return self._scale

    def to_image(self, pos: QPointF) -> QPointF:
        """Widget coordinates -> image pixel coordinates (in side-by-side, either half maps onto the image)."""
        p = (QPointF(pos) - self._offset) / self._scale
        w = self.image_size()[1]
        if self.view == "side-by-side" and p.x() >= w + _GAP / 2:
            p.setX(p.x() - (w + _GAP))
        return p

    def to_widget(self, image_point: QPointF) -> QPointF:
        """Image pixel coordinates -> widget coordinates (the edited half in side-by-side)."""
        w = self.image_size()[1]
        shift = (w + _GAP) if self.view == "side-by-side" else 0
        return QPointF(image_point.x() + shift, image_point.y()) * self._scale + self._offset

    # -- painting with the mouse -------------------------------------------------------------------------------
    def _paint_to(self, point: QPointF, erase: bool) -> None:
        painter = QPainter(self._mask)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        color = QColor(0, 0, 0) if erase else QColor(255, 255, 255)
        painter.setPen(QPen(color, self.brush_size, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                            Qt.PenJoinStyle.RoundJoin))
        start = self._last if self._last is not None else point
        if start == point:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(color)
            r = self.brush_size / 2
            painter.drawEllipse(QRectF(point.x() - r, point.y() - r, 2 * r, 2 * r))
        else:
            painter.drawLine(start, point)
        painter.end()
        self._last = point
        self._overlay = None
        self.update()

    def mousePressEvent(self, event) -> None:
        pos = event.position()
        if event.button() == Qt.MouseButton.MiddleButton or (self._space and event.button() == Qt.MouseButton.LeftButton):
            self._pan_from = pos
            return
        if self._image is None or event.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return
        self._stroke_before = self._mask.copy()
        self._erasing = self.tool == "eraser" or event.button() == Qt.MouseButton.RightButton
        self._last = None
        self._paint_to(self.to_image(pos), self._erasing)

    def mouseMoveEvent(self, event) -> None:
        pos = event.position()
        self._cursor = pos
        if self._pan_from is not None:
            self._offset += pos - self._pan_from
            self._pan_from = pos
            self._fitted = False
            self.update()
            return
        image_point = self.to_image(pos)
        self.hover.emit(int(image_point.x()), int(image_point.y()))
        if self._stroke_before is not None and event.buttons() & (Qt.MouseButton.LeftButton | Qt.MouseButton.RightButton):
            self._paint_to(image_point, self._erasing)
        else:
            self.update()  # the brush outline follows the cursor

    def mouseReleaseEvent(self, event) -> None:
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_from = None
            return
        if self._stroke_before is None:
            return
        before, self._stroke_before, self._last = self._stroke_before, None, None
        self.undo_stack.push(MaskCommand(self, before, self._mask.copy(), "Erase" if self._erasing else "Paint"))

    def mouseDoubleClickEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.MiddleButton:
            self.fit()

    def leaveEvent(self, event) -> None:
        self._cursor = None
        self.update()

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(1.15 ** steps, event.position())

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
        else:  # [ and ] are the mask toolbar's shortcuts, so they work wherever the focus is
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
        super().keyReleaseEvent(event)

    def resizeEvent(self, event) -> None:
        if self._fitted:
            self.fit()
        super().resizeEvent(event)

    # -- drawing ------------------------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(40, 40, 44))
        if self._image is None:
            painter.setPen(QColor(200, 200, 200))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._scale < 3)
        painter.translate(self._offset)
        painter.scale(self._scale, self._scale)
        h, w = self.image_size()
        panels = [(0, self._shown_image())]
        if self.view == "side-by-side":
            panels = [(0, self._original or self._image), (w + _GAP, self._image)]
        if self._overlay is None and self.mask_visible:
            self._overlay = mask_overlay(gray_array(self._mask))
        for i, (x, image) in enumerate(panels):
            target = QRectF(x, 0, w, h)
            painter.drawImage(target, image)
            if self.heatmap is not None:
                painter.drawImage(target, self.heatmap)
            if self.mask_visible and self._overlay is not None and i == 0:  # "after" stays clean to compare
                painter.setOpacity(self.overlay_opacity)
                painter.drawImage(target, self._overlay)
                painter.setOpacity(1.0)
        if self.view == "side-by-side":
            for x, text in ((0, "before"), (w + _GAP, "after")):
                self._label(painter, QPointF(x, 0), text)
        painter.resetTransform()
        if self._cursor is not None and self._pan_from is None:
            r = self.brush_size * self._scale / 2
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setPen(QPen(QColor(255, 255, 255, 200), 1))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(self._cursor, r, r)

    def _label(self, painter: QPainter, at: QPointF, text: str) -> None:
        """A caption in widget pixels (readable at any zoom) on a dark box at an image corner."""
        painter.save()
        painter.resetTransform()
        corner = at * self._scale + self._offset
        font = painter.font()
        font.setPixelSize(13)
        painter.setFont(font)
        box = QRectF(corner.x() + 6, corner.y() + 6, painter.fontMetrics().horizontalAdvance(text) + 12, 20)
        painter.fillRect(box, QColor(0, 0, 0, 160))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def _shown_image(self) -> QImage:
        if self.view == "original" and self._original is not None:
            return self._original
        return self._image
