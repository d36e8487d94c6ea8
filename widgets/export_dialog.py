"""File → Export…: write the edited model in a format its family supports, check it, show the report.

    dialog = ExportDialog(window)             # studio.export.formats_for(the loaded model), as the CLI accepts
    dialog.choose("studio", "edited.safetensors")
    job = dialog.start()                      # runs studio.export.export on the worker thread, with progress
    dialog.report                             # studio.export.ExportReport once done; dialog.text shows it

The export runs as a job, so the worker has already taken the live sliders' hooks off the model (export
refuses another editor's active edits); the next frame puts them back.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from studio.export import ExportReport, describe_edit, export, export_formats, formats_for

from .session_actions import concept_editor_of

if TYPE_CHECKING:
    from .jobs import Job
    from .main_window import MainWindow


def report_text(report: ExportReport) -> str:
    """What the dialog shows: files, baked and kept edits, concept edits, notes and the check's verdict."""
    lines = [f"Exported {report.format} to {report.path}"]
    lines += [f"  file: {f}" for f in report.files if Path(f) != Path(report.path)]

    lines.append("Baked into the weights: " + (", ".join(describe_edit(e) for e in report.baked) or "none"))
    lines.append("Kept in the recipe (re-applied on load): "
                 + ("; ".join(f"{describe_edit(e)} ({why})" for e, why in report.kept) or "none"))
    lines.append(f"Concept edits: {report.concept}")
    lines += [f"Note: {n}" for n in report.notes]
    diff = "not checked" if report.max_abs_diff is None else f"{report.max_abs_diff:.2e}"
    lines.append(f"Check: max abs diff {diff} (tolerance {report.tolerance:.0e})")
    lines.append(f"Verdict: {'VERIFIED' if report.verified else 'NOT VERIFIED'}: {report.verdict()}")
    return "\n".join(lines)


class ExportDialog(QDialog):
    exported = Signal(object)  # ExportReport
    failed = Signal(str)

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.setWindowTitle("Export the edited model")
        self.window_ = window
        self.job: Job | None = None
        self.report: ExportReport | None = None
        self.generator = generator = window.generator  # formats depend on the model: a new model, a new dialog
        self.formats = export_formats(generator)
        self.format = QComboBox()
        for name in formats_for(generator):
            self.format.addItem(name, name)
        self.format.currentIndexChanged.connect(self._on_format)
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.path = QLineEdit()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        where = QHBoxLayout()
        where.addWidget(self.path, 1)
        where.addWidget(browse)
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("", self.description)
        form.addRow("Save to", where)
        self.progress = QProgressBar()
        self.progress.setRange(0, 4)
        self.progress.setValue(0)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setPlaceholderText("The report appears here: what was baked, what stays a recipe, the check.")
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.export_button, self.cancel_button, close):
            buttons.addWidget(button)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addWidget(self.progress)
        column.addWidget(self.text, 1)
        column.addLayout(buttons)
        self.resize(620, 420)
        self._on_format()

    def _default_path(self, name: str) -> str:
        session = self.window_.sessions.path
        stem = (session.stem if session else self.window_.generator.name.replace(" ", "-")) + "-edited"
        folder = session.parent if session else Path.cwd()
        return str(folder / (stem + self.formats[name].suffix))

    def _on_format(self) -> None:
        name = self.format.currentData()
        if name is None:
            return
        spec = self.formats[name]
        self.description.setText(spec.description + (" (a folder)" if not spec.suffix else ""))
        current = self.path.text()
        # the name follows the format (a folder for diffusers: no suffix)
        self.path.setText(str(Path(current).with_suffix(spec.suffix)) if current else self._default_path(name))

    def _browse(self) -> None:
        name = self.format.currentData()
        suffix = self.formats[name].suffix
        if suffix:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export to", self.path.text(), f"{name} (*{suffix})")
        else:
            chosen = QFileDialog.getExistingDirectory(self, "Export to folder", self.path.text())
        if chosen:
            self.path.setText(chosen if not suffix or chosen.endswith(suffix) else chosen + suffix)

    def choose(self, name: str, path: str | Path) -> None:
        """Pick ``name`` and the output ``path`` (what a user does with the combo box and Browse)."""
        index = self.format.findData(name)
        if index < 0:
            raise ValueError(f"{name} is not offered for this model")
        self.format.setCurrentIndex(index)
        self.path.setText(str(path))

    def start(self) -> "Job | None":
        """Export on the model's thread; the report replaces the text when it is done."""
        window = self.window_
        name, target = self.format.currentData(), self.path.text().strip()
        if window.generator is None or not name:
            self._fail("Nothing to export yet: no model is loaded.")
            return None
        if not target:
            self._fail("Choose where to save the export.")
            return None
        state = window.state
        edits = list(state.render_edits())  # local edits keep their mask, as the sliders show them
        mask = state.mask if state.has_mask() else None
        samples = [state.sample] if state.sample is not None else None
        reference = window.recovery.reference  # hashed once per load: no re-hashing multi-GB weights

        def work(generator, progress):


            return export(generator, edits, concept_editor_of(generator), name, target, mask=mask,
                          samples=samples, reference=reference, progress=progress)

        self.report = None
        self.progress.setValue(0)
        self.text.setPlainText(f"Exporting {name} to {target}…")
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = window.jobs.submit(work, self._done, self._fail, self._progress)
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _progress(self, update) -> None:
        self.progress.setRange(0, update.total)
        self.progress.setValue(update.done)
        self.progress.setFormat(f"%p% {update.message}")

    def _done(self, report: ExportReport) -> None:
        self.report = report
        self._idle()
        self.text.setPlainText(report_text(report))
        message = f"Exported {report.path.name}: {'verified' if report.verified else 'NOT verified'}"
        self.window_.statusBar().showMessage(message, 10000)
        self.exported.emit(report)

    def _fail(self, sentence: str) -> None:
        self._idle()
        self.progress.setFormat("failed")
        self.text.setPlainText(sentence)
        self.failed.emit(sentence)

    def _idle(self) -> None:
        self.job = None
        self.export_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
