"""Class, truncation and noise from the command line and in sessions, for the families that declare them.

The checkpoint is a class-conditional StyleGAN2-ADA pickle written as stylegan2-ada-pytorch's training_loop.py
saves snapshots (see tests/stylegan_files.py); --class/--trunc/--noise-mode follow its generate.py.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import open_model
from studio.cli import build_parser, main
from studio.core.errors import StudioError
from studio.ranking import rank_units
from studio.session import Session, load_session, save_session
from tests.stylegan_files import tiny_net, write_nvidia_pickle


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cond")
    path = write_nvidia_pickle(folder / "cond.pkl", tiny_net("ada"), marker=folder / "ran", layout="ada")
    return path, open_model(str(path), device="cpu")


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float32) / 255


def _expected(gen, **options) -> np.ndarray:
    with torch.inference_mode():
        return gen.render([gen.sample(4, **options)])[0].permute(1, 2, 0).numpy()


def _commands_with_seeds():
    for action in build_parser()._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, parser in action.choices.items():
                flags = {f for a in parser._actions for f in a.option_strings}
                if "--seed" in flags:
                    yield name, flags


def test_every_command_that_takes_a_seed_takes_the_sample_options():
    found = dict(_commands_with_seeds())
    assert {"generate", "edit", "rank", "concept", "apply"} <= set(found)
    for name, flags in found.items():
        assert {"--class", "--psi", "--noise-mode"} <= flags, name


def test_generate_and_edit_render_the_class_psi_and_noise_asked_for(conditional, tmp_path):
    path, gen = conditional
    options = {"class": 2, "psi": 0.4, "noise": "random"}
    out, edited = tmp_path / "g.png", tmp_path / "e.png"
    args = ["--model", str(path), "--device", "cpu", "--seed", "4", "--class", "2", "--psi", "0.4",
            "--noise-mode", "random"]
    assert main(["generate", *args, "-o", str(out)]) == 0
    assert main(["edit", *args, "--unit", "synthesis.b8.conv1:0=x1", "-o", str(edited)]) == 0
    expected = _expected(gen, **options)
    for image in (_png(out), _png(edited)):
        assert np.abs(image - expected).max() <= 1 / 255 + 1e-6
        assert np.abs(image - _expected(gen, **{**options, "class": 0})).max() > 0.02  # the class counts
        assert np.abs(image - _expected(gen, **{**options, "psi": 0.7})).max() > 0.02  # so does psi
        assert np.abs(image - _expected(gen, **{**options, "noise": "const"})).max() > 0.02  # and noise


def test_rank_ranks_the_samples_with_their_options(conditional, tmp_path, capsys):
    path, gen = conditional
    mask = np.zeros((16, 16), np.uint8)
    mask[4:10, 4:10] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["rank", "--model", str(path), "--device", "cpu", "--seeds", "4,5", "--class", "1", "--psi", "0.5",
                 "--mask", str(tmp_path / "mask.png"), "--layer", "synthesis.b8.conv0", "--top", "0",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    samples = [gen.sample(s, **{"class": 1, "psi": 0.5}) for s in (4, 5)]
    truth = rank_units(gen, samples, torch.as_tensor(mask > 0, dtype=torch.float32), "synthesis.b8.conv0")
    default = rank_units(gen, [gen.sample(s) for s in (4, 5)], torch.as_tensor(mask > 0, dtype=torch.float32),
                         "synthesis.b8.conv0")
    scores = {u["unit"]: u["score"] for u in printed["units"]}
    assert scores == pytest.approx({u.unit: u.score for u in truth.units}, abs=1e-6)
    assert scores != pytest.approx({u.unit: u.score for u in default.units}, abs=1e-6)


def test_options_a_model_does_not_take_or_out_of_range_are_one_sentence(conditional, toy_registry, tmp_path,
                                                                         capsys):
    path, _ = conditional
    out = str(tmp_path / "x.png")
    cases = [(["--model", "toy", "--psi", "0.5"], r"toy \(toy\) does not take --psi; it takes no sample options\."),
             (["--model", str(path), "--device", "cpu", "--class", "7"],
              r"--class 7 is out of range: this model takes 0 to 2\."),
             (["--model", str(path), "--device", "cpu", "--noise-mode", "loud"],
              r"--noise-mode loud is unknown: use const, random, none\.")]
    for args, sentence in cases:
        assert main(["generate", *args, "-o", out]) == 2
        assert re.search(r"^error: " + sentence + "$", capsys.readouterr().err, re.M), args
    assert not (tmp_path / "x.png").exists()


def test_a_session_keeps_class_psi_and_noise(conditional, tmp_path):
    _, gen = conditional
    sample = gen.sample(4, **{"class": 2, "psi": 0.4, "noise": "random"})
    save_session(Session.capture(gen, samples=[sample]), tmp_path / "work.nstudio")
    again = load_session(tmp_path / "work.nstudio").samples[0]
    assert again == sample and again.options == {"class": 2, "psi": 0.4, "noise": "random"}


def test_the_family_declares_its_sample_options(conditional, tmp_path):
    _, gen = conditional
    declared = {o.name: o for o in gen.sample_options()}
    assert set(declared) == {"class", "psi", "noise"}
    assert (declared["class"].minimum, declared["class"].maximum) == (0, 2)
    assert declared["psi"].default == 0.7 and declared["noise"].choices == ("const", "random", "none")
    plain = open_model(str(write_nvidia_pickle(tmp_path / "u.pkl", tiny_net("sg2"), marker=tmp_path / "ran")),
                       device="cpu")
    assert [o.name for o in plain.sample_options()] == ["psi", "noise"]  # no class picker without classes
