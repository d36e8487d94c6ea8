"""The Concepts panel: rewrite what words mean to a text model (closed-form edits of cross-attention k/v).

Rows of edits (kind, concept, target or guide), a preserve list, the strengths, Apply / Undo / Redo / Revert, the
stack of applied edits, and a before/after grid of test prompts rendered with the same seeds. Every weight change
runs as a job on the model's worker thread (``studio.concept``), so no frame sees half-written weights::

    panel = ConceptPanel(jobs)
    panel.set_generator(generator)           # enables itself for models with cross-attention
    panel.rows[0].set("replace", "red", "blue"); panel.preserve.setText("green, yellow")
    panel.apply()                            # same as pressing Apply; model_changed() follows
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.concept import (
    DEFAULT_LAMBDA,
    DEFAULT_TOKENS,
    TOKEN_MODES,
    ConceptEdit,
    ConceptEditSpec,
    EditSummary,
    editor_for,
)
from studio.core.errors import StudioError
from studio.seeds import parse_seeds

from .jobs import Job, JobRunner
from .qt_images import pixmap_from

#: Side of a grid thumbnail, in pixels.
THUMB = 96
MAX_GRID = 24

LAMBDA_TIP = ("λ: how strongly the weights are held at their originals, relative to the size of the edited words' "
              "embeddings.\nLarger: a gentler edit that reaches its target less fully and spills less onto words "
              "you did not list.\nSmaller: the concept lands fully on its target. Default "
              f"{DEFAULT_LAMBDA}.")
EDIT_SCALE_TIP = ("Weight of the edits. Above 1 pushes the concepts harder onto their targets, at the cost of the "
                  "preserved concepts; below 1 softens the edit. Default 1.")
PRESERVE_SCALE_TIP = ("Weight of the preserved concepts. Larger keeps them closer to their original outputs; 0 "
                      "ignores the preserve list. Default 1.")
TOKENS_TIP = {"concept": "The concept's own word embeddings (default: best on the Rooms benchmark)",
              "last": "Only the concept's last word (fails on phrases whose last word does not change)",
              "all": "Every row of its encoding, start/end/padding included (as UCE does on CLIP)"}
STRENGTHS = ("λ larger: gentler edit, less spill onto unlisted words. Edit scale larger: concepts pushed harder onto "
             "their targets. Preserve scale larger: preserved concepts held closer. Hover for details.")
HELP = ("Replace makes a concept mean its target; erase sends it to a guide (empty: the empty prompt). Preserved "
        "concepts keep their outputs. All edits are solved together, in closed form, on every cross-attention "
        "key and value projection.")


class ConceptRow(QWidget):
    """One edit: kind (replace/erase), concept, target (replace) or guide (erase, empty = the empty prompt)."""

    removed = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = QComboBox()
        self.kind.addItem("replace", "replace")
        self.kind.addItem("erase", "erase")
        self.kind.setToolTip("replace: the concept comes to mean the target; erase: it comes to mean the guide")
        self.concept = QLineEdit()
        self.concept.setPlaceholderText("concept, e.g. red")
        self.target = QLineEdit()
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setToolTip("Remove this row")
        self.remove.clicked.connect(lambda: self.removed.emit(self))
        self.kind.currentIndexChanged.connect(self._on_kind)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.kind)
        layout.addWidget(self.concept, 1)
        layout.addWidget(QLabel("→"))
        layout.addWidget(self.target, 1)
        layout.addWidget(self.remove)
        self._on_kind()

    def _on_kind(self) -> None:
        erase = self.kind.currentData() == "erase"
        self.target.setPlaceholderText("guide (empty: the empty prompt)" if erase else "target, e.g. blue")

    def set(self, kind: str, concept: str, target: str = "") -> None:
        self.kind.setCurrentIndex(max(self.kind.findData(kind), 0))
        self.concept.setText(concept)
        self.target.setText(target)

    def is_empty(self) -> bool:
        return not self.concept.text().strip() and not self.target.text().strip()

    def edit(self) -> ConceptEdit:
        return ConceptEdit(self.kind.currentData(), self.concept.text().strip(), self.target.text().strip())


@dataclass
class ConceptResult:
    """What a job hands back to the GUI thread: the grid, and the stack as labels."""

    note: str
    prompts: list[str]
    seeds: list[int]
    before: list[torch.Tensor] = field(default_factory=list)  # (3, H, W) CPU, prompt-major
    after: list[torch.Tensor] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    can_redo: bool = False


def _render_grid(generator, prompts: list[str], seeds: list[int]) -> list[torch.Tensor]:
    samples = [generator.sample(seed, prompt) for prompt in prompts for seed in seeds]
    images: list[torch.Tensor] = []
    for i in range(0, len(samples), 8):
        images += list(generator.render(samples[i:i + 8]).float().clamp(0, 1).cpu())
    return images


def _operate(operation: str, spec: ConceptEditSpec | None, prompts: list[str], seeds: list[int]):
    """The job: render the grid, change the weights, render it again (all on the model's thread)."""

    def work(generator, progress=None) -> ConceptResult:
        editor = editor_for(generator)
        if operation == "apply":
            note = EditSummary.of(editor.apply(spec, progress)).sentence()
        elif operation == "undo":
            undone = editor.undo()
            note = f"Undid {undone.spec.label()}." if undone else "Nothing to undo."
        elif operation == "redo":
            redone = editor.redo()
            note = f"Redid {redone.spec.label()}." if redone else "Nothing to redo."
        else:
            editor.revert()
            note = "Back to the original weights."
        after = _render_grid(generator, prompts, seeds)
        with editor.as_loaded():  # "before" is the model as loaded, whichever way the stack moved
            before = _render_grid(generator, prompts, seeds)
        return ConceptResult(note, prompts, seeds, before, after, [a.spec.label() for a in editor.stack],
                             editor.can_redo)

    return work


def _state(generator) -> ConceptResult:
    editor = editor_for(generator)
    return ConceptResult("", [], [], stack=[a.spec.label() for a in editor.stack], can_redo=editor.can_redo)


class ConceptPanel(QWidget):
    """Concept edits of the loaded model, with a before/after grid."""

    model_changed = Signal()  # after Apply/Undo/Redo/Revert changed the weights
    message = Signal(str)  # one sentence for the status bar
    finished = Signal()  # after any job of the panel, done or failed

    def __init__(self, jobs: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.job: Job | None = None
        self.generator = None
        self.rows: list[ConceptRow] = []
        self._supported = False
        self._stack: list[str] = []
        self._can_redo = False
        self.result: ConceptResult | None = None  # the last weight change, with its grid
        self._refresh_pending = False

        self.rows_box = QVBoxLayout()
        add = QPushButton("Add concept")
        add.clicked.connect(lambda: self.add_row())
        self.preserve = QLineEdit()
        self.preserve.setPlaceholderText("comma-separated, e.g. green, yellow")
        self.preserve.setToolTip("Concepts whose outputs must stay as they were")
        self.lambda_ = self._spin(DEFAULT_LAMBDA, 1e-6, 100.0, 6, LAMBDA_TIP)
        self.edit_scale = self._spin(1.0, 0.01, 100.0, 2, EDIT_SCALE_TIP)
        self.preserve_scale = self._spin(1.0, 0.0, 100.0, 2, PRESERVE_SCALE_TIP)
        self.tokens = QComboBox()
        for mode in TOKEN_MODES:
            self.tokens.addItem(mode, mode)
            self.tokens.setItemData(self.tokens.count() - 1, TOKENS_TIP[mode], Qt.ItemDataRole.ToolTipRole)
        self.tokens.setCurrentIndex(self.tokens.findData(DEFAULT_TOKENS))
        self.tokens.setToolTip("Which token embeddings stand for a concept")
        self.test_prompts = QPlainTextEdit()
        self.test_prompts.setPlaceholderText("test prompts, one per line (empty: the concepts themselves)")
        self.test_prompts.setMaximumHeight(70)
        self.test_seeds = QLineEdit("0-1")
        self.test_seeds.setToolTip("Seeds of the before/after grid (the same for both columns)")

        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Solve every row together and write the new weights")
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Back to the loaded weights, bit for bit")
        self.apply_button.clicked.connect(self.apply)
        self.undo_button.clicked.connect(lambda: self._submit("undo"))
        self.redo_button.clicked.connect(lambda: self._submit("redo"))
        self.revert_button.clicked.connect(lambda: self._submit("revert"))
        self.stack_list = QListWidget()
        self.stack_list.setMaximumHeight(80)
        self.stack_list.setToolTip("Applied edits, oldest first")
        self.status = QLabel(HELP)
        self.status.setWordWrap(True)
        self.grid = QGridLayout()
        grid_host = QWidget()
        grid_host.setLayout(self.grid)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(grid_host)

        edits = QGroupBox("Edits")
        edits_layout = QVBoxLayout(edits)
        edits_layout.addLayout(self.rows_box)
        edits_layout.addWidget(add, 0, Qt.AlignmentFlag.AlignLeft)
        strengths = QFormLayout()
        strengths.addRow("Preserve", self.preserve)
        for label, spin, tip in (("λ", self.lambda_, LAMBDA_TIP), ("Edit scale", self.edit_scale, EDIT_SCALE_TIP),
                                 ("Preserve scale", self.preserve_scale, PRESERVE_SCALE_TIP)):
            name = QLabel(label)
            name.setToolTip(tip)
            strengths.addRow(name, spin)
        strengths.addRow("Tokens", self.tokens)
        explained = QLabel(STRENGTHS)
        explained.setWordWrap(True)
        explained.setStyleSheet("color: gray")
        strengths.addRow(explained)
        strengths.addRow("Test prompts", self.test_prompts)
        strengths.addRow("Test seeds", self.test_seeds)
        buttons = QHBoxLayout()
        for b in (self.apply_button, self.undo_button, self.redo_button, self.revert_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(edits)
        layout.addLayout(strengths)
        layout.addLayout(buttons)
        layout.addWidget(self.stack_list)
        layout.addWidget(self.status)
        layout.addWidget(scroll, 1)
        self.add_row()
        self._update_buttons()

    @staticmethod
    def _spin(value: float, low: float, high: float, decimals: int, tip: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(decimals)
        spin.setRange(low, high)
        spin.setSingleStep(10 ** -min(decimals, 2))
        spin.setValue(value)
        spin.setToolTip(tip)
        return spin

    # -- rows ---------------------------------------------------------------------------------------------------
    def add_row(self, kind: str = "replace", concept: str = "", target: str = "") -> ConceptRow:
        row = ConceptRow()
        row.set(kind, concept, target)
        row.removed.connect(self._remove_row)
        self.rows.append(row)
        self.rows_box.addWidget(row)
        return row

    def _remove_row(self, row: ConceptRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
            row.setParent(None)
            row.deleteLater()
        if not self.rows:
            self.add_row()

    # -- model --------------------------------------------------------------------------------------------------
    def set_generator(self, generator) -> None:
        """Follow the loaded model: enabled when it has cross-attention, its applied stack shown."""
        self.generator = generator
        self._supported = bool(generator is not None and generator.cross_attention())
        self._stack, self._can_redo = [], False
        self._clear_grid()
        self.stack_list.clear()
        if generator is None:
            self.status.setText("No model is loaded.")
        elif not self._supported:
            self.status.setText(f"{generator.name} has no cross-attention, so it has no words to rewrite; "
                                "concept edits need a text-conditioned model such as rooms or Stable Diffusion.")
        else:
            self.status.setText(HELP)
            self.refresh()
        self._update_buttons()

    def refresh(self) -> None:
        """Read the model's stack again (e.g. after a session put its own edits on); waits for a running job."""
        if not self._supported:
            return
        if self.busy:
            self._refresh_pending = True
            return
        self._refresh_pending = False
        self.job = self.jobs.submit(_state, self._on_state, self._on_failed)

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    # -- actions ------------------------------------------------------------------------------------------------
    def spec(self) -> ConceptEditSpec:
        """The request the rows and strengths describe (raises ConceptError with one sentence)."""
        edits = [row.edit() for row in self.rows if not row.is_empty()]
        preserve = [p for p in self.preserve.text().split(",") if p.strip()]
        return ConceptEditSpec(edits, preserve, self.lambda_.value(), self.edit_scale.value(),
                               self.preserve_scale.value(), self.tokens.currentData())

    def test_cases(self, spec: ConceptEditSpec | None = None) -> tuple[list[str], list[int]]:

        prompts = [line.strip() for line in self.test_prompts.toPlainText().splitlines() if line.strip()]
        if not prompts and spec is not None:
            prompts = [e.concept for e in spec.edits] + list(spec.preserve)
        if not prompts:
            prompts = [self.generator.default_prompt] if self.generator is not None else [""]
        seeds = parse_seeds(self.test_seeds.text().strip(), 0)  # a SeedError says what is wrong with the text
        while len(prompts) * len(seeds) > MAX_GRID and len(prompts) > 1:
            prompts.pop()
        return prompts, seeds[: max(1, MAX_GRID // len(prompts))]

    def apply(self) -> Job | None:
        """Solve the rows together and write the weights (a job); None when the request is unusable."""
        try:
            spec = self.spec()
        except StudioError as error:
            self._say(str(error))
            return None
        return self._submit("apply", spec)

    def _submit(self, operation: str, spec: ConceptEditSpec | None = None) -> Job | None:
        if self.busy or not self._supported:
            return None
        try:
            prompts, seeds = self.test_cases(spec if spec is not None else self._last_spec())
        except StudioError as error:
            self._say(str(error))
            return None
        self.status.setText({"apply": "Solving…", "undo": "Undoing…", "redo": "Redoing…",
                             "revert": "Reverting…"}[operation])
        self.job = self.jobs.submit(_operate(operation, spec, prompts, seeds), self._on_done, self._on_failed)
        self._update_buttons()
        return self.job

    def _last_spec(self) -> ConceptEditSpec | None:
        try:
            return self.spec()
        except StudioError:
            return None

    # -- results (GUI thread) -----------------------------------------------------------------------------------
    def _on_done(self, result: ConceptResult) -> None:
        self.result = result
        self._show_stack(result)
        self.status.setText(result.note)
        self._show_grid(result)
        self.message.emit(result.note)
        self.model_changed.emit()
        self._finish()

    def _on_state(self, result: ConceptResult) -> None:
        self._show_stack(result)
        self._finish()

    def _finish(self) -> None:
        if self._refresh_pending:
            self.refresh()
        self.finished.emit()

    def _show_stack(self, result: ConceptResult) -> None:
        self._stack, self._can_redo = list(result.stack), result.can_redo
        self.stack_list.clear()
        self.stack_list.addItems(self._stack)
        self._update_buttons()

    def _on_failed(self, sentence: str) -> None:
        self._say(sentence)
        self._update_buttons()
        self._finish()

    def _say(self, sentence: str) -> None:
        self.status.setText(sentence)
        self.message.emit(sentence)

    def _update_buttons(self) -> None:
        idle = self._supported and not self.busy
        self.apply_button.setEnabled(idle)
        self.undo_button.setEnabled(idle and bool(self._stack))
        self.redo_button.setEnabled(idle and self._can_redo)
        self.revert_button.setEnabled(idle and bool(self._stack))

    def _clear_grid(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()

    def _show_grid(self, result: ConceptResult) -> None:
        self._clear_grid()
        after = f"after: {', '.join(result.stack)}" if result.stack else "after: no concept edits"
        for col, title in enumerate(("prompt", "before: as loaded", after), start=0):
            header = QLabel(f"<b>{title}</b>")
            header.setWordWrap(True)
            self.grid.addWidget(header, 0, col)
        row = 1
        for p, prompt in enumerate(result.prompts):
            for s, seed in enumerate(result.seeds):
                index = p * len(result.seeds) + s
                label = QLabel(f"{prompt}\nseed {seed}")
                label.setWordWrap(True)
                self.grid.addWidget(label, row, 0)
                for col, images in ((1, result.before), (2, result.after)):
                    cell = QLabel()
                    cell.setPixmap(pixmap_from(images[index]).scaled(
                        THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
                    self.grid.addWidget(cell, row, col)
                row += 1

    def grid_images(self) -> tuple[int, int]:
        """(rows, image cells) currently in the grid (tests read it)."""
        cells = sum(1 for i in range(self.grid.count())
                    if isinstance(self.grid.itemAt(i).widget(), QLabel) and self.grid.itemAt(i).widget().pixmap()
                    and not self.grid.itemAt(i).widget().pixmap().isNull())
        return self.grid.rowCount() - 1, cells
