"""Habits users bring from image tools: export an image with its settings and drop it back, a history strip,
message banners that do not move the image."""
from __future__ import annotations

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QFileDialog

from studio.core.hooks import UnitEdit
from studio.image_meta import read_png_meta
from tests.gui_support import open_window


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def drop(window, path) -> None:
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(path))])
    window.dropEvent(QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier))


def settle(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.last_frame is not None and window.last_frame.stamp == window._posted,
                    timeout=20_000)


def test_ctrl_shift_s_exports_the_result_with_its_settings_and_dropping_it_restores_them(window, qtbot, tmp_path,
                                                                                         monkeypatch):
    target = tmp_path / "lamp.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "PNG images (*.png)"))
    window.seed.setValue(5)
    window.sliders.add_units("blocks.1", [3])
    window.sliders.set_edits([UnitEdit("blocks.1", 3, "off"), UnitEdit("blocks.2", 1, "scale", 2.0)])
    settle(window, qtbot)
    shown, made_with = window.last_frame.image, list(window.state.edits)
    assert len(made_with) == 2
    with qtbot.waitSignal(window.images.exported, timeout=20_000):
        qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    with Image.open(target) as png:
        assert png.size == (shown.shape[-1], shown.shape[-2]) == tuple(reversed(window.generator.resolution))
        assert "Seed: 5" in png.text["parameters"] and "blocks.1:3=off" in png.text["parameters"]
    meta = read_png_meta(target)
    assert meta.model.source == "toy" and meta.sample.seed == 5
    assert window.banner.isVisible() and not window.banner.error and "lamp.png" in window.banner.text()

    window.sliders.set_edits([])
    window.seed.setValue(9)
    settle(window, qtbot)
    drop(window, target)
    qtbot.waitUntil(lambda: window.seed.value() == 5 and len(window.state.edits) == 2, timeout=20_000)
    assert window.state.edits == made_with == [row.edit() for row in window.sliders.rows]


