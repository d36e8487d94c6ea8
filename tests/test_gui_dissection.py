"""The Dissection tab on the toy model: dissect on the worker, pick a unit by mouse, its gallery, a slider."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

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
