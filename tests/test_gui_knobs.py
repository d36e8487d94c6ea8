"""The lamp story in the app, as a new user drives it: gather lit and unlit lamps in the Seeds grid with a quick mask
each, learn a knob, paint the lamp to switch off, drag the knob's strength: the world's own detectors judge the frames.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtWidgets import QSlider, QStyle, QStyleOptionSlider

from studio.core.rooms import world
from studio.knobs import Example, learn_knob
from tests.gui_support import drag, open_window, paint_square
from widgets.demo import Demo

PRESENT, WANTED = (0, 3, 5, 6), (4, 7, 9, 10)  # seeds whose lamp 0 the Rooms world renders lit / unlit
TARGET, OTHER_SEED = 1, 40  # both lamps lit; on seed 40 a knob learned with learn_knob's bare defaults leaves
# the lamp lit


def scene_of(window, seed: int) -> world.Scene:
    return world.seed_scene(seed, window.state.sample.prompt)


def lamp_box(window, seed: int, lamp: int, pad: int = 3) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box a hand paints over lamp ``lamp`` of ``seed`` and its light (shade, pole, glow)."""
    masks = world.truth(scene_of(window, seed)).masks
    ys, xs = np.nonzero(masks[f"lamp{lamp}"] | masks[f"glow{lamp}"])
    return max(xs.min() - pad, 0), max(ys.min() - pad, 0), min(xs.max() + pad, 127), min(ys.max() + pad, 127)


def lit(window, seed: int) -> list[bool]:
    image = window.last_frame.image.permute(1, 2, 0).numpy()
    scene = scene_of(window, seed)
    return [world.detect_lit(image, scene, i) for i in range(len(scene.lamps))]


def model_renders(window, seed: int, lamp: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) twice: the model's render of ``seed`` and its render with the lamp's lit flag flipped in the latent
    (the best any edit of this model can do), on a copy of the model so the window's worker is left alone."""
    from models.registry import open_model

    own = open_model("rooms", device="cpu", precision="fp32")
    off = world.encode_latent(world.with_lamp(scene_of(window, seed), lamp, lit=False))
    prompt = window.state.sample.prompt
    with torch.inference_mode():
        images = own.render([own.sample(seed, prompt), own.sample(seed, prompt, latent=[float(v) for v in off])])
    return images[0].permute(1, 2, 0).numpy(), images[1].permute(1, 2, 0).numpy()


def assert_unlit_not_erased(window, seed: int, lamp: int) -> None:
    """The lamp still stands (every detector but its lit state reads as before: an erased lamp changes the lamp
    count) and its light on the wall is at most two thirds as far from the model's own unlit render as it was."""
    scene = scene_of(window, seed)
    image = window.last_frame.image.permute(1, 2, 0).numpy()
    model, unlit = model_renders(window, seed, lamp)
    assert world.detect_fields(image, scene) == world.detect_fields(model, scene)
    glow = world.truth(scene).masks[f"glow{lamp}"] & ~world.truth(scene).masks[f"lamp{lamp}"]
    assert np.abs(image[glow] - unlit[glow]).mean() < 2 / 3 * np.abs(model[glow] - unlit[glow]).mean()


def paint_box(canvas, box: tuple[int, int, int, int], step: int = 6) -> None:
    """Strokes row by row over ``box`` on ``canvas`` (image pixels), as a quick hand would."""
    x0, y0, x1, y1 = box
    canvas.brush_size = step + 4
    for y in range(y0, y1 + 1, step):
        drag(canvas, [canvas.to_widget(QPointF(x, y)).toPoint() for x in range(x0, x1 + 1, step)])


