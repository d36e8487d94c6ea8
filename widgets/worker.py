"""The long-lived worker thread that owns the model, so the GUI thread never waits on it.

The GUI thread never touches the model: it posts requests; the worker answers with signals.
Errors come back as one sentence, never as a crash. Three kinds of request reach the worker:

* ``load(spec, device)``: open a model (the old one is released first);
* live frames: the GUI writes the newest :class:`studio.live.LiveRequest` into ``worker.mailbox`` and emits
  ``wake``; the worker renders only the newest one, so a dragged slider never queues stale frames;
* jobs (:mod:`widgets.jobs`): any function of the generator, with progress and cancel.
"""
from __future__ import annotations

import inspect
import traceback
from typing import TYPE_CHECKING

import torch
from PySide6.QtCore import QObject, QThread, Signal, Slot

from studio.core.device import is_out_of_memory
from studio.core.errors import StudioError
from studio.exported import open_model
from studio.live import LiveRenderer, Mailbox

if TYPE_CHECKING:
    from .jobs import Job


def error_sentence(error: BaseException) -> str:
    """One sentence for the user; unexpected errors keep their type for bug reports."""

    if isinstance(error, StudioError):
        return str(error)
    if is_out_of_memory(error):
        return "The GPU ran out of memory; try fewer seeds, a smaller chunk, or --device cpu."
    return f"Unexpected {type(error).__name__}: {error}"


def _takes_progress(fn) -> bool:
    try:
        return "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ModelWorker(QObject):
    """Lives in its own QThread; loads a model, renders live frames and runs jobs on request."""

    loaded = Signal(object)  # Generator
    load_failed = Signal(str)
    frame = Signal(object)  # studio.live.Frame
    frame_failed = Signal(int, str)  # (stamp, sentence)
    job_started = Signal(object)  # Job
    job_progress = Signal(object, object)  # (Job, ProgressUpdate)
    job_done = Signal(object, object)  # (Job, result)
    job_failed = Signal(object, str)  # (Job, sentence)

    def __init__(self) -> None:
        super().__init__()
        self.generator = None
        self.live: LiveRenderer | None = None
        self.mailbox = Mailbox()

    @Slot(str, str)
    def load(self, spec: str, device: str) -> None:

        try:
            generator = open_model(spec or None, device=device)
        except Exception as error:  # errors are data: report, keep the old model running
            if not isinstance(error, StudioError):
                traceback.print_exc()
            self.load_failed.emit(error_sentence(error))
            return
        if self.live is not None:
            self.live.release()
        self.generator, self.live = generator, LiveRenderer(generator)
        self.loaded.emit(generator)

    @Slot()
    def render_newest(self) -> None:
        """Render the newest posted request; wake-ups for requests already rendered do nothing."""
        request = self.mailbox.take()
        if request is None:
            return
        if self.live is None:
            self.frame_failed.emit(request.stamp, "No model is loaded yet.")
            return
        try:
            self.frame.emit(self.live.frame(request))
        except Exception as error:
            if not isinstance(error, StudioError):
                traceback.print_exc()
            self.frame_failed.emit(request.stamp, error_sentence(error))

    @Slot(object)
    def run_job(self, job: "Job") -> None:
        if job.cancelled:
            self.job_failed.emit(job, "Cancelled before it started, as asked.")
            return
        if self.generator is None:
            self.job_failed.emit(job, "No model is loaded yet.")
            return
        if self.live is not None:
            self.live.release()  # jobs see the model without slider hooks; they may also change weights
        self.job_started.emit(job)
        try:
            with torch.no_grad():
                if _takes_progress(job.fn):
                    result = job.fn(self.generator, progress=job.report)
                else:
                    result = job.fn(self.generator)
        except Exception as error:
            if not isinstance(error, StudioError):
                traceback.print_exc()
            self.job_failed.emit(job, error_sentence(error))
            return
        finally:
            job.flush_progress()
        self.job_done.emit(job, result)


class WorkerThread:
    """A QThread running one worker object; ``stop()`` is quit() then wait() (never destroy a running thread)."""

    def __init__(self, worker: QObject) -> None:
        self.thread = QThread()
        self.thread.setObjectName(f"{type(worker).__name__}Thread")
        self.worker = worker
        worker.moveToThread(self.thread)
        self.thread.start()

    def stop(self) -> None:
        self.thread.quit()
        self.thread.wait()
