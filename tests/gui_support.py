"""Shared pieces of the GUI tests: a model worker on its own thread holding a generator, and raw mouse events."""
from __future__ import annotations

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QWidget

from studio.live import LiveRenderer
from widgets.jobs import JobRunner
from widgets.worker import ModelWorker, WorkerThread


class WorkerHarness:
    """A :class:`ModelWorker` on a running thread, already holding ``generator``; ``stop()`` joins it."""

    def __init__(self, generator) -> None:
        self.worker = ModelWorker()
        self.worker.generator, self.worker.live = generator, LiveRenderer(generator)
        self.thread = WorkerThread(self.worker)
        self.jobs = JobRunner(self.worker)

    def stop(self) -> None:
        self.jobs.cancel_all()
        self.thread.stop()


def mouse(widget: QWidget, kind: QEvent.Type, pos: QPoint, buttons: Qt.MouseButton = Qt.MouseButton.LeftButton,
          button: Qt.MouseButton | None = None) -> None:
    """Send one raw mouse event (``qtbot.mouseMove`` carries no buttons, so strokes need these)."""
    if button is None:
        button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else Qt.MouseButton.LeftButton
    local = QPointF(pos)
    event = QMouseEvent(kind, local, QPointF(widget.mapToGlobal(pos)), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def drag(widget: QWidget, points: list[QPoint], button: Qt.MouseButton = Qt.MouseButton.LeftButton) -> None:
    """Press at the first point, move through the rest with the button held, release at the last."""
    mouse(widget, QEvent.Type.MouseButtonPress, points[0], button, button)
    for p in points[1:]:
        mouse(widget, QEvent.Type.MouseMove, p, button, Qt.MouseButton.NoButton)
    mouse(widget, QEvent.Type.MouseButtonRelease, points[-1], Qt.MouseButton.NoButton, button)


def open_window(qtbot, tmp_path, model: str = "toy", resize: bool = True):
    """A MainWindow on ``model`` with its settings in ``tmp_path``, shown, after its first frame.

    ``resize=False`` keeps the size the settings remember (a second run of the app)."""
    from PySide6.QtCore import QSettings

    from widgets.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(model, "cpu", settings=settings, config_dir=str(tmp_path / "config"))
    qtbot.addWidget(window)
    window.confirm_close = False  # a real "save changes?" modal would block; tests of the prompt turn it on
    if resize:
        window.resize(1200, 800)
    with qtbot.waitSignal(window.frame_shown, timeout=60_000):
        window.show()
    return window


def paint_square(window, x0: int, y0: int, x1: int, y1: int, step: int = 4) -> None:
    """Paint a filled rectangle (image pixels) with real strokes, row by row."""
    canvas = window.canvas
    canvas.brush_size = step + 2
    for y in range(y0, y1 + 1, step):
        drag(canvas, [canvas.to_widget(QPointF(x, y)).toPoint() for x in range(x0, x1 + 1, step)])


def make_work(window, qtbot, path) -> None:
    """Some work to save: a painted mask, seed 4, two sliders (one off), local edits; saved to ``path``."""
    paint_square(window, 2, 2, 10, 10)
    window.seed.setValue(4)
    window.sliders.add_units("blocks.1", [2, 6])
    window.sliders.rows[0].off.setChecked(True)
    window.sliders.local.setChecked(True)
    with qtbot.waitSignal(window.jobs.finished, timeout=20_000):
        window.sessions.save(path)


def pick_layer(window, qtbot, name: str) -> None:
    """Choose layer ``name`` in the Rank panel's picker with the keyboard, as a user does (a choice by hand: Rank
    then keeps to it instead of starting on the layer that ranks best for the mask)."""
    from PySide6.QtCore import Qt

    picker = window.ranking.layers
    picker.setFocus()
    qtbot.keyClick(picker, Qt.Key.Key_Home)
    for _ in range(picker.count()):
        if picker.current_layer() == name:
            break
        qtbot.keyClick(picker, Qt.Key.Key_Down)
    assert picker.current_layer() == name and picker.by_hand
