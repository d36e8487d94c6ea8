"""``python -m studio concept`` on the tiny text-conditioned family."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.cli import main


@pytest.fixture
def text_registry(monkeypatch):
    from models import registry

    monkeypatch.setattr(registry, "FAMILY_MODULES", ["tests.toy_text", "tests.toy", *registry.FAMILY_MODULES])
    return registry


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_replace_renders_the_target_and_saves_a_loadable_edit(text_registry, tmp_path, capsys):
    red, blue, edited, again = (tmp_path / f"{n}.png" for n in ("red", "blue", "edited", "again"))
    main(["generate", "--model", "toy-text", "--seed", "2", "--prompt", "a room with red walls", "-o", str(red)])
    main(["generate", "--model", "toy-text", "--seed", "2", "--prompt", "a room with blue walls", "-o", str(blue)])
    assert main(["concept", "--model", "toy-text", "--replace", "red=blue", "--preserve", "blue, a room with walls",
                 "--prompt", "a room with red walls", "--seed", "2", "-o", str(edited),
                 "--save-edit", str(tmp_path / "edit.safetensors")]) == 0
    err = capsys.readouterr().err
    assert "red → blue" in err and "4 projections, rank 1" in err
    assert np.abs(pixels(edited) - pixels(blue)).sum() < 0.1 * np.abs(pixels(red) - pixels(blue)).sum()
    assert main(["concept", "--model", "toy-text", "--load-edit", str(tmp_path / "edit.safetensors"),
                 "--prompt", "a room with red walls", "--seed", "2", "-o", str(again)]) == 0
    assert np.array_equal(pixels(again), pixels(edited))


def test_erase_and_replace_together_side_by_side(text_registry, tmp_path):
    out = tmp_path / "both.png"
    assert main(["concept", "--model", "toy-text", "--erase", "bed", "--replace", "red=pink", "--erase", "lamp=green",
                 "--lambda", "0.1", "--tokens", "all", "--prompt", "a red room with a bed", "-o", str(out),
                 "--side-by-side"]) == 0
    image = pixels(out)
    assert image.shape == (16, 32, 3) and np.abs(image[:, :16] - image[:, 16:]).max() > 0


@pytest.mark.parametrize("argv,message", [
    (["--replace", "crimson=blue"], "does not know (crimson)"),
    (["--replace", "red"], "CONCEPT=TARGET"),
    (["--replace", "red=blue", "--preserve", " , "], "--preserve lists no concepts"),
    (["--preserve", "green"], "Nothing to edit"),
    (["--replace", "red=blue", "--preserve", "red"], "both edited and preserved"),
    (["--replace", "red=blue", "--model", "toy"], "has no cross-attention"),
    (["--load-edit", "missing.safetensors"], "No concept edit file"),
])
def test_errors_are_one_sentence_and_write_nothing(text_registry, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    model = [] if "--model" in argv else ["--model", "toy-text"]
    assert main(["concept", *model, *argv, "-o", "x.png", "--save-edit", "e.safetensors"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "e.safetensors").exists()
