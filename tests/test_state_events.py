"""StudioState announces its changes (studio/core/events.py), and the window's views follow the state: a script,
an undo or a session restore changes the state once, every view shows it, and one frame is asked for."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from studio.core.events import EventEmitter
from studio.core.hooks import UnitEdit
from studio.state import StudioState
from tests.gui_support import make_work, open_window, paint_square


# -- the emitter and the state, without Qt ----------------------------------------------------------------------
def test_the_emitter_connects_disconnects_and_blocks():
    emitter, heard = EventEmitter("mask"), []
    callback = emitter.connect(lambda event: heard.append((event.name, event.value, event.old)))
    emitter.connect(callback)  # connected once however often it is connected
    emitter.emit(1, 0)
    with emitter.blocked():
        assert emitter.emit(2) is None
    emitter.disconnect(callback)
    emitter.emit(3)
    assert heard == [("mask", 1, 0)] and len(emitter) == 0


def test_a_failing_view_does_not_stop_the_others_and_its_error_is_raised():
    emitter, heard = EventEmitter("edits"), []

    def broken(event):
        raise RuntimeError("broken view")

    emitter.connect(broken)
    emitter.connect(lambda event: heard.append(event.value))
    with pytest.raises(RuntimeError, match="broken view"):
        emitter.emit(5)
    assert heard == [5]


def test_each_change_is_announced_once_and_a_batch_once_per_field():
    state, heard = StudioState(), []
    for name in ("mask", "layer", "edits", "changed"):
        state.events.emitter(name).connect(lambda event: heard.append((event.name, event.value)))
    state.layer = "blocks.1"
    state.layer = "blocks.1"  # the same value: no change, nothing said
    state.mask = torch.ones(4, 4)
    state.mask = torch.ones(4, 4)  # equal content
    assert [name for name, _ in heard] == ["layer", "changed", "mask", "changed"]
    heard.clear()
    with state.batch():
        state.layer = "blocks.2"
        state.layer = "blocks.3"
        state.edits = [UnitEdit("blocks.3", 1, "off")]
        state.mask = torch.ones(4, 4)  # back to what it was: not a change
        assert heard == []  # nothing until the batch ends
    assert heard == [("layer", "blocks.3"), ("edits", [UnitEdit("blocks.3", 1, "off")]),
                     ("changed", frozenset({"layer", "edits"}))]
    with pytest.raises(AttributeError, match="no field 'colour'"):
        state.update(colour="red")


# -- the window's views follow the state --------------------------------------------------------------------------
@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


class Spy:
    """Counts what the views and the window do while the state changes."""

    def __init__(self, window) -> None:
        self.changes: list[frozenset] = []
        self.masks = self.edits = self.seeds = 0
        window.state.events.changed.connect(lambda event: self.changes.append(event.value))
        window.canvas.mask_changed.connect(lambda: setattr(self, "masks", self.masks + 1))
        window.sliders.edits_changed.connect(lambda _: setattr(self, "edits", self.edits + 1))
        window.seed.valueChanged.connect(lambda _: setattr(self, "seeds", self.seeds + 1))
        self.posted = window._posted
        self.window = window

    @property
    def frames_asked(self) -> int:
        return self.window._posted - self.posted


def test_a_script_changes_the_state_once_and_every_view_follows(window, qtbot):
    state = window.state
    spy = Spy(window)
    h, w = window.canvas.image_size()
    mask = torch.zeros(h, w)
    mask[2:10, 2:10] = 1
    edits = [UnitEdit("blocks.1", 2, "off", 0.0), UnitEdit("blocks.1", 5, "scale", 2.0)]
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        with state.batch():
            state.sample = state.sample.with_seed(7)
            state.mask = mask
            state.edits = edits
            state.local = True
    assert spy.changes == [frozenset({"sample", "mask", "edits", "local"})]  # nothing came back from a view
    assert spy.frames_asked == 1 and spy.masks == 1 and spy.seeds == 1 and spy.edits == 0
    assert window.seed.value() == 7 and window.sliders.local.isChecked()
    assert window.sliders.edits() == edits
    assert np.array_equal(window.canvas.mask(), mask.numpy())
    assert window.canvas.undo_stack.count() == 1  # the script's mask is one undoable change


def test_an_undo_changes_the_state_once(window, qtbot):
    paint_square(window, 2, 4, 10, 4)  # one stroke
    window.sliders.add_units("blocks.1", [3])
    window.sliders.rows[0].off.setChecked(True)
    window.sliders.local.setChecked(True)
    qtbot.waitUntil(lambda: window.last_frame.stamp == window._posted, timeout=20_000)
    spy = Spy(window)
    window.canvas.setFocus()
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.state.mask is None and window.canvas.mask() is None
    assert spy.changes == [frozenset({"mask"})] and spy.frames_asked == 1 and spy.masks == 1


def test_a_restore_changes_the_state_once_and_every_view_follows(window, qtbot, tmp_path):
    path = tmp_path / "work.nstudio"
    make_work(window, qtbot, path)
    saved = (window.state.mask.clone(), list(window.state.edits), window.state.sample)
    window.canvas.clear_mask()
    window.sliders.set_edits([])
    window.sliders.local.setChecked(False)
    window.seed.setValue(9)
    qtbot.waitUntil(lambda: window.last_frame.stamp == window._posted, timeout=20_000)
    spy = Spy(window)
    opened = []
    window.sessions.open(path, then=lambda: opened.append(True))
    qtbot.waitUntil(lambda: bool(opened), timeout=20_000)
    assert spy.changes == [frozenset({"sample", "mask", "edits", "local"})]
    assert spy.frames_asked == 1 and spy.masks == 1 and spy.seeds == 1 and spy.edits == 0
    assert window.state.sample == saved[2] and window.seed.value() == 4 and window.sliders.local.isChecked()
    assert window.sliders.edits() == saved[1] and window.state.edits == saved[1]
    assert torch.equal(window.state.mask, saved[0]) and np.array_equal(window.canvas.mask(), saved[0].numpy())
    assert not window.sessions.modified  # what is shown is what the file holds
