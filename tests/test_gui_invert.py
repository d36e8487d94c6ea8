"""Your own image in the app, as the issue's "Done means" says: open a PNG of a room the Rooms WORLD rendered (never a
model output), wait for the inversion (progress, the reconstruction shown live), paint its lamp, switch it off with
the shipped lamp-off knob: the world's detector reads it unlit; save, reopen: the image and edits are back and no
inversion runs. Bad input: one banner sentence, nothing changed. All with real mouse and keyboard events.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QFileDialog

from studio.core.images import save_image
from studio.core.rooms import world
from tests.gui_support import drag, open_window
from widgets import invert_actions

#: A held-out room (training seeds lie below 10**9) with two lit lamps. The shipped lamp-off knob switches a lamp
#: off in only some rooms, on the model's own renders too (``python -m studio bench invert``: really_off 0.5 with the
#: truth mask on both the inverted and the model's own images of the first 4 held-out rooms); this is one where it
#: does, so the test checks the app's path (open, invert, paint, apply, save, reopen), not the knob's reach.
SEED = 2_000_000_003
STEPS = 40  # inversion steps: enough for the lamps, small enough for seconds


def natural_scene(seed: int = SEED) -> world.Scene:
    return world.sample_scene(np.random.default_rng(seed))


def lamp_box(scene: world.Scene, lamp: int, pad: int = 3) -> tuple[int, int, int, int]:
    masks = world.truth(scene).masks
    ys, xs = np.nonzero(masks[f"lamp{lamp}"] | masks[f"glow{lamp}"])
    return max(xs.min() - pad, 0), max(ys.min() - pad, 0), min(xs.max() + pad, 127), min(ys.max() + pad, 127)


def paint_box(canvas, box, step: int = 5) -> None:
    x0, y0, x1, y1 = box
    canvas.brush_size = step + 4
    for y in range(y0, y1 + 1, step):
        drag(canvas, [canvas.to_widget(QPointF(x, y)).toPoint() for x in range(x0, x1 + 1, step)])


def lit(window, scene: world.Scene) -> list[bool]:
    image = window.last_frame.image.permute(1, 2, 0).numpy()
    return [world.detect_lit(image, scene, i) for i in range(len(scene.lamps))]


def nearer_lit_truth(window, scene: world.Scene, lamp: int) -> bool:
    """Whether the shown image's lamp region is nearer (mean abs) the world's lit render than its unlit one: the
    detector alone reads a shade's colour, which a reconstruction without that lamp can match by chance."""
    region = lamp_region(scene, lamp)
    image = window.last_frame.image.permute(1, 2, 0).numpy()
    on, off = world.render(scene, 128), world.render(world.with_lamp(scene, lamp, lit=False), 128)
    return float(np.abs(image - on)[region].mean()) < float(np.abs(image - off)[region].mean())


def lamp_region(scene: world.Scene, lamp: int) -> np.ndarray:
    masks = world.truth(scene).masks
    return masks[f"lamp{lamp}"] | masks[f"glow{lamp}"]


def wait_frame(window, qtbot, predicate=lambda: True) -> None:
    qtbot.waitUntil(lambda: window.worker.mailbox.stamp == window._shown and predicate(), timeout=60_000)


def open_image_by_keyboard(window, qtbot, monkeypatch, path) -> None:
    """Ctrl+Shift+O, and the file dialog answers ``path`` (a real modal dialog would block the test)."""
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), ""))
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)


@pytest.fixture
def window(qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, model="rooms")
    w.inversions.steps = STEPS
    yield w
    w.close()


