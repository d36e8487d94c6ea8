"""Start Neuron Studio: ``python main.py [--model M] [--device D] [--demo] [--screenshot PATH] [--image PHOTO]``."""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

#: What Qt's xcb (X11) platform plugin links against, and the Debian/Ubuntu package of each (PySide6 6.x).
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-shm.so.0": "libxcb-shm0", "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1", "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6",
    "libxkbcommon.so.0": "libxkbcommon0", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0", "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1", "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0", "libdbus-1.so.3": "libdbus-1-3",
}
_MISSING = re.compile(r"([\w.+-]+\.so[.\d]*): cannot open shared object file")


def uses_xcb(environ: dict | None = None, platform: str | None = None) -> bool:
    """True when Qt will pick its xcb plugin: Linux, and QT_QPA_PLATFORM unset (not Wayland) or naming xcb."""
    environ = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if not chosen and environ.get("XDG_SESSION_TYPE") == "wayland":
        return False  # Qt 6 tries its Wayland plugin first there
    return chosen in ("", "xcb")


def missing_xcb_libraries(plugin: Path | None = None,
                          load: Callable[[str], object] = ctypes.CDLL) -> list[str]:
    """The shared libraries the xcb platform plugin needs that cannot be loaded (empty: Qt can start).

    Each known library is loaded by name; then the plugin itself, whose loader error names anything else.
    """
    missing = []
    for name in XCB_LIBRARIES:
        try:
            load(name)
        except OSError:
            missing.append(name)
    if plugin is None:
        import PySide6  # the package only (no Qt library loads): where its plugins live

        plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not missing and plugin.exists():
        try:
            load(str(plugin))
        except OSError as error:
            found = _MISSING.search(str(error))
            missing.append(found.group(1) if found else str(error))
    return missing


def xcb_sentence(missing: list[str]) -> str:
    """One sentence naming what to install."""
    packages = " ".join(dict.fromkeys(XCB_LIBRARIES.get(name, name) for name in missing))
    names = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
    return (f"Qt cannot start its X11 (xcb) window plugin because {names} "
            f"{'is' if len(missing) == 1 else 'are'} missing: install with `sudo apt-get install {packages}` "
            "(Debian/Ubuntu), or run under Wayland with QT_QPA_PLATFORM=wayland.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python main.py", description="Neuron Studio desktop application.")
    parser.add_argument("--model", "-m", default=None, help="built-in name or path (default: the embedded 'rooms')")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--demo", action="store_true",
                        help="open on a scripted state: a mask, a fast ranking and two sliders")
    parser.add_argument("--screenshot", metavar="PATH",
                        help="build the window offscreen, run the demo state, save the window as PNG, exit")
    parser.add_argument("--size", default="1440x900", metavar="WxH", help="the window size of --screenshot")
    parser.add_argument("--image", metavar="PHOTO",
                        help="open your own picture: the model is inverted to reproduce it, then edit it like a seed")
    return parser.parse_args(argv)


def open_image_when_loaded(window, path: str) -> None:
    """``--image``: invert ``path`` as soon as the window's model has loaded (once)."""
    def opened(_generator) -> None:
        window.model_loaded.disconnect(opened)
        window.inversions.open(path)

    if window.generator is not None:
        window.inversions.open(path)
    else:
        window.model_loaded.connect(opened)


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
    if uses_xcb():  # Qt's own message ("could not load the Qt platform plugin") names no library
        missing = missing_xcb_libraries()
        if missing:
            print(f"error: {xcb_sentence(missing)}", file=sys.stderr)
            return 1
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
        width, _, height = args.size.partition("x")
        window.resize(int(width), int(height))
        window.confirm_close = False  # a scripted run closes itself: no "save changes?" dialog
    elif settings is None and window.settings.value("window/geometry") is None:
        window.resize(1440, 900)
    window.show()
    if args.demo and not args.screenshot:
        Demo(window)
    if args.image:  # once the model is there (the inversion needs it)
        open_image_when_loaded(window, args.image)
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
    try:
        loop.exec()
    finally:
        settings.sync()  # nothing left to write later into the folder removed below
        shutil.rmtree(folder, ignore_errors=True)
    if status["code"]:
        said = window.banner.text() if not window.banner.isHidden() else window.statusBar().currentMessage()
        print(f"error: {said or 'the model did not load'}", file=sys.stderr)
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
