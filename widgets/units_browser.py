"""The Dissection tab: dissect the current layer on the worker, browse its units by label, see a unit's gallery.

    browser = UnitsBrowser(jobs)
    browser.set_layer("blocks.1")
    browser.dissect_button.click()            # runs studio.dissect on the model worker, with progress and Cancel
    browser.search.setText("lamp")            # only units labelled lamp
    browser.add_slider.connect(lambda layer, unit: sliders.add_units(layer, [unit]))
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from studio.core.progress import ProgressUpdate
from studio.dissect import Dissection, Plan, dissect, gallery_image, gallery_tiles

from .qt_images import pixmap_from

COLUMNS = ("unit", "label", "IoU", "second", "on level")


class UnitsBrowser(QWidget):
    """Every unit of the dissected layer with its label, IoU and "on" level; the selected unit's gallery large."""

    add_slider = Signal(str, int)  # layer, unit
    message = Signal(str)

    def __init__(self, jobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.layer: str | None = None
        self.result: Dissection | None = None
        self._job = None
        self.samples = QSpinBox()
        self.samples.setRange(4, 100_000)
        self.samples.setValue(200)
        self.samples.setPrefix("samples ")
        self.dissect_button = QPushButton("Dissect")
        self.dissect_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.search = QLineEdit()
        self.search.setPlaceholderText("search by concept (lamp, glow, bed...)")
        self.search.textChanged.connect(lambda _: self._fill())
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._on_selected)
        self.gallery = QLabel("Dissect a layer, then pick a unit to see its strongest samples.")
        self.gallery.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.gallery.setMinimumHeight(200)
        self.slider_button = QPushButton("Add slider")
        self.slider_button.setEnabled(False)
        self.slider_button.clicked.connect(self._add_slider)
        row = QHBoxLayout()
        for w in (self.samples, self.dissect_button, self.cancel_button):
            row.addWidget(w)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addWidget(self.progress)
        column.addWidget(self.search)
        column.addWidget(self.table, 2)
        column.addWidget(self.gallery, 1)
        column.addWidget(self.slider_button)

    # -- running
    def set_layer(self, layer: str | None) -> None:
        if layer != self.layer:
            self.layer, self.result = layer, None
            self._fill()

    def start(self) -> None:
        layer, count = self.layer, self.samples.value()
        if not layer or self._job is not None:
            return

        def work(generator, progress):
            concepts = "rooms" if generator.family == "rooms" else None
            plan = Plan(generator.source, [layer], count, concepts=concepts, top=8, task_size=50, batch=25)
            return dissect(generator, plan, progress=progress)

        self.dissect_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._job = self.jobs.submit(work, self._on_done, self._on_failed, progress=self._on_progress)

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _on_progress(self, update: ProgressUpdate) -> None:
        self.progress.setMaximum(max(1, update.total))
        self.progress.setValue(update.done)
        self.progress.setFormat(f"%v/%m samples  {update.rate:.1f}/s")

    def _finished(self) -> None:
        self._job = None
        self.dissect_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_done(self, result: Dissection) -> None:
        self._finished()
        if result.plan.layers == [self.layer]:
            self.result = result
            self._fill()

    def _on_failed(self, sentence: str) -> None:
        self._finished()
        self.message.emit(sentence)

    # -- browsing
    def _rows(self) -> list[tuple[int, str, float | None, str, float]]:
        if self.result is None or self.layer not in self.result.stats:
            return []
        levels = self.result.thresholds(self.layer).tolist()
        if not self.result.concepts:
            return [(u, "", None, "", level) for u, level in enumerate(levels)]
        rows = [(r.unit, r.concept or "", r.iou, r.second or "", levels[r.unit]) for r in self.result.labels(self.layer)]
        rows.sort(key=lambda r: (r[1] == "", -(r[2] or 0.0)))  # labelled units first, best IoU first
        wanted = self.search.text().strip().lower()
        return [r for r in rows if wanted in r[1]] if wanted else rows

    def _fill(self) -> None:
        rows = self._rows()
        self.table.setRowCount(len(rows))
        for i, (unit, label, iou, second, level) in enumerate(rows):
            cells = (str(unit), label or "-", "" if iou is None else f"{iou:.3f}", second, f"{level:.3g}")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, unit)
                self.table.setItem(i, j, item)
        self.slider_button.setEnabled(False)

    def selected_unit(self) -> int | None:
        items = self.table.selectedItems()
        return None if not items else int(items[0].data(Qt.ItemDataRole.UserRole))

    def _on_selected(self) -> None:
        unit, result, layer = self.selected_unit(), self.result, self.layer
        self.slider_button.setEnabled(unit is not None)
        if unit is None or result is None:
            return

        def work(generator):
            return gallery_image(gallery_tiles(generator, result, layer, unit, tile=96), columns=4)

        def done(image) -> None:
            if self.selected_unit() == unit:
                self.gallery.setPixmap(pixmap_from(image))
                self.gallery.setToolTip(f"{layer} unit {unit}: its strongest samples, 'on' region bright")

        self.jobs.submit(work, done, self.message.emit)

    def _add_slider(self) -> None:
        unit = self.selected_unit()
        if unit is not None and self.layer:
            self.add_slider.emit(self.layer, unit)
