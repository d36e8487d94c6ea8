"""The denoising-step window of an edit: "steps 0 to 25" as two spin boxes, shown only on models with steps.

The window is half-open ``[start, stop)`` in the full schedule's steps, as ``UnitEdit.steps`` and
``KnobEdit.steps`` are; the whole schedule reads as ``None`` (no window), so an edit saved without a window and one
set back to the whole range are the same edit::

    window = StepWindow()
    window.set_total(25)          # a diffusion sample of 25 steps; None hides the control (GANs)
    window.set_window((5, 25))    # shown without emitting
    window.steps()                # (5, 25); (0, 25) reads as None
    window.changed.connect(...)   # emits the new window (tuple or None) when the user changes a box
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QWidget


class StepWindow(QWidget):
    """Two spin boxes, "steps [start] to [stop]", for the denoising steps an edit acts in."""

    changed = Signal(object)  # tuple[int, int] | None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.total: int | None = None
        self._kept: tuple[int, int] | None = None  # the window while the control is hidden
        self.start = QSpinBox()
        self.stop = QSpinBox()
        self.start.setToolTip("The first denoising step this edit acts in (0: from the start)")
        self.stop.setToolTip("The step it stops before (the step count: to the end). Early steps shape the layout, "
                             "late ones the details")
        for box in (self.start, self.stop):
            box.setKeyboardTracking(False)  # typing "12" is one change, not "1" then "12"
            box.valueChanged.connect(self._on_change)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("steps"))
        layout.addWidget(self.start)
        layout.addWidget(QLabel("to"))
        layout.addWidget(self.stop)
        self.setVisible(False)

    def set_total(self, total: int | None) -> None:
        """The sample's step count (None: the model has no steps, the control hides); keeps the window shown."""
        window = self.steps()
        self.total = int(total) if total else None
        self.setVisible(self.total is not None)
        if self.total is not None:
            self._show(window)

    def set_window(self, steps: tuple[int, int] | None) -> None:
        """Show ``steps`` (None: every step) without emitting."""
        self._show(steps)

    def steps(self) -> tuple[int, int] | None:
        """The window the boxes show; None when they cover every step (or the model has none)."""
        if self.total is None:
            return self._kept
        start, stop = self.start.value(), self.stop.value()
        return None if start == 0 and stop >= self.total else (start, stop)

    def _show(self, steps: tuple[int, int] | None) -> None:
        self._kept = steps  # shown again as it was when the total comes back
        if self.total is None:
            return
        for box in (self.start, self.stop):
            box.blockSignals(True)
        top = max(self.total, steps[1] if steps else 0)  # a saved window past this sample's steps stays as saved
        self.start.setRange(0, top - 1)
        self.stop.setRange(1, top)
        start, stop = steps if steps else (0, self.total)
        self.start.setValue(start)
        self.stop.setValue(stop)
        for box in (self.start, self.stop):
            box.blockSignals(False)

    def _on_change(self, _value: int) -> None:
        if self.sender() is self.start and self.start.value() >= self.stop.value():
            self.stop.blockSignals(True)
            self.stop.setValue(self.start.value() + 1)  # the window never becomes empty
            self.stop.blockSignals(False)
        elif self.sender() is self.stop and self.stop.value() <= self.start.value():
            self.start.blockSignals(True)
            self.start.setValue(self.stop.value() - 1)
            self.start.blockSignals(False)
        self._kept = self.steps()
        self.changed.emit(self._kept)
