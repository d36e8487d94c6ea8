"""The mask toolbar: brush or eraser, brush size, overlay opacity, clear, invert, fill, undo and redo."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QLabel, QSlider, QToolBar, QWidget

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
        self.addWidget(QLabel(" Mask opacity "))
        self.opacity = self._slider(0, 100, int(canvas.overlay_opacity * 100), "How strongly the mask is drawn")
        self.opacity.valueChanged.connect(lambda v: canvas.set_overlay_opacity(v / 100))
        self.addSeparator()
        self.clear = self._action("Clear", canvas.clear_mask, "Remove the whole mask", "Ctrl+Shift+Backspace")
        self.invert = self._action("Invert", canvas.invert_mask, "Swap inside and outside", "Ctrl+I")
        self.fill = self._action("Fill", canvas.fill_mask, "Mask the whole image")
        self.addSeparator()
        # Fixed labels (createUndoAction's change with every command and make the toolbar jump).
        stack = canvas.undo_stack
        self.undo = self._action("Undo", stack.undo, "Undo the last mask change (Ctrl+Z)")
        self.undo.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo = self._action("Redo", stack.redo, "Redo (Ctrl+Shift+Z)")
        self.redo.setShortcuts([QKeySequence.StandardKey.Redo, QKeySequence("Ctrl+Shift+Z")])
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

    def _set_size(self, value: int) -> None:
        self.canvas.brush_size = value
        self.canvas.update()
