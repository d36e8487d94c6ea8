"""``python -m studio``: help everywhere, models, generate and edit on a tiny registered family."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from studio.cli import build_parser, main


def _subcommands(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            yield from action.choices.items()


def test_help_everywhere(capsys):
    stack = [("", build_parser())]
    seen = 0
    while stack:
        prefix, parser = stack.pop()
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out
        seen += 1
        stack += [(f"{prefix} {name}", sub) for name, sub in _subcommands(parser)]
    assert seen >= 4


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "studio", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "generate" in result.stdout


def test_models_lists_builtins(toy_registry, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "not installed: pip install toy-extra" in out


def test_generate_writes_an_image_and_names_the_device(toy_registry, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["generate", "--model", "toy", "--seed", "4", "-o", str(out)]) == 0
    assert "on cpu (float32)" in capsys.readouterr().err
    assert Image.open(out).size == (32, 32)


def test_edit_changes_the_image(toy_registry, tmp_path):
    plain, edited = tmp_path / "a.png", tmp_path / "b.png"
    main(["generate", "--model", "toy", "--seed", "4", "-o", str(plain)])
    assert main(["edit", "--model", "toy", "--seed", "4", "--unit", "blocks.0:1=off", "--unit", "blocks.1:2=x3",
                 "-o", str(edited)]) == 0
    a, b = (np.asarray(Image.open(p), dtype=np.int16) for p in (plain, edited))
    assert np.abs(a - b).max() > 0


def test_local_edit_stays_inside_the_mask(toy_registry, tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255  # left half, twice the image size (same aspect ratio: resized with a note)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    plain, edited = tmp_path / "a.png", tmp_path / "b.png"
    main(["generate", "--model", "toy", "--seed", "4", "-o", str(plain)])
    assert main(["edit", "--model", "toy", "--seed", "4", "--unit", "blocks.2:0=off", "--unit", "blocks.2:1=off",
                 "--mask", str(tmp_path / "mask.png"), "--local", "-o", str(edited)]) == 0
    diff = np.abs(np.asarray(Image.open(plain), np.int16) - np.asarray(Image.open(edited), np.int16)).sum(-1)
    assert diff[:, :16].sum() > 0 and diff[:, 17:].sum() == 0


@pytest.mark.parametrize("argv,message", [
    (["edit", "--model", "toy", "--unit", "blocks.0:99=off", "-o", "x.png"], "units 0..31"),
    (["edit", "--model", "toy", "--unit", "nolayer:1=off", "-o", "x.png"], "has no layer"),
    (["edit", "--model", "toy", "--unit", "blocks.0=off", "-o", "x.png"], "LAYER:INDEX=VALUE"),
    (["edit", "--model", "toy", "--unit", "blocks.0:1=off", "--local", "-o", "x.png"], "--local needs --mask"),
    (["generate", "--model", "nothing-here", "-o", "x.png"], "No model named"),
])
def test_errors_are_one_sentence_and_exit_2(toy_registry, capsys, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()
