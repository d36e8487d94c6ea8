"""File menu actions: save and open ``.nstudio`` sessions (studio.session), recent sessions.

Saving captures the window's :class:`studio.state.StudioState` on the model's thread (the session hashes the
weights and reads concept edits there); opening reloads the session's model when it differs, puts its concept
edits back into the weights, then puts its seed, prompt, mask, layer, ranking and edits into the window's
state in one change (``restore``); the seed field, canvas, ranking panel and sliders follow the state.

    sessions = SessionActions(window)       # Open (Ctrl+O), Save (Ctrl+S), Save As (Ctrl+Alt+S), Open Recent
    sessions.modified                       # True after an edit until the work is saved (the close prompt asks)
    sessions.save(path, then=window.close)  # ``then`` runs once the file is written

A file this version cannot read (newer, damaged) is refused with one sentence and never overwritten: Save to
it asks for another name instead.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

from studio.concept import concept_editor_of
from studio.recovery import RecentSessions
from studio.session import SessionError, load_session, save_session
from studio.state import StudioState

if TYPE_CHECKING:
    from .main_window import MainWindow

SESSION_FILTER = "Neuron Studio sessions (*.nstudio)"


def unreadable_reason(path: Path) -> str | None:
    """Why an existing file at ``path`` must not be overwritten (this version cannot read it), or None."""

    if not path.exists():
        return None
    try:
        load_session(path)  # all of it: damage inside the tensors counts too
    except SessionError as error:
        return str(error)
    return None


class SessionActions(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        self.path: Path | None = None
        self.pending = None  # a session waiting for its model to load
        self.modified = False  # edits since the last save or open: the close prompt asks about them
        config = getattr(window, "config_dir", None)
        self.recent = RecentSessions(Path(config) / "recent.json" if config else None)
        # explicit keys: StandardKey.SaveAs is empty on some platforms (Windows)
        self.open_action = QAction("Open session…", self)
        self.open_action.setShortcut(QKeySequence("Ctrl+O"))
        self.open_action.triggered.connect(lambda: self.open(None))
        self.save_action = QAction("Save session", self)
        self.save_action.setShortcut(QKeySequence("Ctrl+S"))
        self.save_action.triggered.connect(lambda: self.save(self.path))
        self.save_as_action = QAction("Save session as…", self)
        self.save_as_action.setShortcut(QKeySequence("Ctrl+Alt+S"))  # Ctrl+Shift+S exports the image
        self.save_as_action.triggered.connect(lambda: self.save(None))
        self.recent_menu = QMenu("Open recent session", window)
        self.recent_menu.aboutToShow.connect(self.refresh_recent)  # files may have gone since the last look
        self.refresh_recent()
        window.model_loaded.connect(self._apply_pending)

    # -- modified state -----------------------------------------------------------------------------------------
    def mark_modified(self) -> None:
        if not self.modified:
            self.modified = True
            self._show_title()

    def _mark_clean(self, path: Path | None) -> None:
        self.modified = False
        self.path = path
        if path is not None:
            self.recent.add(path)
            self.refresh_recent()
        self._show_title()

    def _show_title(self) -> None:
        name = self.path.name if self.path else "unsaved session"
        self.window.setWindowTitle(f"Neuron Studio — {name}{' *' if self.modified else ''}")

    # -- recent sessions ----------------------------------------------------------------------------------------
    def refresh_recent(self) -> None:
        """Rebuild Open Recent from the recent list (files that no longer exist are left out)."""
        menu = self.recent_menu
        menu.clear()
        paths = self.recent.paths()
        for index, path in enumerate(paths):
            action = menu.addAction(f"&{index + 1} {path.name}" if index < 9 else path.name)
            action.setToolTip(str(path))
            action.setData(str(path))
            action.triggered.connect(lambda _=False, p=path: self.open(p))
        if not paths:
            menu.addAction("No recent sessions").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear list", self._clear_recent)

    def _clear_recent(self) -> None:
        for path in self.recent.paths(existing_only=False):
            self.recent.remove(path)
        self.refresh_recent()

    # -- saving -------------------------------------------------------------------------------------------------
    def _ask_path(self) -> Path | None:
        chosen, _ = QFileDialog.getSaveFileName(self.window, "Save session", str(self.path or "work.nstudio"),
                                                SESSION_FILTER)
        if not chosen:
            return None
        return Path(chosen if chosen.endswith(".nstudio") else chosen + ".nstudio")

    def save(self, path: str | Path | None, then: Callable[[], None] | None = None) -> None:
        """Save to ``path`` (None: ask where); ``then()`` runs after the file is written."""
        window = self.window
        if window.generator is None:
            window.show_error("Nothing to save yet: no model is loaded.")
            return
        if path is None:
            path = self._ask_path()
            if path is None:
                return
        snapshot = replace(window.state, edits=list(window.state.edits), knobs=list(window.state.knobs))  # the user may go on editing meanwhile
        target = Path(path)

        def work(generator):

            refused = unreadable_reason(target)
            if refused is not None:
                return refused  # a sentence: the GUI asks for another name, the file stays as it is
            return save_session(snapshot.to_session(generator, concept_editor=concept_editor_of(generator)), target)

        def done(written) -> None:
            if isinstance(written, str):
                self._refused(target, written, then)
                return
            window.recovery.saved()
            self._mark_clean(Path(written))
            window.statusBar().showMessage(f"Saved {self.path}", 5000)
            if then is not None:
                then()

        window.jobs.submit(work, done, window.show_error)

    def _refused(self, target: Path, sentence: str, then: Callable[[], None] | None) -> None:
        """``target`` cannot be read by this version: say so, and save elsewhere only if the user agrees."""
        window = self.window
        window.show_error(f"{target.name} was not overwritten: {sentence}")
        answer = QMessageBox.question(window, "Save under another name?",
                                      f"{target.name} was not overwritten: {sentence}\n\nSave your work under "
                                      "another name?", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.Yes)
        if answer != QMessageBox.StandardButton.Yes:
            return
        other = self._ask_path()
        if other is None:
            return
        if other.resolve() == target.resolve():
            window.show_error(f"{target.name} was not overwritten: choose another name.")
            return
        self.save(other, then)

    # -- opening ------------------------------------------------------------------------------------------------
    def open(self, path: str | Path | None, *, origin: str | None = None, recovered: bool = False,
             then: Callable[[], None] | None = None) -> None:
        """Open a session file (``recovered``: a recovery file whose work belongs to ``origin``, if it was saved).

        ``then()`` runs once the session's state is shown. A file that cannot be read leaves the work open as it
        was (its path too, so Save never writes to the refused file).
        """
        window = self.window
        if path is None:
            path, _ = QFileDialog.getOpenFileName(window, "Open session", "", SESSION_FILTER)
            if not path:
                return
        source = Path(path)

        def done(session) -> None:
            self.show_session(session, (Path(origin) if origin else None) if recovered else source, recovered, then)

        def failed(sentence: str) -> None:
            window.show_error(sentence)
            if not source.exists():
                self.recent.remove(source)
                self.refresh_recent()


        window.jobs.submit(lambda generator: load_session(source), done, failed)

    def show_session(self, session, target: Path | None, recovered: bool = False,
                     then: Callable[[], None] | None = None) -> None:
        """Show a read session (``recovered``: as unsaved work), reloading its model first when another is open."""
        window = self.window
        if window.generator is not None and session.model.source == window.generator.source:
            self._apply(session, target, recovered, then)
        else:
            self.pending = (session, target, recovered, then)
            window.open_model(session.model.source)

    def _apply_pending(self, generator) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            self._apply(*pending)

    def _apply(self, session, target: Path | None, recovered: bool, then: Callable[[], None] | None) -> None:
        window = self.window

        def work(generator):
            session.restore_concepts(generator)
            return session.model.mismatch(generator)

        def done(mismatch) -> None:
            shown = window.state.sample
            self.restore(StudioState.from_session(session))
            if window.state.sample == shown:
                window.generate()  # the weights may now hold the session's concept edits: render them
            if window.concepts is not None:
                window.concepts.set_generator(window.generator)
            if recovered:
                self.path = target
                self.mark_modified()
                window.recovery.edited()  # still unsaved: keep autosaving it
            else:
                window.recovery.saved()  # what is shown is what the file holds
                self._mark_clean(target)
            self._show_title()
            if mismatch:
                window.show_error(f"Opened, but {mismatch}")
            else:
                window.statusBar().showMessage(f"Opened {target or 'recovered work'}", 5000)
            if then is not None:
                then()

        window.jobs.submit(work, done, window.show_error)

    def restore(self, state: StudioState) -> None:
        """Put ``state``'s work into the window's state as one change; the views and the renderer follow it."""
        current = self.window.state
        current.update(sample=state.sample if state.sample is not None else current.sample, mask=state.mask,
                       layer=state.layer or current.layer, ranking=state.ranking, rank_options=state.rank_options,
                       edits=list(state.edits), knobs=list(state.knobs), local=state.local,
                       inversion=state.inversion)

    # -- closing ------------------------------------------------------------------------------------------------
    def ask_to_save(self, then: Callable[[], None]) -> bool:
        """Before closing with unsaved edits: Save / Discard / Cancel. True: close now; False: do not (yet).

        With Save the window stays open until the file is written, then ``then()`` closes it.
        """
        if not self.modified:
            return True
        name = self.path.name if self.path else "this session"
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(self.window, "Save changes?",
                                      f"Save the changes to {name} before closing?",
                                      buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save)
        if answer == buttons.Discard:
            return True
        if answer == buttons.Save:
            self.save(self.path, then=then)
        return False
