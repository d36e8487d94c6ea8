"""The slider list as a user meets it: wheel scrolling, Off sliders, labels, a batch of sliders, stable columns."""
from __future__ import annotations

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from studio.core.hooks import UnitEdit
from tests.gui_support import mouse
from widgets.slider_panel import SliderPanel


def wheel(widget, steps: int = -1) -> None:
    """One real wheel notch over the middle of ``widget`` (negative: scroll down)."""
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def panel_with(qtbot, count: int) -> SliderPanel:
    panel = SliderPanel()
    qtbot.addWidget(panel)
    panel.resize(520, 260)
    panel.show()
    qtbot.waitExposed(panel)
    panel.add_units("blocks.1", list(range(count)))
    qtbot.wait(20)
    return panel


def test_the_wheel_scrolls_the_list_and_changes_no_slider_it_passes(qtbot):
    panel = panel_with(qtbot, 20)
    panel.activateWindow()  # focus (and so the wheel) goes only to widgets of the active window
    qtbot.waitUntil(panel.isActiveWindow, timeout=5_000)
    bar = panel.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=5_000)
    row = panel.rows[2]
    wheel(row.slider, -2)
    assert row.scale() == 1.0 and bar.value() > 0  # the list scrolled; the unit under the pointer did not change
    qtbot.mouseClick(row.slider, Qt.MouseButton.LeftButton, pos=row.slider.rect().center())  # focus it
    before = row.slider.value()
    qtbot.waitUntil(row.slider.hasFocus, timeout=5_000)
    wheel(row.slider, 1)
    assert row.slider.value() != before  # a focused slider takes the wheel


def test_labels_name_the_layer_and_the_unit(qtbot):
    panel = panel_with(qtbot, 2)
    assert [r.name.text() for r in panel.rows] == ["blocks.1:0", "blocks.1:1"]


def test_an_off_slider_looks_off_and_dragging_it_switches_it_back_on(qtbot):
    panel = panel_with(qtbot, 1)
    row = panel.rows[0]
    grab_on = row.slider.grab().toImage()
    qtbot.mouseClick(row.off, Qt.MouseButton.LeftButton)
    assert panel.edits() == [UnitEdit("blocks.1", 0, "off", 0.0)] and row.value.text() == "off"
    assert row.slider.grab().toImage() != grab_on  # an Off slider is drawn differently from one at x1
    edits = []
    panel.edits_changed.connect(edits.append)
    start = QPoint(row.slider.width() // 2, row.slider.height() // 2)
    end = QPoint(row.slider.width() - 4, start.y())
    mouse(row.slider, QEvent.Type.MouseButtonPress, start)
    for i in range(1, 6):
        mouse(row.slider, QEvent.Type.MouseMove, start + (end - start) * (i / 5), Qt.MouseButton.LeftButton)
    mouse(row.slider, QEvent.Type.MouseButtonRelease, end, Qt.MouseButton.NoButton)
    assert not row.off.isChecked() and edits[-1][0].op == "scale" and edits[-1][0].value > 2.0


def test_twenty_sliders_arrive_as_one_change_and_the_x_column_stays_put(qtbot):
    panel = panel_with(qtbot, 1)
    x_before = panel.rows[0].value.mapTo(panel, QPoint(0, 0)).x()
    changes = []
    panel.edits_changed.connect(changes.append)
    panel.add_units("blocks.2", list(range(20)))
    qtbot.wait(20)
    assert len(changes) == 1 and len(changes[0]) == 21  # one render request for the batch, not twenty
    assert panel.scroll.verticalScrollBar().maximum() > 0  # the list now scrolls...
    assert panel.rows[0].value.mapTo(panel, QPoint(0, 0)).x() == x_before  # ...and the column did not move
    xs = {r.value.mapTo(panel, QPoint(0, 0)).x() for r in panel.rows}
    assert len(xs) == 1  # every row's x column lines up
