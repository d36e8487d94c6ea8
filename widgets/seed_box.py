"""The seed box: any seed the models take (0 to 2**32-1), arrows and Up/Down step it, and text that is not a seed
gets one sentence instead of being silently changed into another number.

    box = SeedBox()
    box.valueChanged.connect(render)       # an int, also above 2**31
    box.invalid.connect(status_bar_show)   # "'abc' is not a seed: seeds are whole numbers from 0 to 4294967295."
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QAbstractSpinBox, QWidget

from studio.seeds import SEED_MAX, SeedError, parse_seed


class SeedBox(QAbstractSpinBox):
    """A spin box over Python ints (QSpinBox stops at 2**31-1); checks what was typed when editing finishes."""

    valueChanged = Signal(object)  # the new seed (object: Qt's int signals stop at 2**31-1)
    invalid = Signal(str)  # one sentence saying why the typed text is not a seed

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._value = 0
        self.lineEdit().setText("0")
        self.setAccelerated(True)
        self.setToolTip(f"The seed of the sample: a whole number from 0 to {SEED_MAX} (Enter to use it)")
        self.editingFinished.connect(self._commit)

    def value(self) -> int:
        return self._value

    def setValue(self, value: int) -> None:
        value = min(max(int(value), 0), SEED_MAX)
        self.lineEdit().setText(str(value))
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def minimum(self) -> int:
        return 0

    def maximum(self) -> int:
        return SEED_MAX

    # -- QAbstractSpinBox ---------------------------------------------------------------------------------------
    def stepBy(self, steps: int) -> None:
        self._commit()  # typed text first, so Up after typing 41 gives 42
        self.setValue(self._value + steps)
        self.selectAll()

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self._value > 0:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        if self._value < SEED_MAX:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        return flags

    def validate(self, text: str, pos: int) -> object:
        return QValidator.State.Acceptable, text, pos  # any text may be typed; Enter checks it and says why not

    def fixup(self, text: str) -> str:
        return text

    def _commit(self) -> None:
        text = self.lineEdit().text()
        if text.strip() == str(self._value):
            return
        try:
            seed = parse_seed(text)
        except SeedError as error:
            self.lineEdit().setText(str(self._value))  # back to the seed that is shown
            self.invalid.emit(str(error))
            return
        self.setValue(seed)
