"""``python -m widgets.bench_gui --json``: does the window stay responsive while the model works?

Opens the real :class:`widgets.main_window.MainWindow` offscreen on a model (default: the app's default), runs a
fine GUI timer (``--tick-ms``, 5 ms) and records the gap between its ticks, first with nothing to do (the
baseline), then while the worker renders slider frames, ranks the painted mask, and renders knob strength frames::

    python -m widgets.bench_gui --json        # or: python -m studio bench gui --json (the same, as a child process)
    {"idle": {"max_gap_ms": 6.1, "p99_gap_ms": 5.6, "ticks": 396, ...},
     "slider": {"max_gap_ms": 31.0, "p99_gap_ms": 12.9, "frames": 118, ...}, "ranking": {...}, "knob": {...},
     "ratios": {"slider_max": 5.1, "slider_p99": 2.3, "ranking_max": ..., ...},
     "model_calls": 402, "model_calls_on_gui_thread": 0, ...}

A long gap is a moment the window could not repaint or take a key. ``ratios`` are each busy phase's longest and
99th-percentile gap over the idle phase's, measured in the same process one after the other. The phases drive the
window's own controls (the slider's value, the Rank button's slot, the knob's strength slider), so every frame
takes the path a drag takes: the state, the worker's mailbox, the frame back to the canvas. Figures that would look
good for the wrong reason are checked beside them: each busy phase reports the frames it showed (or that the
ranking finished), and every model call (render, forward_from) is counted with the thread it ran on, so a quiet
event loop that did no work, or work done on the GUI thread, shows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from typing import Callable

import torch

#: The finest timer the probe asks for; Qt's precise timers keep to about a millisecond.
TICK_MS = 5


def gap_figures(ticks: list[float]) -> dict:
    """Gaps between consecutive tick times (seconds): the longest, the 99th percentile and the median, in ms."""
    gaps = sorted(1000 * (b - a) for a, b in zip(ticks, ticks[1:]))
    if not gaps:
        return {"max_gap_ms": None, "p99_gap_ms": None, "median_gap_ms": None, "ticks": len(ticks)}
    p99 = gaps[min(len(gaps) - 1, math.ceil(0.99 * len(gaps)) - 1)]
    return {"max_gap_ms": round(gaps[-1], 3), "p99_gap_ms": round(p99, 3),
            "median_gap_ms": round(gaps[len(gaps) // 2], 3), "ticks": len(ticks),
            "over_50ms": sum(g > 50 for g in gaps)}


def ratios(figures: dict, phases: list[str]) -> dict:
    """Each phase's longest and p99 gap over the idle baseline's (None where a phase did not run)."""
    idle = figures["idle"]
    out = {}
    for phase in phases:
        f = figures.get(phase)
        for key, name in (("max_gap_ms", "max"), ("p99_gap_ms", "p99")):
            value = f.get(key) if f else None
            out[f"{phase}_{name}"] = round(value / idle[key], 3) if value is not None and idle[key] else None
    return out


class Probe:
    """A precise GUI timer that notes when it fires; ``phase()`` collects the ticks of one stretch."""

    def __init__(self, tick_ms: int) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(tick_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks = []
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.ticks


def spin(seconds: float, until: Callable[[], bool] | None = None) -> bool:
    """Run the GUI event loop for ``seconds`` or until ``until()`` holds; True if it held."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    done = {"held": False}

    def check() -> None:
        if until is not None and until():
            done["held"] = True
            loop.quit()

    poll, limit = QTimer(), QTimer()
    poll.setInterval(20)
    poll.timeout.connect(check)
    limit.setSingleShot(True)
    limit.timeout.connect(loop.quit)
    poll.start()
    limit.start(max(1, int(1000 * seconds)))
    loop.exec()
    poll.stop()
    limit.stop()
    return done["held"]


class CallCounter:
    """Counts the generator's render and forward_from calls, and how many ran on the GUI thread."""

    def __init__(self, generator) -> None:
        self.gui = threading.get_ident()
        self.calls = self.on_gui = 0
        for name in ("render", "forward_from"):
            method = getattr(generator, name)
            setattr(generator, name, self._wrap(method))

    def _wrap(self, method):
        def counted(*args, **kwargs):
            self.calls += 1
            self.on_gui += threading.get_ident() == self.gui
            return method(*args, **kwargs)
        return counted


def disc_mask(generator) -> torch.Tensor:
    """A painted disc in the image's centre, a fifth of its side in radius (what the ranking explains)."""
    h, w = generator.resolution
    yy, xx = torch.meshgrid(torch.arange(h) - h / 2 + 0.5, torch.arange(w) - w / 2 + 0.5, indexing="ij")
    return ((yy**2 + xx**2).sqrt() < min(h, w) / 5).float()


