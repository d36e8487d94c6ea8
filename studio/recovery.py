"""Autosave to a recovery file, crash recovery on the next start, and the recent-sessions list (Qt-free).

The GUI owns the timer and the prompt; everything it decides is here and testable without Qt::

    store = RecoveryStore()                          # <config dir>/recovery/recovery.nstudio
    pending = store.pending()                        # on start: a Recovery left by a crash, or None
    if pending and user_says_restore(pending.describe()):
        session = pending.load()
    store.discard()                                  # after restoring, or when the user declines

    autosave = Autosaver(store, snapshot=lambda: Session.capture(...))   # snapshot: the window's state now
    autosave = Autosaver(store, snapshot, writer=BackgroundWriter(store))  # the GUI's: writes on another thread
    autosave.edited()                                # call on every edit: writes at most every ``min_gap`` s
    autosave.tick()                                  # call from a 1 s timer: writes pending edits, and every minute
    autosave.saved()                                 # the user saved: the recovery file is no longer needed
    autosave.flush()                                 # wait for the background write of the newest snapshot

    recent = RecentSessions()                        # <config dir>/recent.json, newest first
    recent.add("work.nstudio"); recent.paths()

The config dir is ``$NEURON_STUDIO_CONFIG_DIR`` if set, else the platform's per-user config folder.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .core.atomic import atomic_write_text
from .session import Session, SessionError, load_session, peek_session, save_session

RECOVERY_NAME = "recovery.nstudio"


def user_config_dir() -> Path:
    """Where the studio keeps per-user files (recent sessions, recovery)."""
    override = os.environ.get("NEURON_STUDIO_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "Neuron Studio"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Neuron Studio"
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "neuron-studio"


@dataclass(frozen=True)
class Recovery:
    """A recovery file found on start: what to show the user, and how to load it."""

    path: Path
    saved_at: float  # seconds since the epoch (the file's modification time)
    origin: str | None  # the session file the work belonged to, or None if it was never saved

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved_at))
        what = Path(self.origin).name if self.origin else "unsaved work"
        return f"Neuron Studio did not close normally; restore {what} autosaved at {when}?"

    def load(self) -> Session:
        return load_session(self.path)


class RecoveryStore:
    """The single recovery file of one user; every write is atomic, so a crash mid-autosave keeps the last one."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory is not None else user_config_dir() / "recovery"
        self.path = self.directory / RECOVERY_NAME

    def write(self, session: Session, origin: str | os.PathLike | None = None) -> Path:
        """Replace the recovery file with ``session`` (``origin``: the file it was opened from or saved to)."""
        marked = replace(session, ui={**session.ui, "recovery_origin": str(origin) if origin else None})
        # An unreadable leftover (a newer version's recovery, a damaged one) is ours to replace.
        return save_session(marked, self.path, replace_unreadable=True)

    def pending(self) -> Recovery | None:
        """The recovery file left by a run that did not end cleanly, or None (also for an unreadable one)."""
        if not self.path.is_file():
            return None
        try:
            meta = peek_session(self.path)
            origin = json.loads(meta["session"]).get("ui", {}).get("recovery_origin")
        except (SessionError, KeyError, ValueError):
            return None
        return Recovery(self.path, self.path.stat().st_mtime, origin)

    def discard(self) -> None:
        """Remove the recovery file (after a clean save or close, or when the user declines it)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class BackgroundWriter:
    """Writes recovery snapshots on a thread of its own, so serialising and writing never hold up the caller.

    Only the newest snapshot matters: one handed in while a write runs replaces any still waiting, and the
    thread writes them one at a time in the order they came, so the file ends as the newest. The thread is
    started once, on the first snapshot, and then waits for the next (starting one per write made the caller wait
    for the new thread to be scheduled, tens of ms on a loaded machine); it is a daemon, so an interpreter that
    quits flushes it first (``atexit``). ``take_error`` hands the caller the sentence of a failed write.
    """

    def __init__(self, store: RecoveryStore) -> None:
        self.store = store
        self._lock = threading.Condition()
        self._waiting: tuple[Session, str | None] | None = None
        self._busy = False
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self.writes = 0

    def submit(self, session: Session, origin: str | None) -> None:
        with self._lock:
            self._waiting = (session, origin)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="autosave", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._waiting is None:
                    self._busy = False
                    self._lock.notify_all()  # flush() waits for this
                    self._lock.wait()
                job, self._waiting, self._busy = self._waiting, None, True
            try:
                self.store.write(*job)
                error = None
            except (OSError, SessionError) as exc:  # a full disk must not take the window down
                error = f"Autosave failed ({exc}); your work is still open, save it elsewhere."
            except Exception as exc:  # noqa: BLE001 - a dead thread would leave flush() waiting for ever
                error = f"Autosave failed ({type(exc).__name__}: {exc}); your work is still open, save it elsewhere."
            with self._lock:
                self.writes += error is None
                self._error = error or self._error

    def take_error(self) -> str | None:
        """The sentence of a write that failed since the last call, or None."""
        with self._lock:
            error, self._error = self._error, None
            return error

    def flush(self, drop: bool = False) -> None:
        """Wait until no write runs or waits (``drop``: forget the waiting one first, only finish the one running)."""
        with self._lock:
            if drop:
                self._waiting = None
            while self._thread is not None and (self._busy or self._waiting is not None):
                self._lock.wait()


class Autosaver:
    """Decides when to write the recovery file: soon after every edit, and every ``interval`` seconds.

    ``snapshot`` builds the session to write (called only when a write happens, on the caller's thread: it must
    copy what may change later); ``writer``: a :class:`BackgroundWriter` that serialises and writes it on its own
    thread (default: written at once on the caller's); ``clock`` is injectable so tests step time by hand.
    """

    def __init__(self, store: RecoveryStore, snapshot: Callable[[], Session], *, interval: float = 60.0,
                 min_gap: float = 2.0, origin: Callable[[], str | None] | None = None,
                 clock: Callable[[], float] = time.monotonic, writer: BackgroundWriter | None = None) -> None:
        self.store, self.snapshot, self.interval, self.min_gap = store, snapshot, interval, min_gap
        self.origin, self.clock, self.writer = origin, clock, writer
        self.dirty = self.active = False
        self.last_write = -float("inf")
        self.writes = 0
        self.last_error: str | None = None  # one sentence for the status bar when an autosave failed

    def edited(self) -> bool:
        """An edit happened: write now unless a write happened less than ``min_gap`` ago (then ``tick`` does)."""
        self.dirty = self.active = True
        return self.tick()

    def tick(self) -> bool:
        """Write pending edits once ``min_gap`` has passed; after the first edit, also every ``interval``.

        The periodic write catches changes nobody reported through :meth:`edited` (a typed prompt, a
        finished ranking).
        """
        failed = self.writer.take_error() if self.writer is not None else None
        if failed:  # a background write failed: say so, and write again at the next chance
            self.last_error, self.dirty = failed, True
        since = self.clock() - self.last_write
        if (self.dirty and since >= self.min_gap) or (self.active and since >= self.interval):
            return self.write()
        return False

    def write(self) -> bool:
        try:
            session, origin = self.snapshot(), self.origin() if self.origin else None
            if self.writer is not None:
                self.writer.submit(session, origin)
            else:
                self.store.write(session, origin)
        except (OSError, SessionError) as error:  # a full disk must not take the window down
            self.last_error = f"Autosave failed ({error}); your work is still open, save it elsewhere."
            return False
        self.dirty = False
        self.last_write = self.clock()
        self.writes += 1
        self.last_error = None
        return True

    def saved(self) -> None:
        """The user saved (or closed cleanly): nothing is left to recover until the next edit."""
        self.dirty = self.active = False
        if self.writer is not None:  # a write landing after the discard would offer a recovery next start
            self.writer.flush(drop=True)
        self.store.discard()

    def flush(self) -> None:
        """Wait until the newest snapshot handed to the background writer is on disk (nothing to do without one)."""
        if self.writer is not None:
            self.writer.flush()


class RecentSessions:
    """The recently opened or saved session files, newest first, in ``recent.json`` (plain JSON, atomic)."""

    def __init__(self, path: str | os.PathLike | None = None, limit: int = 10) -> None:
        self.path = Path(path) if path is not None else user_config_dir() / "recent.json"
        self.limit = limit

    def _read(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []  # a damaged list is only a convenience lost; it is rewritten on the next add
        return [str(p) for p in data.get("recent", [])] if isinstance(data, dict) else []

    def paths(self, existing_only: bool = True) -> list[Path]:
        """Recent session files, newest first (those that no longer exist left out)."""
        return [Path(p) for p in self._read() if not existing_only or Path(p).is_file()]

    def add(self, path: str | os.PathLike) -> None:
        entry = str(Path(path).expanduser().resolve())
        items = [entry] + [p for p in self._read() if p != entry]
        atomic_write_text(self.path, json.dumps({"recent": items[: self.limit]}, indent=1))

    def remove(self, path: str | os.PathLike) -> None:
        entry = str(Path(path).expanduser().resolve())
        atomic_write_text(self.path, json.dumps({"recent": [p for p in self._read() if p != entry]}, indent=1))
