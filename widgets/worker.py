"""The long-lived worker thread that owns the model (STYLE.md §3).

The GUI thread never touches the model: it posts requests; the worker answers with signals.
Errors come back as one sentence (``failed``), never as a crash.
"""
from __future__ import annotations

import traceback

import torch
from PySide6.QtCore import QObject, QThread, Signal, Slot

from studio.errors import StudioError


def error_sentence(error: BaseException) -> str:
    """One sentence for the user; unexpected errors keep their type for bug reports."""
    from studio.device import is_out_of_memory

    if isinstance(error, StudioError):
        return str(error)
    if is_out_of_memory(error):
        return "The GPU ran out of memory; try fewer seeds, a smaller chunk, or --device cpu."
    return f"Unexpected {type(error).__name__}: {error}"


class ModelWorker(QObject):
    """Lives in its own QThread; loads a model and renders samples on request."""

    loaded = Signal(object)  # Generator
    rendered = Signal(object, object)  # (request id, image tensor (3, H, W) on CPU)
    failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.generator = None

    @Slot(str, str)
    def load(self, spec: str, device: str) -> None:
        from models.registry import open_model

        try:
            self.generator = open_model(spec or None, device=device)
            self.loaded.emit(self.generator)
        except Exception as error:  # errors are data: report, keep running
            traceback.print_exc()
            self.failed.emit(error_sentence(error))

    @Slot(int, object)
    def render(self, request: int, sample: object) -> None:
        if self.generator is None:
            self.failed.emit("No model is loaded yet.")
            return
        try:
            with torch.inference_mode():
                image = self.generator.render([sample])[0].float().cpu()
            self.rendered.emit(request, image)
        except Exception as error:
            traceback.print_exc()
            self.failed.emit(error_sentence(error))


class WorkerThread:
    """A QThread running one worker object; ``stop()`` is quit() then wait() (never destroy a running thread)."""

    def __init__(self, worker: QObject) -> None:
        self.thread = QThread()
        self.worker = worker
        worker.moveToThread(self.thread)
        self.thread.start()

    def stop(self) -> None:
        self.thread.quit()
        self.thread.wait()