def test_open_a_world_render_invert_it_switch_its_lamp_off_and_reopen_the_session(window, qtbot, tmp_path,
                                                                                     monkeypatch):
    scene = natural_scene()
    photo = tmp_path / "room.png"
    save_image(world.render(scene, 128), photo)  # a plain PNG: no settings chunks, so it is inverted
    previews: list[int] = []
    window.inversions.previewed.connect(previews.append)
    seen_progress: list[int] = []
    window.inversions.progress.valueChanged.connect(seen_progress.append)
    with qtbot.waitSignal(window.inversions.finished, timeout=180_000, raising=True) as finished:
        open_image_by_keyboard(window, qtbot, monkeypatch, photo)
    inversion = finished.args[0]
    assert previews and max(seen_progress) >= STEPS // 2  # shown live, with progress
    assert window.state.inversion is inversion and window.state.sample == inversion.sample
    wait_frame(window, qtbot, lambda: window.last_frame.sample == inversion.sample)
    assert f"{inversion.psnr:.1f} dB" in window.inversions.label.text()
    assert window.inversions.continue_button.isVisible() and window.inversions.continue_action.isEnabled()
    qtbot.waitUntil(lambda: "your image, inverted" in window.history.item(window.history.count() - 1).toolTip(),
                    timeout=10_000)  # the history strip keeps it, named as what it is
    lamp = next(i for i, l in enumerate(scene.lamps) if l.lit)  # the first lit lamp, as the benchmark takes
    assert lit(window, scene)[lamp] and nearer_lit_truth(window, scene, lamp)  # the reconstruction shows it lit
    before = window.last_frame.image.clone()

    paint_box(window.canvas, lamp_box(scene, lamp))
    assert window.knobs.chosen() is not None and "off" in window.knobs.chosen().name  # the shipped lamp-off knob
    qtbot.mouseClick(window.knobs.apply_button, Qt.MouseButton.LeftButton)
    wait_frame(window, qtbot, lambda: len(window.state.knobs) == 1)
    assert not lit(window, scene)[lamp]  # the world's detector reads it dark ...
    assert not nearer_lit_truth(window, scene, lamp)  # ... and it is nearer the world's unlit render there
    outside = torch.from_numpy(~lamp_region(scene, lamp))
    assert float((window.last_frame.image - before).abs().mean(0)[outside].mean()) < 0.02  # the rest stays
    edited = window.last_frame.image.clone()

    path = tmp_path / "mine.nstudio"
    with qtbot.waitSignal(window.jobs.finished, timeout=30_000):
        window.sessions.save(path)
    window.close()

    def no_inversion(*args, **kwargs):
        raise AssertionError("reopening a session must not invert again")

    monkeypatch.setattr(invert_actions, "invert", no_inversion)
    second = open_window(qtbot, tmp_path / "again", model="rooms")
    try:
        second.sessions.open(path)
        wait_frame(second, qtbot, lambda: second.state.inversion is not None and len(second.state.knobs) == 1)
        assert second.state.sample == inversion.sample
        assert second.state.inversion.psnr == pytest.approx(inversion.psnr, abs=1e-4)  # saved to 4 places
        assert torch.equal(second.state.inversion.target, inversion.target)
        assert torch.allclose(second.last_frame.image, edited, atol=1e-6)
        assert not lit(second, scene)[lamp]
        assert second.inversions.continue_action.isEnabled() and not second.inversions.running
    finally:
        second.close()


def test_a_dropped_picture_is_inverted_cancel_keeps_what_was_found_and_continue_goes_on(window, qtbot, tmp_path):
    photo = tmp_path / "room.png"
    save_image(world.render(natural_scene(SEED + 1), 128), photo)
    window.inversions.steps = 400  # far more than it will run: Cancel stops it
    window.inversions.continue_steps = 10
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(photo))])
    with qtbot.waitSignal(window.inversions.previewed, timeout=60_000):  # the first live reconstruction
        window.dropEvent(QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                                    Qt.KeyboardModifier.NoModifier))
    assert window.inversions.bar.isVisible() and window.inversions.cancel_button.isVisible()
    with qtbot.waitSignal(window.inversions.finished, timeout=60_000) as finished:
        qtbot.mouseClick(window.inversions.cancel_button, Qt.MouseButton.LeftButton)
    stopped = finished.args[0]
    assert stopped.stopped and 0 < stopped.steps < 400 and window.state.sample == stopped.sample
    with qtbot.waitSignal(window.inversions.finished, timeout=120_000) as finished:
        qtbot.mouseClick(window.inversions.continue_button, Qt.MouseButton.LeftButton)
    more = finished.args[0]
    assert more.steps == stopped.steps + 10 and not more.stopped and len(more.losses) > len(stopped.losses)
    assert more.psnr >= stopped.psnr - 0.05  # continuing does not end worse than where it began
    assert window.state.inversion is more and window.state.sample == more.sample


