"""A grid of images from consecutive seeds, rendered with the active edits; clicking one picks its seed.

    browser = SeedBrowser(jobs)
    browser.show_seeds(base_sample, first=40, edits=state.render_edits(), mask=state.mask, knobs=state.knobs)
    browser.seed_picked.connect(window.set_seed)
    browser.set_current(42)                      # the current seed is marked; nothing re-renders
    browser.gather.setChecked(True)              # now a click emits example_clicked(seed) instead (knob examples)

A page already rendered for the same prompt and edits is never rendered again: picking a seed only moves the mark.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.progress import Ticker

from .jobs import Job, JobRunner
from .qt_images import pixmap_from

COLUMNS, ROWS = 3, 4
_BATCH = 4
ICON = 88
_SIDE_COLOURS = {"present": "#e0902a", "wanted": "#2a9fb0"}


def _button_style(current: bool, side: str | None) -> str:
    border = f"3px solid {_SIDE_COLOURS[side]}" if side else "1px solid #888"
    back = "background:#3b6fb0;color:white;font-weight:bold;" if current else ""
    return f"QToolButton{{border:{border};border-radius:3px;{back}}}"


class SeedBrowser(QWidget):
    seed_picked = Signal(int)
    example_clicked = Signal(int)  # gathering examples: the seed clicked
    message = Signal(str)

    def __init__(self, jobs: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.first = 0
        self.sample = None
        self.current: int | None = None
        self.sides: dict[int, str] = {}  # seed -> "present" | "wanted" (knob examples)
        self.job: Job | None = None
        self.images: dict[int, torch.Tensor] = {}  # seed -> (3, H, W) CPU image of the rendered key
        self._key: tuple | None = None  # what self.images were rendered with
        self._pending: tuple | None = None  # the key being rendered
        self.buttons: list[QToolButton] = []
        grid = QGridLayout()
        grid.setSpacing(3)
        for i in range(COLUMNS * ROWS):
            button = QToolButton()
            button.setIconSize(QSize(ICON, ICON))
            button.setFixedSize(ICON + 12, ICON + 28)  # same size with or without an image: the grid never collapses
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.clicked.connect(lambda _=False, i=i: self._clicked(self.first + i))
            grid.addWidget(button, i // COLUMNS, i % COLUMNS)
            self.buttons.append(button)
        back = QPushButton("◀")
        back.setToolTip("Previous page of seeds")
        back.clicked.connect(lambda: self.show_page(max(self.first - len(self.buttons), 0)))
        forward = QPushButton("▶")
        forward.setToolTip("Next page of seeds")
        forward.clicked.connect(lambda: self.show_page(self.first + len(self.buttons)))
        self.label = QLabel("")
        self.gather = QPushButton("Gather examples for a knob")
        self.gather.setCheckable(True)
        self.gather.setToolTip("On: a click opens the seed to mark it as an example instead of switching to it")
        self.carry = QLabel("")  # what the edits are (they apply to every seed shown)
        self.carry.setWordWrap(True)
        self.carry.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        nav = QHBoxLayout()
        nav.addWidget(back)
        nav.addWidget(self.label, 1, Qt.AlignmentFlag.AlignCenter)
        nav.addWidget(forward)
        column = QVBoxLayout()
        column.addLayout(nav)
        column.addLayout(grid)
        column.addWidget(self.carry)
        column.addStretch(1)
        self.row = QHBoxLayout()  # the grid, and beside it the examples panel while gathering
        self.row.addLayout(column)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.gather)
        layout.addLayout(self.row, 1)
        self.side: QWidget | None = None
        self._edits: tuple = ()
        self._mask: torch.Tensor | None = None
        self._knobs: tuple = ()

    def set_side_widget(self, widget: QWidget) -> None:
        """``widget`` (the examples panel) sits beside the grid, shown while Gather is on."""
        self.side = widget
        self.row.addWidget(widget, 1)
        widget.setVisible(self.gather.isChecked())
        self.gather.toggled.connect(widget.setVisible)

    # -- what is shown ----------------------------------------------------------------------------------------
    def show_seeds(self, sample, first: int, edits: Sequence[Any] = (), mask: torch.Tensor | None = None,
                   knobs: Sequence[Any] = ()) -> Job | None:
        """Show ``len(buttons)`` seeds from ``first`` with ``sample``'s prompt and options and the given edits.

        Renders only when the page, the prompt or the edits changed; returns the job, or None when nothing is new.
        """
        if sample is None:
            return None
        self.sample, self._edits, self._mask, self._knobs = sample, tuple(edits), mask, tuple(knobs)
        self.current = sample.seed
        return self.show_page(first)

    def show_page(self, first: int) -> Job | None:
        sample = self.sample
        if sample is None:
            return None
        key = self._key_for(first)
        self.first = first
        self._restyle()
        if self._same(key, self._key) or self._same(key, self._pending):
            return None  # already shown or on its way: only the marks moved
        if self.job is not None and not self.job.finished:
            self.job.cancel()
        new_page = self._key is None or self._key[0] != first
        seeds = list(range(first, first + len(self.buttons)))
        self.label.setText(f"seeds {seeds[0]}–{seeds[-1]}: rendering…")
        if new_page:  # other seeds: their old images would mislead; same seeds, new edits: keep them until replaced
            for button in self.buttons:
                button.setIcon(QIcon())
        self._pending = key
        edits, mask, knobs = self._edits, self._mask, self._knobs

        def work(generator, progress):
            ticker = Ticker(len(seeds), progress, unit="images")
            images = []
            with generator.editor() as editor:
                editor.set(edits, mask=mask.to(generator.device) if mask is not None else None)
                if knobs:
                    editor.set_knobs(knobs)
                for start in range(0, len(seeds), _BATCH):
                    batch = [sample.with_seed(s) for s in seeds[start:start + _BATCH]]
                    images.append(generator.render(batch).float().cpu())
                    ticker.advance(len(batch))
            return key, torch.cat(images)

        self.job = self.jobs.submit(work, self._on_done, lambda sentence: self._on_failed(key, sentence))
        return self.job

    def _key_for(self, first: int) -> tuple:
        base = self.sample.with_seed(0)
        return (first, base, self._edits, id(self._mask) if self._edits else None,
                tuple((id(k.knob), id(k.mask), k.strength) for k in self._knobs))

    @staticmethod
    def _same(a: tuple | None, b: tuple | None) -> bool:
        return a is not None and b is not None and a == b

    def shows_edits(self) -> bool:
        """Whether the thumbnails are rendered with unit or knob edits (not the model as it is)."""
        return bool(self._edits or self._knobs)

    def set_current(self, seed: int | None) -> None:
        self.current = seed
        self._restyle()

    def set_sides(self, sides: dict[int, str]) -> None:
        """Mark seeds as knob examples (``present``/``wanted``)."""
        self.sides = dict(sides)
        self._restyle()

    def set_carry_text(self, text: str) -> None:
        self.carry.setText(text)

    def _restyle(self) -> None:
        for i, button in enumerate(self.buttons):
            seed = self.first + i
            side = self.sides.get(seed)
            button.setText(f"{seed} {side}" if side else str(seed))
            button.setStyleSheet(_button_style(seed == self.current, side))
            tip = "the current seed" if seed == self.current else "click to switch to this seed"
            button.setToolTip(f"Seed {seed}: {tip}" + (f"; a {side} example" if side else ""))

    def _clicked(self, seed: int) -> None:
        if self.gather.isChecked():
            self.example_clicked.emit(seed)
        else:
            self.seed_picked.emit(seed)

    def _on_done(self, result) -> None:
        key, images = result
        if not self._same(key, self._pending):
            return  # a newer page or newer edits were asked for
        self._key, self._pending = key, None
        first = key[0]
        self.images = {first + i: image for i, image in enumerate(images)}
        for button, image in zip(self.buttons, images):
            button.setIcon(QIcon(pixmap_from(image)))
        self.label.setText(f"seeds {first}–{first + len(self.buttons) - 1}")

    def _on_failed(self, key: tuple, sentence: str) -> None:
        if not self._same(key, self._pending):
            return  # a render that was replaced (and cancelled) by a newer one
        self._pending = None
        self.label.setText("")
        if not (self.job is not None and self.job.cancelled):
            self.message.emit(sentence)
