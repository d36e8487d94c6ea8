"""The window's other views on the toy model: seed grid, activation map, model picker, drag and drop, concepts."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from tests.gui_support import open_window


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def test_the_seed_grid_renders_seeds_and_a_click_picks_one(window, qtbot):
    window.tabs.setCurrentWidget(window.seeds)
    qtbot.waitUntil(lambda: not window.seeds.buttons[-1].icon().isNull(), timeout=30_000)
    assert [b.text() for b in window.seeds.buttons[:3]] == ["0", "1", "2"]
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        qtbot.mouseClick(window.seeds.buttons[4], Qt.MouseButton.LeftButton)
    assert window.seed.value() == 4 and window.state.sample.seed == 4


def test_the_activation_map_overlays_the_selected_unit(window, qtbot):
    window.sliders.add_units("blocks.0", [5])  # not the layer picker's (blocks.1)
    assert window.canvas.heatmap is None
    window.activation_action.trigger()  # View > Activation map: the slider's unit, on its own layer
    qtbot.waitUntil(lambda: window.canvas.heatmap is not None, timeout=20_000)
    assert window._focus_unit == ("blocks.0", 5) and window.canvas.heatmap.width() == 32
    window.activation_action.setChecked(False)
    assert window.canvas.heatmap is None
    window.sliders.add_units("blocks.2", [1])
    qtbot.mouseClick(window.sliders.rows[1].name, Qt.MouseButton.LeftButton)  # "show where it fires"
    qtbot.waitUntil(lambda: window.canvas.heatmap is not None, timeout=20_000)
    assert window.activation_action.isChecked() and window._focus_unit == ("blocks.2", 1)


def test_the_picker_lists_models_and_marks_the_missing_ones(window):
    picker = window.picker
    names = [picker.itemData(i) for i in range(picker.count())]
    assert "toy" in names and picker.currentData() == "toy"
    missing = names.index("toy-missing")
    assert "not installed" in picker.itemText(missing)


def test_picking_a_model_that_is_not_installed_says_how_to_get_it(window, qtbot):
    picker = window.picker
    missing = picker.findData("toy-missing")
    picker.setFocus()
    picker.showPopup()
    view = picker.view()
    qtbot.waitUntil(view.isVisible, timeout=3000)
    rect = view.visualRect(picker.model().index(missing, 0))
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(window.banner.isVisible, timeout=3000)
    assert "toy-missing" in window.banner.text() and "pip install toy-extra" in window.banner.text()
    assert picker.currentData() == "toy" and window.generator.source == "toy"


def test_dropping_a_model_file_opens_it_and_remembers_it(window, qtbot, tmp_path):
    path = tmp_path / "other.toy"
    path.write_bytes(b"TOY17")  # the toy family's file format: a magic and a seed
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.model_loaded, timeout=20_000):
        window.dropEvent(event)
    assert window.generator.source == str(path)
    assert str(path.resolve()) in window.picker.recent()


def test_the_concept_panel_is_a_tab_that_follows_the_model(window):
    if window.concepts is None:
        pytest.fail("widgets/concept_panel.py exists, so the window must show it")
    assert window.tabs.indexOf(window.concepts) >= 0
    assert window.concepts.generator is window.generator
