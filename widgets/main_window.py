"""The main window: model, seed and prompt above the canvas; beside it tabs for units (ranking and sliders),
concept edits and a seed grid; device and frame time in the status bar. Every computation runs on the model's worker thread.

    window = MainWindow("rooms", "auto")       # loads in the background; ``image_shown`` after each frame
    window.canvas.set_mask(mask)               # what the user paints
    window.ranking.rank()                      # a job with progress and Cancel
    window.sliders.add_units("blocks.1", [17])  # then drag: frames follow, newest request wins
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from studio.concept import applied_labels
from studio.image_meta import has_settings
from studio.core.device import describe
from studio.live import Frame, LiveRequest, unit_activation
from studio.seeds import SEED_MAX
from studio.state import StudioState

from . import gui_gc
from .banner import MessageBanner
from .canvas import Canvas
from .export_dialog import ExportDialog
from .history_strip import HistoryStrip
from .image_actions import ImageActions
from .invert_actions import IMAGE_SUFFIXES, InvertActions
from .jobs import JobRunner
from .knob_examples import KnobExamples
from .knob_panel import KnobPanel
from .mask_tools import MaskTools
from .model_picker import ModelPicker
from .qt_images import dice_icon, heatmap_image
from .ranking_panel import RankingPanel
from .sample_options import SampleOptionsBar
from .recovery_actions import RecoveryActions
from .seed_box import SeedBox
from .seed_browser import SeedBrowser
from .session_actions import SessionActions
from .slider_panel import SliderPanel
from .units_browser import UnitsBrowser
from .worker import ModelWorker, WorkerThread



def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class MainWindow(QMainWindow):
    request_load = Signal(str, str)
    wake_worker = Signal()
    image_shown = Signal()
    frame_shown = Signal(object)  # studio.live.Frame
    model_loaded = Signal(object)  # Generator
    load_failed = Signal(str)  # one sentence; the previous model (if any) is still loaded

    def __init__(self, model: str | None = None, device: str = "auto", settings: QSettings | None = None,
                 config_dir: str | None = None) -> None:
        """``settings``/``config_dir``: where preferences and the recovery file live (default: the user's)."""
        super().__init__()
        self.setWindowTitle("Neuron Studio")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings()
        self.state = StudioState(model=model, device=device)
        self.generator = None
        self.dropped_frames = 0
        self.last_frame: Frame | None = None
        self._posted = self._shown = self._content = 0
        self._sent_at = 0.0
        self._holding = False
        self._focus_unit: tuple[str, int] | None = None
        self.config_dir = Path(config_dir) if config_dir else None  # recent sessions and recovery live here
        self.confirm_close = True  # ask about unsaved edits on close (never in --screenshot runs)
        self.exporter = None  # the Export dialog, made on first use

        gui_gc.install()  # garbage with Qt objects in it is collected here, never in the model thread
        self.worker = ModelWorker()
        self.thread = WorkerThread(self.worker)
        self.jobs = JobRunner(self.worker, self)
        self.request_load.connect(self.worker.load)
        self.wake_worker.connect(self.worker.render_newest)
        self.worker.loaded.connect(self._on_loaded)
        self.worker.load_failed.connect(self._on_load_failed)
        self.worker.frame.connect(self._on_frame)
        self.worker.frame_failed.connect(lambda stamp, sentence: self.show_error(sentence))

        self._build_widgets()
        self.sessions = SessionActions(self)
        self.images = ImageActions(self)
        self.inversions = InvertActions(self)  # the user's own image: Open image, drops, --image
        self.history.chosen.connect(self.sessions.restore)
        self.recovery = RecoveryActions(self, Path(config_dir) / "recovery" if config_dir else None)
        self.centre_column.insertWidget(self.centre_column.indexOf(self.canvas), self.recovery.offer)
        self.centre_column.insertWidget(self.centre_column.indexOf(self.canvas), self.inversions.bar)
        self._follow_state()
        self._build_menus()
        self._restore_settings()
        self.open_model(model or "")

    # -- layout -------------------------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.picker = ModelPicker(self.settings)
        self.picker.open_requested.connect(self.open_model)
        self.picker.unavailable.connect(self.show_error)  # stays until closed: the install command can be read
        self.seed = SeedBox()  # -1 picks a random seed and shows it
        self.seed.setMinimumWidth(110)  # room for ten digits
        self.seed.valueChanged.connect(self._on_seed_edited)
        self.seed.invalid.connect(lambda sentence: self.show_error(sentence))
        self.rest_timer = QTimer(self)  # a slider at rest for this long gets its full-quality frame
        self.rest_timer.setSingleShot(True)
        self.rest_timer.setInterval(300)
        self.rest_timer.timeout.connect(lambda: self._post())
        previous, following, lucky = QPushButton("◀"), QPushButton("▶"), QPushButton(dice_icon(), "")
        previous.setToolTip("Previous seed (Alt+Left)")
        previous.setShortcut(QKeySequence("Alt+Left"))
        following.setToolTip("Next seed (Alt+Right)")
        following.setShortcut(QKeySequence("Alt+Right"))
        lucky.setToolTip("A random seed (Alt+R)")
        lucky.setShortcut(QKeySequence("Alt+R"))
        lucky.setAccessibleName("Random seed")
        self.dice = lucky
        for button in (previous, following, lucky):
            button.setFixedWidth(32)
        previous.clicked.connect(lambda: self.seed.setValue(max(self.seed.value() - 1, 0)))
        following.clicked.connect(lambda: self.seed.setValue(min(self.seed.value() + 1, SEED_MAX)))
        lucky.clicked.connect(lambda: self.seed.setValue(-1))
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("prompt (text models)")
        self.prompt.returnPressed.connect(self.generate)
        top = QToolBar("Sample")
        top.setObjectName("SampleBar")
        top.setMovable(False)
        top.addWidget(QLabel(" Model "))
        top.addWidget(self.picker)
        top.addSeparator()
        top.addWidget(QLabel(" Seed "))
        for widget in (previous, self.seed, following, lucky):
            top.addWidget(widget)
        top.addSeparator()
        top.addWidget(QLabel(" Prompt "))
        top.addWidget(self.prompt)
        self.sample_options = SampleOptionsBar()  # class, psi, noise: whatever the model's family declares
        self.sample_options.changed.connect(self.generate)
        self.sample_options_action = top.addWidget(self.sample_options)
        self.sample_options_action.setVisible(False)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, top)

        self.canvas = Canvas()
        self.canvas.mask_changed.connect(self._on_mask_changed)
        self.tools = MaskTools(self.canvas)
        self.banner = MessageBanner(self.canvas)  # over the canvas: a message never pushes the image down
        centre = QWidget()
        column = QVBoxLayout(centre)
        column.setContentsMargins(4, 4, 4, 4)
        self.addToolBarBreak()  # the mask tools get a row of their own: all of them fit at 1280 px wide
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.tools)
        column.addWidget(self.canvas, 1)
        self.history = HistoryStrip()
        column.addWidget(self.history)
        self.history_timer = QTimer(self)  # a result joins the history once it has rested on screen
        self.history_timer.setSingleShot(True)
        self.history_timer.setInterval(700)
        self.history_timer.timeout.connect(lambda: self.last_frame and self.history.record(self.last_frame, self.state))
        self.centre_column = column

        self.ranking = RankingPanel(self.jobs, self.state)
        self.ranking.message.connect(  # a cancel the user asked for is news, not an error
            lambda sentence: (self.show_info if self.ranking.progress.format() == "cancelled" else self.show_error)(
                sentence))
        self.ranking.units_chosen.connect(self._add_sliders)
        self.ranking.units_edited.connect(self._edit_units)
        self.ranking.unit_selected.connect(self._on_unit_selected)
        self.ranking.layers.layer_changed.connect(self._on_layer_changed)
        self.sliders = SliderPanel()
        self.sliders.edits_changed.connect(self._on_edits_changed)
        self.sliders.local_changed.connect(self._on_local_changed)
        self.sliders.hold_original.connect(self._on_hold)
        self.sliders.side_by_side.connect(self._on_side_by_side)
        self.sliders.unit_focused.connect(self._show_activation_of)
        units = QSplitter(Qt.Orientation.Vertical)
        units.setObjectName("UnitsSplitter")
        units.addWidget(self.ranking)
        units.addWidget(self.sliders)
        units.setStretchFactor(0, 3)
        units.setStretchFactor(1, 2)
        self.seeds = SeedBrowser(self.jobs)
        self.seeds.seed_picked.connect(self.seed.setValue)
        self.seeds.message.connect(self.show_error)
        self.tabs = QTabWidget()
        self._add_knob_panel()
        self.tabs.addTab(units, "Units")
        self.concepts = None
        # The concept-edit panel (widgets/concept_panel.py, a colleague's): ConceptPanel(jobs), told about models
        # with set_generator(), emitting model_changed() after weight edits.
        self._add_concept_panel()
        self.tabs.addTab(self.seeds, "Seeds")
        self.dissection = UnitsBrowser(self.jobs)
        self.dissection.message.connect(self.show_error)
        self.dissection.add_slider.connect(lambda layer, unit: self.sliders.add_units(layer, [unit]))
        self.dissection.knob_made.connect(self._knob_from_dissection)
        self.ranking.layers.layer_changed.connect(self.dissection.set_layer)
        self.tabs.addTab(self.dissection, "Dissection")
        self.tabs.currentChanged.connect(lambda _: self._browse_seeds_if_visible())
        split = QSplitter(Qt.Orientation.Horizontal)
        split.setObjectName("MainSplitter")
        split.addWidget(centre)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([720, 520])
        self.splitter = split
        self.setCentralWidget(split)

        self.device_label = QLabel("device: …")
        self.frame_label = QLabel("")
        self.statusBar().addPermanentWidget(self.frame_label)
        self.statusBar().addPermanentWidget(self.device_label)

    def _knob_from_dissection(self, knob) -> None:
        self.knobs.add_knob(knob)
        self.statusBar().showMessage(f"Knob '{knob.name}' is in the Knobs tab: paint where, then Apply "
                                     "(1 switches its units off there, -1 draws what they fire on).", 10000)

    def _add_knob_panel(self) -> None:
        """The Knobs tab (first: the app's answer to "switch this off") and the examples beside the seed grid."""
        self.knobs = KnobPanel(self.canvas.undo_stack, mask=lambda: self.state.mask)
        self.knobs.knobs_changed.connect(self._on_knobs_changed)
        self.knobs.message.connect(lambda sentence: self.statusBar().showMessage(sentence, 10000))
        self.knobs.learn_requested.connect(self._gather_examples)
        self.tabs.addTab(self.knobs, "Switch off: Knobs")
        self.examples = KnobExamples(self.jobs, self.state, self.seeds)
        self.examples.knob_learned.connect(self.knobs.add_knob)
        self.examples.message.connect(lambda sentence: self.statusBar().showMessage(sentence, 10000))
        self.seeds.set_side_widget(self.examples)

    def _gather_examples(self) -> None:
        """"Make a knob from examples": the Seeds tab, gathering."""
        self.seeds.gather.setChecked(True)
        self.tabs.setCurrentWidget(self.seeds)

    def _add_concept_panel(self) -> None:
        try:
            from .concept_panel import ConceptPanel
        except ModuleNotFoundError as error:
            if error.name != "widgets.concept_panel":
                raise  # the panel exists but something it imports is missing: say so, do not hide it
            return  # not written yet: the window works without it
        self.concepts = ConceptPanel(self.jobs, parent=self)
        self.concepts.model_changed.connect(self._on_weights_changed)
        self.concepts.message.connect(lambda sentence: self.statusBar().showMessage(sentence, 10000))
        self.tabs.addTab(self.concepts, "Concepts")

    def _build_menus(self) -> None:
        file = self.menuBar().addMenu("&File")
        file.addAction("Open model file…", self.picker.open_file)
        file.addAction("Open model folder…", self.picker.open_folder)
        file.addSeparator()
        file.addAction(self.inversions.open_action)
        file.addAction(self.inversions.continue_action)
        file.addSeparator()
        file.addAction(self.sessions.open_action)
        file.addAction(self.sessions.save_action)
        file.addMenu(self.sessions.recent_menu)
        file.addAction(self.sessions.save_action)
        file.addAction(self.sessions.save_as_action)
        file.addAction(self.recovery.recover_action)
        file.addSeparator()
        self.export_action = file.addAction("Export…", self.show_export)
        self.export_action.setShortcut(QKeySequence("Ctrl+E"))
        self.export_action.setToolTip("Write the edited model as a checkpoint, then reopen and check it")
        file.addAction(self.images.export_action)
        file.addSeparator()
        quit_action = file.addAction("Quit", self.close)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        edit = self.menuBar().addMenu("&Edit")
        for action in (self.tools.undo, self.tools.redo, None, self.tools.clear, self.tools.invert, self.tools.fill,
                       self.tools.feather, None, self.tools.smaller, self.tools.larger, self.tools.show_mask):
            edit.addAction(action) if action is not None else edit.addSeparator()
        view = self.menuBar().addMenu("&View")
        fit = view.addAction("Fit image", self.canvas.fit)
        fit.setShortcut(QKeySequence("Ctrl+0"))
        self.activation_action = QAction("Activation map", self, checkable=True)
        self.activation_action.setToolTip("Overlay where the selected unit fires")
        self.activation_action.setShortcut(QKeySequence("A"))
        self.activation_action.toggled.connect(self._on_activation_toggled)
        view.addAction(self.activation_action)
        self.tools.addSeparator()
        self.tools.addAction(self.activation_action)
        view.addSeparator()
        for index in range(self.tabs.count()):
            action = view.addAction(self.tabs.tabText(index), lambda i=index: self.tabs.setCurrentIndex(i))
            action.setShortcut(QKeySequence(f"Ctrl+{index + 1}"))

    # -- settings -----------------------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = self.settings
        geometry, state = s.value("window/geometry"), s.value("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        for splitter in self.findChildren(QSplitter):  # the image | panel split and the ranking | sliders split
            if splitter.objectName() and s.value(f"window/{splitter.objectName()}") is not None:
                splitter.restoreState(s.value(f"window/{splitter.objectName()}"))
        self.tools.size.setValue(int(s.value("mask/brush", self.canvas.brush_size)))
        self.tools.opacity.setValue(int(s.value("mask/opacity", int(self.canvas.overlay_opacity * 100))))
        self.ranking.set_options(str(s.value("rank/method", "fast")), str(s.value("rank/ablation", "zero")),
                                 str(s.value("rank/seeds", "")))
        self.sliders.local.setChecked(str(s.value("sliders/local", "false")).lower() == "true")

    def _save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        for splitter in self.findChildren(QSplitter):
            if splitter.objectName():
                s.setValue(f"window/{splitter.objectName()}", splitter.saveState())
        s.setValue("mask/brush", self.tools.size.value())
        s.setValue("mask/opacity", self.tools.opacity.value())
        options = self.ranking.options()
        s.setValue("rank/method", options["method"])
        s.setValue("rank/ablation", options["ablation"])
        s.setValue("rank/seeds", options["seeds"])
        s.setValue("sliders/local", self.sliders.local.isChecked())
        s.sync()

    # -- models -------------------------------------------------------------------------------------------------
    def open_model(self, spec: str) -> None:
        """Load ``spec`` (built-in name or path) on the worker; the current model keeps working until it lands."""
        self.canvas.placeholder = f"Loading {spec or 'the default model'}…"
        self.statusBar().showMessage(self.canvas.placeholder)
        self.canvas.update()
        self.request_load.emit(spec, self.state.device)

    def _on_loaded(self, generator) -> None:
        changed = self.generator is not None and self.generator is not generator
        self.generator = generator
        self.state.model = generator.source
        self.picker.remember(generator.source)
        self.device_label.setText(f"device: {describe(generator.device, generator.dtype)}")
        self.prompt.setEnabled(generator.takes_prompt)
        self.sample_options_action.setVisible(self.sample_options.set_options(generator.sample_options()))
        if generator.takes_prompt and not self.prompt.text():
            self.prompt.setText(generator.default_prompt)
        if changed:  # another model: old units and rankings mean nothing here
            self.state.update(edits=[], ranking=None, inversion=None)  # an inverted image belongs to its model
            self.knobs.clear_knobs()
            self.state.examples.clear()
            self.dissection.set_layer(None)
        self.ranking.layers.set_layers(generator.layers(), self.state.layer, generator.start_layer)
        if self.concepts is not None:
            self.concepts.set_generator(generator)
        self.knobs.load_shipped(self.jobs)
        self._show_step_count()
        self.banner.hide()
        self.statusBar().showMessage(f"Loaded {generator.name} ({generator.family})", 4000)
        self.model_loaded.emit(generator)
        self.generate()

    def _on_load_failed(self, sentence: str) -> None:
        if self.generator is None:  # the banner says why; the canvas says what to do (not the same sentence twice)
            self.canvas.placeholder = "No model is loaded: choose one in the Model box, or open a model file."
            self.canvas.update()
        self.show_error(sentence)
        self.load_failed.emit(sentence)
        self.image_shown.emit()

    # -- rendering ----------------------------------------------------------------------------------------------
    def generate(self) -> None:
        """Render the current seed and prompt (with the sliders' edits)."""
        if self.generator is None:
            return
        prompt = self.prompt.text().strip() or None
        sample = self.generator.sample(self.seed.value(), prompt, **self.sample_options.values())
        if sample == self.state.sample:
            self._render_sample()  # the same sample on another model, or asked for again: render it anew
        else:
            self.state.sample = sample  # the state's change renders it

    def _render_sample(self) -> None:
        self.canvas.set_heatmap(None)
        self._post(content=True)
        self._browse_seeds_if_visible()

    def _on_sample_changed(self, event) -> None:
        self._show_sample_fields(event.value)
        self._show_step_count()
        if event.old is not None and event.value is not None and event.value.seed != event.old.seed:
            self._say_what_carries_over(event.value.seed)

    def _show_step_count(self) -> None:
        """Edit windows count in the sample's denoising steps: slider and knob rows offer them (none on GANs)."""
        sample, generator = self.state.sample, self.generator
        steps = generator.denoising_steps(sample) if generator is not None and sample is not None else None
        self.knobs.set_step_count(steps)
        self.sliders.set_step_count(steps)

    def _say_what_carries_over(self, seed: int) -> None:
        """A new seed keeps the edits and the mask: say so, rather than carry them silently."""
        kept = self.state.carried_over()
        if kept:
            self.statusBar().showMessage(f"Seed {seed}: kept {_join(kept)} from the previous seed "
                                         "(remove them in the panels, or Clear the mask).", 10000)

    def _post(self, content: bool = False, preview: bool = False) -> int:
        """Put the newest state in the worker's mailbox and wake it (older unrendered states are dropped)."""
        if self.state.sample is None:
            return self._posted
        edits, knobs = self.state.render_edits(), tuple(self.state.knobs)
        concept_edits = applied_labels(self.generator) if self.generator is not None else []
        request = LiveRequest(self.state.sample, edits, self.state.mask if self.state.has_mask() else None,
                              original=bool(edits or knobs or concept_edits), preview=preview, knobs=knobs)
        self.sliders.show_sides(len(edits), concept_edits)
        self._posted = self.worker.mailbox.post(request)
        if content:
            self._content = self._posted
        self._sent_at = time.perf_counter()
        self.wake_worker.emit()
        return self._posted

    def _on_frame(self, frame: Frame) -> None:
        if frame.stamp <= self._shown or frame.stamp < self._content:
            self.dropped_frames += 1
            return  # stale: a newer frame is shown, or it belongs to a previous seed or model
        self._shown = frame.stamp
        self.last_frame = frame
        self.canvas.set_image(frame.image, frame.original if frame.original is not None else frame.image)
        how = f"partial from {frame.layer}" if frame.partial else "full"
        how += ", preview" if frame.preview else ""
        self.frame_label.setText(f"frame {frame.ms:.0f} ms ({how})")
        if not frame.preview and frame.stamp == self._posted:
            self.history_timer.start()
        self.frame_shown.emit(frame)
        self.image_shown.emit()

    def show_error(self, sentence: str) -> None:
        self.banner.show_message(sentence)
        self.statusBar().clearMessage()  # the banner says it; the same sentence twice reads as two errors

    def show_info(self, sentence: str) -> None:
        """A finished job's message: shown over the canvas for a few seconds, then gone by itself."""
        self.banner.show_message(sentence, error=False)
        self.statusBar().showMessage(sentence, 10000)

    # -- the state and its views ----------------------------------------------------------------------------------
    def _follow_state(self) -> None:
        """The views follow ``self.state``: whoever changes it (the user, a restore, a script), every view shows
        the change once, and one render follows each change. The ranking panel (widgets/ranking_panel.py) and
        the autosave (widgets/recovery_actions.py) follow it themselves."""
        events = self.state.events
        events.sample.connect(self._on_sample_changed)
        events.mask.connect(lambda event: self.canvas.show_mask(event.value))
        events.mask.connect(lambda event: self.ranking.show_mask_state(self.state.has_mask()))
        events.changed.connect(lambda event: self.ranking.refresh())  # the plan, and whether the ranking is stale
        events.edits.connect(lambda event: self.sliders.show_edits(event.value))
        events.knobs.connect(lambda event: self.knobs.set_edits(event.value))
        events.local.connect(lambda event: self.sliders.local.setChecked(bool(event.value)))
        events.layer.connect(lambda event: self._forget_ranking_of_other_layers(event.value))
        events.changed.connect(self._on_state_changed)

    def _show_sample_fields(self, sample) -> None:
        if sample is None:
            return
        if self.prompt.text() != (sample.prompt or ""):
            self.prompt.setText(sample.prompt or "")
        self.sample_options.set_values(sample.options)
        self.seed.setValue(sample.seed)  # the same seed as the state's: _on_seed_edited does nothing

    def _forget_ranking_of_other_layers(self, layer: str | None) -> None:
        ranking = self.state.ranking
        if ranking is not None and getattr(ranking, "layer", layer) != layer:
            self.state.ranking = None

    def _on_state_changed(self, event) -> None:
        names = event.value
        if names & {"edits", "layer"}:
            self.ranking.plot.set_marked([e.unit for e in self.state.edits if e.layer == self.state.layer],
                                         self.ranking.plot.current)
        if "sample" in names:
            self._render_sample()
        elif "knobs" in names and "edits" not in names:
            self._post()
            self._browse_seeds_if_visible()
        elif "edits" in names:
            self._browse_seeds_if_visible()
            if self.generator is not None and self.generator.preview_options():
                # slow families: a quick preview while the slider moves, the full frame once it rests
                self._post(preview=True)
                self.rest_timer.start()
            else:
                self._post()
        elif self.state.edits and ("local" in names or ("mask" in names and self.state.local)):
            self._post()

    # -- reactions: what the user does goes into the state ---------------------------------------------------------
    def _on_seed_edited(self, seed: int) -> None:
        if self.state.sample is None or self.state.sample.seed != seed:
            self.generate()

    def _on_mask_changed(self) -> None:
        mask = self.canvas.mask()
        self.state.mask = torch.from_numpy(mask) if mask is not None else None

    def _on_edits_changed(self, edits: list) -> None:
        self.state.edits = list(edits)

    def _on_knobs_changed(self, edits: list) -> None:
        self.state.knobs = list(edits)  # the state's change renders and autosaves

    def _on_local_changed(self, local: bool) -> None:
        self.state.local = local

    def _on_layer_changed(self, layer: str) -> None:
        if layer:
            self.state.layer = layer

    def _add_sliders(self, units: list) -> None:
        ranking = self.state.ranking  # the table's rows are this ranking's units (its layer, even with "All layers")
        layer = getattr(ranking, "layer", None) or self.ranking.layers.current_layer()
        if layer and units:
            self.sliders.add_units(layer, units)

    def _edit_units(self, units: list, op: str, value: float) -> None:
        layer = self.ranking.layers.current_layer()
        if layer and units:
            self.sliders.apply_to_units(layer, units, op, value)

    def _on_hold(self, pressed: bool) -> None:
        self._holding = pressed
        self.canvas.set_view("original" if pressed else ("side-by-side" if self.sliders.compare.isChecked() else "edited"))

    def _on_side_by_side(self, on: bool) -> None:
        self.canvas.set_view("side-by-side" if on else "edited")
        self.canvas.fit()

    def _on_weights_changed(self) -> None:
        self.recovery.edited()  # a concept edit is an edit: autosave it, ask before closing
        self._post(content=True)  # the worker dropped its caches when the job ran

    def _on_unit_selected(self, unit: int) -> None:
        layer = self.ranking.layers.current_layer()
        if unit >= 0 and layer:
            self._show_activation_of(layer, unit, only_if_shown=True)

    # -- activation overlay -------------------------------------------------------------------------------------
    def _on_activation_toggled(self, on: bool) -> None:
        if not on:
            self.canvas.set_heatmap(None)
        elif self._focus_unit is not None:
            self._show_activation_of(*self._focus_unit)
        else:
            layer = self.ranking.layers.current_layer()
            chosen = [(layer, u) for u in self.ranking.table.selected_units()] or [(e.layer, e.unit)
                                                                                    for e in self.state.edits]
            if chosen and chosen[0][0]:
                self._show_activation_of(*chosen[0])
            else:
                self.statusBar().showMessage("Select a unit in the ranking table to see where it fires.", 5000)

    def _show_activation_of(self, layer: str, unit: int, only_if_shown: bool = False) -> None:
        self._focus_unit = (layer, unit)
        if only_if_shown and not self.activation_action.isChecked():
            return
        if not self.activation_action.isChecked():
            self.activation_action.setChecked(True)  # toggling calls back here
            return
        sample = self.state.sample
        if sample is None:
            return

        def work(generator):
            return unit_activation(generator, sample, layer, unit).numpy()

        def done(values) -> None:
            if self.activation_action.isChecked() and self._focus_unit == (layer, unit) and self.state.sample == sample:
                self.canvas.set_heatmap(heatmap_image(values))
                self.statusBar().showMessage(f"Activation of {layer} unit {unit}", 4000)

        self.jobs.submit(work, done, self.show_error)

    def _browse_seeds_if_visible(self) -> None:
        self.seeds.set_carry_text(self._edits_text())
        if self.tabs.currentWidget() is self.seeds and self.state.sample is not None:
            seed, page = self.seed.value(), len(self.seeds.buttons)
            first = self.seeds.first if self.seeds.sample is not None else seed - seed % page  # its page
            self.seeds.show_seeds(self.state.sample, first, self.state.render_edits(),
                                  self.state.mask if self.state.has_mask() else None, self.state.knobs)

    def _edits_text(self) -> str:
        kept = self.state.carried_over()
        edits = [k for k in kept if k != "the mask"]
        shown = f"Shown with {_join(edits)}" if edits else "No edits: the seeds as the model makes them"
        return f"{shown}; picking a seed keeps {_join(kept)}." if kept else f"{shown}."

    # -- drag and drop ------------------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        if Path(paths[0]).suffix.lower() == ".nstudio":
            self.sessions.open(paths[0])
        elif Path(paths[0]).suffix.lower() == ".png" and has_settings(paths[0]):
            self.images.restore(paths[0])  # an exported image: its seed, prompt, model and edits
        elif Path(paths[0]).suffix.lower() in IMAGE_SUFFIXES:  # the user's own picture: invert it
            self.inversions.open(paths[0])
        else:
            self.open_model(paths[0])

    # -- closing ------------------------------------------------------------------------------------------------
    def show_export(self):
        """File → Export…: the dialog for the loaded model (a job exports, checks and reports)."""
        if self.generator is None:
            self.show_error("Nothing to export yet: no model is loaded.")
            return None

        if self.exporter is None or self.exporter.generator is not self.generator:
            if self.exporter is not None:
                self.exporter.deleteLater()
            self.exporter = ExportDialog(self)  # its formats depend on the model's family
        self.exporter.show()
        self.exporter.raise_()
        return self.exporter

    def closeEvent(self, event) -> None:
        if self.confirm_close and not self.sessions.ask_to_save(then=self.close):
            event.ignore()  # Cancel, or Save still writing (it closes the window when done)
            return
        self._save_settings()
        self.recovery.timer.stop()
        self.recovery.saved()  # a normal close: nothing to recover next time
        self.jobs.cancel_all()
        self.thread.stop()  # quit() then wait(): a running job stops at its next progress report
        super().closeEvent(event)
