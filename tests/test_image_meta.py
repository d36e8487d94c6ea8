"""PNG text chunks: an exported image keeps the seed, prompt, model and edits that made it, and gives them back."""
from __future__ import annotations

import pytest
import torch
from PIL import Image, PngImagePlugin

from models.base import Sample
from studio.core.hooks import UnitEdit
from studio.image_meta import ImageMeta, ImageMetaError, read_png_meta, save_png_with_meta
from studio.reference import ModelReference


def _meta() -> ImageMeta:
    mask = torch.zeros(8, 12)
    mask[2:5, 3:9] = 1
    return ImageMeta(ModelReference("rooms", "rooms", "Rooms", "ab" * 32), Sample(7, "a red lamp", {"steps": 4}),
                     [UnitEdit("blocks.2", 17, "off"), UnitEdit("blocks.2", 4, "scale", 2.5)], True, mask,
                     None, "blocks.2")


def test_round_trip_keeps_everything_and_the_full_resolution(tmp_path):
    image = torch.rand(3, 8, 12)
    path = save_png_with_meta(image, tmp_path / "out", _meta())
    assert path.suffix == ".png"
    with Image.open(path) as png:
        assert png.size == (12, 8)
        parameters = png.text["parameters"]
    assert parameters.splitlines()[0] == "a red lamp"
    assert "Seed: 7" in parameters and "Model: Rooms" in parameters
    assert "blocks.2:17=off blocks.2:4=x2.5" in parameters
    back = read_png_meta(path)
    assert back.sample == Sample(7, "a red lamp", {"steps": 4})
    assert back.edits == _meta().edits and back.local and back.layer == "blocks.2"
    assert back.model == _meta().model
    assert torch.equal(back.mask, _meta().mask)
    session = back.as_session()
    assert session.model.source == "rooms" and session.unit_edits == back.edits and session.ui["local"]


def test_another_tools_parameters_give_seed_and_prompt(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat on a sofa\nwith a hat\nNegative prompt: blurry\n"
                                "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 12345, Size: 512x512")
    Image.new("RGB", (4, 4)).save(tmp_path / "sd.png", pnginfo=info)
    meta = read_png_meta(tmp_path / "sd.png")
    assert meta.sample == Sample(12345, "a cat on a sofa\nwith a hat") and meta.model is None and not meta.edits


def test_png_without_settings_is_one_sentence(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(ImageMetaError, match="holds no seed"):
        read_png_meta(tmp_path / "plain.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ImageMetaError, match="not a readable image"):
        read_png_meta(tmp_path / "junk.png")


def test_a_long_option_stays_out_of_the_parameters_line_and_in_the_recipe(tmp_path):
    latent = [0.125] * 22  # a Rooms latent found by inverting an image: too long for a front end's line
    meta = ImageMeta(ModelReference("rooms", "rooms", "Rooms", "ab" * 32), Sample(0, "a red lamp",
                                                                                  {"steps": 4, "latent": latent}))
    assert "Steps: 4" in meta.parameters() and "Latent" not in meta.parameters()
    path = save_png_with_meta(torch.rand(3, 8, 8), tmp_path / "mine.png", meta)
    assert read_png_meta(path).sample.option("latent") == latent
