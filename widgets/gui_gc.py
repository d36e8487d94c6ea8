"""Python's cyclic garbage collection, run on the GUI thread only.

Left to itself, the collector runs in whichever thread happens to allocate when a threshold is crossed: often the
model worker. A garbage cycle that holds Qt objects (a closed dialog, a widget and its connected lambda) is then
destroyed off the GUI thread, and Qt crashes. The app switches automatic collection off and runs the same
generational collections from a timer on the GUI thread, when the same thresholds are crossed.

    collector = install(app)      # once per QApplication; idempotent
"""
from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication

#: How often the GUI thread looks at the allocation counts (ms).
INTERVAL_MS = 500


class GuiThreadCollector(QObject):
    """Turns automatic collection off while it lives; a timer collects the generation whose threshold is crossed."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)
        self.was_enabled = gc.isenabled()
        gc.disable()
        self.timer.start()
        self.destroyed.connect(_enable)  # the app (its parent) is gone: nothing Qt is left to protect

    def tick(self) -> int | None:
        """Collect the oldest generation whose count passed its threshold, as the automatic collector would."""
        counts, limits = gc.get_count(), gc.get_threshold()
        for generation in (2, 1, 0):
            if limits[generation] and counts[generation] > limits[generation]:
                gc.collect(generation)
                return generation
        return None

    def uninstall(self) -> None:
        """Back to automatic collection (tests); the app keeps its collector for its whole life."""
        self.timer.stop()
        self.destroyed.disconnect(_enable)
        self.setParent(None)  # no longer the application's collector: install() makes a new one
        if self.was_enabled:
            gc.enable()


def _enable(*_args) -> None:
    gc.enable()


def install(app: QApplication | None = None) -> GuiThreadCollector:
    """The application's collector, made on first use (call it from the GUI thread)."""
    app = app or QApplication.instance()
    found = app.findChild(GuiThreadCollector)
    return found if found is not None else GuiThreadCollector(app)
