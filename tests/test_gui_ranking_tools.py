"""Ranking tools researchers expect: several units selected in the table, switched off or set in one action, and
every slider removed at once; real clicks on the toy model, the frames checked against a reference render."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt

from studio.core.hooks import UnitEdit
from tests.gui_support import open_window, paint_square, pick_layer
from tests.test_gui_window import rank_and_wait, reference


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def last_frame_of(window, qtbot):
    qtbot.waitUntil(lambda: window.last_frame is not None and window._shown == window._posted, timeout=20_000)
    return window.last_frame


def test_several_selected_units_are_switched_off_then_set_in_one_action_and_all_sliders_go(window, qtbot):
    paint_square(window, 2, 2, 14, 14)
    pick_layer(window, qtbot, "blocks.1")
    rank_and_wait(window, qtbot, method="fast")
    table = window.ranking.table
    first, third = (table.visualRect(table.model().index(r, 0)).center() for r in (0, 2))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=first)
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, pos=third)
    chosen = [table.unit_at(r) for r in range(3)]
    assert sorted(table.selected_units()) == sorted(chosen)

    posted = window._posted
    qtbot.mouseClick(window.ranking.off_button, Qt.MouseButton.LeftButton)
    assert window._posted == posted + 1  # one action, one frame asked for, not one per unit
    assert [(r.layer, r.unit) for r in window.sliders.rows] == [("blocks.1", u) for u in chosen]
    assert all(e.op == "off" for e in window.state.edits)
    frame = last_frame_of(window, qtbot)
    expected = reference(window, [UnitEdit("blocks.1", u, "off", 0.0) for u in chosen])
    assert torch.allclose(frame.image, expected, atol=1e-5)

    window.ranking.set_value.setValue(2.5)
    qtbot.mouseClick(window.ranking.set_button, Qt.MouseButton.LeftButton)
    assert len(window.sliders.rows) == 3  # the same sliders, now set
    assert all((e.op, e.value) == ("set", 2.5) for e in window.state.edits)
    assert all(r.value.text() == "set" for r in window.sliders.rows)
    frame = last_frame_of(window, qtbot)
    assert torch.allclose(frame.image, reference(window, [UnitEdit("blocks.1", u, "set", 2.5) for u in chosen]),
                          atol=1e-5)

    qtbot.mouseClick(window.sliders.remove_all_button, Qt.MouseButton.LeftButton)
    assert window.sliders.rows == [] and window.state.edits == []
    frame = last_frame_of(window, qtbot)
    assert torch.allclose(frame.image, reference(window, []), atol=1e-5)


def test_switching_off_with_nothing_selected_says_what_to_do(window, qtbot):
    messages = []
    window.ranking.message.connect(messages.append)
    qtbot.mouseClick(window.ranking.off_button, Qt.MouseButton.LeftButton)
    assert messages and "Select units" in messages[0] and window.sliders.rows == []
