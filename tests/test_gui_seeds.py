"""The Seeds tab on the toy model: a click only moves the mark (no redraw as bare number buttons), the current seed is
marked, thumbnails show the active edits, and a new seed says what it kept."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import QPointF, Qt

from studio.core.hooks import UnitEdit
from tests.gui_support import drag, open_window, paint_square
from tests.toy import ToyGenerator
from widgets.qt_images import rgb_image


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def show_grid(window, qtbot):
    window.tabs.setCurrentWidget(window.seeds)
    qtbot.waitUntil(lambda: len(window.seeds.images) == len(window.seeds.buttons) and window.seeds._pending is None,
                    timeout=30_000)


def test_a_click_keeps_every_thumbnail_and_marks_the_new_seed(window, qtbot):
    show_grid(window, qtbot)
    seeds = window.seeds
    assert "background" in seeds.buttons[0].styleSheet()  # seed 0, the current one, is marked
    assert "background" not in seeds.buttons[4].styleSheet()
    size = seeds.buttons[4].size()
    submitted = []
    window.jobs.worker.job_started.connect(submitted.append)
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        qtbot.mouseClick(seeds.buttons[4], Qt.MouseButton.LeftButton)
    assert window.seed.value() == 4
    assert all(not b.icon().isNull() for b in seeds.buttons)  # never bare number buttons
    assert seeds.buttons[4].size() == size and seeds._pending is None  # same page, same edits: nothing re-renders
    qtbot.wait(50)
    assert submitted == []
    assert "background" in seeds.buttons[4].styleSheet() and "background" not in seeds.buttons[0].styleSheet()


def test_thumbnails_show_the_active_edits_and_a_new_seed_says_what_it_kept(window, qtbot):
    show_grid(window, qtbot)
    plain = {seed: image.clone() for seed, image in window.seeds.images.items()}
    window.sliders.add_units("blocks.1", [3])
    window.sliders.rows[0].off.click()
    qtbot.waitUntil(lambda: window.seeds._pending is None and window.seeds._key[2] == tuple(window.state.edits),
                    timeout=30_000)

    gen = ToyGenerator()
    with torch.inference_mode(), gen.editor() as editor:
        editor.set([UnitEdit("blocks.1", 3, "off", 0.0)])
        expected = gen.render([window.state.sample.with_seed(5)])[0]
    assert torch.allclose(window.seeds.images[5], expected, atol=1e-5)
    assert not torch.allclose(window.seeds.images[5], plain[5], atol=1e-4)
    assert "1 unit edit" in window.seeds.carry.text()

    paint_square(window, 2, 2, 10, 10)
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        qtbot.mouseClick(window.seeds.buttons[2], Qt.MouseButton.LeftButton)
    message = window.statusBar().currentMessage()
    assert message.startswith("Seed 2: kept 1 unit edit and the mask"), message


def test_an_example_opens_as_the_model_makes_it_even_while_edits_show_in_the_grid(window, qtbot):
    show_grid(window, qtbot)
    window.sliders.add_units("blocks.1", [3])
    window.sliders.rows[0].off.click()
    qtbot.waitUntil(lambda: window.seeds._pending is None and window.seeds.shows_edits(), timeout=30_000)
    window.seeds.gather.setChecked(True)
    qtbot.mouseClick(window.seeds.buttons[5], Qt.MouseButton.LeftButton)
    examples = window.examples
    qtbot.waitUntil(lambda: examples.shown_seed == 5, timeout=20_000)
    with torch.inference_mode():
        plain = ToyGenerator().render([window.state.sample.with_seed(5)])[0]
    assert examples.painter._image == rgb_image(plain)  # not the edited thumbnail
    assert examples.painter._image != rgb_image(window.seeds.images[5])
    assert window.seed.value() == 0  # gathering does not switch the seed


def test_marking_without_a_region_or_learning_one_sided_says_what_is_missing(window, qtbot):
    show_grid(window, qtbot)
    examples, messages = window.examples, []
    examples.message.connect(messages.append)
    window.seeds.gather.setChecked(True)
    qtbot.mouseClick(window.seeds.buttons[3], Qt.MouseButton.LeftButton)
    qtbot.mouseClick(examples.present_button, Qt.MouseButton.LeftButton)
    assert "Paint over the thing on seed 3 first" in messages[-1] and not window.state.examples.present
    painter = examples.painter
    drag(painter, [painter.to_widget(QPointF(x, 10)).toPoint() for x in (4, 10, 16, 22)])
    qtbot.mouseClick(examples.present_button, Qt.MouseButton.LeftButton)
    assert list(window.state.examples.present) == [3] and window.seeds.buttons[3].text() == "3 present"
    qtbot.mouseClick(examples.learn_button, Qt.MouseButton.LeftButton)
    assert "0 wanted" in messages[-1] and examples.job is None  # nothing started
