"""File menu actions: save and open ``.nstudio`` sessions (studio.session), save the shown image.

Saving captures the window's :class:`studio.state.StudioState` on the model's thread (the session hashes the
weights and reads concept edits there); opening reloads the session's model when it differs, puts its concept
edits back into the weights, then restores seed, prompt, mask, layer, ranking and sliders.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog

from studio.state import StudioState

if TYPE_CHECKING:
    from .main_window import MainWindow

SESSION_FILTER = "Neuron Studio sessions (*.nstudio)"


def concept_editor_of(generator):
    """The model's concept-edit stack when it has cross-attention (sessions save its applied edits)."""
    if not generator.cross_attention():
        return None
    from studio.concept import editor_for

    return editor_for(generator)


class SessionActions(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        self.path: Path | None = None
        self.pending = None  # a session waiting for its model to load
        self.open_action = QAction("Open session…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(lambda: self.open(None))
        self.save_action = QAction("Save session", self)
        self.save_action.setShortcut(QKeySequence.StandardKey.Save)
        self.save_action.triggered.connect(lambda: self.save(self.path))
        self.save_as_action = QAction("Save session as…", self)
        self.save_as_action.setShortcut(QKeySequence.StandardKey.SaveAs)
        self.save_as_action.triggered.connect(lambda: self.save(None))
        window.model_loaded.connect(self._apply_pending)

    # -- saving -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path | None) -> None:
        window = self.window
        if window.generator is None:
            window.show_error("Nothing to save yet: no model is loaded.")
            return
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(window, "Save session", str(self.path or "work.nstudio"),
                                                    SESSION_FILTER)
            if not chosen:
                return
            path = chosen if chosen.endswith(".nstudio") else chosen + ".nstudio"
        snapshot = replace(window.state, edits=list(window.state.edits))  # the user may go on editing meanwhile
        target = Path(path)

        def work(generator):
            from studio.session import save_session

            return save_session(snapshot.to_session(generator, concept_editor=concept_editor_of(generator)), target)

        def done(written) -> None:
            self.path = Path(written)
            window.recovery.saved()
            window.setWindowTitle(f"Neuron Studio — {self.path.name}")
            window.statusBar().showMessage(f"Saved {self.path}", 5000)

        window.jobs.submit(work, done, window.show_error)

    def save_image(self) -> None:
        frame = getattr(self.window, "last_frame", None)
        if frame is None:
            self.window.show_error("No image yet: wait for the model to render.")
            return
        path, _ = QFileDialog.getSaveFileName(self.window, "Save image", "image.png", "PNG images (*.png)")
        if path:
            from studio.errors import StudioError
            from studio.images import save_image

            try:
                save_image(frame.image, path)
            except (OSError, StudioError) as error:
                self.window.show_error(f"Could not save the image: {error}")

    # -- opening ------------------------------------------------------------------------------------------------
    def open(self, path: str | Path | None, *, origin: str | None = None, recovered: bool = False) -> None:
        """Open a session file (``recovered``: a recovery file whose work belongs to ``origin``, if it was saved)."""
        window = self.window
        if path is None:
            path, _ = QFileDialog.getOpenFileName(window, "Open session", "", SESSION_FILTER)
            if not path:
                return
        source = Path(path)

        def done(session) -> None:
            self.path = (Path(origin) if origin else None) if recovered else source
            if recovered:
                window.recovery.edited()  # still unsaved: keep autosaving it
            if window.generator is not None and session.model.source == window.generator.source:
                self._apply(session)
            else:
                self.pending = session
                window.open_model(session.model.source)

        from studio.session import load_session

        window.jobs.submit(lambda generator: load_session(source), done, window.show_error)

    def _apply_pending(self, generator) -> None:
        session, self.pending = self.pending, None
        if session is not None:
            self._apply(session)

    def _apply(self, session) -> None:
        window = self.window

        def work(generator):
            session.restore_concepts(generator)
            return session.model.mismatch(generator)

        def done(mismatch) -> None:
            state = StudioState.from_session(session)
            self.restore(state)
            if window.concepts is not None:
                window.concepts.set_generator(window.generator)
            window.setWindowTitle(f"Neuron Studio — {self.path.name if self.path else 'session'}")
            if mismatch:
                window.show_error(f"Opened, but {mismatch}")
            else:
                window.statusBar().showMessage(f"Opened {self.path}", 5000)

        window.jobs.submit(work, done, window.show_error)

    def restore(self, state: StudioState) -> None:
        """Show ``state`` in the window: sample, mask, layer, ranking, sliders, local switch."""
        window = self.window
        if state.sample is not None:
            window.prompt.setText(state.sample.prompt or "")
            window.seed.blockSignals(True)
            window.seed.setValue(state.sample.seed)
            window.seed.blockSignals(False)
        window.generate()
        window.state.rank_options = state.rank_options
        window.ranking.set_options(**state.rank_options.to_json())
        if state.layer:
            window.ranking.layers.set_layers(window.generator.layers(), state.layer)
        window.state.ranking = state.ranking
        window.ranking.show_ranking(state.ranking)
        if state.mask is not None:
            window.state.mask = state.mask
            if not window.canvas.has_image or tuple(state.mask.shape) == window.canvas.image_size():
                window.canvas.set_mask(state.mask.numpy(), "Open session mask")  # kept until the image arrives
        window.sliders.local.setChecked(state.local)
        window.sliders.set_edits(state.edits)
