"""``python main.py --screenshot``: window offscreen, model loaded, one image generated, PNG saved, exit 0."""
from __future__ import annotations

import tempfile

import numpy as np
from PIL import Image

import main as app_main


def test_screenshot_of_a_loaded_model(toy_registry, qapp, tmp_path):
    path = tmp_path / "shot.png"
    assert app_main.main(["--model", "toy", "--device", "cpu", "--screenshot", str(path)]) == 0
    shot = Image.open(path)
    assert shot.size[0] >= 800 and shot.size[1] >= 400
    assert len(np.unique(np.asarray(shot.convert("L")))) > 20  # a rendered image, not a blank window


def test_screenshot_reports_a_model_that_cannot_open(toy_registry, qapp, tmp_path, capsys):
    path = tmp_path / "shot.png"
    assert app_main.main(["--model", "no-such-model", "--screenshot", str(path)]) == 1
    assert "No model named 'no-such-model'" in capsys.readouterr().err


def test_screenshot_leaves_no_scratch_folder_behind(toy_registry, qapp, tmp_path, monkeypatch):
    # the run keeps its settings and recovery file in a folder of its own; once the PNG is saved it is removed
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert app_main.main(["--model", "toy", "--device", "cpu", "--screenshot", str(tmp_path / "a.png")]) == 0
    assert app_main.main(["--model", "no-such-model", "--screenshot", str(tmp_path / "b.png")]) == 1
    assert (tmp_path / "a.png").exists()
    assert list(scratch.iterdir()) == []
