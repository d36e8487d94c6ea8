"""The Seeds tab on the toy model: a click only moves the mark (no redraw as bare number buttons), the current seed is
marked, thumbnails show the active edits, and a new seed says what it kept."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt

from studio.core.hooks import UnitEdit
from tests.gui_support import open_window, paint_square


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
    from tests.toy import ToyGenerator

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
