"""A grid of images from consecutive seeds; clicking one picks its seed.

    browser = SeedBrowser(jobs)
    browser.show_seeds(base_sample, first=40)    # renders seeds 40..51 as a job, in small batches
    browser.seed_picked.connect(window.set_seed)
"""
from __future__ import annotations

import torch
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from studio.core.progress import Ticker

from .jobs import Job, JobRunner
from .qt_images import pixmap_from

COLUMNS, ROWS = 3, 4
_BATCH = 4


class SeedBrowser(QWidget):
    seed_picked = Signal(int)
    message = Signal(str)

    def __init__(self, jobs: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.first = 0
        self.sample = None
        self.job: Job | None = None
        self.buttons: list[QToolButton] = []
        grid = QGridLayout()
        grid.setSpacing(3)
        for i in range(COLUMNS * ROWS):
            button = QToolButton()
            button.setIconSize(QSize(88, 88))
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.clicked.connect(lambda _=False, i=i: self.seed_picked.emit(self.first + i))
            grid.addWidget(button, i // COLUMNS, i % COLUMNS)
            self.buttons.append(button)
        back = QPushButton("◀")
        back.setToolTip("Previous page of seeds")
        back.clicked.connect(lambda: self.show_seeds(self.sample, max(self.first - len(self.buttons), 0)))
        forward = QPushButton("▶")
        forward.setToolTip("Next page of seeds")
        forward.clicked.connect(lambda: self.show_seeds(self.sample, self.first + len(self.buttons)))
        self.label = QLabel("")
        nav = QHBoxLayout()
        nav.addWidget(back)
        nav.addWidget(self.label, 1, Qt.AlignmentFlag.AlignCenter)
        nav.addWidget(forward)
        layout = QVBoxLayout(self)
        layout.addLayout(nav)
        layout.addLayout(grid)
        layout.addStretch(1)

    def show_seeds(self, sample, first: int) -> Job | None:
        """Render ``len(buttons)`` seeds from ``first`` with ``sample``'s prompt and options."""
        if sample is None:
            return None
        if self.job is not None and not self.job.finished:
            self.job.cancel()
        self.sample, self.first = sample, first
        seeds = list(range(first, first + len(self.buttons)))
        self.label.setText(f"seeds {seeds[0]}–{seeds[-1]}: rendering…")
        for button, seed in zip(self.buttons, seeds):
            button.setText(str(seed))
            button.setIcon(QIcon())

        def work(generator, progress):
            ticker = Ticker(len(seeds), progress, unit="images")
            images = []
            for start in range(0, len(seeds), _BATCH):
                batch = [sample.with_seed(s) for s in seeds[start:start + _BATCH]]
                images.append(generator.render(batch).float().cpu())
                ticker.advance(len(batch))
            return first, torch.cat(images)

        self.job = self.jobs.submit(work, self._on_done, self._on_failed)
        return self.job

    def _on_done(self, result) -> None:
        first, images = result
        if first != self.first:
            return  # a newer page was asked for
        for button, image in zip(self.buttons, images):
            button.setIcon(QIcon(pixmap_from(image)))
        self.label.setText(f"seeds {first}–{first + len(self.buttons) - 1}")

    def _on_failed(self, sentence: str) -> None:
        self.label.setText("")
        if not (self.job is not None and self.job.cancelled):
            self.message.emit(sentence)
