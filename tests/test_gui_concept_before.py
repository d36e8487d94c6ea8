"""'Before' is the model as loaded: no unit edit, no concept edit, in the test grid, Hold and Before | after."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt

from tests.gui_support import open_window
from tests.test_concept_panel import gen, panel, press  # noqa: F401  (fixtures and the button helper)
from tests.toy_text import ToyTextGenerator


def test_after_undo_the_grid_reads_as_loaded_on_both_sides(panel, gen, qtbot):  # noqa: F811
    panel.rows[0].set("replace", "red", "blue")
    panel.preserve.setText("blue, a room")
    panel.test_prompts.setPlainText("a red room")
    panel.test_seeds.setText("3")
    with torch.inference_mode():
        red = gen.render([gen.sample(3, "a red room")])[0]
    press(qtbot, panel, panel.apply_button)
    assert "red → blue" in panel.grid.itemAtPosition(0, 2).widget().text()  # the side says which edits it has
    press(qtbot, panel, panel.undo_button)
    (before,), (after,) = panel.result.before, panel.result.after
    assert torch.allclose(before, red) and torch.allclose(after, red)  # not "before: blue, after: red"
    assert "as loaded" in panel.grid.itemAtPosition(0, 1).widget().text()
    assert "no concept edits" in panel.grid.itemAtPosition(0, 2).widget().text()


@pytest.fixture
def text_window(toy_registry, monkeypatch, qtbot, tmp_path):
    monkeypatch.setattr(toy_registry, "FAMILY_MODULES", ["tests.toy_text", *toy_registry.FAMILY_MODULES])
    w = open_window(qtbot, tmp_path, model="toy-text")
    yield w
    w.close()


def test_hold_and_before_show_the_model_as_loaded_after_a_concept_edit(text_window, qtbot):
    window = text_window
    window.prompt.setText("a red room")
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        window.prompt.returnPressed.emit()
    with torch.inference_mode():
        loaded = ToyTextGenerator().render([window.state.sample])[0]
    concepts = window.concepts
    concepts.rows[0].set("replace", "red", "blue")
    concepts.preserve.setText("blue, a room")
    concepts.test_seeds.setText("0")
    with qtbot.waitSignal(window.frame_shown, timeout=30_000):
        qtbot.mouseClick(concepts.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.last_frame.stamp == window._posted, timeout=20_000)
    frame = window.last_frame
    assert frame.original is not None and torch.allclose(frame.original, loaded, atol=1e-5)
    assert not torch.allclose(frame.image, loaded, atol=1e-3)  # the edited side has the concept edit
    assert "red → blue" in window.sliders.sides.text() and "as loaded" in window.sliders.sides.text()
    window.tabs.setCurrentIndex(0)
    qtbot.mousePress(window.sliders.hold, Qt.MouseButton.LeftButton)
    assert window.canvas.view == "original"
    shown = window.canvas._shown_image()
    qtbot.mouseRelease(window.sliders.hold, Qt.MouseButton.LeftButton)
    from widgets.qt_images import rgb_image
    assert shown == rgb_image(loaded)  # Hold: original is the model as loaded, not the concept-edited one
