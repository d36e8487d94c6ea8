"""Starting on a model that cannot open: one sentence, and the model box does not pretend a model is loaded."""
from __future__ import annotations

from PySide6.QtCore import QSettings

from widgets.main_window import MainWindow


def test_a_bad_model_at_start_says_why_once_and_names_no_model(toy_registry, qtbot, tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(str(bad), "cpu", settings=settings, config_dir=str(tmp_path / "config"))
    qtbot.addWidget(window)
    window.confirm_close = False
    with qtbot.waitSignal(window.load_failed, timeout=30_000) as blocker:
        window.show()
    sentence = blocker.args[0]
    qtbot.wait(50)
    assert window.generator is None and window.banner.isVisible() and window.banner.text() == sentence
    assert sentence not in window.canvas.placeholder  # said once, in the banner; the canvas says what to do
    assert "No model is loaded" in window.canvas.placeholder
    assert sentence not in window.statusBar().currentMessage()
    assert window.picker.currentIndex() == -1 and window.picker.currentText() == ""
    window.close()


def test_main_prints_the_sentence_once_and_fails(toy_registry, tmp_path, capsys):
    import main

    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    assert main.main(["--model", str(bad), "--screenshot", str(tmp_path / "shot.png")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.pkl" in errors[0]
