"""Rank starts on the layer that ranks best for the painted mask, unless the user picked a layer by hand."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt

from studio.ranking import rank_layers
from tests.gui_support import open_window, paint_square
from tests.test_gui_ranking import open_units_tab, rank


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    open_units_tab(w, qtbot)
    yield w
    w.close()


def test_an_untouched_picker_moves_to_the_layer_strongest_for_the_mask(window, qtbot):
    picker = window.ranking.layers
    start = picker.current_layer()
    paint_square(window, 20, 20, 26, 26)
    assert "ranks best for the mask" in window.ranking.plan.text()
    with torch.inference_mode():
        expected = rank_layers(window.generator, [window.state.sample], window.state.mask, method="fast")
    assert expected[0].layer != start  # otherwise this test could not tell the estimate from the start layer
    ranking = rank(window, qtbot)
    assert ranking.layer == expected[0].layer == picker.current_layer() == window.state.layer
    assert [u.unit for u in ranking.units] == [u.unit for u in expected[0].ranking.units]
    assert window.ranking.summary.text().startswith(f"Ranked on {expected[0].layer}: strongest for this mask.")


def test_a_layer_picked_by_hand_is_ranked_as_it_is(window, qtbot):
    picker = window.ranking.layers
    paint_square(window, 20, 20, 26, 26)
    picker.setFocus()
    qtbot.keyClick(picker, Qt.Key.Key_Home)  # the first entry (fc), then down to blocks.1
    qtbot.keyClick(picker, Qt.Key.Key_Down)
    qtbot.keyClick(picker, Qt.Key.Key_Down)
    assert picker.current_layer() == "blocks.1" and picker.by_hand
    assert "Rank will use: blocks.1," in window.ranking.plan.text()
    ranking = rank(window, qtbot)
    assert ranking.layer == "blocks.1" == picker.current_layer()
    assert "strongest for this mask" not in window.ranking.summary.text()
    paint_square(window, 2, 2, 14, 14)  # a new mask: still the chosen layer
    assert rank(window, qtbot).layer == "blocks.1"


def test_the_model_declares_the_layer_it_opens_on(toy_registry, qtbot, tmp_path, monkeypatch):
    from tests.toy import ToyGenerator

    monkeypatch.setattr(ToyGenerator, "start_layer", "blocks.2")
    window = open_window(qtbot, tmp_path)
    try:
        assert window.ranking.layers.current_layer() == "blocks.2" == window.state.layer
        assert not window.ranking.layers.by_hand
    finally:
        window.close()


def test_rooms_opens_on_the_layer_best_for_lamps_and_a_painted_lamp_ranks_there(qtbot, tmp_path):
    from tests.test_gui_knobs import TARGET, lamp_box, paint_box

    window = open_window(qtbot, tmp_path, model="rooms")
    try:
        open_units_tab(window, qtbot)
        assert window.ranking.layers.current_layer() == "blocks.1"  # measured best for lamps (model card)
        window.seed.setValue(TARGET)
        qtbot.waitUntil(lambda: window.state.sample.seed == TARGET, timeout=20_000)
        paint_box(window.canvas, lamp_box(window, TARGET, 0))
        ranking = rank(window, qtbot)
        assert ranking.layer == "blocks.1" == window.ranking.layers.current_layer()
        assert window.ranking.summary.text().startswith("Ranked on blocks.1: strongest for this mask.")
    finally:
        window.close()
