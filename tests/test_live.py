"""studio/live.py: slider frames re-run only the layers after the edit, match a full render, and keep one hook."""
from __future__ import annotations

import pytest
import torch

from studio.core.errors import StudioError, UnsupportedOperation
from studio.core.hooks import UnitEdit, count_hooks
from studio.live import LiveRenderer, LiveRequest, Mailbox, unit_activation, unit_off_images


def full_render(gen, sample, edits, mask=None):
    with torch.inference_mode(), gen.editor() as editor:
        editor.set(edits, mask=mask)
        return gen.render([sample])


def test_partial_frames_equal_full_renders_and_reuse_the_cached_activation(toy):
    live = LiveRenderer(toy)
    sample = toy.sample(3)
    for i, value in enumerate((0.0, 0.5, 2.5, -1.0)):
        edits = [UnitEdit("blocks.1", 5, "scale", value), UnitEdit("blocks.2", 2, "off")]
        image, layer = live.render(sample, edits)
        assert layer == "blocks.1"  # the earliest edited layer
        assert torch.allclose(image, full_render(toy, sample, edits), atol=1e-6)
        assert live.cache_hits == i  # traced once, then reused for every slider value
    live.release()
    assert count_hooks(toy.module) == 0


def test_hooks_are_registered_once_per_edited_layer(toy):
    live = LiveRenderer(toy)
    sample = toy.sample(0)
    for value in (1.5, 2.0, 2.5):
        live.render(sample, [UnitEdit("blocks.0", 1, "scale", value), UnitEdit("blocks.2", 3, "scale", value)])
        assert count_hooks(toy.module) == 2
    live.render(sample, [])  # no edits: the hooks stay, and do nothing
    assert count_hooks(toy.module) == 2
    live.close()
    assert count_hooks(toy.module) == 0


def test_a_new_sample_or_layer_retraces(toy):
    live = LiveRenderer(toy)
    a, b = toy.sample(1), toy.sample(2)
    edits = [UnitEdit("blocks.1", 0, "off")]
    first, _ = live.render(a, edits)
    second, _ = live.render(b, edits)
    assert not torch.allclose(first, second)
    assert torch.allclose(second, full_render(toy, b, edits), atol=1e-6)
    edits = [UnitEdit("blocks.0", 0, "off")]
    third, layer = live.render(b, edits)
    assert layer == "blocks.0" and torch.allclose(third, full_render(toy, b, edits), atol=1e-6)
    assert live.cache_hits == 0


def test_local_edits_follow_the_mask(toy):
    live = LiveRenderer(toy)
    sample = toy.sample(4)
    mask = torch.zeros(32, 32)
    mask[:, :16] = 1.0
    edits = [UnitEdit("blocks.2", u, "off", local=True) for u in range(8)]
    image, _ = live.render(sample, edits, mask)
    original = full_render(toy, sample, [])
    assert torch.allclose(image, full_render(toy, sample, edits, mask), atol=1e-6)
    assert torch.allclose(image[..., 16:], original[..., 16:], atol=1e-6)  # last layer: nothing leaks outside
    assert (image[..., :16] - original[..., :16]).abs().max() > 1e-3


def test_invalidate_after_the_weights_change(toy):
    live = LiveRenderer(toy)
    sample = toy.sample(5)
    edits = [UnitEdit("blocks.1", 2, "scale", 2.0)]
    live.render(sample, edits)
    with torch.no_grad():
        toy.module.blocks[0].conv.weight.mul_(0.5)  # what a concept edit or a session restore does
    live.invalidate()
    image, _ = live.render(sample, edits)
    assert torch.allclose(image, full_render(toy, sample, edits), atol=1e-6)


def test_frames_carry_the_original_and_how_they_were_made(toy):
    live = LiveRenderer(toy)
    sample = toy.sample(6)
    plain = live.frame(LiveRequest(sample, stamp=1))
    assert not plain.partial and plain.image.shape == (3, 32, 32)
    edited = live.frame(LiveRequest(sample, (UnitEdit("blocks.1", 3, "off"),), stamp=2, original=True))
    assert edited.partial and edited.layer == "blocks.1" and edited.stamp == 2
    assert torch.equal(edited.original, plain.image)
    assert not torch.equal(edited.image, plain.image)


