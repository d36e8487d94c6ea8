"""The Rank panel: layer picker, options, Rank/Cancel with progress, the ranking table and its score plot.

Ranking runs as a job on the model's thread (``studio.ranking.rank_units``); the panel shows progress, and
Cancel makes the next progress report return False, which stops the ranking with ``Cancelled``::

    panel = RankingPanel(jobs, state)        # state: the window's studio.state.StudioState
    panel.rank()                             # same as pressing Rank
    panel.units_chosen.connect(sliders.add_units)

Until the user picks a layer by hand, Rank starts with a quick estimate over every spatial layer (the fast ranking
of ``rank --all-layers``) and ranks the layer whose best units explain the mask best; the picker moves there and
the summary says so ("Ranked on blocks.1: strongest for this mask"). A layer picked by hand is ranked as it is.
"""
from __future__ import annotations

import time

import numpy as np
import torch.nn.functional as F
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
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
from studio.ranking import rank_layers, rank_units
from studio.seeds import parse_seeds
from studio.state import RankOptions, StudioState

from .jobs import Job, JobRunner
from .qt_images import rgb_image
from .ranking_table import THUMB, RankingModel, RankingTable, ScorePlot

#: How many of the best units get a switched-off thumbnail.
THUMBNAILS = 24
#: The picker's entry that ranks every spatial layer (as ``python -m studio rank --all-layers``).
ALL_LAYERS = "*all*"
#: Side of the large switched-off view shown for the selected or hovered row, pixels.
PREVIEW = 192
#: One visible line per choice, so "fast" and "zero" mean something without hovering (the defaults suit most).
METHOD_LINES = {"fast": "Fast: estimates every unit at once, then re-checks the best exactly",
                "exact": "Exact: switches each unit off in turn and re-renders (slower, same idea)"}
ABLATION_LINES = {"zero": "a unit switched off outputs 0", "mean": "a unit switched off outputs its average"}
HINT_NO_MASK = "Paint a mask over what you want to explain, then press Rank."
HINT_MASK = "Mask painted: press Rank to find the units that make what is inside it."


class LayerPicker(QComboBox):
    """Each layer with its unit count and resolution (``LayerInfo.label()``); ``layer_changed(name)``."""

    layer_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip("The layer whose units are ranked and edited (until you pick one, Rank starts on the layer "
                        "that ranks best for the mask)")
        self.by_hand = False  # the user chose an entry (mouse or keys): Rank keeps to it
        self.currentIndexChanged.connect(lambda i: self.layer_changed.emit(self.itemData(i) or ""))
        self.activated.connect(self._picked)  # Qt emits it for the user's choices only, never for setCurrentIndex

    def _picked(self, _index: int) -> None:
        self.by_hand = True

    def set_layers(self, layers, current: str | None = None, start: str | None = None) -> None:
        """This model's layers; ``current`` (the state's) is shown if it has it, else ``start`` (the model's
        declared start layer) or a middle spatial one. A new list is not a choice by hand."""
        self.by_hand = False
        self.blockSignals(True)
        self.clear()
        for info in layers:
            self.addItem(info.label(), info.name)
            if not info.partial:
                self.setItemData(self.count() - 1, "Sliders re-render the whole model from this layer",
                                 Qt.ItemDataRole.ToolTipRole)
        if sum(1 for info in layers if info.size) > 1:
            self.addItem("All layers (start on the best)", ALL_LAYERS)
            self.setItemData(self.count() - 1, "Rank every spatial layer and show the one whose best units explain "
                             "the mask best", Qt.ItemDataRole.ToolTipRole)
        index = self.findData(current) if current else -1
        self.setCurrentIndex(index if index >= 0 else default_layer_index(layers, start))
        self.blockSignals(False)
        self.layer_changed.emit(self.current_layer() or "")

    def current_layer(self) -> str | None:
        """The chosen layer's name; None for "All layers" (no one layer yet)."""
        data = self.currentData()
        return None if data == ALL_LAYERS else data

    def all_layers(self) -> bool:
        return self.currentData() == ALL_LAYERS

    def show_layer(self, layer: str | None) -> None:
        """Follow the state's layer, or the best layer of an all-layers ranking (one this model lacks changes nothing)."""
        index = self.findData(layer) if layer else -1
        if index >= 0 and index != self.currentIndex():
            self.setCurrentIndex(index)


def default_layer_index(layers, start: str | None = None) -> int:
    """The model's start layer, else a middle spatial layer (objects and parts rather than textures or layout)."""

    names = [info.name for info in layers]
    name = default_layer(layers, start)
    return names.index(name) if name in names else 0


