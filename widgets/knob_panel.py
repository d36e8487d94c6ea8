"""The Knobs panel: the app's way to "switch this off". Paint where, pick a knob, drag one strength slider.

Each row is one :class:`studio.knobs.KnobEdit` (a knob, its own mask, a strength); several rows stack on one image.
The panel only writes plain edits (``knobs_changed``); the window posts them to the live renderer. Every change
(add, strength, new mask, remove) is one command on the shared undo stack, so Ctrl+Z undoes it like a stroke::

    panel = KnobPanel(canvas.undo_stack, mask=lambda: state.mask)
    panel.set_knobs(shipped_knobs(generator), shipped=True)   # "lamp off", "lamp on" first
    panel.apply_button.click()                                # the chosen knob on the painted mask
    panel.rows[0].slider.setValue(100)                        # strength 1.0 -> knobs_changed([KnobEdit(...)])
    panel.set_step_count(25)                                  # diffusion: each row shows its denoising-step window
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.knobs import KnobEdit, shipped_knobs

from .jobs import JobRunner
from .step_window import StepWindow

STRENGTH_MIN, STRENGTH_MAX = -1.0, 3.0
_STEPS = 100  # slider ticks per 1.0 of strength
_STRENGTH_ID = 0x6b6e  # undo commands of consecutive strength changes of one row merge into one


def strength_text(strength: float) -> str:
    return f"{strength:.2f}"


class KnobRow(QWidget):
    """One applied knob: its name, strength slider (0 = as is, 1 = like the examples), its mask, remove."""

    strength_moved = Signal(object, float)  # self, strength
    window_moved = Signal(object, object)  # self, (start, stop) | None
    remask_requested = Signal(object)  # self
    remove_requested = Signal(object)  # self

    def __init__(self, edit: KnobEdit, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = edit
        self.name = QLabel(edit.knob.name)
        self.name.setMinimumWidth(70)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(STRENGTH_MIN * _STEPS), int(STRENGTH_MAX * _STEPS))
        self.slider.setValue(round(edit.strength * _STEPS))
        self.slider.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the wheel moves it only when focused
        self.slider.setToolTip("0: as it is; 1: like the examples; above 1: stronger; below 0: the other way")
        self.value = QLabel(strength_text(edit.strength))
        self.value.setMinimumWidth(36)
        self.remask = QToolButton()
        self.remask.setText("Mask")
        self.remask.setToolTip("Apply this knob where the mask is painted now")
        self.remask.clicked.connect(lambda: self.remask_requested.emit(self))
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setToolTip("Remove this knob from the image")
        self.remove.clicked.connect(lambda: self.remove_requested.emit(self))
        # the same window as a unit edit's: only in these denoising steps (hidden on models without steps)
        self.steps = StepWindow()
        self.steps.set_window(edit.steps)
        self.steps.changed.connect(lambda steps: self.window_moved.emit(self, steps))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((self.name, 0), (self.slider, 1), (self.value, 0), (self.steps, 0), (self.remask, 0),
                                (self.remove, 0)):
            layout.addWidget(widget, stretch)
        self.slider.valueChanged.connect(lambda v: self.strength_moved.emit(self, v / _STEPS))
        self.drag = 0  # counts drags: the values of one drag merge into one undo step, the next drag is another
        self.slider.sliderPressed.connect(self._next_drag)
        self.slider.sliderReleased.connect(self._next_drag)

    def _next_drag(self) -> None:
        self.drag += 1

    def show_edit(self, edit: KnobEdit) -> None:
        """Show ``edit`` without emitting (undo and redo come through here)."""
        self.edit = edit
        self.slider.blockSignals(True)
        self.slider.setValue(round(edit.strength * _STEPS))
        self.slider.blockSignals(False)
        self.value.setText(strength_text(edit.strength))
        self.steps.set_window(edit.steps)


class _KnobsCommand(QUndoCommand):
    """One change of the applied knobs, undone by restoring the list before it."""

    def __init__(self, panel: "KnobPanel", before: list[KnobEdit], after: list[KnobEdit], text: str,
                 merge_row: tuple | None = None) -> None:
        super().__init__(text)
        self.panel, self.before, self.after, self.merge_row = panel, before, after, merge_row
        self._pushed = False

    def id(self) -> int:
        return _STRENGTH_ID if self.merge_row is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, _KnobsCommand) or other.merge_row != self.merge_row:
            return False
        self.after = other.after
        return True

    def redo(self) -> None:
        if self._pushed:
            self.panel._show(self.after)
        self._pushed = True  # the first redo is the push: the panel already shows ``after``

    def undo(self) -> None:
        self.panel._show(self.before)


class KnobPanel(QWidget):
    """Pick a knob, apply it on the painted mask, one strength slider per applied knob; undoable."""

    knobs_changed = Signal(list)  # [KnobEdit, ...]
    message = Signal(str)  # one sentence for the status bar
    learn_requested = Signal()  # "make a knob from examples": the window shows the Seeds tab

    def __init__(self, undo_stack: QUndoStack, mask: Callable[[], torch.Tensor | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = undo_stack
        self.current_mask = mask
        self.available: list[Any] = []  # studio.knobs.Knob, shipped ones first
        self.shipped_count = 0
        self.rows: list[KnobRow] = []
        self.step_count: int | None = None  # the sample's denoising steps (None: the model has none)
        title = QLabel("<b>Switch something off (or on)</b>")
        steps = QLabel("1. Paint over the thing in the image.  2. Pick a knob.  3. Press Apply, then drag "
                       "Strength: 0 is as it is, 1 is like the knob's examples.")
        steps.setWordWrap(True)
        self.picker = QComboBox()
        self.picker.setToolTip("Knobs shipped with this model come first, then the ones you learned")
        self.apply_button = QPushButton("Apply to painted region")
        self.apply_button.setToolTip("Add the chosen knob where the mask is painted (strength 1)")
        self.apply_button.clicked.connect(self.apply_chosen)
        pick = QHBoxLayout()
        pick.addWidget(self.picker, 1)
        pick.addWidget(self.apply_button)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.rows_box = QVBoxLayout()
        self.rows_box.setContentsMargins(0, 0, 0, 0)
        self.rows_box.addStretch(1)
        holder = QWidget()
        holder.setLayout(self.rows_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        self.remove_all = QPushButton("Remove all knobs")
        self.remove_all.clicked.connect(lambda: self._change([], "Remove all knobs"))
        self.learn_button = QPushButton("Make a knob from examples…")
        self.learn_button.setToolTip("Mark a few seeds where the thing is present and where it is as wanted, "
                                     "then learn")
        self.learn_button.clicked.connect(self.learn_requested.emit)
        bottom = QHBoxLayout()
        bottom.addWidget(self.remove_all)
        bottom.addStretch(1)
        bottom.addWidget(self.learn_button)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(steps)
        layout.addLayout(pick)
        layout.addWidget(self.hint)
        layout.addWidget(scroll, 1)
        layout.addLayout(bottom)
        self._refresh_hint()

    # -- knobs to pick ----------------------------------------------------------------------------------------
    def set_knobs(self, knobs: Sequence[Any], shipped: bool = False) -> None:
        """The knobs to pick from; ``shipped`` replaces the model's shipped ones (listed first)."""
        learned = self.available[self.shipped_count:]
        if shipped:
            self.available, self.shipped_count = list(knobs) + learned, len(knobs)
        else:
            self.available = self.available[:self.shipped_count] + list(knobs)
        self._fill_picker()

    def load_shipped(self, jobs: JobRunner) -> None:
        """Ask the model's worker for the knobs shipped with the loaded model (listed first when they come)."""
        jobs.submit(shipped_knobs, lambda knobs: self.set_knobs(knobs, shipped=True), self.message.emit)

    def add_knob(self, knob: Any) -> None:
        """A newly learned knob: listed after the shipped ones and chosen."""
        self.available = [k for k in self.available if k is not knob] + [knob]
        self._fill_picker()
        self.picker.setCurrentIndex(len(self.available) - 1)

    def clear_knobs(self) -> None:
        """Another model: its knobs mean nothing here."""
        self.available, self.shipped_count = [], 0
        self._fill_picker()
        self._show([])
        self.knobs_changed.emit([])

    def chosen(self) -> Any:
        index = self.picker.currentIndex()
        return self.available[index] if 0 <= index < len(self.available) else None

    def _fill_picker(self) -> None:
        self.picker.blockSignals(True)
        self.picker.clear()
        for i, knob in enumerate(self.available):
            self.picker.addItem(knob.name if i < self.shipped_count else f"{knob.name} (learned)")
        self.picker.blockSignals(False)
        self._refresh_hint()

    # -- applied knobs ----------------------------------------------------------------------------------------
    def edits(self) -> list[KnobEdit]:
        return [row.edit for row in self.rows]

    def apply_chosen(self) -> KnobEdit | None:
        """Add the chosen knob on the current mask at strength 1 (undoable); None with a sentence if it cannot."""
        knob, mask = self.chosen(), self.current_mask()
        if knob is None:
            self.message.emit("No knob to apply yet: this model has none shipped; make one from examples.")
            return None
        if mask is None or not bool((mask > 0).any()):
            self.message.emit("Paint over the thing to change first: the knob applies where the mask is.")
            return None
        edit = KnobEdit(knob, mask.clone(), strength=1.0)
        self._change(self.edits() + [edit], f"Apply knob {knob.name}")
        return edit

    def set_step_count(self, steps: int | None) -> None:
        """The current sample's denoising steps: each row offers its window over them (None hides the windows)."""
        self.step_count = steps
        for row in self.rows:
            row.steps.set_total(steps)

    def set_edits(self, edits: Sequence[KnobEdit]) -> None:
        """Show ``edits`` (a reopened session) without an undo step."""
        self._show(list(edits))

    def _change(self, after: list[KnobEdit], text: str, merge_row: tuple | None = None) -> None:
        before = self.edits()
        self._show(after)
        self.undo_stack.push(_KnobsCommand(self, before, after, text, merge_row))

    def _show(self, edits: list[KnobEdit]) -> None:
        same = len(edits) == len(self.rows) and all(r.edit.knob is e.knob for r, e in zip(self.rows, edits))
        if same:  # a strength or mask change: keep the rows (a slider being dragged must stay)
            for row, edit in zip(self.rows, edits):
                row.show_edit(edit)
        else:
            for row in self.rows:
                self.rows_box.removeWidget(row)
                row.deleteLater()
            self.rows = []
            for edit in edits:
                row = KnobRow(edit)
                row.steps.set_total(self.step_count)
                row.strength_moved.connect(self._on_strength)
                row.window_moved.connect(self._on_window)
                row.remask_requested.connect(self._on_remask)
                row.remove_requested.connect(self._on_remove)
                self.rows_box.insertWidget(self.rows_box.count() - 1, row)
                self.rows.append(row)
        self._refresh_hint()
        self.knobs_changed.emit(self.edits())

    def _on_strength(self, row: KnobRow, strength: float) -> None:
        index = self.rows.index(row)
        after = self.edits()
        after[index] = KnobEdit(row.edit.knob, row.edit.mask, strength=strength, steps=row.edit.steps)
        self._change(after, f"Strength of {row.edit.knob.name}", merge_row=(index, row.drag))

    def _on_window(self, row: KnobRow, steps: tuple[int, int] | None) -> None:
        after = self.edits()
        after[self.rows.index(row)] = KnobEdit(row.edit.knob, row.edit.mask, row.edit.strength, steps)
        shown = f"steps {steps[0]} to {steps[1]}" if steps else "every step"
        self._change(after, f"Window of {row.edit.knob.name}: {shown}")

    def _on_remask(self, row: KnobRow) -> None:
        mask = self.current_mask()
        if mask is None or not bool((mask > 0).any()):
            self.message.emit("Paint the new region first: the knob moves to where the mask is.")
            return
        after = self.edits()
        after[self.rows.index(row)] = KnobEdit(row.edit.knob, mask.clone(), strength=row.edit.strength,
                                               steps=row.edit.steps)
        self._change(after, f"New region for {row.edit.knob.name}")

    def _on_remove(self, row: KnobRow) -> None:
        self._change([e for r, e in zip(self.rows, self.edits()) if r is not row], f"Remove knob {row.edit.knob.name}")

    def _refresh_hint(self) -> None:
        self.remove_all.setEnabled(bool(self.rows))
        if self.rows:
            self.hint.setText(f"{len(self.rows)} knob{'s' if len(self.rows) != 1 else ''} on this image, each on "
                              "its own region. Ctrl+Z undoes.")
        elif not self.available:
            self.hint.setText("This model has no knobs yet: make one from examples (button below).")
        else:
            self.hint.setText("")
