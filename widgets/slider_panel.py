"""Sliders on chosen units: scale from -1x to 3x, switch off, or set a value; local to the mask or everywhere; on
diffusion models, only within a window of denoising steps (``set_step_count``; the knob rows use the same control).

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

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QApplication,
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

from .step_window import StepWindow

SCALE_MIN, SCALE_MAX = -1.0, 3.0
_STEPS = 100  # slider ticks per 1x
#: How a switched-off (or set) slider looks: a grey groove and a hollow handle.
_INACTIVE = ("QSlider::groove:horizontal { background: #8a8a8a; height: 3px; }"
             "QSlider::handle:horizontal { background: transparent; border: 1px solid #8a8a8a;"
             " width: 10px; margin: -5px 0; border-radius: 5px; }")


class FocusWheelSlider(QSlider):
    """A slider that takes the wheel only when focused: scrolling the list never changes a unit in passing."""

    def __init__(self, orientation: Qt.Orientation, parent: QWidget | None = None) -> None:
        super().__init__(orientation, parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # click or Tab to focus, then the wheel adjusts it

    def wheelEvent(self, event) -> None:
        if self.hasFocus():
            super().wheelEvent(event)
            return
        area = self.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is None:
            event.ignore()
            return
        # The list scrolls instead, whether or not Qt would propagate this event (synthetic ones do not).
        QApplication.sendEvent(area.verticalScrollBar(), event)
        event.accept()


class UnitSlider(QWidget):
    """One unit's row: name, scale slider, its value, Off, Set (with a value), remove."""

    changed = Signal()
    remove_requested = Signal(object)  # self
    focused = Signal(int)  # unit

    def __init__(self, layer: str, unit: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layer, self.unit = layer, unit
        self.name = QPushButton(f"{layer}:{unit}")
        self.name.setFlat(True)
        self.name.setFixedWidth(96)  # the same width in every row, so the sliders line up
        self.name.setToolTip(f"{layer} unit {unit}: click to show where it fires")
        self.name.clicked.connect(lambda: self.focused.emit(self.unit))
        self.slider = FocusWheelSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(SCALE_MIN * _STEPS), int(SCALE_MAX * _STEPS))
        self.slider.setValue(_STEPS)
        self.slider.setToolTip("Scale the unit from -1x to 3x (1x: unchanged)")
        self.value = QLabel("×1.00")
        self.value.setFixedWidth(48)
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
        self.steps = StepWindow()  # the denoising steps the edit acts in (shown only on models with steps)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((self.name, 0), (self.slider, 1), (self.value, 0), (self.off, 0), (self.set, 0),
                                (self.set_value, 0), (self.steps, 0), (remove, 0)):
            layout.addWidget(widget, stretch)
        self.slider.valueChanged.connect(self._on_change)
        self.slider.installEventFilter(self)  # a press on a switched-off slider switches it back on
        self.off.toggled.connect(self._on_change)
        self.set.toggled.connect(self._on_change)
        self.set_value.valueChanged.connect(self._on_change)
        self.steps.changed.connect(self._on_change)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.slider and event.type() == QEvent.Type.MouseButtonPress and self.mode() != "scale":
            self.off.setChecked(False)  # back to the slider's scale; the press then drags it
            self.set.setChecked(False)
        return super().eventFilter(watched, event)

    def mode(self) -> str:
        return "off" if self.off.isChecked() else "set" if self.set.isChecked() else "scale"

    def scale(self) -> float:
        return self.slider.value() / _STEPS

    def edit(self) -> UnitEdit:
        steps = self.steps.steps()
        if self.off.isChecked():
            return UnitEdit(self.layer, self.unit, "off", 0.0, steps=steps)
        if self.set.isChecked():
            return UnitEdit(self.layer, self.unit, "set", float(self.set_value.value()), steps=steps)
        return UnitEdit(self.layer, self.unit, "scale", self.scale(), steps=steps)

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
        self.steps.set_window(edit.steps)  # shown without emitting
        for widget in (self.slider, self.off, self.set, self.set_value):
            widget.blockSignals(False)
        self._refresh()

    def reset(self) -> None:
        self.set_edit(UnitEdit(self.layer, self.unit, "scale", 1.0))

    def _refresh(self) -> None:
        mode = self.mode()
        # An Off or Set slider stays enabled (dragging it switches it back on) but reads as inactive.
        self.slider.setProperty("inactive", mode != "scale")
        self.slider.setStyleSheet(_INACTIVE if mode != "scale" else "")
        self.set_value.setEnabled(mode == "set")
        self.value.setText({"off": "off", "set": "set"}.get(mode, f"×{self.scale():.2f}"))
        self.value.setStyleSheet("color: #c0392b; font-weight: bold;" if mode == "off" else "")

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
        self.step_count: int | None = None  # the sample's denoising steps (None: the model has none)
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
        self.hold.setToolTip("Press and hold to see the model as loaded: no unit edit, no concept edit")
        self.hold.pressed.connect(lambda: self.hold_original.emit(True))
        self.hold.released.connect(lambda: self.hold_original.emit(False))
        self.compare = QCheckBox("Before | after")
        self.compare.setToolTip("Show the model as loaded and the edited image side by side")
        self.sides = QLabel("Before: the model as loaded. After: no edits yet.")
        self.sides.setWordWrap(True)
        self.sides.setStyleSheet("color: palette(mid);")
        self.compare.toggled.connect(self.side_by_side)
        self.empty = QLabel("No sliders yet: double-click units in the ranking table.")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.list = QVBoxLayout()
        self.list.setSpacing(2)
        holder = self.holder = QWidget()
        inner = QVBoxLayout(holder)
        inner.addWidget(self.empty)
        inner.addLayout(self.list)
        inner.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        # Always there, so the x column does not move when the list grows past the view.
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.scroll = scroll
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
        layout.addWidget(self.sides)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)

    def show_sides(self, unit_edits: int, concept_edits: list[str]) -> None:
        """Say which edits each side of Before | after (and Hold) has."""
        parts = [f"{unit_edits} unit edit{'s' if unit_edits != 1 else ''}"] if unit_edits else []
        if concept_edits:
            parts.append("concept edits: " + ", ".join(concept_edits))
        after = " and ".join(parts) if parts else "no edits yet"
        self.sides.setText(f"Before: the model as loaded (no edits). After: {after}.")

    def edits(self) -> list[UnitEdit]:
        return [row.edit() for row in self.rows]

    def set_step_count(self, steps: int | None) -> None:
        """The current sample's denoising steps: each row offers its window over them (None hides the windows)."""
        self.step_count = steps
        for row in self.rows:
            row.steps.set_total(steps)

    def row(self, layer: str, unit: int) -> UnitSlider | None:
        return next((r for r in self.rows if (r.layer, r.unit) == (layer, unit)), None)

    def add_units(self, layer: str, units: Sequence[int]) -> None:
        """A slider per unit not already shown (at 1x, so the image does not change yet)."""
        added = False
        self.holder.setUpdatesEnabled(False)  # one layout and one paint for the whole batch
        for unit in units:
            if self.row(layer, int(unit)) is None:
                self._add_row(UnitSlider(layer, int(unit)))
                added = True
        self.holder.setUpdatesEnabled(True)
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
        self.holder.setUpdatesEnabled(False)
        for row in list(self.rows):
            self._drop(row)
        for edit in edits:
            row = UnitSlider(edit.layer, edit.unit)
            row.set_edit(edit)
            self._add_row(row)
        self.holder.setUpdatesEnabled(True)

    def apply_to_units(self, layer: str, units: Sequence[int], op: str, value: float = 0.0) -> None:
        """Give each of ``units`` the edit ``op`` (``off`` or ``set`` to ``value``), adding sliders where needed;
        emits one change, so the image renders once."""
        for unit in units:
            row = self.row(layer, int(unit))
            if row is None:
                row = UnitSlider(layer, int(unit))
                self._add_row(row)
            window = row.steps.steps()  # the row's step window stays
            row.set_edit(UnitEdit(layer, int(unit), op, float(value), steps=window))  # type: ignore[arg-type]
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
        row.steps.set_total(self.step_count)
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
