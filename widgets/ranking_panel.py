"""The Rank panel: layer picker, options, Rank/Cancel with progress, the ranking table and its score plot.

Ranking runs as a job on the model's thread (``studio.ranking.rank_units``); the panel shows progress, and
Cancel makes the next progress report return False, which stops the ranking with ``Cancelled``::

    panel = RankingPanel(jobs, state)        # state: the window's studio.state.StudioState
    panel.rank()                             # same as pressing Rank
    panel.units_chosen.connect(sliders.add_units)
"""
from __future__ import annotations

import time

import torch.nn.functional as F
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.core.errors import StudioError
from studio.core.images import mask_from_array, to_uint8
from studio.core.progress import ProgressUpdate
from studio.live import default_layer, unit_off_images
from studio.ranking import rank_units
from studio.state import RankOptions, StudioState
from studio.state import parse_seeds as parse_seed_list

from .jobs import Job, JobRunner
from .qt_images import pixmap_from
from .ranking_table import THUMB, RankingModel, RankingTable, ScorePlot

#: How many of the best units get a switched-off thumbnail.
THUMBNAILS = 24


class LayerPicker(QComboBox):
    """Each layer with its unit count and resolution (``LayerInfo.label()``); ``layer_changed(name)``."""

    layer_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip("The layer whose units are ranked and edited")
        self.currentIndexChanged.connect(lambda i: self.layer_changed.emit(self.itemData(i) or ""))

    def set_layers(self, layers, current: str | None = None) -> None:
        self.blockSignals(True)
        self.clear()
        for info in layers:
            self.addItem(info.label(), info.name)
            if not info.partial:
                self.setItemData(self.count() - 1, "Sliders re-render the whole model from this layer",
                                 Qt.ItemDataRole.ToolTipRole)
        index = self.findData(current) if current else -1
        self.setCurrentIndex(index if index >= 0 else default_layer_index(layers))
        self.blockSignals(False)
        self.layer_changed.emit(self.currentData() or "")

    def current_layer(self) -> str | None:
        return self.currentData()

    def show_layer(self, layer: str | None) -> None:
        """Follow the state's layer (a layer this model lacks leaves the choice as it is)."""
        index = self.findData(layer) if layer else -1
        if index >= 0 and index != self.currentIndex():
            self.setCurrentIndex(index)


def default_layer_index(layers) -> int:
    """A middle spatial layer: where units tend to be objects and parts rather than textures or layout."""

    names = [info.name for info in layers]
    name = default_layer(layers)
    return names.index(name) if name in names else 0


