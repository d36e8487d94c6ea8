"""Mask keys in the whole window: undo/redo spellings, [ and ] wherever the focus is, hiding and feathering."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from PySide6.QtCore import QPointF

from tests.gui_support import drag, open_window, paint_square


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5_000)
    yield w
    w.close()


def one_stroke(window) -> None:
    """One stroke across the image: one undo step."""
    canvas = window.canvas
    canvas.brush_size = 6
    drag(canvas, [canvas.to_widget(QPointF(x, 8)).toPoint() for x in range(2, 20, 3)])


def press(qtbot, widget, key, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(widget, key, modifiers)
    qtbot.wait(10)


def test_redo_answers_ctrl_shift_z_and_ctrl_y_and_the_edit_menu_shows_both(window, qtbot, qtlog):
    one_stroke(window)
    canvas = window.canvas
    ctrl, shift = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
    for redo in ((Qt.Key.Key_Z, ctrl | shift), (Qt.Key.Key_Y, ctrl)):
        press(qtbot, canvas, Qt.Key.Key_Z, ctrl)
        assert canvas.mask() is None  # undone
        press(qtbot, canvas, *redo)
        assert canvas.mask() is not None  # redone
    assert not [r for r in qtlog.records if "Ambiguous" in r.message]
    edit = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Edit")
    shown = {a.text(): a.shortcuts() for a in edit.actions() if a.text()}
    assert [k.toString() for k in shown["Redo mask change"]] == ["Ctrl+Shift+Z", "Ctrl+Y"]
    assert [k.toString() for k in shown["Undo mask change"]] == ["Ctrl+Z"]


def test_with_a_text_box_focused_ctrl_z_is_the_text_s_and_the_edit_menu_still_undoes_the_mask(window, qtbot):
    one_stroke(window)
    box = window.ranking.seeds
    box.setFocus()
    qtbot.keyClicks(box, "0-3")
    press(qtbot, box, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert box.text() != "0-3" and window.canvas.mask() is not None  # the text's undo, not the mask's
    window.tools.undo.trigger()  # Edit > Undo mask change
    assert window.canvas.mask() is None


def test_brackets_resize_the_brush_from_anywhere_and_the_size_slider_follows(window, qtbot):
    window.tools.size.setValue(12)
    window.ranking.rank_button.setFocus()  # not the canvas
    for _ in range(10):
        press(qtbot, window.ranking.rank_button, Qt.Key.Key_BracketRight)
    size = window.canvas.brush_size
    assert window.tools.size.value() == size and 20 <= size <= 40  # about 2.6x after ten presses, not 11x
    for _ in range(10):
        press(qtbot, window.ranking.rank_button, Qt.Key.Key_BracketLeft)
    assert window.tools.size.value() == window.canvas.brush_size < size


def test_h_hides_and_shows_the_mask_and_feather_softens_its_edges(window, qtbot):
    paint_square(window, 8, 8, 20, 20)
    canvas = window.canvas
    shown = canvas.grab().toImage()
    press(qtbot, canvas, Qt.Key.Key_H)
    assert not canvas.mask_visible and canvas.grab().toImage() != shown
    assert canvas.mask() is not None  # hidden, not removed
    press(qtbot, canvas, Qt.Key.Key_H)
    assert canvas.mask_visible and window.tools.show_mask.isChecked()
    hard = canvas.mask()
    assert set(np.unique(hard.round(2))) <= {0.0, 1.0} or (hard > 0.02).sum() > 0
    press(qtbot, canvas, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)
    soft = window.state.mask.numpy()
    edge = (soft > 0.05) & (soft < 0.95)
    assert edge.sum() > ((hard > 0.05) & (hard < 0.95)).sum() + 20  # a ramp where the edge was sharp
    assert soft[14, 14] > 0.95 and soft[0, 0] < 0.05
    press(qtbot, canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(canvas.mask(), hard)  # feathering is one undoable step
