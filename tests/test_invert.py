"""Your own image inverted into the model: bad inputs, reconstructions on small real networks, the JSON round trip,
cancel and continue, and the CLI's --image."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import open_model
from studio.cli import main
from studio.core.errors import Cancelled, StudioError
from studio.invert import Inversion, InvertError, invert, prepare_image, psnr
from tests.faces_files import tiny_dcgan, write_weights_tar


def _picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def test_a_tall_image_can_be_padded_instead():
    tensor, note = prepare_image(_picture(120, 60), (32, 32), fit="pad")
    assert tensor.shape == (3, 32, 32) and "padded left and right" in note
    same, plain = prepare_image(_picture(40, 40), (32, 32))
    assert plain == "" and same.shape == (3, 32, 32)


@pytest.mark.parametrize("make, words", [
    (lambda path: np.full((64, 64, 3), 0.5, np.float32), "one flat colour"),
    (lambda path: _picture(8, 8), "only 8x8 pixels"),
])
def test_flat_and_tiny_images_are_refused_in_one_sentence(make, words):
    with pytest.raises(InvertError, match=words) as caught:
        prepare_image(make(None), (64, 64))
    assert str(caught.value).count(". ") == 0 and isinstance(caught.value, StudioError)


def test_unreadable_and_missing_files_are_refused(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a picture")
    with pytest.raises(InvertError, match="broken.png is not a readable image"):
        prepare_image(bad, (64, 64))
    with pytest.raises(InvertError, match="No image file"):
        prepare_image(tmp_path / "absent.png", (64, 64))
    good = tmp_path / "photo.png"
    Image.fromarray((_picture(48, 48) * 255).astype(np.uint8)).save(good)
    tensor, _ = prepare_image(good, (32, 32))
    assert tensor.shape == (3, 32, 32)


# -- reconstructions ----------------------------------------------------------------------------------------------
def test_a_tiny_stylegan_reproduces_an_image_it_made(sg2, sg2_target, sg2_inversion):
    inv, previews = sg2_inversion
    start = sg2.inversion_space().starts[0]
    with torch.inference_mode():
        assert psnr(sg2.render([start])[0], sg2_target) < 15  # the mean w is far from the target
        rendered = sg2.render([inv.sample])[0]
    assert inv.psnr > 30 and abs(psnr(rendered, sg2_target) - inv.psnr) < 1e-6
    assert inv.losses[-1] < inv.losses[0] / 20  # the loss went down
    assert "ws" in inv.sample.options and inv.steps == 150  # W, then W+
    assert [step for step, _ in previews][:3] == [10, 20, 30] and previews[0][1] == (3, 32, 32)


def test_rooms_finds_the_caption_and_the_scene_of_its_own_render():
    gen = open_model("rooms", device="cpu")
    caption = "a bedroom with green walls, a bed and two lamps"
    with torch.inference_mode():
        target = gen.render([gen.sample(7, caption)])[0].clone()
    space = gen.inversion_space()
    # every caption, with one scene draw each (not two), and one coarse sweep: the search, made cheaper
    cheaper = replace(space, starts=space.starts[::2], keep=1, sweeps=1, coordinates=(-0.6, 0.0, 0.6))
    inv = invert(gen, target, steps=30, space=cheaper)
    assert inv.caption == caption and "green walls" in inv.note
    assert inv.psnr > 28 and len(inv.sample.options["latent"]) == 22


def test_the_json_round_trip_renders_identically(sg2, sg2_target, sg2_inversion):
    inv, _ = sg2_inversion
    data = json.loads(json.dumps(inv.to_json()))
    back = Inversion.from_json(data, inv.to_tensors())
    with torch.inference_mode():
        assert torch.equal(sg2.render([back.sample]), sg2.render([inv.sample]))
    assert back.psnr == pytest.approx(inv.psnr, abs=1e-4) and back.steps == inv.steps
    assert torch.equal(back.target, sg2_target)
    with pytest.raises(InvertError, match="cannot be read"):
        Inversion.from_json({"format": "something else"})


def test_cancel_keeps_what_was_found_and_a_refusing_progress_raises(sg2, sg2_target):
    calls = []
    inv = invert(sg2, sg2_target, steps=50, cancel=lambda: len(calls.append(1) or calls) > 12)
    assert inv.stopped and inv.steps == 12 and "stopped after 12 steps" in inv.note
    with pytest.raises(Cancelled):
        invert(sg2, sg2_target, steps=50, progress=lambda update: update.done < 5)


def test_continuing_adds_steps_and_does_not_lose_quality(sg2, sg2_inversion):
    inv, _ = sg2_inversion
    more = invert(sg2, None, steps=30, start=inv)
    assert more.steps == inv.steps + 30 and len(more.losses) == len(inv.losses) + 30
    assert more.psnr > inv.psnr - 0.5
    with pytest.raises(InvertError, match="no image"):
        invert(sg2, None, steps=5)


def test_the_cli_renders_an_inverted_picture(sg2, sg2_target, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray((sg2_target.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(photo)
    out = tmp_path / "out.png"
    assert main(["generate", "--model", sg2.source, "--image", str(photo), "--invert-steps", "150",
                 "-o", str(out)]) == 0
    assert "PSNR" in capsys.readouterr().err
    made = np.asarray(Image.open(out), np.float32) / 255
    assert psnr(torch.from_numpy(made), sg2_target.permute(1, 2, 0)) > 25


def test_a_tiny_dcgan_reproduces_an_image_it_made(tmp_path):
    gen = open_model(str(write_weights_tar(tmp_path / "weights.tar", tiny_dcgan())), device="cpu")
    with torch.inference_mode():
        target = gen.render([gen.sample(11)])[0].clone()
        assert max(psnr(gen.render([s])[0], target) for s in gen.inversion_space().starts) < 15
    inv = invert(gen, target, steps=100)
    assert inv.psnr > 35 and "z" in inv.sample.options


def test_rank_refuses_an_image_and_seeds_together(tmp_path, capsys):
    assert main(["rank", "--image", str(tmp_path / "photo.png"), "--seeds", "1,2", "--mask", "m.png",
                 "--layer", "blocks.1"]) != 0
    assert "--image or --seeds" in capsys.readouterr().err