def thumbnails(images, size: int = THUMB):
    """(N, 3, H, W) images -> N (h, w, 3) uint8 arrays at most ``size`` wide/high (made on the worker thread)."""


    h, w = images.shape[-2:]
    scale = size / max(h, w)
    small = F.interpolate(images.float(), size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return [to_uint8(image) for image in small]


def parse_seeds(text: str, current: int) -> list[int]:

    try:
        seeds = parse_seed_list(text.strip(), current)
    except ValueError as error:
        raise StudioError(f"Cannot read seeds '{text}': write numbers and ranges, e.g. 0-3,7.") from error
    if len(seeds) > 64:
        raise StudioError(f"{len(seeds)} seeds is too many for one ranking; use at most 64.")
    return seeds


class RankingPanel(QWidget):
    """Ranks the units of the chosen layer by their effect inside the mask."""

    ranked = Signal(object)  # Ranking
    units_chosen = Signal(list)
    units_edited = Signal(list, str, float)  # [unit, ...], "off" | "set", value: one action on every selected unit
    unit_selected = Signal(int)
    message = Signal(str)  # one sentence for the status bar (errors, cancel)

    def __init__(self, jobs: JobRunner, state: StudioState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs, self.state = jobs, state
        self.job: Job | None = None
        self.shown = None  # the Ranking the table and plot show
        self.layers = LayerPicker()
        self.method = QComboBox()
        self.method.addItem("fast", "fast")
        self.method.addItem("exact", "exact")
        self.method.setToolTip("fast estimates every unit, then re-renders the best exactly; exact re-renders each")
        self.ablation = QComboBox()
        self.ablation.addItem("zero", "zero")
        self.ablation.addItem("mean", "mean")
        self.ablation.setToolTip("Switch a unit off by setting it to zero, or to its mean over the image")
        self.seeds = QLineEdit()
        self.seeds.setPlaceholderText("current seed, or e.g. 0-7")
        self.seeds.setToolTip("Rank over several seeds (the same mask on each)")
        self.rank_button = QPushButton("Rank")
        self.rank_button.setToolTip("Switch each unit off and score how much the image changes inside the mask")
        self.rank_button.clicked.connect(self.rank)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.add_button = QPushButton("Add sliders")
        self.add_button.setToolTip("Add a slider for each selected unit (or double-click a row)")
        self.add_button.clicked.connect(lambda: self.units_chosen.emit(self.table.selected_units()))
        self.off_button = QPushButton("Switch selected off")
        self.off_button.setToolTip("Switch every selected unit off at once (select rows with Shift or Ctrl)")
        self.off_button.clicked.connect(lambda: self._edit_selected("off", 0.0))
        self.set_button = QPushButton("Set selected to")
        self.set_button.setToolTip("Set every selected unit to this value at once")
        self.set_value = QDoubleSpinBox()
        self.set_value.setRange(-100.0, 100.0)
        self.set_value.setSingleStep(0.5)
        self.set_button.clicked.connect(lambda: self._edit_selected("set", self.set_value.value()))

        self.model = RankingModel(self)
        self.table = RankingTable(self.model)
        self.table.units_chosen.connect(self.units_chosen)
        self.table.unit_selected.connect(self._on_unit_selected)
        self.plot = ScorePlot()
        self.plot.unit_clicked.connect(self.table.select_unit)

        form = QFormLayout()
        form.addRow("Layer", self.layers)
        options = QHBoxLayout()
        options.addWidget(self.method)
        options.addWidget(self.ablation)
        options.addWidget(QLabel("Seeds"))
        options.addWidget(self.seeds, 1)
        form.addRow("Method", options)
        buttons = QHBoxLayout()
        buttons.addWidget(self.rank_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.plot)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(split, 1)
        below = QHBoxLayout()
        self.summary = QLabel("Paint a mask, then Rank.")
        self.summary.setWordWrap(True)
        below.addWidget(self.summary, 1)
        below.addWidget(self.add_button)
        layout.addLayout(below)
        selected = QHBoxLayout()
        selected.addStretch(1)
        for widget in (self.off_button, self.set_button, self.set_value):
            selected.addWidget(widget)
        layout.addLayout(selected)
        # the panel follows the state: a restore, a script or a model change sets it, the panel shows it
        state.events.ranking.connect(lambda event: self.show_ranking(event.value) if event.value is not self.shown
                                     else None)
        state.events.layer.connect(lambda event: self.layers.show_layer(event.value))
        state.events.rank_options.connect(lambda event: self.set_options(**event.value.to_json()))

    def _edit_selected(self, op: str, value: float) -> None:
        units = self.table.selected_units()
        if not units:
            self.message.emit("Select units in the ranking table first (Shift or Ctrl for several).")
            return
        self.units_edited.emit(units, op, float(value))

    # -- options ----------------------------------------------------------------------------------------------
    def options(self) -> dict:
        return {"method": self.method.currentData(), "ablation": self.ablation.currentData(),
                "seeds": self.seeds.text()}

    def set_options(self, method: str = "fast", ablation: str = "zero", seeds: str = "") -> None:
        self.method.setCurrentIndex(max(self.method.findData(method), 0))
        self.ablation.setCurrentIndex(max(self.ablation.findData(ablation), 0))
        self.seeds.setText(seeds)

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    # -- ranking ----------------------------------------------------------------------------------------------
    def rank(self) -> Job | None:
        """Start ranking the current layer inside the mask; returns the job (None when the input is unusable)."""
        if self.running:
            return self.job
        try:
            work = self._work()
        except StudioError as error:
            self.message.emit(str(error))
            return None
        self.rank_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting…")
        self._started = time.perf_counter()
        self.job = self.jobs.submit(work, self._on_done, self._on_failed, self._on_progress)
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.progress.setFormat("cancelling…")

    def _work(self):
        """The job's function, with every input copied now (the user may paint on while it runs)."""

        state = self.state
        if state.sample is None or self.jobs.generator is None:
            raise StudioError("No image yet: wait for the model to load and render.")
        layer = self.layers.current_layer()
        if not layer:
            raise StudioError("Choose a layer to rank.")
        mask_array = state.mask.numpy() if state.mask is not None else None
        if mask_array is None:
            raise StudioError("The mask is empty: paint over the region you want to explain before ranking.")
        mask, _ = mask_from_array(mask_array, tuple(mask_array.shape))
        options = self.options()
        state.rank_options = RankOptions(options["method"], options["ablation"], options["seeds"])
        seeds = parse_seeds(options["seeds"], state.sample.seed)
        base = state.sample

        def work(generator, progress):

            samples = [base.with_seed(seed) for seed in seeds]
            ranking = rank_units(generator, samples, mask.to(generator.device), layer, method=options["method"],
                                 ablation=options["ablation"], progress=progress)
            best = [int(u.unit) for u in ranking.units[:THUMBNAILS]]
            thumbs = thumbnails(unit_off_images(generator, base, layer, best)) if best else None
            return layer, ranking, best, thumbs

        return work

    def _on_progress(self, update: ProgressUpdate) -> None:
        self.progress.setRange(0, max(update.total, 1))
        self.progress.setValue(update.done)
        rate = f" · {update.rate:.0f} {update.unit}/s" if update.rate else ""
        self.progress.setFormat(f"{update.done}/{update.total} {update.unit}{rate} {update.message}".strip())

    def _finish(self) -> None:
        self.rank_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)

    def _on_done(self, result) -> None:
        layer, ranking, best, thumbs = result
        self._finish()
        self.progress.setValue(1)
        self.progress.setFormat(f"ranked in {time.perf_counter() - self._started:.1f} s")
        pixmaps = {}
        if thumbs is not None:
            for unit, image in zip(best, thumbs):
                pixmaps[unit] = pixmap_from(image)
        self.show_ranking(ranking, pixmaps)  # with the thumbnails, before the state says so without them
        self.state.update(ranking=ranking, layer=layer)
        self.ranked.emit(ranking)

    def show_ranking(self, ranking, thumbnails: dict | None = None) -> None:
        self.shown = ranking
        self.model.set_ranking(ranking, thumbnails)
        units = [int(u.unit) for u in ranking.units] if ranking is not None else []
        self.plot.set_ranking(units, [float(u.score) for u in ranking.units] if ranking is not None else [])
        self.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        if ranking is not None and ranking.units:
            best = ranking.units[0]
            self.summary.setText(f"Best: unit {best.unit} (score {float(best.score):.3g}). Double-click rows, or "
                                 "select them and press Add sliders.")

    def _on_failed(self, sentence: str) -> None:
        self._finish()
        self.progress.setValue(0)
        self.progress.setFormat("cancelled" if self.job is not None and self.job.cancelled else "failed")
        self.message.emit(sentence)

    def _on_unit_selected(self, unit: int) -> None:
        self.plot.set_marked(self.plot.marked, unit)
        self.unit_selected.emit(unit)
