"""Examples for a knob, beside the Seeds grid: open a seed, paint a quick mask, mark it present or wanted, learn.

The marks live in ``state.examples`` (plain data); learning runs ``studio.knob_regions.learn_app_knob`` on the model's worker
with progress and Cancel; the learned knob is shown applied across the page's seeds (on the region its units propose
on each), so the user sees whether it generalises, and ``knob_learned`` hands it to the Knobs panel. Once a knob is
learned, "Propose region" paints where its units see the thing on the open seed, for the user to correct::

    panel = KnobExamples(jobs, state, browser)
    browser.example_clicked.emit(12)          # (a click while gathering) seed 12 opens in the painter
    # ... a few strokes on panel.painter ...
    panel.present_button.click()              # seed 12 is a "present" example with that mask
    panel.learn()                             # a job; knob_learned(knob) when it is done
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.progress import ProgressUpdate
from studio.knob_regions import learn_app_knob, propose_region
from studio.knobs import Example, KnobEdit
from studio.state import StudioState

from .canvas import Canvas
from .jobs import Job, JobRunner
from .qt_images import pixmap_from
from .seed_browser import SeedBrowser

PAINTER = 200  # the quick-mask view, pixels
PREVIEW_SEEDS = 6  # seeds shown with the learned knob
PREVIEW_ICON = 72


class KnobExamples(QWidget):
    knob_learned = Signal(object)  # studio.knobs.Knob
    message = Signal(str)

    def __init__(self, jobs: JobRunner, state: StudioState, browser: SeedBrowser,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs, self.state, self.browser = jobs, state, browser
        self.seed: int | None = None  # the seed opened (its image may still be rendering)
        self.shown_seed: int | None = None  # the seed whose image the painter shows
        self.job: Job | None = None
        self.knob: Any = None
        self.title = QLabel("Click a seed in the grid, paint over the thing, then mark it.")
        self.title.setWordWrap(True)
        self.painter = Canvas()
        self.painter.setFixedSize(PAINTER, PAINTER)
        self.painter.brush_size = 12
        self.painter.placeholder = "Click a seed"
        self.present_button = QPushButton("Present (as it is)")
        self.present_button.setToolTip("This seed shows the thing as it is now (e.g. a lit lamp) where painted")
        self.present_button.clicked.connect(lambda: self.mark("present"))
        self.wanted_button = QPushButton("Wanted (as it should be)")
        self.wanted_button.setToolTip("This seed shows the thing as you want it (e.g. an unlit lamp) where painted")
        self.wanted_button.clicked.connect(lambda: self.mark("wanted"))
        unmark = QPushButton("Unmark")
        unmark.clicked.connect(self.unmark)
        self.propose_button = QPushButton("Propose region")
        self.propose_button.setToolTip("Paint where the learned knob's units see the thing; correct it, then mark")
        self.propose_button.setEnabled(False)
        self.propose_button.clicked.connect(self.propose)
        marks = QHBoxLayout()
        for button in (self.present_button, self.wanted_button, unmark):
            marks.addWidget(button)
        marks_more = QHBoxLayout()
        marks_more.addWidget(self.propose_button)
        marks_more.addStretch(1)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.include_current = QCheckBox("The current image with its mask is a present example")
        self.include_current.setChecked(True)
        self.name = QLineEdit("my knob")
        self.name.setToolTip("The knob's name in the Knobs panel")
        self.learn_button = QPushButton("Learn knob")
        self.learn_button.clicked.connect(self.learn)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("")
        learn_row = QHBoxLayout()
        learn_row.addWidget(QLabel("Name"))
        learn_row.addWidget(self.name, 1)
        learn_row.addWidget(self.learn_button)
        learn_row.addWidget(self.cancel_button)
        self.preview_title = QLabel("")
        self.preview_title.setWordWrap(True)
        self.preview: list[QLabel] = []
        preview_grid = QGridLayout()
        for i in range(PREVIEW_SEEDS):
            label = QLabel()
            label.setFixedSize(PREVIEW_ICON, PREVIEW_ICON + 14)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            preview_grid.addWidget(label, i // 3, i % 3)
            self.preview.append(label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.painter, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addLayout(marks)
        layout.addLayout(marks_more)
        layout.addWidget(self.summary)
        layout.addWidget(self.include_current)
        layout.addLayout(learn_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.preview_title)
        layout.addLayout(preview_grid)
        layout.addStretch(1)
        browser.example_clicked.connect(self.open_seed)
        self._refresh()

    # -- marking ----------------------------------------------------------------------------------------------
    def open_seed(self, seed: int) -> Job | None:
        """Show ``seed`` in the painter, as the model makes it, with the mask it was marked with (if any).

        The grid's image is reused when it has no edits; otherwise the unedited image renders as a job (returned),
        since the knob learns from the model as it is.
        """
        self.seed = seed
        self.title.setText(f"Seed {seed}: opening…")
        image = self.browser.images.get(seed) if not self.browser.shows_edits() else None
        if image is not None:
            self._show_seed(seed, image)
            return None
        sample = self.state.sample.with_seed(seed) if self.state.sample is not None else None
        if sample is None:
            return None

        def done(rendered) -> None:
            if self.seed == seed:
                self._show_seed(seed, rendered)

        return self.jobs.submit(lambda generator: generator.render([sample])[0].float().cpu(), done,
                                self.message.emit)

    def _show_seed(self, seed: int, image: torch.Tensor) -> None:
        self.painter.set_image(image)
        marked = self.state.examples.present.get(seed, self.state.examples.wanted.get(seed))
        self.painter.set_mask(marked.numpy() if marked is not None else None, "Open example")
        self.painter.undo_stack.clear()  # strokes of another seed are not this one's to undo
        self.shown_seed = seed
        side = self.state.examples.side_of(seed)
        self.title.setText(f"Seed {seed}" + (f": a {side} example." if side else ": paint over the thing, then mark it."))

    def mark(self, side: str) -> None:
        if self.seed is None or self.shown_seed != self.seed:
            self.message.emit("Click a seed in the grid first, then paint over the thing in it.")
            return
        mask = self.painter.mask()
        if mask is None or not (mask > 0).any():
            self.message.emit(f"Paint over the thing on seed {self.seed} first: a few strokes are enough.")
            return
        self.state.examples.mark(self.seed, side, torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)))
        self.title.setText(f"Seed {self.seed}: a {side} example.")
        self._refresh()

    def propose(self) -> Job | None:
        """Paint the region the learned knob's units see as "present" on the open seed (the user may correct it)."""
        if self.knob is None or self.seed is None or self.state.sample is None:
            self.message.emit("Learn a knob first, then open a seed: its units propose the region.")
            return None
        knob, seed, sample = self.knob, self.seed, self.state.sample.with_seed(self.seed)

        def done(mask) -> None:
            if self.seed != seed:
                return  # another seed was opened meanwhile
            if not bool((mask > 0).any()):
                self.message.emit(f"The knob sees nothing like its present examples on seed {seed}; paint it by hand.")
                return
            self.painter.set_mask(mask.numpy(), "Proposed region")  # undoable like a stroke

        return self.jobs.submit(lambda generator: propose_region(generator, knob, sample), done, self.message.emit)

    def unmark(self) -> None:
        if self.seed is not None:
            self.state.examples.unmark(self.seed)
            self._refresh()

    def _refresh(self) -> None:
        ex = self.state.examples
        self.browser.set_sides({**{s: "present" for s in ex.present}, **{s: "wanted" for s in ex.wanted}})
        present = ", ".join(map(str, sorted(ex.present))) or "none"
        wanted = ", ".join(map(str, sorted(ex.wanted))) or "none"
        self.summary.setText(f"Present: {present}.  Wanted: {wanted}.  (2 to 8 of each are enough.)")

    # -- learning ---------------------------------------------------------------------------------------------
    def examples(self) -> tuple[list[Example], list[Example]]:
        """The marked seeds as :class:`studio.knobs.Example` (with the current image first, when asked)."""
        state, ex = self.state, self.state.examples
        base = state.sample
        present = [Example(base.with_seed(s), m) for s, m in sorted(ex.present.items())]
        wanted = [Example(base.with_seed(s), m) for s, m in sorted(ex.wanted.items())]
        current = base.seed if base is not None else None
        if self.include_current.isChecked() and state.has_mask() and current not in ex.present \
                and current not in ex.wanted:
            present.insert(0, Example(base, state.mask.clone()))
        return present, wanted

    def learn(self) -> Job | None:
        """Learn the knob on the model's worker; None with a sentence when the examples are not enough."""
        if self.state.sample is None:
            self.message.emit("No model is loaded yet.")
            return None
        if self.job is not None and not self.job.finished:
            return self.job
        present, wanted = self.examples()
        if not present or not wanted:
            self.message.emit(f"A knob needs examples on both sides: {len(present)} present and {len(wanted)} "
                              "wanted so far; mark at least one of each.")
            return None
        name = self.name.text().strip() or "my knob"

        def work(generator, progress):
            return learn_app_knob(generator, name, present=present, wanted=wanted, progress=progress)

        self.learn_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("learning…")
        self.job = self.jobs.submit(work, self._on_learned, self._on_failed, self._on_progress)
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _on_progress(self, update: ProgressUpdate) -> None:
        self.progress.setRange(0, max(update.total, 1))
        self.progress.setValue(update.done)
        self.progress.setFormat(update.message or f"{update.done}/{update.total} {update.unit}")

    def _idle(self, text: str) -> None:
        self.learn_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)

    def _on_failed(self, sentence: str) -> None:
        self._idle("")
        self.message.emit(sentence)

    def _on_learned(self, knob: Any) -> None:
        self.knob = knob
        self.propose_button.setEnabled(True)
        units = knob.unit_count
        self._idle(f"learned: {units} units")
        self.message.emit(f"Learned the knob {knob.name!r} ({units} units in {', '.join(knob.layers)}); "
                          "it is in the Knobs panel.")
        self.knob_learned.emit(knob)
        self.show_across_seeds(knob)

    # -- does it generalise? ----------------------------------------------------------------------------------
    def show_across_seeds(self, knob: Any) -> Job | None:
        """Render the page's first seeds with ``knob`` at strength 1 where its units propose the region on each."""
        sample = self.state.sample
        if sample is None:
            return None
        seeds = list(range(self.browser.first, self.browser.first + PREVIEW_SEEDS))
        title = f"{knob.name} at strength 1 on seeds {seeds[0]}–{seeds[-1]}, on the region it proposes on each"
        self.preview_title.setText(f"{title}: rendering…")

        def work(generator):
            images, found = [], []
            for seed in seeds:
                one = sample.with_seed(seed)
                region = propose_region(generator, knob, one)
                found.append(bool((region > 0).any()))
                with generator.editor() as editor:
                    editor.set_knobs([KnobEdit(knob, region, strength=1.0)])
                    images.append(generator.render([one])[0].float().cpu())
            return images, found

        def done(result) -> None:
            images, found = result
            for label, image, seed, hit in zip(self.preview, images, seeds, found):
                label.setPixmap(pixmap_from(image).scaled(PREVIEW_ICON, PREVIEW_ICON,
                                                          Qt.AspectRatioMode.KeepAspectRatio,
                                                          Qt.TransformationMode.SmoothTransformation))
                label.setToolTip(f"Seed {seed} with {knob.name}" + ("" if hit else ": nothing found to change"))
            self.preview_title.setText(f"{title}: compare with the grid.")

        return self.jobs.submit(work, done, self.message.emit)
