"""The denoising-step window of knob and slider rows, driven with real keys (tiny random SD; a GAN hides it)."""
from __future__ import annotations

import torch
from PySide6.QtCore import Qt

from studio.knobs import Example, Knob, learn_knob, model_layout
from tests.gui_support import open_window, paint_square

LAYER = "up_blocks.1.resnets.1"


def square(size: int) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    return m


def wait_frame(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.worker.mailbox.stamp == window._shown and not window.jobs.busy, timeout=60_000)


def type_into(qtbot, box, value: int) -> None:
    box.setFocus()
    qtbot.keyClick(box, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(box, str(value))
    qtbot.keyClick(box, Qt.Key.Key_Return)


def test_a_knob_row_on_diffusion_takes_a_step_window_and_undo_restores_every_step(qtbot, tmp_path, tiny_sd_files):
    window = open_window(qtbot, tmp_path, model=str(tiny_sd_files.folder))
    try:
        gen = window.generator
        size = gen.resolution[0]
        steps = gen.denoising_steps(window.state.sample)
        assert steps and steps > 4
        wait_frame(window, qtbot)
        base = window.last_frame.image.clone()
        present = [Example(gen.sample(s, "a red house", steps=4), square(size)) for s in (1, 2)]  # learnt quickly
        wanted = [Example(gen.sample(s, "a blue tree", steps=4), square(size)) for s in (5, 6)]
        knob = learn_knob(gen, "tiny", present=present, wanted=wanted, layers=[LAYER], units=8, min_contrast=0.0)
        window.knobs.add_knob(knob)
        paint_square(window, size // 4, size // 4, 3 * size // 4, 3 * size // 4, step=3)
        qtbot.mouseClick(window.knobs.apply_button, Qt.MouseButton.LeftButton)
        row = window.knobs.rows[0]
        qtbot.waitUntil(row.isVisible, timeout=5_000)  # a row added to the shown panel shows on the next loop
        assert row.steps.isVisible() and row.steps.stop.value() == steps and row.steps.start.value() == 0
        assert window.state.knobs[0].steps is None
        row.slider.setValue(300)  # strength 3: a change the tiny random model shows
        wait_frame(window, qtbot)
        every = window.last_frame.image.clone()
        assert not torch.allclose(every, base, atol=1e-4)

        type_into(qtbot, row.steps.start, steps // 2)
        qtbot.waitUntil(lambda: window.state.knobs[0].steps == (steps // 2, steps), timeout=5_000)
        wait_frame(window, qtbot)
        late = window.last_frame.image.clone()
        assert not torch.allclose(late, every, atol=1e-4) and not torch.allclose(late, base, atol=1e-4)
        assert window.state.knobs[0].strength == 3.0  # the window changed, nothing else

        window.canvas.setFocus()
        qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        qtbot.waitUntil(lambda: window.state.knobs[0].steps is None, timeout=5_000)
        assert window.knobs.rows[0].steps.start.value() == 0
        wait_frame(window, qtbot)
        assert torch.allclose(window.last_frame.image, every, atol=1e-5)
    finally:
        window.close()


def test_a_model_without_steps_shows_no_window(qtbot, tmp_path, toy_registry):
    window = open_window(qtbot, tmp_path)  # the toy GAN
    try:
        gen = window.generator
        assert gen.denoising_steps(window.state.sample) is None
        one = torch.zeros(1, 1, 1)
        window.knobs.add_knob(Knob("by hand", model_layout(gen), {"blocks.1": torch.tensor([0])}, {"blocks.1": one},
                                   {"blocks.1": one}))
        paint_square(window, 2, 2, 10, 10)
        qtbot.mouseClick(window.knobs.apply_button, Qt.MouseButton.LeftButton)
        row = window.knobs.rows[0]
        qtbot.waitUntil(row.isVisible, timeout=5_000)
        assert not row.steps.isVisible()
        assert window.state.knobs[0].steps is None
    finally:
        window.close()


def test_a_slider_row_on_diffusion_takes_the_same_window(qtbot, tmp_path, tiny_sd_files):
    from studio.core.hooks import UnitEdit
    from tests.test_gui_ranking import open_units_tab

    window = open_window(qtbot, tmp_path, model=str(tiny_sd_files.folder))
    try:
        open_units_tab(window, qtbot)
        steps = window.generator.denoising_steps(window.state.sample)
        wait_frame(window, qtbot)
        base = window.last_frame.image.clone()
        units = window.generator.layer(LAYER).units
        window.sliders.apply_to_units(LAYER, list(range(units)), "off")  # "Switch selected off" on every unit
        row = window.sliders.rows[0]
        qtbot.waitUntil(row.isVisible, timeout=5_000)
        assert row.steps.isVisible() and row.steps.stop.value() == steps
        wait_frame(window, qtbot)
        every = window.last_frame.image.clone()
        assert not torch.allclose(every, base, atol=1e-4)
        type_into(qtbot, row.steps.stop, 2)  # only the first two steps
        qtbot.waitUntil(lambda: window.state.edits[0].steps == (0, 2), timeout=5_000)
        assert window.state.edits[0] == UnitEdit(LAYER, 0, "off", 0.0, steps=(0, 2))
        assert all(e.steps is None for e in window.state.edits[1:])  # one row's window, not the others'
        wait_frame(window, qtbot)
        assert not torch.allclose(window.last_frame.image, every, atol=1e-6)
    finally:
        window.close()
