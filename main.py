"""Start Neuron Studio: ``python main.py [--model M] [--device D] [--demo] [--screenshot PATH]``."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python main.py", description="Neuron Studio desktop application.")
    parser.add_argument("--model", "-m", default=None, help="built-in name or path (default: the embedded 'rooms')")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--demo", action="store_true",
                        help="open on a scripted state: a mask, a fast ranking and two sliders")
    parser.add_argument("--screenshot", metavar="PATH",
                        help="build the window offscreen, run the demo state, save the window as PNG, exit")
    return parser.parse_args(argv)


def _report_unexpected_errors(window) -> None:
    """A bug in a slot becomes one sentence in the window (and a traceback on the console), never a lost session."""
    import traceback

    def hook(kind, error, tb) -> None:
        traceback.print_exception(kind, error, tb)
        window.show_error(f"Unexpected {kind.__name__}: {error}. Your work is still open; details are on the console.")

    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from widgets.demo import Demo
    from widgets.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Neuron Studio")
    app.setOrganizationName("Neuron Studio")
    settings = folder = None
    if args.screenshot:  # the picture must not depend on (or change) this user's layout and recovery file
        folder = tempfile.mkdtemp(prefix="neuron-studio-shot-")
        settings = QSettings(os.path.join(folder, "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(args.model, args.device, settings=settings, config_dir=folder)
    if args.screenshot:
        window.resize(1440, 900)
        window.confirm_close = False  # a scripted run closes itself: no "save changes?" dialog
    elif settings is None and window.settings.value("window/geometry") is None:
        window.resize(1440, 900)
    window.show()
    if args.demo and not args.screenshot:
        Demo(window)
    if not args.screenshot:
        _report_unexpected_errors(window)
        return app.exec()

    status = {"code": 1}
    loop = QEventLoop()  # not app.exec(): once that returns, Qt refuses to run event loops in this process

    def capture() -> None:
        from studio.core.atomic import atomic_path

        if not loop.isRunning():
            return  # already captured (the give-up timer outlives the loop)
        with atomic_path(args.screenshot, suffix=".png") as tmp:
            window.grab().save(str(tmp), "PNG")
        status["code"] = 0 if window.generator is not None else 1
        window.close()
        loop.quit()

    demo = Demo(window)
    demo.finished.connect(lambda: QTimer.singleShot(300, capture))
    QTimer.singleShot(180_000, capture)  # never hang: give up after three minutes
    loop.exec()
    if status["code"]:
        said = window.banner.text() if not window.banner.isHidden() else window.statusBar().currentMessage()
        print(f"error: {said or 'the model did not load'}", file=sys.stderr)
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
