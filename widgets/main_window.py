"""The main window: image, seed, prompt, and the status bar showing device and frame time."""
from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QMainWindow, QPushButton, QSpinBox, QVBoxLayout,
                               QWidget)

from studio.device import describe
from studio.images import to_uint8
from studio.live import LiveRequest

from .worker import ModelWorker, WorkerThread


def pixmap_from(image) -> QPixmap:
    array = to_uint8(image)
    h, w, _ = array.shape
    qimage = QImage(array.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())


class MainWindow(QMainWindow):
    request_load = Signal(str, str)
    wake_worker = Signal()
    image_shown = Signal()

    def __init__(self, model: str | None = None, device: str = "auto") -> None:
        super().__init__()
        self.setWindowTitle("Neuron Studio")
        self.generator = None
        self._request = 0
        self._sent_at = 0.0

        self.image = QLabel("Loading model…")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(384, 384)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("prompt (text models)")
        generate = QPushButton("Generate")
        generate.clicked.connect(self.generate)
        self.seed.valueChanged.connect(self.generate)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Seed"))
        controls.addWidget(self.seed)
        controls.addWidget(self.prompt, 1)
        controls.addWidget(generate)
        layout = QVBoxLayout()
        layout.addWidget(self.image, 1)
        layout.addLayout(controls)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self.device_label = QLabel("device: …")
        self.frame_label = QLabel("")
        self.statusBar().addPermanentWidget(self.frame_label)
        self.statusBar().addPermanentWidget(self.device_label)

        self.worker = ModelWorker()
        self.thread = WorkerThread(self.worker)
        self.request_load.connect(self.worker.load)
        self.wake_worker.connect(self.worker.render_newest)
        self.worker.loaded.connect(self._on_loaded)
        self.worker.frame.connect(self._on_frame)
        self.worker.load_failed.connect(self._on_failed)
        self.worker.frame_failed.connect(lambda stamp, message: self._on_failed(message))
        self.statusBar().showMessage("Loading model…")
        self.request_load.emit(model or "", device)

    def _on_loaded(self, generator) -> None:
        self.generator = generator
        self.device_label.setText(f"device: {describe(generator.device, generator.dtype)}")
        self.prompt.setEnabled(generator.takes_prompt)
        if generator.takes_prompt and not self.prompt.text():
            self.prompt.setText(generator.default_prompt)
        self.statusBar().showMessage(f"Loaded {generator.name}", 3000)
        self.generate()

    def generate(self) -> None:
        if self.generator is None:
            return
        self._sent_at = time.perf_counter()
        sample = self.generator.sample(self.seed.value(), self.prompt.text() or None)
        self._request = self.worker.mailbox.post(LiveRequest(sample))
        self.wake_worker.emit()

    def _on_frame(self, frame) -> None:
        if frame.stamp != self._request:
            return  # a newer request is on its way: drop the stale frame
        self.image.setPixmap(pixmap_from(frame.image).scaled(
            self.image.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
        self.frame_label.setText(f"frame {1000 * (time.perf_counter() - self._sent_at):.0f} ms")
        self.image_shown.emit()

    def _on_failed(self, message: str) -> None:
        self.statusBar().showMessage(message)
        if self.generator is None:
            self.image.setText(message)
        self.image_shown.emit()

    def closeEvent(self, event) -> None:
        self.thread.stop()
        super().closeEvent(event)
