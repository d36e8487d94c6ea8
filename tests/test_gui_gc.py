"""Cyclic garbage is collected on the GUI thread, never in whichever thread allocates (the model worker)."""
from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QObject, QThread

from widgets import gui_gc


class Cycle:
    """A reference cycle that remembers which thread destroyed it."""

    def __init__(self, seen: list) -> None:
        self.me, self.seen = self, seen

    def __del__(self) -> None:
        self.seen.append(threading.current_thread() is threading.main_thread())


def test_install_turns_automatic_collection_off_and_is_one_per_app(qtbot):
    collector = gui_gc.install()
    try:
        assert not gc.isenabled() and gui_gc.install() is collector
    finally:
        collector.uninstall()
    assert gc.isenabled() and gui_gc.install() is not collector
    gui_gc.install().uninstall()


def test_garbage_made_in_a_worker_thread_is_collected_on_the_gui_thread(qtbot):
    collector = gui_gc.install()
    seen: list = []

    class Maker(QObject):
        def run(self) -> None:
            Cycle(seen)  # unreachable at once, but only a collection can free a cycle
            self.keep = [{} for _ in range(5000)]  # live allocations: past every automatic threshold

    thread, maker = QThread(), Maker()
    maker.moveToThread(thread)
    thread.started.connect(maker.run)
    try:
        thread.start()
        qtbot.waitUntil(lambda: thread.isRunning() or bool(seen), timeout=5000)
        thread.quit()
        thread.wait(5000)
        assert seen == []  # nothing collected in the worker
        qtbot.waitUntil(lambda: bool(seen), timeout=5000)
        assert seen == [True]
    finally:
        collector.uninstall()
