"""The canvas: paint a mask with real mouse events, erase, undo/redo strokes, clear/invert/fill, zoom."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt

from tests.gui_support import drag
from widgets.canvas import Canvas


@pytest.fixture
def canvas(qtbot):
    widget = Canvas()
    qtbot.addWidget(widget)
    widget.resize(320, 320)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_image(torch.rand(3, 64, 64))
    widget.brush_size = 6
    return widget


def widget_point(canvas: Canvas, x: float, y: float) -> QPoint:
    return canvas.to_widget(QPointF(x, y)).toPoint()


def test_a_stroke_paints_the_mask_along_the_drag(canvas):
    assert canvas.mask() is None
    drag(canvas, [widget_point(canvas, x, 20) for x in (10, 20, 30, 40, 50)])
    mask = canvas.mask()
    assert mask is not None and mask.shape == (64, 64)
    assert mask[20, 10:51].min() > 0.9  # the whole line, not only the sampled points
    assert mask[40:, :].max() == 0  # nothing far from the stroke
    assert canvas.undo_stack.count() == 1


def test_moving_without_a_button_does_not_paint(canvas):
    from PySide6.QtCore import QEvent

    from tests.gui_support import mouse

    mouse(canvas, QEvent.Type.MouseMove, widget_point(canvas, 30, 30), Qt.MouseButton.NoButton)
    assert canvas.mask() is None and canvas.undo_stack.count() == 0


def test_undo_and_redo_a_stroke_with_the_usual_shortcuts(canvas, qtbot):
    from widgets.mask_tools import MaskTools

    tools = MaskTools(canvas)
    qtbot.addWidget(tools)
    drag(canvas, [widget_point(canvas, 10, 10), widget_point(canvas, 30, 10)])
    first = canvas.mask().copy()
    drag(canvas, [widget_point(canvas, 10, 40), widget_point(canvas, 30, 40)])
    assert canvas.mask()[40, 20] > 0.9
    tools.undo.trigger()
    assert np.array_equal(canvas.mask(), first)
    tools.redo.trigger()
    assert canvas.mask()[40, 20] > 0.9
    assert tools.undo.shortcut().toString() == "Ctrl+Z"
    canvas.undo_stack.undo()
    canvas.undo_stack.undo()
    assert canvas.mask() is None


def test_the_eraser_and_the_right_button_erase(canvas):
    canvas.fill_mask()
    canvas.tool = "eraser"
    drag(canvas, [widget_point(canvas, 5, 32), widget_point(canvas, 60, 32)])
    assert canvas.mask()[32, 10:55].max() < 0.1 and canvas.mask()[5, 5] == 1.0
    canvas.tool = "brush"
    drag(canvas, [widget_point(canvas, 32, 5), widget_point(canvas, 32, 60)], button=Qt.MouseButton.RightButton)
    assert canvas.mask()[10:55, 32].max() < 0.1


def test_clear_invert_fill_are_undoable_and_report_changes(canvas, qtbot):
    drag(canvas, [widget_point(canvas, 10, 10), widget_point(canvas, 12, 10)])
    painted = canvas.mask().copy()
    with qtbot.waitSignal(canvas.mask_changed):
        canvas.invert_mask()
    assert np.allclose(canvas.mask(), 1 - painted, atol=1 / 255)
    canvas.clear_mask()
    assert canvas.mask() is None
    canvas.fill_mask()
    assert canvas.mask().min() == 1.0
    for _ in range(3):
        canvas.undo_stack.undo()
    assert np.array_equal(canvas.mask(), painted)


def test_painting_lands_on_the_same_pixel_after_zooming(canvas):
    canvas.zoom(3.0, QPointF(100, 100))
    assert canvas.scale > 10
    point = widget_point(canvas, 33, 37)
    drag(canvas, [point, point])
    mask = canvas.mask()
    ys, xs = np.nonzero(mask > 0.5)
    assert abs(ys.mean() - 37) < 1.5 and abs(xs.mean() - 33) < 1.5


def test_a_new_image_size_starts_an_empty_mask_and_a_pending_mask_waits_for_the_image(qtbot):
    canvas = Canvas()
    qtbot.addWidget(canvas)
    saved = np.zeros((16, 16), np.float32)
    saved[4:8, 4:8] = 1
    canvas.set_mask(saved)  # e.g. an opened session, before the first frame
    canvas.set_image(torch.rand(3, 16, 16))
    assert np.array_equal(canvas.mask(), saved)
    canvas.set_image(torch.rand(3, 24, 24))
    assert canvas.mask() is None
