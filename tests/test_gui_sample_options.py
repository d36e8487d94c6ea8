"""The sample-options controls in the window: built from what the model declares, driven by keys, kept in sessions.

The conditional checkpoint is a StyleGAN2-ADA pickle written as stylegan2-ada-pytorch's training_loop.py saves
snapshots (tests/stylegan_files.py); the toy family declares no sample options.
"""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt

from models.registry import open_model
from tests.gui_support import open_window
from tests.stylegan_files import tiny_net, write_nvidia_pickle


@pytest.fixture
def conditional(tmp_path):
    return write_nvidia_pickle(tmp_path / "cond.pkl", tiny_net("ada"), marker=tmp_path / "ran", layout="ada")


def _frame_after(window, qtbot, action):
    with qtbot.waitSignal(window.frame_shown, timeout=60_000) as blocker:
        action()
    return blocker.args[0]


def test_controls_follow_the_model_and_keys_change_class_psi_and_noise(toy_registry, qtbot, tmp_path, conditional):
    window = open_window(qtbot, tmp_path)  # the toy model: nothing to choose
    try:
        assert not window.sample_options_action.isVisible() and window.sample_options.controls == {}
        with qtbot.waitSignal(window.model_loaded, timeout=60_000):
            window.open_model(str(conditional))
        qtbot.waitSignal(window.frame_shown, timeout=60_000).wait()
        bar = window.sample_options
        assert window.sample_options_action.isVisible() and set(bar.controls) == {"class", "psi", "noise"}
        picker, psi, noise = bar.controls["class"], bar.controls["psi"].slider, bar.controls["noise"]
        assert [picker.itemText(i) for i in range(picker.count())] == ["0", "1", "2"] and psi.value() == 70
        picker.setFocus()
        _frame_after(window, qtbot, lambda: qtbot.keyClick(picker, Qt.Key.Key_Down))
        psi.setFocus()
        _frame_after(window, qtbot, lambda: qtbot.keyClick(psi, Qt.Key.Key_PageDown))  # one page: 0.7 -> 0.6
        noise.setFocus()
        frame = _frame_after(window, qtbot, lambda: qtbot.keyClick(noise, Qt.Key.Key_Down))
        assert window.state.sample.options == {"class": 1, "psi": pytest.approx(0.6), "noise": "random"}
        gen = open_model(str(conditional), device="cpu")
        with torch.inference_mode():
            expected = gen.render([gen.sample(window.seed.value(), **{"class": 1, "psi": 0.6, "noise": "random"})])
            default = gen.render([gen.sample(window.seed.value())])
        torch.testing.assert_close(frame.image.cpu().float(), expected[0], atol=1e-5, rtol=0)
        assert (frame.image.cpu().float() - default[0]).abs().max() > 1e-2
    finally:
        window.close()


def test_a_session_restores_class_psi_and_noise(qtbot, tmp_path, conditional):
    window = open_window(qtbot, tmp_path, str(conditional))
    try:
        bar = window.sample_options
        bar.controls["class"].setCurrentText("2")
        bar.controls["psi"].set_value(0.35)
        bar.controls["noise"].setCurrentText("none")
        window.generate()
        saved = window.state.sample
        assert saved.options == {"class": 2, "psi": pytest.approx(0.35), "noise": "none"}
        path = tmp_path / "work.nstudio"
        with qtbot.waitSignal(window.jobs.finished, timeout=20_000):
            window.sessions.save(path)
        bar.set_values({"class": 0, "psi": 1.0, "noise": "const"})
        window.generate()
        assert window.state.sample != saved
        window.sessions.open(path)
        qtbot.waitUntil(lambda: window.state.sample == saved, timeout=20_000)
        assert bar.values() == {"class": 2, "psi": pytest.approx(0.35), "noise": "none"}
    finally:
        window.close()