def thumbnails(images, size: int = PREVIEW):
    """(N, 3, H, W) images -> N (h, w, 3) uint8 arrays at most ``size`` wide/high (made on the worker thread)."""


    h, w = images.shape[-2:]
    scale = size / max(h, w)
    small = F.interpolate(images.float(), size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return [to_uint8(image) for image in small]


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
        self.seeds.textChanged.connect(lambda _: self.refresh())
        self.method.currentIndexChanged.connect(lambda _: self.refresh())
        self.ablation.currentIndexChanged.connect(lambda _: self.refresh())
        self.layers.currentIndexChanged.connect(lambda _: self.refresh())
        self.plan = QLabel("")  # what Rank will use, visible before it runs (settings come back from the last run)
        self.plan.setWordWrap(True)
        self.stale = QLabel("")
        self.stale.setWordWrap(True)
        self.stale.setStyleSheet("background:#7a5a12;color:white;padding:4px;border-radius:3px;")
        self.stale.hide()
        self.ranked_with: tuple | None = None  # (sample, mask) the shown ranking was made with
        self.preview = QLabel()
        self.preview.setFixedSize(PREVIEW, PREVIEW)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setToolTip("The image with the selected (or hovered) unit switched off")
        self.preview.setStyleSheet("background:#28282c;color:#bbb;")
        self.preview.setText("Select a row to see\nits unit switched off")
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
        self.table.setMouseTracking(True)
        self.table.entered.connect(lambda index: self._show_preview(self.table.unit_at(index.row())))
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
        self.explained = QLabel()
        self.explained.setWordWrap(True)
        self.explained.setStyleSheet("color: gray")
        form.addRow(self.explained)
        self.method.currentIndexChanged.connect(lambda _: self._explain())
        self.ablation.currentIndexChanged.connect(lambda _: self._explain())
        self._explain()
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
        layout.addWidget(self.plan)
        layout.addLayout(buttons)
        layout.addWidget(self.stale)
        layout.addWidget(split, 1)  # the table keeps the panel's whole width, so its columns never scroll sideways
        below = QHBoxLayout()
        below.addWidget(self.preview, 0, Qt.AlignmentFlag.AlignTop)
        self.summary = QLabel(HINT_NO_MASK)
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

    def _explain(self) -> None:
        self.explained.setText(f"{METHOD_LINES.get(self.method.currentData(), '')}; "
                               f"{ABLATION_LINES.get(self.ablation.currentData(), '')}. The defaults suit most masks.")

    def show_mask_state(self, has_mask: bool) -> None:
        """The hint under the table follows the mask until a ranking replaces it."""
        if self.state.ranking is None:
            self.summary.setText(HINT_MASK if has_mask else HINT_NO_MASK)

    # -- options ----------------------------------------------------------------------------------------------
    def options(self) -> dict:
        return {"method": self.method.currentData(), "ablation": self.ablation.currentData(),
                "seeds": self.seeds.text()}

    def set_options(self, method: str = "fast", ablation: str = "zero", seeds: str = "") -> None:
        self.method.setCurrentIndex(max(self.method.findData(method), 0))
        self.ablation.setCurrentIndex(max(self.ablation.findData(ablation), 0))
        self.seeds.setText(seeds)
        self.refresh()

    # -- what Rank will use, and whether the shown ranking still fits ------------------------------------------
    def refresh(self) -> None:
        """Say what Rank will use now, and mark the shown ranking stale when the seed or the mask moved on."""
        state, options = self.state, self.options()
        if self.layers.all_layers():
            layer = "every layer"
        elif self.layers.by_hand or not self.layers.current_layer() or self.layers.findData(ALL_LAYERS) < 0:
            layer = self.layers.current_layer() or "no layer"
        else:
            layer = "the layer that ranks best for the mask (a quick estimate over every layer; pick one to keep it)"
        try:
            seeds = parse_seeds(options["seeds"], state.sample.seed if state.sample is not None else 0)
            images = f"{len(seeds)} image{'s' if len(seeds) > 1 else ''}"
            which = f"seeds {options['seeds'].strip()} ({images})" if options["seeds"].strip() else \
                f"the current seed ({images})"
        except StudioError as error:
            which = f"no seeds yet ({error})"
        mask = "the painted mask" if state.has_mask() else "no mask yet: paint one first"
        self.plan.setText(f"Rank will use: {layer}, {which}, {mask}; {options['method']} method, units switched "
                          f"off to {options['ablation']}.")
        self.stale.setVisible(self.model.rowCount() > 0 and self._stale_reason() is not None)
        reason = self._stale_reason()
        if reason:
            self.stale.setText(f"Out of date: this ranking was made {reason}. Rank again to update it.")
        self.table.setStyleSheet("QTableView { color: #888; }" if self.stale.isVisible() else "")

    def _stale_reason(self) -> str | None:
        if self.ranked_with is None:
            return None
        sample, mask = self.ranked_with
        now = self.state.sample
        reasons = []
        if now is not None and sample is not None and (now.seed, now.prompt) != (sample.seed, sample.prompt):
            reasons.append(f"on seed {sample.seed}" + (f" ('{sample.prompt}')" if sample.prompt else ""))
        current = self.state.mask.numpy() if self.state.mask is not None else None
        if (mask is None) != (current is None) or (mask is not None and not np.array_equal(mask, current)):
            reasons.append("with an earlier mask")
        return " and ".join(reasons) or None

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
        every = self.layers.all_layers()
        layer = self.layers.current_layer()
        if not layer and not every:
            raise StudioError("Choose a layer to rank.")
        # start on the layer that ranks best for this mask (with one spatial layer, there is nothing to choose)
        auto = not every and not self.layers.by_hand and self.layers.findData(ALL_LAYERS) >= 0
        mask_array = state.mask.numpy() if state.mask is not None else None
        if mask_array is None:
            raise StudioError("The mask is empty: paint over the region you want to explain before ranking.")
        mask, _ = mask_from_array(mask_array, tuple(mask_array.shape))
        options = self.options()
        state.rank_options = RankOptions(options["method"], options["ablation"], options["seeds"])
        seeds = parse_seeds(options["seeds"], state.sample.seed)
        base = state.sample
        self._ranking_with = (base, mask_array.copy())

        def work(generator, progress):
            samples = [base.with_seed(seed) for seed in seeds]
            if every:  # every spatial layer, best first (the CLI's --all-layers)
                layers = rank_layers(generator, samples, mask.to(generator.device), method=options["method"],
                                     ablation=options["ablation"], progress=progress)
                ranking, chosen = layers[0].ranking, layers[0].layer
            elif auto:  # the quick estimate picks the layer; the chosen method then ranks it
                layers = rank_layers(generator, samples, mask.to(generator.device), method="fast",
                                     ablation=options["ablation"], progress=progress)
                ranking, chosen = layers[0].ranking, layers[0].layer
                if options["method"] != "fast":
                    ranking = rank_units(generator, samples, mask.to(generator.device), chosen,
                                         method=options["method"], ablation=options["ablation"], progress=progress)
            else:
                layers, chosen = None, layer
                ranking = rank_units(generator, samples, mask.to(generator.device), layer, method=options["method"],
                                     ablation=options["ablation"], progress=progress)
            best = [int(u.unit) for u in ranking.units[:THUMBNAILS]]
            thumbs = None
            if best:  # QImages, both sizes, made here: scaling and converting them took ~45 ms of the GUI thread
                off = unit_off_images(generator, base, chosen, best)
                thumbs = ([rgb_image(a) for a in thumbnails(off)], [rgb_image(a) for a in thumbnails(off, THUMB)])
            return chosen, ranking, best, thumbs, layers, auto

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
        layer, ranking, best, thumbs, layers, auto = result
        self._finish()
        self.progress.setValue(1)
        self.progress.setFormat(f"ranked in {time.perf_counter() - self._started:.1f} s")
        large, small = thumbs if thumbs is not None else ([], [])
        if layers is not None:
            self.layers.show_layer(layer)  # start on the layer that ranks best for this mask
        self.show_ranking(ranking, dict(zip(best, large)), ranked_with=self._ranking_with,  # with the thumbnails,
                          small=dict(zip(best, small)))                                     # before the state
        self.state.update(ranking=ranking, layer=layer)                     # says so without them
        if layers is not None:
            order = ", ".join(f"{s.layer} {s.mean_top_score:.3g}" for s in layers)
            lead = f"Ranked on {layer}: strongest for this mask." if auto else f"Best layer: {layer}."
            self.summary.setText(f"{lead} {self.summary.text()} Layers by their top units' mean score: {order}.")
        self.ranked.emit(ranking)

    def show_ranking(self, ranking, thumbnails: dict | None = None, ranked_with: tuple | None = None,
                     small: dict | None = None) -> None:
        """Show ``ranking`` from its first row; ``ranked_with`` (sample, mask) lets the panel say when it is stale;
        ``thumbnails``/``small``: unit -> switched-off image, full and table size (QImage or QPixmap)."""
        self.shown = ranking
        self.model.set_ranking(ranking, thumbnails, small)
        self.ranked_with = ranked_with if ranking is not None else None
        self.table.scrollToTop()  # the best rows, which the summary names, are in view
        self._show_preview(-1)
        units = [int(u.unit) for u in ranking.units] if ranking is not None else []
        self.plot.set_ranking(units, [float(u.score) for u in ranking.units] if ranking is not None else [])
        self.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        if ranking is not None and ranking.units:
            best = ranking.units[0]
            self.summary.setText(f"Best: {ranking.layer}:{best.unit} (score {float(best.score):.3g}). Double-click "
                                 "rows, or select them and press Add sliders.")
        self.refresh()

    def _on_failed(self, sentence: str) -> None:
        self._finish()
        self.progress.setValue(0)
        self.progress.setFormat("cancelled" if self.job is not None and self.job.cancelled else "failed")
        self.message.emit(sentence)

    def _on_unit_selected(self, unit: int) -> None:
        self.plot.set_marked(self.plot.marked, unit)
        self._show_preview(unit)
        self.unit_selected.emit(unit)

    def _show_preview(self, unit: int) -> None:
        pixmap = self.model.thumbnail(unit) if unit >= 0 else None
        if pixmap is None:
            self.preview.setPixmap(QPixmap())
            self.preview.setText("Select a row to see\nits unit switched off")
            return
        self.preview.setPixmap(pixmap.scaled(PREVIEW, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))
        self.preview.setToolTip(f"Unit {unit} switched off")
