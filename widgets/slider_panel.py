"""Sliders on chosen units: scale from -1x to 3x, switch off, or set a value; local to the mask or everywhere.

The panel only writes plain edits (``edits_changed``) into the window's state; the live renderer renders the
newest state, so a burst of drags never queues one render per value. It also follows the state
(``show_edits``), so a restore or a script that sets the edits rebuilds the sliders without a change coming back::

    panel = SliderPanel()
    panel.add_units("blocks.1", [17, 4])
    panel.rows[0].slider.setValue(250)       # x2.50 -> edits_changed([UnitEdit("blocks.1", 17, "scale", 2.5), ...])
    panel.edits()
"""
from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.hooks import UnitEdit

SCALE_MIN, SCALE_MAX = -1.0, 3.0
_STEPS = 100  # slider ticks per 1x


class UnitSlider(QWidget):
    """One unit's row: name, scale slider, its value, Off, Set (with a value), remove."""

    changed = Signal()
    remove_requested = Signal(object)  # self
    focused = Signal(int)  # unit

    def __init__(self, layer: str, unit: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layer, self.unit = layer, unit
        self.name = QPushButton(f"unit {unit}")
        self.name.setFlat(True)
        self.name.setToolTip(f"{layer} unit {unit}: click to show where it fires")
        self.name.clicked.connect(lambda: self.focused.emit(self.unit))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(SCALE_MIN * _STEPS), int(SCALE_MAX * _STEPS))
        self.slider.setValue(_STEPS)
        self.slider.setToolTip("Scale the unit from -1x to 3x (1x: unchanged)")
        self.value = QLabel("×1.00")
        self.value.setMinimumWidth(44)
        self.off = QToolButton()
        self.off.setText("Off")
        self.off.setCheckable(True)
        self.off.setToolTip("Switch the unit off")
        self.set = QToolButton()
        self.set.setText("Set")
        self.set.setCheckable(True)
        self.set.setToolTip("Set the unit to a constant value everywhere")
        self.set_value = QDoubleSpinBox()
        self.set_value.setRange(-100.0, 100.0)
        self.set_value.setSingleStep(0.5)
        self.set_value.setValue(1.0)
        self.set_value.setEnabled(False)
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this slider (its edit goes away)")
        remove.clicked.connect(lambda: self.remove_requested.emit(self))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((self.name, 0), (self.slider, 1), (self.value, 0), (self.off, 0), (self.set, 0),
                                (self.set_value, 0), (remove, 0)):
            layout.addWidget(widget, stretch)
        self.slider.valueChanged.connect(self._on_change)
        self.off.toggled.connect(self._on_change)
        self.set.toggled.connect(self._on_change)
        self.set_value.valueChanged.connect(self._on_change)

    def scale(self) -> float:
        return self.slider.value() / _STEPS

    def edit(self) -> UnitEdit:
        if self.off.isChecked():
            return UnitEdit(self.layer, self.unit, "off", 0.0)
        if self.set.isChecked():
            return UnitEdit(self.layer, self.unit, "set", float(self.set_value.value()))
        return UnitEdit(self.layer, self.unit, "scale", self.scale())

    def set_edit(self, edit: UnitEdit) -> None:
        """Show ``edit`` without emitting one change per control."""
        for widget in (self.slider, self.off, self.set, self.set_value):
            widget.blockSignals(True)
        self.off.setChecked(edit.op == "off")
        self.set.setChecked(edit.op == "set")
        if edit.op == "set":
            self.set_value.setValue(edit.value)
        elif edit.op == "scale":
            self.slider.setValue(round(min(max(edit.value, SCALE_MIN), SCALE_MAX) * _STEPS))
        for widget in (self.slider, self.off, self.set, self.set_value):
            widget.blockSignals(False)
        self._refresh()

    def reset(self) -> None:
        self.set_edit(UnitEdit(self.layer, self.unit, "scale", 1.0))

    def _refresh(self) -> None:
        mode = "off" if self.off.isChecked() else "set" if self.set.isChecked() else "scale"
        self.slider.setEnabled(mode == "scale")
        self.set_value.setEnabled(mode == "set")
        self.value.setText({"off": "off", "set": "set"}.get(mode, f"×{self.scale():.2f}"))

    def _on_change(self, *_) -> None:
        if self.sender() is self.off and self.off.isChecked():
            self.set.blockSignals(True)
            self.set.setChecked(False)
            self.set.blockSignals(False)
        if self.sender() is self.set and self.set.isChecked():
            self.off.blockSignals(True)
            self.off.setChecked(False)
            self.off.blockSignals(False)
        self._refresh()
        self.changed.emit()


