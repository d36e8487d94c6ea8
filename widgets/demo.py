"""A scripted first session, for ``python main.py --screenshot`` and ``--demo``: a mask over the brightest
spot (a lamp), then the model's first shipped knob (Rooms: "lamp off") at strength 1 on it, shown before | after.
A model without shipped knobs gets the researcher's way instead: a fast ranking (on the layer that ranks best for
the mask) and two sliders on the best units (one off, one at 2.5x).

    demo = Demo(window)
    demo.finished.connect(capture)            # after the edited frame is on screen (or a step failed)
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal

from .main_window import MainWindow


def _box(values: np.ndarray, k: int) -> np.ndarray:
    """Mean over a (2k+1)-square around every pixel, through an integral image."""
    h, w = values.shape
    padded = np.pad(values, k, mode="edge").cumsum(0).cumsum(1)
    padded = np.pad(padded, ((1, 0), (1, 0)))
    n = 2 * k + 1
    return (padded[n:n + h, n:n + w] - padded[:h, n:n + w] - padded[n:n + h, :w] + padded[:h, :w]) / (n * n)


def bright_disc(image: np.ndarray, radius_fraction: float = 0.12) -> np.ndarray:
    """A disc mask on the brightest spot that stands out from its surroundings (a lamp, not a white ceiling)."""
    h, w, _ = image.shape
    luminance = image.astype(np.float32).mean(axis=-1)
    k = max(2, min(h, w) // 24)
    peak = _box(luminance, k) - _box(luminance, 4 * k)  # small bright spots beat large bright areas
    y, x = np.unravel_index(int(np.argmax(peak)), (h, w))
    yy, xx = np.mgrid[:h, :w]
    r = radius_fraction * min(h, w)
    return (((yy - y) ** 2 + (xx - x) ** 2) <= r * r).astype(np.float32)


class Demo(QObject):
    finished = Signal()

    def __init__(self, window: MainWindow, sliders: int = 2) -> None:
        super().__init__(window)
        self.window, self.sliders = window, sliders
        self.step = "image"
        self.edit_stamp = None
        window.frame_shown.connect(self._on_frame)
        window.load_failed.connect(lambda _: self._finish())  # a GUI-thread signal, not the worker's

    def _on_frame(self, frame) -> None:
        window = self.window
        if self.step == "image":
            self.step = "ranking"
            from studio.core.images import to_uint8

            window.canvas.set_mask(bright_disc(to_uint8(frame.image)), "Demo mask")
            if window.knobs.shipped_count:  # the knob is the app's way to switch a lamp off
                window.knobs.picker.setCurrentIndex(0)
                window.knobs.apply_chosen()
                window.sliders.compare.setChecked(True)
                self.step, self.edit_stamp = "sliders", window._posted
                return
            job = window.ranking.rank()
            if job is None:
                self._finish()
                return
            window.jobs.finished.connect(self._on_job_finished)
            self.job = job
        elif self.step == "sliders" and frame.stamp >= (self.edit_stamp or 0) and frame.partial:
            self._finish()

    def _on_job_finished(self, job) -> None:
        if job is not self.job:
            return
        self.window.jobs.finished.disconnect(self._on_job_finished)
        ranking = self.window.state.ranking
        if job.state != "done" or ranking is None or not ranking.units:
            self._finish()
            return
        units = [int(u.unit) for u in ranking.units[:self.sliders]]
        self.step = "sliders"
        table = self.window.ranking.table
        table.select_unit(units[0])
        self.window.sliders.add_units(self.window.state.layer, units)
        rows = self.window.sliders.rows
        rows[0].off.setChecked(True)
        if len(rows) > 1:
            rows[1].slider.setValue(250)
        self.window.sliders.compare.setChecked(True)  # before | after: the edit is visible in a still image
        self.edit_stamp = self.window._posted

    def _finish(self) -> None:
        if self.step != "done":
            self.step = "done"
            self.finished.emit()
