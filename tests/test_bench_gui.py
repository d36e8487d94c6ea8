"""The GUI responsiveness benchmark: its figures' layout on very short runs (no timing is asserted)."""
from __future__ import annotations

import json

from studio.cli import main
from tests.gui_support import open_window
from widgets.bench_gui import gap_figures, measure, ratios

PHASE_KEYS = {"max_gap_ms", "p99_gap_ms", "median_gap_ms", "ticks", "over_50ms", "seconds", "frames", "model_calls"}
RATIO_KEYS = {f"{phase}_{kind}" for phase in ("slider", "ranking", "knob") for kind in ("max", "p99")}


def test_gap_figures_are_the_longest_and_the_99th_percentile_gap():
    ticks = [0.0] + [0.005 * i for i in range(1, 200)] + [0.995 + 0.25]  # 199 gaps of 5 ms, then one of 250 ms
    f = gap_figures(ticks)
    assert f["max_gap_ms"] == 250.0 and f["p99_gap_ms"] == 5.0 and f["median_gap_ms"] == 5.0 and f["over_50ms"] == 1
    assert gap_figures([1.0])["max_gap_ms"] is None
    r = ratios({"idle": {"max_gap_ms": 10.0, "p99_gap_ms": 5.0}, "slider": {"max_gap_ms": 30.0, "p99_gap_ms": 5.0},
                "ranking": None}, ["slider", "ranking"])
    assert r == {"slider_max": 3.0, "slider_p99": 1.0, "ranking_max": None, "ranking_p99": None}


def test_measuring_the_window_reports_every_phase_with_its_work_done(toy_registry, qtbot, tmp_path):
    window = open_window(qtbot, tmp_path)
    try:
        result = measure(window, seconds=0.2, timeout=60)
    finally:
        window.close()
    for phase in ("idle", "slider", "ranking"):
        assert PHASE_KEYS <= set(result[phase]), phase
    assert result["idle"]["model_calls"] == 0
    assert result["slider"]["frames"] > 0 and result["ranking"]["finished"]
    assert result["knob"] is None and result["knob_skipped"]  # the toy ships no knob
    assert set(result["ratios"]) == RATIO_KEYS
    assert result["model_calls"] > 0 and result["model_calls_on_gui_thread"] == 0


def test_studio_bench_gui_relays_the_child_process_json(capsys):
    assert main(["bench", "gui", "--json", "--seconds", "0.2", "--timeout", "120"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "rooms"
    for phase in ("idle", "slider", "ranking", "knob"):
        assert PHASE_KEYS <= set(result[phase]), phase
    assert result["knob"]["knob"] and result["ranking"]["finished"]
    assert set(result["ratios"]) == RATIO_KEYS and result["model_calls_on_gui_thread"] == 0
