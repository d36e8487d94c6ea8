"""The mask toolbar: brush or eraser, brush size, overlay opacity, show/hide, feather, clear, invert, fill, undo, redo.

Its shortcuts work anywhere in the window ([ and ] resize the brush, H hides the mask, Ctrl+Z / Ctrl+Shift+Z or
Ctrl+Y undo and redo mask changes); a text box that has the focus keeps Ctrl+Z for its own text, and the Edit menu
entries (with their shortcuts shown) still reach the mask.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QLabel, QSlider, QSpinBox, QToolBar, QWidget

from .canvas import Canvas


class MaskTools(QToolBar):
    """Acts on a :class:`Canvas`; its values are kept in QSettings by the main window."""

    def __init__(self, canvas: Canvas, parent: QWidget | None = None) -> None:
        super().__init__("Mask", parent)
        self.setObjectName("MaskTools")
        self.canvas = canvas
        group = QActionGroup(self)
        self.brush = self._tool("Brush", "B", "brush", group, "Paint the region to explain (left button)")
        self.eraser = self._tool("Eraser", "E", "eraser", group, "Erase the mask (or paint with the right button)")
        self.brush.setChecked(True)
        self.addSeparator()
        self.addWidget(QLabel(" Size "))
        self.size = self._slider(1, 96, canvas.brush_size, "Brush diameter in image pixels ([ and ] change it)")
        self.size.valueChanged.connect(self._set_size)
        self.smaller = self._action("Smaller brush", lambda: self.step_size(-1), "Smaller brush ([)", "[")
        self.larger = self._action("Larger brush", lambda: self.step_size(+1), "Larger brush (])", "]")
        for action in (self.smaller, self.larger):
            self.removeAction(action)  # keys only: the Size slider shows the value
            self.canvas.addAction(action)
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.addWidget(QLabel(" Mask opacity "))
        self.opacity = self._slider(0, 100, int(canvas.overlay_opacity * 100), "How strongly the mask is drawn")
        self.opacity.valueChanged.connect(lambda v: canvas.set_overlay_opacity(v / 100))
        self.show_mask = QAction("Show mask", self, checkable=True)
        self.show_mask.setChecked(canvas.mask_visible)
        self.show_mask.setShortcut(QKeySequence("H"))
        self.show_mask.setToolTip("Show or hide the mask overlay; the mask still applies (H)")
        self.show_mask.toggled.connect(canvas.set_mask_visible)
        canvas.mask_shown.connect(self.show_mask.setChecked)
        self.addAction(self.show_mask)
        self.addSeparator()
        self.feather_radius = QSpinBox()
        self.feather_radius.setRange(1, 32)
        self.feather_radius.setValue(4)
        self.feather_radius.setSuffix(" px")
        self.feather_radius.setToolTip("How far Feather softens the mask's edges")
        self.feather = self._action("Feather", lambda: canvas.feather(self.feather_radius.value()),
                                    "Soften the mask's edges by the radius beside it (Shift+F)", "Shift+F")
        self.addWidget(self.feather_radius)
        self.clear = self._action("Clear", canvas.clear_mask, "Remove the whole mask", "Ctrl+Shift+Backspace")
        self.invert = self._action("Invert", canvas.invert_mask, "Swap inside and outside", "Ctrl+I")
        self.fill = self._action("Fill", canvas.fill_mask, "Mask the whole image")
        self.addSeparator()
        # Fixed labels (createUndoAction's change with every command and make the toolbar jump).
        stack = canvas.undo_stack
        self.undo = self._action("Undo mask change", stack.undo, "Undo the last mask change (Ctrl+Z)")
        self.undo.setIconText("Undo")
        self.undo.setShortcut(QKeySequence("Ctrl+Z"))
        self.redo = self._action("Redo mask change", stack.redo, "Redo the mask change (Ctrl+Shift+Z or Ctrl+Y)")
        self.redo.setIconText("Redo")
        # Both spellings, each once: the platform's Redo list already holds Ctrl+Shift+Z on some desktops, and a
        # key bound twice is an "ambiguous overload" that does nothing.
        self.redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.undo.setEnabled(False)
        self.redo.setEnabled(False)
        stack.canUndoChanged.connect(self.undo.setEnabled)
        stack.canRedoChanged.connect(self.redo.setEnabled)

    def _tool(self, text: str, key: str, tool: str, group: QActionGroup, tip: str) -> QAction:
        action = QAction(text, self, checkable=True)
        action.setShortcut(QKeySequence(key))
        action.setToolTip(f"{tip} ({key})")
        action.triggered.connect(lambda: setattr(self.canvas, "tool", tool))
        group.addAction(action)
        self.addAction(action)
        return action

    def _action(self, text: str, slot, tip: str, shortcut: str | None = None) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _slider(self, low: int, high: int, value: int, tip: str) -> QSlider:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(low, high)
        slider.setValue(value)
        slider.setFixedWidth(90)
        slider.setToolTip(tip)
        self.addWidget(slider)
        return slider

    def step_size(self, direction: int) -> None:
        """One [ or ] press: 10 % of the size (at least 1 px), so ten presses take 12 px to 31, not to 11 times more."""
        value = self.size.value()
        step = max(1, round(value * 0.1))
        self.size.setValue(value + direction * step)  # the slider clamps to its range and tells the canvas

    def _set_size(self, value: int) -> None:
        self.canvas.brush_size = value
        self.canvas.update()
