"""File → Open image (Ctrl+Shift+O), a dropped picture, ``main.py --image``: the model finds the input that
reproduces the user's own image (studio.invert), then the image is a sample like any other.

    images = InvertActions(window)
    images.open("photo.png")        # a job on the model's thread: progress, Cancel, the reconstruction shown live
    images.continue_optimising()    # more steps from where it stopped
    window.state.inversion          # studio.invert.Inversion: saved with the session, so reopening does not redo it

The bar above the canvas shows the progress and Cancel while it runs, then the PSNR and "Continue optimising".
Cancel stops the optimisation early and keeps what was found so far (which can be continued). Bad input
(unreadable, flat or tiny) is one banner sentence, and nothing in the window changes.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from studio.core.progress import ProgressUpdate
from studio.invert import DEFAULT_STEPS, invert, psnr

if TYPE_CHECKING:
    from .main_window import MainWindow

#: What File → Open image offers (PIL reads them all).
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Steps a "Continue optimising" adds.
CONTINUE_STEPS = 100


class InvertActions(QObject):
    """The actions, the job and the bar; ``finished(inversion)`` after each run that found something."""

    finished = Signal(object)  # studio.invert.Inversion
    previewed = Signal(int)  # the step of the reconstruction just shown
    _preview = Signal(int, object)  # emitted on the model's thread, received on the GUI thread

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        self.steps = DEFAULT_STEPS
        self.continue_steps = CONTINUE_STEPS
        self.job = None
        self._stop = threading.Event()
        self.open_action = QAction("Open image…", self)
        self.open_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.open_action.setToolTip("Find the model's input that reproduces your picture, then edit it like a seed")
        self.open_action.triggered.connect(lambda: self.open(None))
        self.continue_action = QAction("Continue optimising", self)
        self.continue_action.setToolTip("Run more inversion steps on the opened image")
        self.continue_action.setEnabled(False)
        self.continue_action.triggered.connect(self.continue_optimising)
        self._preview.connect(self._show_preview)

        self.bar = QWidget()
        row = QHBoxLayout(self.bar)
        row.setContentsMargins(4, 2, 4, 2)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop here and keep what was found so far")
        self.cancel_button.clicked.connect(self.cancel)
        self.continue_button = QPushButton("Continue optimising")
        self.continue_button.clicked.connect(self.continue_optimising)
        row.addWidget(self.label, 2)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        row.addWidget(self.continue_button)
        self.bar.hide()
        window.state.events.changed.connect(lambda event: self._follow_state())

    # -- starting -------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def open(self, path: str | Path | None) -> None:
        """Invert the picture at ``path`` (None: ask for one)."""
        window = self.window
        if path is None:
            path, _ = QFileDialog.getOpenFileName(window, "Open image", "", IMAGE_FILTER)
            if not path:
                return
        if window.generator is None:
            window.show_error("No model is loaded yet: wait for it, then open the image again.")
            return
        self._run(Path(path), None, self.steps, f"Inverting {Path(path).name}…")

    def continue_optimising(self) -> None:
        inversion = self.window.state.inversion
        if inversion is None or self.running:
            return
        self._run(None, inversion, self.continue_steps, "Continuing the inversion…")

    def cancel(self) -> None:
        """Stop the running inversion at its next step; what it found so far comes back."""
        self._stop.set()
        self.cancel_button.setEnabled(False)
        self.label.setText("Stopping…")

    def _run(self, path: Path | None, start: Any, steps: int, what: str) -> None:
        window = self.window
        if self.running:
            window.show_error("An image is being inverted already: wait for it, or Cancel it.")
            return
        self._stop = threading.Event()
        stop = self._stop
        typed = (window.prompt.text().strip() or None) if window.generator.takes_prompt else None

        def work(generator, progress):
            # Cancel sets ``stop`` (polled as ``cancel``: the inversion so far comes back); ``progress`` answers
            # False only when the window cancels every job (closing), and then nothing is kept
            keep_going = progress
            own_way = generator.inversion_space() is None  # diffusion: DDIM inversion under the typed prompt
            if start is not None and own_way:
                return _continue_own_way(generator, start, steps, keep_going, stop.is_set)
            with torch.enable_grad():  # jobs run without gradients; the optimisation needs them
                return invert(generator, path if start is None else None, prompt=typed if own_way else None,
                              steps=steps, progress=keep_going, cancel=stop.is_set, start=start,
                              preview=lambda step, image: self._preview.emit(step, image))

        self.label.setText(what)
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.progress.setFormat("%v/%m steps")
        self.progress.show()
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self.continue_button.hide()
        self.continue_action.setEnabled(False)
        self.bar.show()
        self.job = window.jobs.submit(work, self._on_done, self._on_failed, self._on_progress)

    # -- while it runs ----------------------------------------------------------------------------------------
    def _on_progress(self, update: ProgressUpdate) -> None:
        self.progress.setRange(0, max(1, update.total))
        self.progress.setValue(min(update.done, update.total))

    def _show_preview(self, step: int, image) -> None:
        if not self.running:
            return  # a late preview of a finished run must not cover the result
        self.window.canvas.set_image(image, image)
        self.previewed.emit(step)

    # -- when it ends -------------------------------------------------------------------------------------------
    def _on_done(self, inversion) -> None:
        window = self.window
        self.job = None
        window.state.update(sample=inversion.sample, inversion=inversion)
        self._show_result(inversion)
        window.show_info(inversion.note)
        self.finished.emit(inversion)

    def _on_failed(self, sentence: str) -> None:
        self.job = None
        self.bar.hide()
        self._follow_state()
        self.window.show_error(sentence)
        self.window._render_sample()  # the live preview replaced the canvas: show the state's image again

    def _show_result(self, inversion) -> None:
        self.label.setText(f"Your image, inverted: {inversion.psnr:.1f} dB PSNR after {inversion.steps} steps"
                           + (f"; caption '{inversion.caption}'" if inversion.caption else "") + ".")
        self.progress.hide()
        self.cancel_button.hide()
        self.continue_button.show()
        self.continue_action.setEnabled(True)
        self.bar.show()

    def _follow_state(self) -> None:
        """The bar belongs to the inverted image: shown with it, hidden for a seed's sample."""
        if self.running:
            return
        state = self.window.state
        if state.inversion is not None and state.sample == state.inversion.sample:
            self._show_result(state.inversion)
        else:
            self.bar.hide()
            self.continue_action.setEnabled(False)


def _continue_own_way(generator, start, steps: int, progress, cancel):
    """More steps for a family that inverts in its own way (diffusion: the VAE latent fitted further from where
    the previous result's path ends, then inverted again), scored like ``studio.invert`` scores."""
    began = time.perf_counter()
    sample = generator.invert_image(start.target.to(generator.device), start.sample.prompt, steps, progress, cancel,
                                    start=start.sample)
    with torch.inference_mode():
        image = generator.render([sample])[0]
    value = psnr(image, start.target)
    losses = list(start.losses) + list(getattr(getattr(generator, "last_inversion", None), "vae_losses", []))
    return replace(start, sample=sample, psnr=value, steps=start.steps + steps, losses=losses,
                   note=f"Continued for {steps} steps: {value:.1f} dB PSNR against the image.",
                   seconds=start.seconds + time.perf_counter() - began)