def measure(window, seconds: float = 2.0, tick_ms: int = TICK_MS, timeout: float = 300.0) -> dict:
    """The four phases on a shown, loaded ``window`` (its first frame shown); one JSON-able dict."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    generator = window.generator
    counter = CallCounter(generator)
    probe = Probe(tick_ms)
    frames = {"n": 0}
    window.frame_shown.connect(lambda frame: frames.__setitem__("n", frames["n"] + 1))
    out: dict = {}

    def phase(name: str, drive: Callable[[], None] | None, until: Callable[[], bool] | None = None,
              length: float = seconds, start: Callable[[], object] | None = None) -> None:
        """Tick gaps while ``drive`` runs every 16 ms (and ``start`` once), for ``length`` s or until ``until()``."""
        spin(0.2, lambda: window.worker.mailbox.stamp == window._shown and not window.jobs.busy)  # settle
        app.processEvents()
        calls, start_frames = counter.calls, frames["n"]
        driver = None
        if drive is not None:
            from PySide6.QtCore import QTimer

            driver = QTimer()
            driver.setInterval(16)  # a drag moves the slider about 60 times a second
            driver.timeout.connect(drive)
        probe.start()
        began = time.perf_counter()
        if driver is not None:
            driver.start()
        if start is not None:
            start()
        finished = spin(length, until)
        if driver is not None:
            driver.stop()
        ticks = probe.stop()
        out[name] = {**gap_figures(ticks), "seconds": round(time.perf_counter() - began, 3),
                     "frames": frames["n"] - start_frames, "model_calls": counter.calls - calls}
        if until is not None:
            out[name]["finished"] = finished

    phase("idle", None)

    # (b) a slider drag: one unit of the start layer swept from -1x to 3x and back
    layer = window.state.layer or window.ranking.layers.current_layer()
    window.sliders.add_units(layer, [0])
    slider = window.sliders.rows[-1].slider
    values = [round(slider.minimum() + (slider.maximum() - slider.minimum()) * i / 30) for i in range(31)]
    values += values[::-1]
    step = {"i": 0}

    def drag(target=slider) -> None:
        target.setValue(values[step["i"] % len(values)])
        step["i"] += 1

    phase("slider", drag)
    window.sliders.remove_all_button.click()

    # (c) a ranking of the painted mask (the Rank button's slot), as long as it takes
    window.state.mask = disc_mask(generator)
    ranked = {"done": False}
    window.ranking.ranked.connect(lambda _ranking: ranked.__setitem__("done", True))
    phase("ranking", None, until=lambda: ranked["done"], length=timeout, start=window.ranking.rank_button.click)
    out["ranking"]["layer"] = getattr(window.state.ranking, "layer", None)

    # (d) a knob's strength dragged (the model's first shipped knob, on the same mask)
    spin(timeout, lambda: not window.jobs.busy)  # the shipped knobs were asked for on load: their job is done
    edit = window.knobs.apply_chosen() if window.knobs.available else None
    if edit is None:
        out["knob"] = None
        out["knob_skipped"] = "this model ships no knob"
    else:
        row = window.knobs.rows[-1]
        strengths = [round(row.slider.minimum() + (row.slider.maximum() - row.slider.minimum()) * i / 30)
                     for i in range(31)]
        strengths += strengths[::-1]
        k = {"i": 0}

        def turn() -> None:
            row.slider.setValue(strengths[k["i"] % len(strengths)])
            k["i"] += 1

        phase("knob", turn)
        out["knob"]["knob"] = edit.knob.name
    phases = ["slider", "ranking", "knob"]
    out["ratios"] = ratios(out, phases)
    out["model_calls"] = counter.calls
    out["model_calls_on_gui_thread"] = counter.on_gui
    out["tick_ms"] = tick_ms
    out["model"] = generator.name
    out["layer"] = layer
    out["threads"] = torch.get_num_threads()
    return out


def run(args: argparse.Namespace) -> dict:
    """Open the window offscreen on ``args.model``, wait for its first frame, measure, close."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.threads:
        torch.set_num_threads(args.threads)
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    with tempfile.TemporaryDirectory(prefix="bench-gui-") as config:
        # its own settings and recovery folder: the user's are neither read nor written
        settings = QSettings(os.path.join(config, "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(args.model, args.device, settings=settings, config_dir=config)
        window.confirm_close = False
        window.resize(1280, 800)
        shown = {"first": False}
        window.frame_shown.connect(lambda _frame: shown.__setitem__("first", True))
        window.load_failed.connect(lambda sentence: shown.__setitem__("failed", sentence))
        window.show()
        spin(args.timeout, lambda: shown["first"] or "failed" in shown)
        if not shown["first"]:
            window.close()
            raise SystemExit(f"bench gui: the window showed no frame ({shown.get('failed', 'timed out')}).")
        try:
            result = measure(window, args.seconds, args.tick_ms, args.timeout)
        finally:
            window.close()
            app.processEvents()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m widgets.bench_gui",
                                description="Gaps between GUI timer ticks (longest, 99th percentile) while idle, "
                                            "then while slider frames, a ranking and knob frames run on the worker.")
    p.add_argument("--model", "-m", default=None, help="built-in name or path (default: the app's default model)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of each timed phase but the ranking (2)")
    p.add_argument("--tick-ms", type=int, default=TICK_MS, help=f"the probe timer's interval (default: {TICK_MS})")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the model, a ranking (300)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; 0: torch's own choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['model']}, GUI timer every {result['tick_ms']} ms; gaps between its ticks:")
    for phase in ("idle", "slider", "ranking", "knob"):
        f = result.get(phase)
        if not f:
            print(f"  {phase:8s} not run ({result.get(phase + '_skipped', 'nothing to do')})")
            continue
        print(f"  {phase:8s} longest {f['max_gap_ms']:7.1f} ms, p99 {f['p99_gap_ms']:6.1f} ms, "
              f"{f['frames']} frames, {f['model_calls']} model calls in {f['seconds']:.1f} s")
    print("  ratios to idle: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items()))
    print(f"  model calls on the GUI thread: {result['model_calls_on_gui_thread']} of {result['model_calls']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
