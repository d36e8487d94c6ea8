"""The Dissection tab: dissect the current layer on the worker, browse its units by label, see a unit's gallery.

    browser = UnitsBrowser(jobs)
    browser.set_layer("blocks.1")
    browser.dissect_button.click()            # runs studio.dissect on the model worker, with progress and Cancel
    browser.search.setText("lamp")            # only units labelled lamp
    browser.add_slider.connect(lambda layer, unit: sliders.add_units(layer, [unit]))
    browser.knob_made.connect(knob_panel.add_knob)   # "Make a knob": the selected units as one knob

Each row shows the unit's strongest few crops; they are rendered on the worker only for the rows in view (a
scroll asks for the new ones) and kept for the dissection shown.
"""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from studio.core.progress import ProgressUpdate
from studio.dissect import Dissection, Plan, dissect, gallery_image, gallery_tiles, knob_from_units, units_tiles

from .qt_images import pixmap_from

COLUMNS = ("unit", "gallery", "label", "IoU", "second", "on level")
GALLERY = COLUMNS.index("gallery")
#: Crops per row and their side in pixels: enough to tell a lamp unit from a wall unit at a glance.
THUMB_TILES, THUMB_SIZE = 3, 28


class UnitsBrowser(QWidget):
    """Every unit of the dissected layer with its label, IoU and "on" level; the selected unit's gallery large."""

    add_slider = Signal(str, int)  # layer, unit
    knob_made = Signal(object)  # studio.knobs.Knob of the selected units
    message = Signal(str)

    def __init__(self, jobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.layer: str | None = None
        self.result: Dissection | None = None
        self._job = None
        self.thumbnails: dict[int, object] = {}  # unit -> QPixmap, for ``self.result``
        self._thumbs_pending: set[int] = set()
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
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)  # Ctrl/Shift+click: several
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        strip = QSize(THUMB_TILES * (THUMB_SIZE + 1) + 1, THUMB_SIZE + 2)
        self.table.setIconSize(strip)
        self.table.verticalHeader().setDefaultSectionSize(strip.height() + 4)
        header = self.table.horizontalHeader()  # the columns share the tab's width: nothing scrolls sideways
        header.setMinimumSectionSize(36)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(GALLERY, QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(GALLERY, strip.width() + 8)
        self.table.itemSelectionChanged.connect(self._on_selected)
        self.table.verticalScrollBar().valueChanged.connect(lambda _: self.request_thumbnails())
        self.gallery = QLabel("Dissect a layer, then pick a unit to see its strongest samples.")
        self.gallery.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.gallery.setMinimumHeight(200)
        self.slider_button = QPushButton("Add slider")
        self.slider_button.setEnabled(False)
        self.slider_button.clicked.connect(self._add_slider)
        self.knob_button = QPushButton("Make a knob of the selected units")
        self.knob_button.setToolTip("Select units (Ctrl+click for several); the knob switches them off where you "
                                    "paint at strength 1 and draws what they fire on at -1 (Knobs tab)")
        self.knob_button.setEnabled(False)
        self.knob_button.clicked.connect(self.make_knob)
        row = QHBoxLayout()
        for w in (self.samples, self.dissect_button, self.cancel_button):
            row.addWidget(w)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addWidget(self.progress)
        column.addWidget(self.search)
        column.addWidget(self.table, 2)
        column.addWidget(self.gallery, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.slider_button)
        buttons.addWidget(self.knob_button)
        column.addLayout(buttons)

    # -- running
    def set_layer(self, layer: str | None) -> None:
        if layer != self.layer:
            self.layer = layer
            self._show_result(None)

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
            self._show_result(result)

    def _on_failed(self, sentence: str) -> None:
        self._finished()
        self.message.emit(sentence)

    # -- browsing
    def _show_result(self, result: Dissection | None) -> None:
        self.result = result
        self.thumbnails, self._thumbs_pending = {}, set()
        self._fill()

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
            cells = (str(unit), "", label or "-", "" if iou is None else f"{iou:.3f}", second, f"{level:.3g}")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, unit)
                self.table.setItem(i, j, item)
            if unit in self.thumbnails:
                self.table.item(i, GALLERY).setIcon(self.thumbnails[unit])
        self.slider_button.setEnabled(False)
        self.knob_button.setEnabled(False)
        self.request_thumbnails()

    def visible_units(self) -> list[int]:
        """The units of the rows in view (the first rows before the table is shown)."""
        rows = self.table.rowCount()
        if not rows:
            return []
        first = max(0, self.table.rowAt(0))
        last = self.table.rowAt(self.table.viewport().height() - 1)
        last = rows - 1 if last < 0 else last
        last = min(last, first + 40)  # a table not laid out yet reports one huge viewport
        return [int(self.table.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(first, last + 1)]

    def request_thumbnails(self) -> None:
        """Render, on the worker, the gallery strips of the rows in view that are neither shown nor on their way."""
        result, layer = self.result, self.layer
        if result is None or layer not in result.stats:
            return
        wanted = [u for u in self.visible_units() if u not in self.thumbnails and u not in self._thumbs_pending]
        if not wanted:
            return
        self._thumbs_pending.update(wanted)

        def work(generator):
            tiles = units_tiles(generator, result, layer, wanted, count=THUMB_TILES, tile=THUMB_SIZE)
            return {u: gallery_image(t, columns=THUMB_TILES, gap=1) for u, t in tiles.items() if t}

        def done(strips: dict) -> None:
            if self.result is not result:
                return  # another dissection or layer is shown now
            self._thumbs_pending.difference_update(wanted)
            for unit, strip in strips.items():
                self.thumbnails[unit] = pixmap_from(strip)
            for row in range(self.table.rowCount()):
                item = self.table.item(row, GALLERY)
                unit = int(item.data(Qt.ItemDataRole.UserRole))
                if unit in strips:
                    item.setIcon(self.thumbnails[unit])
                    item.setToolTip(f"unit {unit}: its {THUMB_TILES} strongest crops, 'on' region bright")

        def failed(sentence: str) -> None:
            self._thumbs_pending.difference_update(wanted)
            self.message.emit(sentence)

        self.jobs.submit(work, done, failed)

    def selected_unit(self) -> int | None:
        """The unit of the row clicked last (its gallery is shown large)."""
        item = self.table.currentItem()
        if item is None or not item.isSelected():
            items = self.table.selectedItems()
            item = items[0] if items else None
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def selected_units(self) -> list[int]:
        return sorted({int(item.data(Qt.ItemDataRole.UserRole)) for item in self.table.selectedItems()})

    def _on_selected(self) -> None:
        unit, result, layer = self.selected_unit(), self.result, self.layer
        self.slider_button.setEnabled(unit is not None)
        self.knob_button.setEnabled(unit is not None)
        if unit is None or result is None:
            return

        def work(generator):
            return gallery_image(gallery_tiles(generator, result, layer, unit, tile=96), columns=4)

        def done(image) -> None:
            if self.selected_unit() == unit:
                self.gallery.setPixmap(pixmap_from(image))
                self.gallery.setToolTip(f"{layer} unit {unit}: its strongest samples, 'on' region bright")

        self.jobs.submit(work, done, self.message.emit)

    def make_knob(self) -> None:
        """The selected units as one knob, made on the worker from how they fire in their galleries."""
        units, result, layer = self.selected_units(), self.result, self.layer
        if not units or result is None or not layer:
            self.message.emit("Select one or more units first (Ctrl+click adds more).")
            return
        labels = {r.unit: r.concept for r in result.labels(layer)} if result.concepts else {}
        named = sorted({labels[u] for u in units if labels.get(u)})
        name = f"{'+'.join(named) or 'units'} ({len(units)} of {layer})"
        self.knob_button.setEnabled(False)

        def work(generator):
            return knob_from_units(generator, result, layer, units, name=name)

        def done(knob) -> None:
            self.knob_button.setEnabled(self.selected_unit() is not None)
            self.knob_made.emit(knob)

        def failed(sentence: str) -> None:
            self.knob_button.setEnabled(self.selected_unit() is not None)
            self.message.emit(sentence)

        self.jobs.submit(work, done, failed)

    def _add_slider(self) -> None:
        unit = self.selected_unit()
        if unit is not None and self.layer:
            self.add_slider.emit(self.layer, unit)
