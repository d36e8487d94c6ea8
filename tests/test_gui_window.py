"""The main window end to end on the toy model: paint, rank, table, sliders with live frames, cancel, errors."""
from __future__ import annotations

import threading

import pytest
import torch
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtWidgets import QStyle, QStyleOptionSlider

from studio.core.hooks import UnitEdit
from tests.gui_support import make_work, mouse, open_window, paint_square, pick_layer


@pytest.fixture
def registry(toy_registry, monkeypatch):
    monkeypatch.setattr(toy_registry, "FAMILY_MODULES", ["tests.slow_toy", *toy_registry.FAMILY_MODULES])
    return toy_registry


@pytest.fixture
def window(registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def rank_and_wait(window, qtbot, method="exact", timeout=60_000):
    window.ranking.method.setCurrentIndex(window.ranking.method.findData(method))
    with qtbot.waitSignal(window.ranking.ranked, timeout=timeout) as blocker:
        qtbot.mouseClick(window.ranking.rank_button, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def reference(window, edits, mask=None):
    """What the edited image must be: a full render of a fresh copy of the model with the editor."""
    from tests.toy import ToyGenerator

    gen = ToyGenerator()
    with torch.inference_mode(), gen.editor() as editor:
        editor.set(edits, mask=mask)
        return gen.render([window.state.sample])[0]


def drag_slider(slider, qtbot, to_fraction: float) -> None:
    """Press on the handle, move with the button held, release: the way a user drags."""
    option = QStyleOptionSlider()
    slider.initStyleOption(option)
    handle = slider.style().subControlRect(QStyle.ComplexControl.CC_Slider, option,
                                           QStyle.SubControl.SC_SliderHandle, slider)
    start = handle.center()
    end = QPoint(int(slider.width() * to_fraction), start.y())
    from PySide6.QtCore import QEvent
    mouse(slider, QEvent.Type.MouseButtonPress, start)
    for i in range(1, 9):
        mouse(slider, QEvent.Type.MouseMove, start + (end - start) * (i / 8), Qt.MouseButton.LeftButton)
        qtbot.wait(5)
    mouse(slider, QEvent.Type.MouseButtonRelease, end, Qt.MouseButton.NoButton)


def test_the_window_opens_on_a_model_with_device_layers_and_an_image(window):
    assert window.generator.name == "toy" and window.canvas.has_image
    assert "cpu" in window.device_label.text() and "frame" in window.frame_label.text()
    picker = window.ranking.layers
    labels = [picker.itemText(i) for i in range(picker.count())]
    assert labels[1] == "blocks.0 · 32 units · 8×8" and labels[0] == "fc · 512 units · vector"
    assert picker.current_layer() == "blocks.1"  # a middle spatial layer by default


def test_paint_rank_see_the_table_choose_units_and_drag_a_slider(window, qtbot):
    paint_square(window, 2, 2, 14, 14)
    mask = window.state.mask
    assert mask is not None and float(mask[8, 8]) > 0.9 and float(mask[28, 28]) == 0.0
    pick_layer(window, qtbot, "blocks.1")  # by hand: Rank keeps to it
    ranking = rank_and_wait(window, qtbot)
    table = window.ranking.table
    assert table.model().rowCount() == 16 == len(ranking.units)
    scores = [float(table.model().index(r, 1).data(Qt.ItemDataRole.UserRole + 1)) for r in range(16)]
    assert scores == sorted(scores, reverse=True)  # best first
    best = ranking.units[0].unit
    assert table.unit_at(0) == best
    assert table.model().index(0, 4).data(Qt.ItemDataRole.DecorationRole) is not None  # switched-off thumbnail
    assert len(window.ranking.plot.scores) == 16

    rect = table.visualRect(table.model().index(0, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a user's double-click
    qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # is press, then double
    assert [(r.layer, r.unit) for r in window.sliders.rows] == [("blocks.1", best)]

    frames = []
    window.frame_shown.connect(frames.append)
    drag_slider(window.sliders.rows[0].slider, qtbot, 0.97)
    scale = window.sliders.rows[0].scale()
    assert scale > 2.5
    qtbot.waitUntil(lambda: bool(frames) and frames[-1].stamp == window._posted, timeout=20_000)
    last = frames[-1]
    assert last.partial and last.layer == "blocks.1"
    assert [f.stamp for f in frames] == sorted(f.stamp for f in frames)  # never an older frame after a newer one
    expected = reference(window, [UnitEdit("blocks.1", best, "scale", scale)])
    assert torch.allclose(last.image, expected, atol=1e-5)
    assert not torch.allclose(last.image, last.original, atol=1e-4)


def test_a_burst_of_slider_values_renders_the_newest_and_drops_the_rest(window, qtbot):
    window.sliders.add_units("blocks.1", [3])
    slider = window.sliders.rows[0].slider
    frames = []
    window.frame_shown.connect(frames.append)
    for value in range(0, 301, 10):  # 31 values without giving the event loop a chance in between
        slider.setValue(value)
    posted = window._posted
    qtbot.waitUntil(lambda: bool(frames) and frames[-1].stamp == posted, timeout=20_000)
    qtbot.wait(50)
    assert len(frames) < 31  # the worker skipped the stale states in its mailbox
    assert torch.allclose(frames[-1].image, reference(window, [UnitEdit("blocks.1", 3, "scale", 3.0)]), atol=1e-5)


def test_local_edits_stay_inside_the_mask(window, qtbot):
    paint_square(window, 0, 0, 14, 31)
    window.sliders.local.setChecked(True)
    with qtbot.waitSignal(window.frame_shown, timeout=20_000) as blocker:
        window.sliders.add_units("blocks.2", list(range(8)))
        for row in window.sliders.rows:
            row.off.setChecked(True)
    qtbot.waitUntil(lambda: window.last_frame.stamp == window._posted, timeout=20_000)
    frame = window.last_frame
    outside = window.state.mask.numpy() == 0
    change = (frame.image - frame.original).abs().sum(0).numpy()
    assert change[outside].max() < 1e-6 and change[~outside].max() > 1e-3


def test_hold_shows_the_original_and_before_after_shows_both(window, qtbot):
    window.sliders.hold.pressed.emit()
    assert window.canvas.view == "original"
    window.sliders.hold.released.emit()
    assert window.canvas.view == "edited"
    window.sliders.compare.setChecked(True)
    assert window.canvas.view == "side-by-side"


def test_ranking_without_a_mask_says_so_and_starts_nothing(window, qtbot):
    qtbot.mouseClick(window.ranking.rank_button, Qt.MouseButton.LeftButton)
    assert window.banner.isVisible() and "mask is empty" in window.banner.text()
    assert not window.jobs.busy


def test_a_model_that_cannot_open_is_one_sentence_and_the_old_one_keeps_working(window, qtbot):
    paint_square(window, 2, 2, 10, 10)
    window.open_model("no-such-model")
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    assert "No model named 'no-such-model'" in window.banner.text()
    assert window.generator.name == "toy" and window.state.mask is not None  # nothing lost
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        window.seed.setValue(5)


def test_session_save_and_open_restore_the_work(window, qtbot, tmp_path):
    path = tmp_path / "work.nstudio"
    make_work(window, qtbot, path)
    assert path.exists()
    saved_mask = window.state.mask.clone()
    window.canvas.clear_mask()
    window.sliders.set_edits([])
    window.seed.setValue(9)
    window.sliders.local.setChecked(False)
    window.sessions.open(path)
    qtbot.waitUntil(lambda: len(window.sliders.rows) == 2, timeout=20_000)
    assert window.seed.value() == 4 and window.sliders.local.isChecked()
    assert window.sliders.edits()[0] == UnitEdit("blocks.1", 2, "off", 0.0)
    assert torch.allclose(window.state.mask, saved_mask, atol=1 / 255)


def test_preferences_are_kept(registry, qtbot, tmp_path):
    first = open_window(qtbot, tmp_path)
    first.tools.size.setValue(33)
    first.ranking.seeds.setText("0-2")
    first.close()
    second = open_window(qtbot, tmp_path)
    assert second.tools.size.value() == 33 and second.ranking.seeds.text() == "0-2"
    second.close()


@pytest.fixture
def slow_window(registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, model="slow-toy")
    yield w
    w.close()


def test_cancel_stops_a_ranking_and_the_model_keeps_working(slow_window, qtbot):
    window = slow_window
    paint_square(window, 20, 20, 120, 120, step=12)
    window.ranking.seeds.setText("0-3")
    updates = []
    window.ranking.method.setCurrentIndex(window.ranking.method.findData("exact"))
    job = window.ranking.rank()
    qtbot.waitUntil(lambda: window.ranking.progress.value() > 0, timeout=60_000)
    qtbot.mouseClick(window.ranking.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.state == "failed" and job.cancelled
    assert window.ranking.progress.format() == "cancelled" and "as asked" in window.banner.text()
    assert window.ranking.model.rowCount() == 0 and window.ranking.rank_button.isEnabled()
    with qtbot.waitSignal(window.frame_shown, timeout=60_000):
        window.seed.setValue(1)


def test_the_model_runs_off_the_gui_thread_and_the_gui_keeps_handling_events(slow_window, qtbot):
    """The ranking runs on the model's thread, and the GUI thread handles events (timers here) meanwhile."""
    window = slow_window
    paint_square(window, 20, 20, 120, 120, step=12)
    window.ranking.seeds.setText("0-3")
    window.ranking.method.setCurrentIndex(window.ranking.method.findData("exact"))
    gui_thread = threading.get_ident()
    model_threads: set[int] = set()
    for name in ("render", "forward_from"):  # whichever the ranking calls, note the thread that calls it
        method = getattr(window.generator, name)
        setattr(window.generator, name,
                lambda *args, method=method: (model_threads.add(threading.get_ident()), method(*args))[1])
    ticks_while_ranking: list[bool] = []
    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(lambda: ticks_while_ranking.append(window.ranking.running and bool(model_threads)))
    probe.start()
    with qtbot.waitSignal(window.ranking.ranked, timeout=120_000):
        window.ranking.rank()
    probe.stop()
    assert model_threads and gui_thread not in model_threads
    assert any(ticks_while_ranking), "the GUI thread handled no timer while the model computed"


def test_work_left_by_a_crash_is_recovered(registry, qtbot, tmp_path):
    import shutil

    first = open_window(qtbot, tmp_path)
    paint_square(first, 4, 4, 12, 12)
    first.sliders.add_units("blocks.1", [7])
    first.sliders.rows[0].slider.setValue(200)
    recovery = first.recovery.store.path
    qtbot.waitUntil(lambda: recovery.exists() and first.recovery.autosaver.writes > 0
                    and not first.recovery.autosaver.dirty, timeout=30_000)
    first.recovery.flush()  # the newest snapshot is written on the autosave's own thread
    shutil.copy(recovery, tmp_path / "left-behind")
    first.close()  # a normal close removes the recovery file...
    assert not recovery.exists()
    shutil.copy(tmp_path / "left-behind", recovery)  # ...a crash would have left it
    second = open_window(qtbot, tmp_path)
    assert second.recovery.recover_action.isEnabled()
    second.recovery.recover_action.trigger()
    qtbot.waitUntil(lambda: len(second.sliders.rows) == 1, timeout=20_000)
    assert second.sliders.edits() == [UnitEdit("blocks.1", 7, "scale", 2.0)]
    assert second.state.mask is not None and float(second.state.mask[8, 8]) > 0.9
    assert second.sessions.path is None  # never saved: Save asks where
    second.close()
