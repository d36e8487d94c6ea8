"""Autosave while the user works, and recovery of the work a crash left behind (studio.recovery decides when).

    recovery = RecoveryActions(window, directory)   # <config>/recovery by default
    recovery.edited()                               # after every edit: a write soon after, then every minute
                                                    # (each change of the window's state is one edit)
    recovery.offer                                  # a bar above the canvas: Restore / Discard (no modal dialog)
    recovery.recover_action                         # File menu: enabled when the last run did not close normally

The recovery file a crash left is moved to ``<directory>/offered/`` before this run autosaves, so our own
autosaves never replace it while the user has not answered; an unanswered offer is made again next start.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, QObject, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from studio.concept import concept_editor_of
from studio.recovery import Autosaver, BackgroundWriter, RecoveryStore
from studio.reference import ModelReference


if TYPE_CHECKING:
    from .main_window import MainWindow


#: The fields of the window's StudioState that are the user's work (the layer and rank options are choices).
WORK = frozenset({"mask", "edits", "knobs", "local", "ranking"})


class RecoveryOffer(QFrame):
    """A bar above the canvas: "restore unsaved work autosaved at …?" with Restore and Discard."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("RecoveryOffer")
        self.setStyleSheet("#RecoveryOffer{background:#2b4a6b;border-radius:3px;} QLabel{color:white;}")
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.restore_button = QPushButton("Restore")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Delete the autosaved work")
        row.addWidget(self.label, 1)
        row.addWidget(self.restore_button)
        row.addWidget(self.discard_button)
        self.hide()


class RecoveryActions(QObject):
    def __init__(self, window: "MainWindow", directory: str | os.PathLike | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.store = RecoveryStore(directory)
        self.offered = RecoveryStore(self.store.directory / "offered")
        left = self.store.pending()
        if left is not None:  # move it aside before our first autosave could replace it
            self.offered.directory.mkdir(parents=True, exist_ok=True)
            os.replace(left.path, self.offered.path)
        self.pending = self.offered.pending()
        self.reference = None  # the model's ModelReference, hashed once per load on the worker thread
        # The snapshot (copies of the state) is taken on the GUI thread; serialising and writing it, tens of ms,
        # happen on the writer's thread, so an autosave during a drag does not stall the window.
        self.autosaver = Autosaver(self.store, self._snapshot, origin=self._origin,
                                   writer=BackgroundWriter(self.store))
        self.recover_action = QAction("Recover unsaved work", self)
        self.recover_action.setEnabled(self.pending is not None)
        self.recover_action.triggered.connect(self.recover)
        self.offer = RecoveryOffer()
        self.offer.restore_button.clicked.connect(self.recover)
        self.offer.discard_button.clicked.connect(self.discard)
        if self.pending is not None:
            self.offer.label.setText(self.pending.describe())
            self.offer.show()
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.tick)
        self.timer.start()
        window.model_loaded.connect(self._on_model_loaded)
        self._had_sample = False  # the window's first sample is not an edit of the user's
        window.state.events.changed.connect(self._on_state_changed)
        app = QCoreApplication.instance()
        if app is not None:  # a quit that skips the window's close still finds the newest autosave on disk
            app.aboutToQuit.connect(self.flush)

    def _on_state_changed(self, event) -> None:
        """One change of the work (one stroke, one slider move, one whole restore) is one edit."""
        names = event.value
        if names & WORK or ("sample" in names and self._had_sample):
            self.edited()
        self._had_sample = self._had_sample or self.window.state.sample is not None

    @property
    def ready(self) -> bool:
        """Autosave needs a model and its reference (no hashing of weights on the GUI thread)."""
        return self.window.generator is not None and self.reference is not None

    def edited(self) -> None:
        """Every edit comes here: the session is unsaved, and the recovery file is written soon."""
        self.window.sessions.mark_modified()
        if self.ready:
            self._report(self.autosaver.edited())
        else:
            self.autosaver.dirty = self.autosaver.active = True  # written once the model's reference is known

    def tick(self) -> None:
        if self.ready:
            self._report(self.autosaver.tick())

    def saved(self) -> None:
        """The user saved, or closed the window normally: nothing is left to recover."""
        self.autosaver.saved()

    def flush(self) -> None:
        """Wait for the background write of the newest autosave (on quit: nothing handed to it is lost)."""
        self.autosaver.flush()

    def _report(self, wrote: bool) -> None:
        if not wrote and self.autosaver.last_error:
            self.window.statusBar().showMessage(self.autosaver.last_error, 10000)

    def _snapshot(self):

        window = self.window
        return window.state.to_session(window.generator, concept_editor=concept_editor_of(window.generator),
                                       reference=self.reference)

    def _origin(self) -> str | None:
        path = self.window.sessions.path
        return str(path) if path else None

    def _on_model_loaded(self, generator) -> None:

        self.reference = None

        def done(reference) -> None:
            if self.window.generator is generator:
                self.reference = reference

        self.window.jobs.submit(lambda g: ModelReference.of(g), done, lambda sentence: None)

    def _answered(self) -> None:
        self.pending = None
        self.recover_action.setEnabled(False)
        self.offer.hide()

    def recover(self) -> None:
        """Open the recovered session (its model is reloaded if another one is open); then forget the file."""
        pending = self.pending
        self._answered()
        if pending is not None:
            self.window.sessions.open(pending.path, origin=pending.origin, recovered=True,
                                      then=self.offered.discard)

    def discard(self) -> None:
        """The user declined: delete the work the crash left."""
        self._answered()
        self.offered.discard()
        self.window.statusBar().showMessage("The autosaved work was discarded.", 5000)