def test_dropping_a_png_without_settings_inverts_it_and_a_tiny_one_says_why_and_changes_nothing(window, qtbot,
                                                                                                  tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")  # a plain picture is the user's own image: inverted
    window.seed.setValue(3)
    with qtbot.waitSignal(window.jobs.finished, timeout=20_000):
        drop(window, tmp_path / "plain.png")
    assert window.banner.isVisible() and window.banner.error and "8x8 pixels" in window.banner.text()
    assert window.seed.value() == 3 and window.generator.source == "toy" and window.state.inversion is None


def test_the_history_strip_keeps_each_result_and_a_click_goes_back_to_it(window, qtbot):
    qtbot.waitUntil(lambda: window.history.count() == 1, timeout=10_000)  # the first image
    window.seed.setValue(4)
    qtbot.waitUntil(lambda: window.history.count() == 2, timeout=10_000)
    window.sliders.set_edits([UnitEdit("blocks.1", 2, "off")])
    qtbot.waitUntil(lambda: window.history.count() == 3, timeout=10_000)
    assert "blocks.1 unit 2: off" in window.history.item(2).toolTip()
    qtbot.wait(900)
    assert window.history.count() == 3  # the same result again is not a new entry
    rect = window.history.visualItemRect(window.history.item(1))
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        qtbot.mouseClick(window.history.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.seed.value() == 4 and window.state.edits == [] and window.sliders.rows == []


def test_an_info_message_goes_by_itself_an_error_stays_and_neither_moves_the_canvas(window, qtbot):
    before = window.canvas.geometry()
    window.banner.timer.setInterval(300)
    window.show_info("Exported x.png.")
    qtbot.wait(100)  # let any layout change land
    assert window.banner.isVisible() and window.canvas.geometry() == before
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=3000)
    window.show_error("The mask is empty: paint over something first.")
    qtbot.wait(600)
    assert window.banner.isVisible() and window.canvas.geometry() == before
    assert window.banner.geometry().top() < window.canvas.height() // 4  # over the canvas' top edge
    qtbot.mouseClick(window.banner, Qt.MouseButton.LeftButton)
    assert not window.banner.isVisible()


def test_seed_minus_one_and_the_dice_pick_a_random_seed_and_show_it(window, qtbot):
    box = window.seed
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        box.setValue(7)
    box.lineEdit().selectAll()
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        qtbot.keyClicks(box.lineEdit(), "-1")
        qtbot.keyClick(box.lineEdit(), Qt.Key.Key_Return)
    chosen = box.value()
    assert chosen not in (1, 7)  # not "-1" refused (the digit kept, or the old seed): a random one, 1 in 2**31
    assert chosen >= 0 and box.text() == str(chosen) and window.state.sample.seed == chosen
    seen = {chosen}
    for _ in range(3):
        qtbot.mouseClick(window.dice, Qt.MouseButton.LeftButton)
        seen.add(box.value())
        assert box.value() >= 0 and window.state.sample.seed == box.value()
    assert len(seen) > 1


def test_at_1280x800_every_tab_fits_without_horizontal_scrolling(window, qtbot):
    from PySide6.QtWidgets import QAbstractScrollArea, QToolBar, QToolButton

    window.resize(1280, 800)
    qtbot.wait(50)
    for toolbar in window.findChildren(QToolBar):
        hidden = [b for b in toolbar.findChildren(QToolButton, "qt_toolbar_ext_button") if b.isVisible()]
        assert not hidden, f"the {toolbar.windowTitle()} toolbar hides tools behind »"
    for index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(index)
        qtbot.wait(50)
        scrolled = [type(area).__name__ for area in window.findChildren(QAbstractScrollArea)
                    if area.isVisible() and area is not window.history and area.horizontalScrollBar().isVisible()]
        assert not scrolled, f"{window.tabs.tabText(index)}: {scrolled} scroll sideways"


def test_the_window_layout_comes_back_next_run(toy_registry, qtbot, tmp_path):
    first = open_window(qtbot, tmp_path)
    first.resize(760, 720)  # the offscreen screen is 800 px wide: stay inside it
    first.splitter.setSizes([300, 470])
    qtbot.wait(20)
    sizes = first.splitter.sizes()
    first.close()
    second = open_window(qtbot, tmp_path, resize=False)  # the same settings file, in tmp_path
    try:
        assert second.width() == 760
        assert second.splitter.sizes() == sizes
    finally:
        second.close()


def test_expert_choices_explain_themselves_and_the_hint_follows_the_mask(window, qtbot):
    from tests.gui_support import paint_square
    from widgets.ranking_panel import HINT_MASK, HINT_NO_MASK

    panel = window.ranking
    window.tabs.setCurrentIndex(window.tabs.indexOf(panel.parentWidget()))  # the Units tab
    assert panel.summary.text() == HINT_NO_MASK
    paint_square(window, 4, 4, 12, 12)
    assert panel.summary.text() == HINT_MASK
    assert panel.explained.isVisible() and "Fast:" in panel.explained.text() and "outputs 0" in panel.explained.text()
    panel.method.setFocus()
    qtbot.keyClick(panel.method, Qt.Key.Key_Down)  # the keyboard picks "exact"
    assert panel.method.currentData() == "exact" and "Exact:" in panel.explained.text()


def test_dropping_a_png_made_on_another_model_opens_that_model_first(window, qtbot, tmp_path):
    other = tmp_path / "other.toy"
    other.write_bytes(b"TOY17")  # the toy family's file format: a magic and a seed
    with qtbot.waitSignal(window.model_loaded, timeout=20_000):
        window.open_model(str(other))
    window.seed.setValue(6)
    window.sliders.set_edits([UnitEdit("blocks.0", 1, "off")])
    settle(window, qtbot)
    made_with = list(window.state.edits)
    with qtbot.waitSignal(window.images.exported, timeout=20_000):
        window.images.export(tmp_path / "other.png")
    with qtbot.waitSignal(window.model_loaded, timeout=20_000):
        window.open_model("toy")
    assert window.state.edits == []  # another model: the sliders went
    with qtbot.waitSignal(window.model_loaded, timeout=20_000):
        drop(window, tmp_path / "other.png")
    qtbot.waitUntil(lambda: window.state.edits == made_with, timeout=20_000)
    assert window.generator.source == str(other) and window.seed.value() == 6
