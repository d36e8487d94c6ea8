"""The window's session workflow on the toy model: Save/Open/recent, crash recovery offer, refused files, export
from the GUI with its report, and the "save changes?" prompt on close (the prompt is monkeypatched, never modal)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from studio.core.hooks import UnitEdit
from studio.exported import open_model
from tests.gui_support import drag, open_window, paint_square

Buttons = QMessageBox.StandardButton


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def save_and_wait(window, qtbot, path) -> None:
    with qtbot.waitSignal(window.jobs.finished, timeout=20_000):
        window.sessions.save(path)


def recent_entries(window) -> list[str]:
    return [a.data() for a in window.sessions.recent_menu.actions() if a.data()]


def answer(monkeypatch, button, asked: list | None = None) -> None:
    """Make QMessageBox.question return ``button`` (recording the title) instead of showing a modal box."""
    def fake(parent, title, text, *args, **kwargs):
        if asked is not None:
            asked.append(title)
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(fake))


def rewrite_version(path, version: int) -> None:
    """The file as a newer Neuron Studio would write it (its format version raised)."""
    from safetensors.torch import load_file, save_file

    from studio.session import peek_session

    meta = peek_session(path)
    doc = json.loads(meta["session"])
    doc["version"] = version
    meta.update(version=str(version), session=json.dumps(doc))
    save_file(load_file(str(path)), str(path), metadata=meta)


def test_file_menu_has_the_session_shortcuts_and_recent_sessions(window, qtbot, tmp_path, toy_registry):
    s = window.sessions
    assert [a.shortcut().toString() for a in (s.open_action, s.save_action, s.save_as_action)] == \
        ["Ctrl+O", "Ctrl+S", "Ctrl+Alt+S"]
    file_menu = window.menuBar().actions()[0].menu()
    assert s.recent_menu in [a.menu() for a in file_menu.actions()]
    assert window.export_action.shortcut().toString() == "Ctrl+E"
    assert recent_entries(window) == []
    first, second = tmp_path / "a.nstudio", tmp_path / "b.nstudio"
    window.seed.setValue(4)
    save_and_wait(window, qtbot, first)
    window.seed.setValue(5)
    save_and_wait(window, qtbot, second)
    assert recent_entries(window) == [str(second.resolve()), str(first.resolve())]  # newest first
    assert not s.modified and window.windowTitle().endswith("b.nstudio")
    window.close()

    again = open_window(qtbot, tmp_path)  # the list outlives the window
    assert recent_entries(again) == [str(second.resolve()), str(first.resolve())]
    first.unlink()
    again.sessions.recent_menu.aboutToShow.emit()  # a file that is gone drops out when the menu opens
    assert recent_entries(again) == [str(second.resolve())]
    again.seed.setValue(9)
    entry = next(a for a in again.sessions.recent_menu.actions() if a.data())
    entry.trigger()
    qtbot.waitUntil(lambda: again.sessions.path == second and again.seed.value() == 5, timeout=20_000)
    assert not again.sessions.modified
    again.close()


def test_a_pending_recovery_is_offered_at_start_and_restore_brings_the_work_back(toy_registry, qtbot, tmp_path):
    first = open_window(qtbot, tmp_path)
    assert first.recovery.offer.isHidden()
    paint_square(first, 4, 4, 12, 12)  # a mask stroke is an edit...
    first.sliders.add_units("blocks.1", [7])
    first.sliders.rows[0].slider.setValue(200)  # ...and so is a slider
    recovery = first.recovery.store.path
    qtbot.waitUntil(lambda: recovery.exists() and not first.recovery.autosaver.dirty, timeout=30_000)
    first.recovery.flush()  # the newest snapshot is written on the autosave's own thread
    crashed = tmp_path / "left-behind"
    shutil.copy(recovery, crashed)
    first.close()
    shutil.copy(crashed, recovery)  # what a crash would have left

    second = open_window(qtbot, tmp_path)
    offer = second.recovery.offer
    assert offer.isVisible() and "did not close normally" in offer.label.text()
    # our own autosaves must not replace the crashed work while the offer waits
    second.seed.setValue(3)
    qtbot.waitUntil(lambda: second.recovery.autosaver.writes > 0, timeout=30_000)
    assert second.recovery.offered.path.read_bytes() == crashed.read_bytes()
    offer.restore_button.click()
    qtbot.waitUntil(lambda: len(second.sliders.rows) == 1, timeout=20_000)
    assert offer.isHidden() and not second.recovery.recover_action.isEnabled()
    assert second.sliders.edits() == [UnitEdit("blocks.1", 7, "scale", 2.0)]
    assert second.state.mask is not None and float(second.state.mask[8, 8]) > 0.9
    assert second.sessions.modified and second.sessions.path is None  # restored work is still unsaved
    qtbot.waitUntil(lambda: not second.recovery.offered.path.exists(), timeout=10_000)
    second.close()

    third = open_window(qtbot, tmp_path)  # answered and closed normally: nothing is offered again
    assert third.recovery.offer.isHidden()
    third.close()


def test_discarding_the_offer_deletes_the_crashed_work(toy_registry, qtbot, tmp_path):
    first = open_window(qtbot, tmp_path)
    first.sliders.add_units("blocks.1", [2])
    recovery = first.recovery.store.path
    qtbot.waitUntil(lambda: recovery.exists() and not first.recovery.autosaver.dirty, timeout=30_000)
    first.recovery.flush()
    shutil.copy(recovery, tmp_path / "left-behind")
    first.close()
    shutil.copy(tmp_path / "left-behind", recovery)
    second = open_window(qtbot, tmp_path)
    second.recovery.offer.discard_button.click()
    assert second.recovery.offer.isHidden() and not second.recovery.offered.path.exists()
    assert second.sliders.rows == []
    second.close()


def test_a_newer_version_file_is_refused_and_never_overwritten(window, qtbot, tmp_path, monkeypatch):
    window.seed.setValue(2)
    mine = tmp_path / "mine.nstudio"
    save_and_wait(window, qtbot, mine)
    future = tmp_path / "future.nstudio"
    shutil.copy(mine, future)
    rewrite_version(future, 2)
    newer = future.read_bytes()

    window.sessions.open(future)
    qtbot.waitUntil(window.banner.isVisible, timeout=20_000)
    assert "saved by a newer Neuron Studio" in window.banner.text()
    assert window.sessions.path == mine  # the refused file never becomes the Save target
    assert str(future.resolve()) not in recent_entries(window)

    # Save As onto it: refused with the sentence; declining another name writes nothing
    asked: list[str] = []
    answer(monkeypatch, Buttons.No, asked)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(future), "")))
    with qtbot.waitSignal(window.jobs.finished, timeout=20_000):
        window.sessions.save(None)
    assert asked == ["Save under another name?"]
    assert "future.nstudio was not overwritten" in window.banner.text()
    assert future.read_bytes() == newer

    # confirming saves to the other name the user picks, and the newer file is still untouched
    elsewhere = tmp_path / "elsewhere.nstudio"
    answer(monkeypatch, Buttons.Yes)
    picks = iter([str(future), str(elsewhere)])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (next(picks), "")))
    window.sessions.save(None)
    qtbot.waitUntil(lambda: window.sessions.path == elsewhere, timeout=20_000)
    assert elsewhere.exists() and future.read_bytes() == newer


def test_export_from_the_window_writes_a_studio_file_that_reopens_and_reports_the_verdict(window, qtbot,
                                                                                         tmp_path, toy_registry):
    from widgets.export_dialog import formats_for

    window.sliders.add_units("blocks.1", [3, 5])
    window.sliders.rows[0].off.setChecked(True)
    window.sliders.rows[1].slider.setValue(200)
    qtbot.waitUntil(lambda: window.last_frame.stamp == window._posted, timeout=20_000)
    edited = window.last_frame.image.clone()
    dialog = window.show_export()
    assert dialog.isVisible()
    offered = [dialog.format.itemData(i) for i in range(dialog.format.count())]
    assert offered == formats_for(window.generator) and "studio" in offered and "stylegan-pt" not in offered
    path = tmp_path / "edited.safetensors"
    dialog.choose("studio", path)
    updates = []
    dialog.progress.valueChanged.connect(updates.append)
    with qtbot.waitSignal(dialog.exported, timeout=60_000) as blocker:
        dialog.start()
    report = blocker.args[0]
    assert report.verified and path.exists() and updates and dialog.progress.value() == dialog.progress.maximum()
    text = dialog.text.toPlainText()
    assert "Baked into the weights:" in text and "blocks.1:3 off" in text
    assert "Check: max abs diff" in text and "Verdict: VERIFIED" in text and "same image" in text

    reopened = open_model(str(path), device="cpu")  # the studio reopens what it wrote
    with torch.inference_mode():
        image = reopened.render([window.state.sample])[0]
    assert torch.allclose(image, edited, atol=1e-4)

    window.sliders.rows[1].slider.setValue(100)  # the live sliders work again after the export
    qtbot.waitUntil(lambda: window.last_frame.stamp == window._posted, timeout=20_000)
    assert not torch.allclose(window.last_frame.image, edited, atol=1e-4)


def test_an_export_that_cannot_be_made_says_why_in_the_dialog(window, qtbot, tmp_path):
    dialog = window.show_export()
    dialog.choose("studio", tmp_path / "wrong.pt")
    with qtbot.waitSignal(dialog.failed, timeout=20_000) as blocker:
        dialog.start()
    assert "name it wrong.safetensors" in blocker.args[0] and dialog.export_button.isEnabled()
    assert not (tmp_path / "wrong.pt").exists()


def test_every_kind_of_edit_autosaves_and_marks_the_session_modified(window, qtbot):
    recovery = window.recovery
    qtbot.waitUntil(lambda: recovery.ready, timeout=20_000)
    calls = []
    original = recovery.edited
    recovery.edited = lambda: (calls.append(1), original())[1]

    def edit_counts(action) -> int:
        before = len(calls)
        action()
        return len(calls) - before

    assert edit_counts(lambda: paint_square(window, 2, 2, 10, 10)) > 0  # mask stroke
    window.sliders.add_units("blocks.1", [1])
    assert edit_counts(lambda: window.sliders.rows[0].slider.setValue(150)) > 0  # slider
    window.ranking.method.setCurrentIndex(window.ranking.method.findData("fast"))

    def rank() -> None:
        with qtbot.waitSignal(window.ranking.ranked, timeout=60_000):
            qtbot.mouseClick(window.ranking.rank_button, Qt.MouseButton.LeftButton)

    assert edit_counts(rank) > 0  # ranking done
    if window.concepts is not None:  # a concept edit reports model_changed after changing the weights
        assert edit_counts(window.concepts.model_changed.emit) > 0
    assert window.sessions.modified and window.windowTitle().endswith("*")

    # every minute, even with no new edit (a typed prompt is only caught this way)
    now = [1000.0]
    recovery.autosaver.clock = lambda: now[0]
    recovery.autosaver.last_write = now[0]
    recovery.autosaver.dirty = False
    writes = recovery.autosaver.writes
    now[0] += 30
    recovery.tick()
    assert recovery.autosaver.writes == writes
    now[0] += 31
    recovery.tick()
    assert recovery.autosaver.writes == writes + 1 and recovery.store.path.exists()


def test_the_recovery_file_holds_the_newest_state_after_a_slider_drag(window, qtbot):
    from PySide6.QtWidgets import QStyle, QStyleOptionSlider

    from studio.session import load_session

    recovery = window.recovery
    qtbot.waitUntil(lambda: recovery.ready, timeout=20_000)
    window.sliders.add_units("blocks.1", [3])
    slider = window.sliders.rows[0].slider
    option = QStyleOptionSlider()
    slider.initStyleOption(option)
    handle = slider.style().subControlRect(QStyle.ComplexControl.CC_Slider, option,
                                           QStyle.SubControl.SC_SliderHandle, slider).center()
    start = slider.value()
    points = [QPoint(handle.x() + dx, handle.y()) for dx in range(0, slider.width() // 3, 3)]
    drag(slider, points)  # a user's drag: one edit per move, faster than the autosave's 2 s gap
    assert slider.value() != start
    dragged = window.sliders.edits()
    # the edits inside the gap are written by the next tick, on the writer's thread; then the file is the newest
    qtbot.waitUntil(lambda: not recovery.autosaver.dirty, timeout=20_000)
    recovery.flush()
    assert load_session(recovery.store.path).unit_edits == dragged
    assert window.close() and not recovery.store.path.exists()  # a normal close: nothing left to recover


def test_closing_with_unsaved_edits_asks_save_discard_or_cancel(toy_registry, qtbot, tmp_path, monkeypatch):
    window = open_window(qtbot, tmp_path)
    window.confirm_close = True
    asked: list[str] = []
    answer(monkeypatch, Buttons.Cancel, asked)
    assert window.close()  # nothing edited: no question
    assert asked == []

    window = open_window(qtbot, tmp_path)
    window.confirm_close = True
    window.sliders.add_units("blocks.1", [4])
    answer(monkeypatch, Buttons.Cancel, asked)
    assert not window.close() and window.isVisible() and asked == ["Save changes?"]

    path = tmp_path / "closing.nstudio"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "")))
    answer(monkeypatch, Buttons.Save, asked)
    assert not window.close()  # stays open until the file is written, then closes itself
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=20_000)
    from studio.session import load_session

    assert load_session(path).unit_edits == [UnitEdit("blocks.1", 4, "scale", 1.0)]

    window = open_window(qtbot, tmp_path)
    window.confirm_close = True
    window.sliders.add_units("blocks.1", [6])
    answer(monkeypatch, Buttons.Discard, asked)
    assert window.close() and not window.recovery.store.path.exists()