@pytest.mark.parametrize("kind", ["unreadable", "flat", "tiny"])
def test_bad_images_are_one_sentence_and_change_nothing(window, qtbot, tmp_path, monkeypatch, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "unreadable":
        path.write_bytes(b"this is not a picture")
    elif kind == "flat":
        Image.new("RGB", (128, 128), (128, 128, 128)).save(path)
    else:
        Image.new("RGB", (8, 8), (10, 200, 30)).save(path)
    before = window.state.sample
    with qtbot.waitSignal(window.jobs.finished, timeout=30_000):
        open_image_by_keyboard(window, qtbot, monkeypatch, path)
    text = window.banner.text()
    assert window.banner.isVisible() and window.banner.error
    assert text.count(". ") == 0 and text.endswith(".")  # one sentence
    assert window.state.sample == before and window.state.inversion is None
    assert not window.inversions.bar.isVisible()


def test_main_image_opens_the_picture_once_the_model_has_loaded(toy_registry, qtbot, tmp_path):
    """``python main.py --image photo.png``: the window inverts it as soon as its model is there (the toy model has
    no latent to invert, so its one sentence says so: the picture went the whole way)."""
    from PySide6.QtCore import QSettings

    import main
    from widgets.main_window import MainWindow

    assert main.parse_args(["--image", "photo.png"]).image == "photo.png"
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(photo)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow("toy", "cpu", settings=settings, config_dir=str(tmp_path / "config"))
    qtbot.addWidget(window)
    window.confirm_close = False
    window.show()
    main.open_image_when_loaded(window, str(photo))  # before the model has loaded, as main() calls it
    try:
        qtbot.waitUntil(lambda: "cannot invert" in window.banner.text() and window.banner.error, timeout=30_000)
        assert window.state.inversion is None
    finally:
        window.close()


def test_a_picture_on_a_diffusion_model_is_ddim_inverted_under_the_typed_prompt_and_continued(
        tiny_sd_files, qtbot, tmp_path, monkeypatch):
    from models import diffusion, sd_invert

    monkeypatch.setattr(sd_invert, "GRADIENT_STEPS", 0)  # the path through the app, not closeness, is tested here
    monkeypatch.setattr(sd_invert, "FIXED_POINT_ITERATIONS", 2)
    monkeypatch.setattr(diffusion, "DEFAULT_STEPS", 4)  # renders and inversions of 4 denoising steps: seconds
    window = open_window(qtbot, tmp_path, model=str(tiny_sd_files.folder))
    try:
        window.inversions.steps = window.inversions.continue_steps = 5
        window.prompt.selectAll()
        qtbot.keyClicks(window.prompt, "a red house")  # typed: the inversion runs under what the box says
        photo = tmp_path / "house.png"
        Image.fromarray((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)).save(photo)
        with qtbot.waitSignal(window.inversions.finished, timeout=120_000) as finished:
            open_image_by_keyboard(window, qtbot, monkeypatch, photo)
        first = finished.args[0]
        assert first.sample.prompt == "a red house" and first.sample.option("init_latent") is not None
        assert first.sample.option("steps") == 4
        wait_frame(window, qtbot, lambda: window.last_frame.sample == first.sample)
        with qtbot.waitSignal(window.inversions.finished, timeout=120_000) as finished:
            qtbot.mouseClick(window.inversions.continue_button, Qt.MouseButton.LeftButton)
        more = finished.args[0]
        assert more.steps == 10 and more.sample != first.sample and more.sample.prompt == "a red house"
        assert window.state.inversion is more and f"{more.psnr:.1f} dB" in window.inversions.label.text()
    finally:
        window.close()
