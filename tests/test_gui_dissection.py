"""The Dissection tab on the toy model: dissect on the worker, pick a unit by mouse, its gallery, a slider."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from tests.gui_support import open_window


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def test_dissect_the_layer_then_browse_a_units_gallery_and_add_its_slider(window, qtbot):
    browser = window.dissection
    window.tabs.setCurrentWidget(browser)
    assert browser.layer == window.ranking.layers.current_layer()
    browser.samples.setValue(8)
    qtbot.mouseClick(browser.dissect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: browser.result is not None, timeout=60_000)
    units = window.generator.layer(browser.layer).units
    assert browser.table.rowCount() == units and browser.progress.value() == 8
    rect = browser.table.visualItemRect(browser.table.item(2, 0))
    qtbot.mouseClick(browser.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    unit = browser.selected_unit()
    assert unit == int(browser.table.item(2, 0).text())
    qtbot.waitUntil(lambda: browser.gallery.pixmap() is not None and not browser.gallery.pixmap().isNull(),
                    timeout=30_000)
    qtbot.mouseClick(browser.slider_button, Qt.MouseButton.LeftButton)
    assert (browser.layer, unit) in [(e.layer, e.unit) for e in window.sliders.edits()]


def test_a_dissection_can_be_cancelled(window, qtbot):
    browser = window.dissection
    browser.samples.setValue(20_000)
    qtbot.mouseClick(browser.dissect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: browser.progress.value() > 0, timeout=60_000)
    qtbot.mouseClick(browser.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: browser.dissect_button.isEnabled(), timeout=60_000)
    assert browser.result is None


def _dissect(window, qtbot, samples: int = 8):
    browser = window.dissection
    window.tabs.setCurrentWidget(browser)
    browser.samples.setValue(samples)
    qtbot.mouseClick(browser.dissect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: browser.result is not None, timeout=60_000)
    return browser


def _click_row(qtbot, table, row: int, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    table.scrollToItem(table.item(row, 0))
    rect = table.visualItemRect(table.item(row, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())


def test_rows_show_gallery_thumbnails_rendered_on_demand_once(window, qtbot, monkeypatch):
    import widgets.units_browser as ub

    asked = []
    real = ub.units_tiles
    monkeypatch.setattr(ub, "units_tiles", lambda gen, result, layer, units, **kw: asked.extend(units) or
                        real(gen, result, layer, units, **kw))
    browser = _dissect(window, qtbot)
    table = browser.table
    in_view = browser.visible_units()
    assert 0 < len(in_view) < table.rowCount()  # only the rows in view, not the whole layer

    def icon_of(row):
        return table.item(row, ub.GALLERY).icon()

    qtbot.waitUntil(lambda: not icon_of(0).isNull(), timeout=30_000)
    assert not table.horizontalScrollBar().isVisible()  # thumbnails and all columns fit the tab
    assert sorted(asked) == sorted(in_view)
    strip = icon_of(0).pixmap(table.iconSize()).toImage()
    assert strip.width() > 2 * strip.height()  # a strip of crops side by side
    colours = {strip.pixel(x, strip.height() // 2) for x in range(0, strip.width(), 3)}
    assert len(colours) > 5  # pictures, not a blank strip
    last = table.rowCount() - 1
    qtbot.mouseClick(table.verticalScrollBar(), Qt.MouseButton.LeftButton,
                     pos=table.verticalScrollBar().rect().bottomLeft() + QPoint(4, -4))  # page down with the mouse
    qtbot.waitUntil(lambda: table.verticalScrollBar().value() > 0, timeout=5_000)
    qtbot.waitUntil(lambda: not icon_of(browser.table.rowAt(0)).isNull(), timeout=30_000)
    table.scrollToItem(table.item(last, 0))
    qtbot.waitUntil(lambda: not icon_of(last).isNull(), timeout=30_000)
    table.scrollToTop()
    qtbot.wait(200)
    assert len(asked) == len(set(asked))  # each strip rendered once: scrolling back reuses the cache
    assert not icon_of(0).isNull()


def test_selected_units_become_a_knob_in_the_knobs_tab(window, qtbot):
    browser = _dissect(window, qtbot)
    table = browser.table
    assert not browser.knob_button.isEnabled()
    _click_row(qtbot, table, 1)
    _click_row(qtbot, table, 4, Qt.KeyboardModifier.ControlModifier)
    wanted = sorted(int(table.item(r, 0).text()) for r in (1, 4))
    assert browser.selected_units() == wanted
    qtbot.mouseClick(browser.knob_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.knobs.chosen() is not None and browser.layer in window.knobs.chosen().units,
                    timeout=30_000)
    knob = window.knobs.chosen()
    assert knob.units[browser.layer].tolist() == wanted and knob.layers == [browser.layer]
    knob.check(window.generator)
    present = knob.present[browser.layer]
    assert present.shape[0] == 2 and float(present.abs().sum()) > 0  # how the units fire, learned from galleries
    assert float(knob.wanted[browser.layer].abs().sum()) == 0  # strength 1: switched off