def test_an_edit_on_a_unit_that_does_not_exist_is_one_sentence_and_leaves_no_hook(toy):
    live = LiveRenderer(toy)
    with pytest.raises(StudioError, match="out of range"):
        live.render(toy.sample(0), [UnitEdit("blocks.1", 99, "off")])
    live.release()
    assert count_hooks(toy.module) == 0


def test_the_mailbox_keeps_only_the_newest_request(toy):
    box = Mailbox()
    sample = toy.sample(0)
    stamps = [box.post(LiveRequest(sample, (UnitEdit("blocks.1", 1, "scale", v),))) for v in (1.0, 1.5, 2.0)]
    assert stamps == [1, 2, 3] and box.stamp == 3
    newest = box.take()
    assert newest.stamp == 3 and newest.edits[0].value == 2.0
    assert box.take() is None


def test_switched_off_thumbnails_match_single_edits(toy):
    sample = toy.sample(7)
    images = unit_off_images(toy, sample, "blocks.1", [4, 0, 9], chunk=2)
    assert images.shape == (3, 3, 32, 32)
    for image, unit in zip(images, [4, 0, 9]):
        assert torch.allclose(image, full_render(toy, sample, [UnitEdit("blocks.1", unit, "off")])[0], atol=1e-6)


def test_activation_maps_are_image_sized_in_unit_range(toy):
    values = unit_activation(toy, toy.sample(1), "blocks.0", 3)
    assert values.shape == (32, 32) and float(values.min()) >= 0 and float(values.max()) <= 1
    with pytest.raises(UnsupportedOperation):
        unit_activation(toy, toy.sample(1), "fc", 3)
    with pytest.raises(StudioError, match="out of range"):
        unit_activation(toy, toy.sample(1), "blocks.0", 32)


def test_the_slider_benchmark_reports_partial_and_full_frames(toy_registry, capsys):
    import json

    from studio.cli import main

    assert main(["bench", "slider", "--model", "toy", "--device", "cpu", "--frames", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"partial_ms", "full_ms", "speedup", "partial_from", "max_abs_diff"}
    assert result["partial_from"] == result["layer"] == "blocks.1" and result["frames"] == 4
    assert result["max_abs_diff"] < 1e-5 and result["partial_ms"] > 0 and result["full_ms"] > 0


class _PreviewToy:
    """The toy, plus a cheap preview that renders at half size (as diffusion previews do)."""

    @staticmethod
    def make():
        from dataclasses import replace

        from tests.toy import ToyGenerator

        class PreviewToy(ToyGenerator):
            def preview_options(self) -> dict:
                return {"quick": True}

            def layers(self):  # like diffusion: every frame is a full render
                return [replace(info, partial=False) for info in super().layers()]

            def render(self, samples):
                images = super().render(samples)
                if samples[0].option("quick"):
                    return torch.nn.functional.avg_pool2d(images, 2)
                return images

        return PreviewToy()


def test_preview_frames_use_the_models_preview_options_at_full_size():
    gen = _PreviewToy.make()
    live = LiveRenderer(gen)
    sample = gen.sample(2)
    edits = (UnitEdit("blocks.1", 3, "off"),)
    quick = live.frame(LiveRequest(sample, edits, original=True, preview=True))
    full = live.frame(LiveRequest(sample, edits, original=True))
    assert quick.preview and not full.preview
    assert quick.image.shape == full.image.shape == (3, 32, 32)  # upscaled for the canvas and the mask
    assert quick.original.shape == (3, 32, 32)
    assert not torch.equal(quick.image, full.image)
    assert torch.allclose(full.image, full_render(gen, sample, edits)[0], atol=1e-6)
    live.release()


def test_models_without_preview_options_render_previews_at_full_quality(toy):
    live = LiveRenderer(toy)
    frame = live.frame(LiveRequest(toy.sample(1), (UnitEdit("blocks.1", 3, "off"),), preview=True))
    assert not frame.preview
    assert torch.allclose(frame.image, full_render(toy, toy.sample(1), [UnitEdit("blocks.1", 3, "off")])[0],
                          atol=1e-6)
    live.release()
