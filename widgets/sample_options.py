"""The sample-options controls: one per option the open model declares (class picker, psi slider, noise mode).

    bar = SampleOptionsBar()
    shown = bar.set_options(generator.sample_options())   # False (and nothing built) for families without any
    bar.changed.connect(window.generate)
    sample = generator.sample(seed, prompt, **bar.values())
    bar.set_values(session_sample.options)                 # a restored session's class/psi/noise, no signal

Controls are built from each option's description (name, type, range, default), never from the family's name.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSlider, QSpinBox, QWidget

from models.base import SampleOption

_SLIDER_STEPS = 100  # slider positions per unit of a float option (psi in steps of 0.01)
_MAX_LISTED = 1000  # integer options with more values than this get a spin box instead of a list


class _FloatSlider(QWidget):
    """A horizontal slider over a float range, with its value shown beside it."""

    value_changed = Signal()

    def __init__(self, option: SampleOption) -> None:
        super().__init__()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(option.minimum * _SLIDER_STEPS), round(option.maximum * _SLIDER_STEPS))
        self.slider.setMinimumWidth(120)
        self.readout = QLabel()
        self.readout.setMinimumWidth(36)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider)
        layout.addWidget(self.readout)
        self.slider.valueChanged.connect(self._moved)
        self.set_value(option.default)

    def _moved(self, _: int) -> None:
        self.readout.setText(f"{self.value():.2f}")
        self.value_changed.emit()

    def value(self) -> float:
        return self.slider.value() / _SLIDER_STEPS

    def set_value(self, value: float) -> None:
        self.slider.setValue(round(float(value) * _SLIDER_STEPS))
        self.readout.setText(f"{self.value():.2f}")


class SampleOptionsBar(QWidget):
    """Controls for the sample options of the open model; ``changed`` when the user changes one."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._options: list[SampleOption] = []
        self.controls: dict[str, QWidget] = {}

    def set_options(self, options: list[SampleOption]) -> bool:
        """Build one control per option (defaults selected); True when there is any to show."""
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self._options, self.controls = list(options), {}
        for option in self._options:
            control = self._control(option)
            control.setObjectName(f"sample-option-{option.name}")
            control.setToolTip(option.help or option.label)
            label = QLabel(f" {option.label} ")
            label.setToolTip(option.help or option.label)
            self._layout.addWidget(label)
            self._layout.addWidget(control)
            self.controls[option.name] = control
        return bool(self._options)

    def _control(self, option: SampleOption) -> QWidget:
        if option.kind == "float":
            slider = _FloatSlider(option)
            slider.value_changed.connect(self.changed)
            return slider
        if option.kind == "int" and option.maximum - option.minimum >= _MAX_LISTED:
            spin = QSpinBox()
            spin.setRange(int(option.minimum), int(option.maximum))
            spin.setValue(int(option.default))
            spin.valueChanged.connect(lambda _: self.changed.emit())
            return spin
        combo = QComboBox()
        items = ([str(v) for v in range(int(option.minimum), int(option.maximum) + 1)] if option.kind == "int"
                 else list(option.choices))
        combo.addItems(items)
        combo.setCurrentText(str(option.default))
        combo.currentIndexChanged.connect(lambda _: self.changed.emit())
        return combo

    def values(self) -> dict[str, Any]:
        """The chosen value of every option, by option name (what ``Generator.sample`` takes)."""
        out: dict[str, Any] = {}
        for option in self._options:
            control = self.controls[option.name]
            if isinstance(control, _FloatSlider):
                out[option.name] = control.value()
            elif isinstance(control, QSpinBox):
                out[option.name] = control.value()
            else:
                text = control.currentText()
                out[option.name] = int(text) if option.kind == "int" else text
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        """Show ``values`` (e.g. a restored sample's options) without emitting ``changed``; others are ignored."""
        for option in self._options:
            if option.name not in values:
                continue
            control = self.controls[option.name]
            control.blockSignals(True)
            try:
                if isinstance(control, _FloatSlider):
                    control.slider.blockSignals(True)
                    control.set_value(values[option.name])
                    control.slider.blockSignals(False)
                elif isinstance(control, QSpinBox):
                    control.setValue(int(values[option.name]))
                else:
                    control.setCurrentText(str(values[option.name]))
            finally:
                control.blockSignals(False)
