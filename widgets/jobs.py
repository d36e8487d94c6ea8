"""Run functions of the generator on the model's worker thread, with progress and cancel.

Panels never touch the model from the GUI thread; they submit a job::

    def work(generator, progress):                # ``progress`` is optional: ask for it by name
        return rank_units(generator, samples, mask, "blocks.1", progress=progress)

    job = jobs.submit(work, done=show_ranking, failed=status.showMessage, progress=bar.update)
    cancel_button.clicked.connect(job.cancel)     # the next progress report returns False -> Cancelled

``done(result)``, ``failed(sentence)`` and ``progress(update)`` are called on the GUI thread. Jobs run one at a
time, in order, on the same thread as model loading and live frames (one thread owns the model).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, TypeVar

from PySide6.QtCore import QObject, Signal, Slot

from studio.core.progress import ProgressUpdate

from .worker import ModelWorker

T = TypeVar("T")

#: Progress reports reach the GUI at most this often (the last one always does).
PROGRESS_INTERVAL_S = 0.05


class Job(Generic[T]):
    """One submitted function; ``cancel()`` may be called from the GUI thread at any time."""

    def __init__(self, fn: Callable[..., T], done: Callable[[T], None], failed: Callable[[str], None],
                 progress: Callable[[ProgressUpdate], None] | None, worker: ModelWorker) -> None:
        self.fn, self.done, self.failed, self.progress = fn, done, failed, progress
        self.state = "queued"  # queued | running | done | failed
        self._worker = worker
        self._cancel = threading.Event()
        self._last_emit = 0.0
        self._pending: ProgressUpdate | None = None

    def cancel(self) -> None:
        """Ask the job to stop at its next progress report (or not to start)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    def report(self, update: ProgressUpdate) -> bool:
        """The job's :data:`studio.core.progress.ProgressCallback` (worker thread): False once cancelled."""
        now = time.perf_counter()
        if now - self._last_emit >= PROGRESS_INTERVAL_S or update.done >= update.total:
            self._last_emit, self._pending = now, None
            self._worker.job_progress.emit(self, update)
        else:
            self._pending = update  # coalesce: a fast loop must not flood the GUI's event queue
        return not self._cancel.is_set()

    def flush_progress(self) -> None:
        if self._pending is not None:
            update, self._pending = self._pending, None
            self._worker.job_progress.emit(self, update)


class JobRunner(QObject):
    """Submits jobs to a :class:`ModelWorker` and calls their callbacks back on the GUI thread."""

    started = Signal(object)  # Job
    finished = Signal(object)  # Job, after its done/failed callback ran
    _post = Signal(object)

    def __init__(self, worker: ModelWorker, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.active: list[Job] = []
        self._post.connect(worker.run_job)  # queued: the worker lives in another thread
        worker.job_started.connect(self._on_started)
        worker.job_progress.connect(self._on_progress)
        worker.job_done.connect(self._on_done)
        worker.job_failed.connect(self._on_failed)

    @property
    def generator(self) -> Any:
        """The loaded generator, for reading its description (layers, name); compute only inside jobs."""
        return self.worker.generator

    @property
    def busy(self) -> bool:
        return bool(self.active)

    def submit(self, fn: Callable[..., T], done: Callable[[T], None], failed: Callable[[str], None],
               progress: Callable[[ProgressUpdate], None] | None = None) -> Job[T]:
        """Queue ``fn(generator[, progress=callback])`` on the model's thread; returns the cancellable job."""
        job: Job[T] = Job(fn, done, failed, progress, self.worker)
        self.active.append(job)
        self._post.emit(job)
        return job

    def cancel_all(self) -> None:
        for job in list(self.active):
            job.cancel()

    @Slot(object)
    def _on_started(self, job: Job) -> None:
        job.state = "running"
        self.started.emit(job)

    @Slot(object, object)
    def _on_progress(self, job: Job, update: ProgressUpdate) -> None:
        if job.progress is not None and not job.finished:
            job.progress(update)

    @Slot(object, object)
    def _on_done(self, job: Job, result: Any) -> None:
        job.state = "done"
        self._finish(job, lambda: job.done(result))

    @Slot(object, str)
    def _on_failed(self, job: Job, sentence: str) -> None:
        job.state = "failed"
        self._finish(job, lambda: job.failed(sentence))

    def _finish(self, job: Job, callback: Callable[[], None]) -> None:
        if job in self.active:
            self.active.remove(job)
        try:
            callback()
        finally:
            self.finished.emit(job)