def drag_slider(slider: QSlider, value: float, steps: int = 100) -> None:
    """Grab the handle and drag it to ``value`` with raw mouse events."""
    option = QStyleOptionSlider()
    slider.initStyleOption(option)
    handle = slider.style().subControlRect(QStyle.ComplexControl.CC_Slider, option,
                                           QStyle.SubControl.SC_SliderHandle, slider)
    span = slider.width() - handle.width()
    x = handle.width() // 2 + QStyle.sliderPositionFromValue(slider.minimum(), slider.maximum(),
                                                             round(value * steps), span)
    start = handle.center()
    drag(slider, [start, QPoint((start.x() + x) // 2, start.y()), QPoint(x, start.y())])


def wait_frame(window, qtbot, predicate=lambda: True) -> None:
    qtbot.waitUntil(lambda: window.worker.mailbox.stamp == window._shown and predicate(), timeout=30_000)


@pytest.fixture
def window(qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, model="rooms")
    yield w
    w.close()


def test_a_newcomer_learns_a_knob_from_the_seed_grid_and_switches_one_lamp_off(window, qtbot):
    assert window.tabs.widget(0) is window.knobs  # "switch this off" is the first thing on show
    window.seed.setValue(TARGET)
    wait_frame(window, qtbot, lambda: window.state.sample.seed == TARGET)
    assert lit(window, TARGET) == [True, True]
    before = window.last_frame.image.clone()
    x0, y0, x1, y1 = lamp_box(window, TARGET, 0)
    paint_square(window, x0, y0, x1, y1, step=5)  # the lamp to switch off (also a "present" example by default)
    assert window.state.has_mask()

    qtbot.mouseClick(window.knobs.learn_button, Qt.MouseButton.LeftButton)
    assert window.tabs.currentWidget() is window.seeds and window.seeds.gather.isChecked()
    qtbot.waitUntil(lambda: len(window.seeds.images) == len(window.seeds.buttons), timeout=30_000)
    assert window.seeds.first == 0
    examples = window.examples
    for side, seeds in (("present", PRESENT), ("wanted", WANTED)):
        for seed in seeds:
            qtbot.mouseClick(window.seeds.buttons[seed], Qt.MouseButton.LeftButton)
            assert examples.seed == seed and window.state.sample.seed == TARGET  # gathering does not switch seeds
            paint_box(examples.painter, lamp_box(window, seed, 0))
            button = examples.present_button if side == "present" else examples.wanted_button
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert sorted(window.state.examples.present) == list(PRESENT)
    assert sorted(window.state.examples.wanted) == list(WANTED)
    assert window.seeds.buttons[4].text() == "4 wanted" and window.seeds.buttons[0].text() == "0 present"
    present, wanted = examples.examples()
    assert len(present) == 5 and present[0].sample.seed == TARGET  # the current image came first
    examples.name.setText("my lamp off")
    with qtbot.waitSignal(examples.knob_learned, timeout=60_000) as learned:
        qtbot.mouseClick(examples.learn_button, Qt.MouseButton.LeftButton)
    knob = learned.args[0]
    assert window.knobs.chosen() is knob and knob.name == "my lamp off"
    qtbot.waitUntil(lambda: examples.preview[-1].pixmap() is not None and not examples.preview[-1].pixmap().isNull(),
                    timeout=30_000)  # the knob across the page's seeds, each on the region it proposes there
    assert "nothing found" not in examples.preview[0].toolTip()  # seed 0 has a lit lamp

    qtbot.mouseClick(window.seeds.buttons[2], Qt.MouseButton.LeftButton)  # a new seed: the knob proposes its region
    assert examples.painter.mask() is None
    qtbot.mouseClick(examples.propose_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: examples.painter.mask() is not None, timeout=20_000)
    truth = world.truth(scene_of(window, 2)).masks
    proposed = examples.painter.mask() > 0
    assert max(proposed[truth["lamp0"]].mean(), proposed[truth["lamp1"]].mean()) >= 0.4

    window.tabs.setCurrentWidget(window.knobs)
    qtbot.mouseClick(window.knobs.apply_button, Qt.MouseButton.LeftButton)
    row = window.knobs.rows[0]
    drag_slider(row.slider, 0.0)
    wait_frame(window, qtbot, lambda: window.state.knobs[0].strength == 0.0)
    assert lit(window, TARGET) == [True, True]  # strength 0: as it is
    assert torch.allclose(window.last_frame.image, before, atol=1e-4)
    drag_slider(row.slider, 1.0)
    wait_frame(window, qtbot, lambda: window.state.knobs[0].strength == 1.0)
    assert row.value.text() == "1.00"
    assert lit(window, TARGET) == [False, True]  # the painted lamp is off, the other one still lit
    assert_unlit_not_erased(window, TARGET, 0)
    shade = world._shade_regions(world._geometry(scene_of(window, TARGET)), 128) == 0
    assert window.last_frame.image[:, torch.from_numpy(shade)].mean() < before[:, torch.from_numpy(shade)].mean() - 0.05
    outside = torch.from_numpy(window.canvas.mask() == 0)
    assert (window.last_frame.image - before).abs()[:, outside].mean() < 0.01  # the rest of the room kept

    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the drag to 1
    wait_frame(window, qtbot, lambda: window.state.knobs and window.state.knobs[0].strength == 0.0)
    assert lit(window, TARGET) == [True, True]
    window.tools.redo.trigger()
    wait_frame(window, qtbot, lambda: window.state.knobs[0].strength == 1.0)
    assert row.slider.value() == 100 and lit(window, TARGET) == [False, True]

    # the same knob on another seed: the mask moves to that seed's lamp
    window.seed.setValue(OTHER_SEED)
    wait_frame(window, qtbot, lambda: window.state.sample.seed == OTHER_SEED)
    assert "kept 1 knob and the mask" in window.statusBar().currentMessage()
    window.tools.clear.trigger()
    x0, y0, x1, y1 = lamp_box(window, OTHER_SEED, 0)
    paint_square(window, x0, y0, x1, y1, step=5)
    qtbot.mouseClick(row.remask, Qt.MouseButton.LeftButton)
    wait_frame(window, qtbot, lambda: window.state.knobs[0].mask.sum() == float(window.state.mask.sum()))
    assert lit(window, OTHER_SEED) == [False, True]
    assert_unlit_not_erased(window, OTHER_SEED, 0)


def learned_knob(window):
    """A knob learned from the same 4 + 4 examples through the engine (the flow above learns it through the GUI)."""
    gen, sample = window.generator, window.state.sample

    def example(seed: int) -> Example:
        x0, y0, x1, y1 = lamp_box(window, seed, 0)
        mask = torch.zeros(128, 128)
        mask[y0:y1 + 1, x0:x1 + 1] = 1
        return Example(sample.with_seed(seed), mask)

    return learn_knob(gen, "lamp off", present=[example(s) for s in PRESENT], wanted=[example(s) for s in WANTED])


def test_two_knobs_each_on_its_own_region_remove_undo_and_a_session_keeps_them(window, qtbot, tmp_path):
    knob = learned_knob(window)
    window.knobs.add_knob(knob)
    seed = 0  # lamp 0 lit, lamp 1 unlit
    window.seed.setValue(seed)
    wait_frame(window, qtbot, lambda: window.state.sample.seed == seed)
    assert lit(window, seed) == [True, False]
    x0, y0, x1, y1 = lamp_box(window, seed, 0)
    paint_square(window, x0, y0, x1, y1, step=5)
    qtbot.mouseClick(window.knobs.apply_button, Qt.MouseButton.LeftButton)
    window.tools.clear.trigger()
    x0, y0, x1, y1 = lamp_box(window, seed, 1)
    paint_square(window, x0, y0, x1, y1, step=5)
    qtbot.mouseClick(window.knobs.apply_button, Qt.MouseButton.LeftButton)
    second = window.knobs.rows[1]
    drag_slider(second.slider, -1.0)  # the other way: light the unlit lamp
    wait_frame(window, qtbot, lambda: len(window.state.knobs) == 2 and window.state.knobs[1].strength == -1.0)
    masks = [k.mask for k in window.state.knobs]
    assert float((masks[0] * masks[1]).sum()) == 0  # each knob on its own region
    assert lit(window, seed) == [False, True]  # both lamps swapped

    qtbot.mouseClick(window.knobs.rows[0].remove, Qt.MouseButton.LeftButton)
    wait_frame(window, qtbot, lambda: len(window.state.knobs) == 1)
    assert lit(window, seed) == [True, True]  # lamp 0 back on, lamp 1 still lit by the reversed knob
    window.tools.undo.trigger()
    wait_frame(window, qtbot, lambda: len(window.state.knobs) == 2)
    assert lit(window, seed) == [False, True]

    path = tmp_path / "knobs.nstudio"
    with qtbot.waitSignal(window.jobs.finished, timeout=20_000):
        window.sessions.save(path)
    window.knobs.remove_all.click()
    wait_frame(window, qtbot, lambda: not window.state.knobs)
    assert lit(window, seed) == [True, False]
    window.sessions.open(path)
    qtbot.waitUntil(lambda: len(window.knobs.rows) == 2, timeout=20_000)
    wait_frame(window, qtbot, lambda: len(window.state.knobs) == 2)
    assert [r.slider.value() for r in window.knobs.rows] == [100, -100]
    assert torch.equal(window.state.knobs[1].mask, masks[1])
    assert lit(window, seed) == [False, True]


def test_the_screenshot_demo_switches_the_lamp_off_with_the_shipped_knob(window, qtbot):
    window.knobs.set_knobs([learned_knob(window)], shipped=True)
    demo = Demo(window)
    with qtbot.waitSignal(demo.finished, timeout=30_000):
        window.generate()
    assert [e.knob.name for e in window.state.knobs] == ["lamp off"] and window.state.edits == []
    assert window.tabs.currentWidget() is window.knobs and window.sliders.compare.isChecked()
    assert lit(window, window.state.sample.seed)[0] is False  # seed 0's lit lamp 0, the brightest spot, is off