class SliderPanel(QWidget):
    """The sliders, the local switch, Reset all, hold-for-original and side-by-side."""

    edits_changed = Signal(list)  # [UnitEdit, ...]
    local_changed = Signal(bool)
    hold_original = Signal(bool)
    side_by_side = Signal(bool)
    unit_focused = Signal(str, int)  # layer, unit: show its activation

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[UnitSlider] = []
        self.local = QCheckBox("Only inside the mask")
        self.local.setToolTip("Apply the edits only inside the painted mask (local relighting)")
        self.local.toggled.connect(self.local_changed)
        self.reset_button = QPushButton("Reset all")
        self.reset_button.setToolTip("Every slider back to 1x")
        self.reset_button.clicked.connect(self.reset_all)
        self.remove_all_button = QPushButton("Remove all sliders")
        self.remove_all_button.setToolTip("Remove every slider (their edits go away)")
        self.remove_all_button.clicked.connect(self.remove_all)
        self.hold = QPushButton("Hold: original")
        self.hold.setToolTip("Press and hold to see the image without edits")
        self.hold.pressed.connect(lambda: self.hold_original.emit(True))
        self.hold.released.connect(lambda: self.hold_original.emit(False))
        self.compare = QCheckBox("Before | after")
        self.compare.setToolTip("Show the original and the edited image side by side")
        self.compare.toggled.connect(self.side_by_side)
        self.empty = QLabel("No sliders yet: double-click units in the ranking table.")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.list = QVBoxLayout()
        self.list.setSpacing(2)
        holder = QWidget()
        inner = QVBoxLayout(holder)
        inner.addWidget(self.empty)
        inner.addLayout(self.list)
        inner.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        top = QHBoxLayout()
        top.addWidget(self.local)
        top.addStretch(1)
        top.addWidget(self.compare)
        buttons = QHBoxLayout()
        buttons.addWidget(self.hold)
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.remove_all_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)

    def edits(self) -> list[UnitEdit]:
        return [row.edit() for row in self.rows]

    def row(self, layer: str, unit: int) -> UnitSlider | None:
        return next((r for r in self.rows if (r.layer, r.unit) == (layer, unit)), None)

    def add_units(self, layer: str, units: Sequence[int]) -> None:
        """A slider per unit not already shown (at 1x, so the image does not change yet)."""
        added = False
        for unit in units:
            if self.row(layer, int(unit)) is None:
                self._add_row(UnitSlider(layer, int(unit)))
                added = True
        if added:
            self.edits_changed.emit(self.edits())

    def set_edits(self, edits: Sequence[UnitEdit]) -> None:
        """Replace the sliders with ``edits``, as the user would; emits one change."""
        self.show_edits(edits)
        self.edits_changed.emit(self.edits())

    def show_edits(self, edits: Sequence[UnitEdit]) -> None:
        """Follow the state's edits: rebuild the sliders only when they show something else; emits nothing."""
        if self.edits() == list(edits):
            return
        for row in list(self.rows):
            self._drop(row)
        for edit in edits:
            row = UnitSlider(edit.layer, edit.unit)
            row.set_edit(edit)
            self._add_row(row)

    def apply_to_units(self, layer: str, units: Sequence[int], op: str, value: float = 0.0) -> None:
        """Give each of ``units`` the edit ``op`` (``off`` or ``set`` to ``value``), adding sliders where needed;
        emits one change, so the image renders once."""
        for unit in units:
            row = self.row(layer, int(unit))
            if row is None:
                row = UnitSlider(layer, int(unit))
                self._add_row(row)
            row.set_edit(UnitEdit(layer, int(unit), op, float(value)))  # type: ignore[arg-type]
        if units:
            self.edits_changed.emit(self.edits())

    def remove_all(self) -> None:
        if self.rows:
            for row in list(self.rows):
                self._drop(row)
            self.edits_changed.emit(self.edits())

    def reset_all(self) -> None:
        for row in self.rows:
            row.reset()
        self.edits_changed.emit(self.edits())

    def _add_row(self, row: UnitSlider) -> None:
        row.changed.connect(lambda: self.edits_changed.emit(self.edits()))
        row.remove_requested.connect(self._remove)
        row.focused.connect(lambda unit, layer=row.layer: self.unit_focused.emit(layer, unit))
        self.rows.append(row)
        self.list.addWidget(row)
        self.empty.setVisible(False)

    def _drop(self, row: UnitSlider) -> None:
        self.rows.remove(row)
        self.list.removeWidget(row)
        row.deleteLater()
        self.empty.setVisible(not self.rows)

    def _remove(self, row: UnitSlider) -> None:
        self._drop(row)
        self.edits_changed.emit(self.edits())
