"""The hook engine on small real networks."""
from __future__ import annotations

import pytest
import torch

from studio.ablation import BatchAblation
from studio.core.errors import LayerNotFound, StudioError
from studio.core.hooks import Editor, StepClock, Trace, UnitEdit, count_hooks, edit_activation, get_module, resize_mask


@pytest.fixture
def samples(toy):
    return [toy.sample(1), toy.sample(2)]


def test_trace_records_layers_and_stops_early(toy, samples):
    calls = []
    handle = toy.module.to_rgb.register_forward_hook(lambda *a: calls.append(1))
    with Trace(toy.module, ["blocks.0", "blocks.1"], stop=True) as trace:
        toy.render(samples)
    handle.remove()
    assert trace["blocks.0"].shape == (2, 32, 8, 8)
    assert trace["blocks.1"].shape == (2, 16, 16, 16)
    assert calls == []  # the layers after the last traced one never ran
    assert count_hooks(toy.module) == 0


def test_unknown_layer_names_the_nearest(toy):
    with pytest.raises(LayerNotFound, match="blocks.1"):
        get_module(toy.module, "block.1")
    with pytest.raises(LayerNotFound, match="Nearest"):
        toy.layer("blocks.7")


@pytest.mark.parametrize("op,value", [("off", 0.0), ("set", 0.7), ("scale", 2.5), ("scale", -1.0)])
def test_unit_edits_change_only_that_unit(toy, samples, op, value):
    base = toy.trace(samples, ["blocks.1"])["blocks.1"]
    with toy.editor() as editor:
        editor.set([UnitEdit("blocks.1", 3, op, value)])
        with Trace(toy.module, ["blocks.1"]) as trace:
            toy.render(samples)
    edited = trace["blocks.1"]
    expected = {"off": torch.zeros_like(base[:, 3]), "set": torch.full_like(base[:, 3], value),
                "scale": base[:, 3] * value}[op]
    torch.testing.assert_close(edited[:, 3], expected)
    others = [c for c in range(16) if c != 3]
    torch.testing.assert_close(edited[:, others], base[:, others])
    assert count_hooks(toy.module) == 0


def test_edit_changes_the_image_and_identity_does_not(toy, samples):
    with torch.inference_mode():
        base = toy.render(samples)
        with toy.editor() as editor:
            editor.set([UnitEdit("blocks.0", 5, "scale", 1.0)])
            same = toy.render(samples)
            editor.set([UnitEdit("blocks.0", 5, "off")])
            changed = toy.render(samples)
    torch.testing.assert_close(same, base)
    assert (changed - base).abs().max() > 1e-3


def test_slider_changes_tensor_in_place_without_re_registering(toy, samples):
    with toy.editor() as editor:
        layer = editor.layer("blocks.1")
        handle = layer.handle
        frames = []
        for value in (0.0, 1.0, 2.0):
            layer.set_unit(2, "scale", value)
            frames.append(toy.render(samples))
            assert layer.handle is handle and count_hooks(toy.module) == 1
    assert not torch.equal(frames[0], frames[2])
    assert count_hooks(toy.module) == 0


def test_masked_edit_stays_inside_the_mask_at_layer_resolution(toy, samples):
    mask = torch.zeros(32, 32)
    mask[:, :16] = 1.0  # left half of the image
    base = toy.trace(samples, ["blocks.1"])["blocks.1"]
    with toy.editor() as editor:
        editor.set([UnitEdit("blocks.1", 4, "off", local=True)], mask=mask)
        edited = toy.trace(samples, ["blocks.1"])["blocks.1"]
    # the mask was resized to the layer's 16x16: left 8 columns off, right 8 unchanged
    assert torch.all(edited[:, 4, :, :8] == 0)
    torch.testing.assert_close(edited[:, 4, :, 8:], base[:, 4, :, 8:])


def test_local_and_global_units_mix_in_one_layer():
    x = torch.randn(1, 2, 4, 4)
    mask = torch.zeros(4, 4)
    mask[:2] = 1
    out = edit_activation(x, torch.tensor([0.0, 0.0]), torch.zeros(2), torch.tensor([True, False]), mask)
    assert torch.all(out[0, 0, :2] == 0) and torch.equal(out[0, 0, 2:], x[0, 0, 2:])
    assert torch.all(out[0, 1] == 0)


def test_resize_mask_shrinks_by_area_average():
    mask = torch.zeros(4, 4)
    mask[0, 0] = 1.0
    assert resize_mask(mask, (2, 2))[0, 0, 0, 0].item() == pytest.approx(0.25)


def test_partial_rerender_equals_full_render_with_the_same_edit(toy, samples):
    edits = [UnitEdit("blocks.0", 1, "scale", 3.0), UnitEdit("blocks.1", 7, "off")]
    with torch.inference_mode(), toy.editor() as editor:
        editor.set(edits)
        full = toy.render(samples)
        cached = toy.trace(samples, ["blocks.0"], before_edits=True)["blocks.0"]
        partial = toy.forward_from("blocks.0", editor.layer("blocks.0").apply(cached), samples)
    torch.testing.assert_close(partial, full, rtol=0, atol=1e-6)
    with torch.inference_mode():
        plain = toy.render(samples)
        act = toy.trace(samples, ["blocks.1"])["blocks.1"]
        torch.testing.assert_close(toy.forward_from("blocks.1", act, samples), plain, rtol=0, atol=0)


def test_the_batch_ablation_switches_off_a_different_unit_in_each_image(toy):
    sample = toy.sample(3)
    hook = BatchAblation(get_module(toy.module, "blocks.1"), None, None)
    hook.gain = torch.ones(3, 16)
    hook.gain[1, 0] = 0
    hook.gain[2, 5] = 0
    hook.offset = torch.zeros_like(hook.gain)
    with torch.inference_mode():
        with hook:
            batch = toy.render([sample] * 3)
        expected = [toy.render([sample])[0]]
        for unit in (0, 5):
            with toy.editor() as editor:
                editor.set([UnitEdit("blocks.1", unit, "off")])
                expected.append(toy.render([sample])[0])
    torch.testing.assert_close(batch, torch.stack(expected), rtol=0, atol=1e-6)
    assert not torch.allclose(batch[1], batch[2])


def test_step_window_applies_only_inside_it(toy, samples):
    clock = StepClock()
    with Editor(toy.module, {"blocks.1": 16}, clock) as editor:
        editor.set([UnitEdit("blocks.1", 0, "off", steps=(2, 4))])
        outputs = {}
        for step in range(5):
            clock.step = step
            outputs[step] = toy.trace(samples, ["blocks.1"])["blocks.1"][:, 0]
    assert [bool(torch.all(outputs[s] == 0)) for s in range(5)] == [False, False, True, True, False]


def test_no_hook_is_left_after_an_exception(toy, samples):
    with pytest.raises(RuntimeError, match="boom"):
        with toy.editor() as editor:
            editor.set([UnitEdit("blocks.0", 1, "off"), UnitEdit("blocks.2", 1, "off")])
            assert count_hooks(toy.module) == 2
            raise RuntimeError("boom")
    assert count_hooks(toy.module) == 0
    with pytest.raises(RuntimeError):
        with Trace(toy.module, ["blocks.0", "blocks.1"]), toy.editor() as editor:
            editor.set([UnitEdit("blocks.1", 1, "off")])
            toy.module(torch.randn(2, 3))  # wrong latent width: the forward pass itself fails
    assert count_hooks(toy.module) == 0


def test_bad_edits_are_refused_clearly(toy):
    with pytest.raises(StudioError, match="out of range"):
        with toy.editor() as editor:
            editor.set([UnitEdit("blocks.1", 99, "off")])
    with pytest.raises(StudioError, match="Unknown unit edit"):
        UnitEdit("blocks.1", 0, "double")
    with pytest.raises(StudioError, match="empty"):
        UnitEdit("blocks.1", 0, "off", steps=(5, 5))
    assert count_hooks(toy.module) == 0


def test_unit_edit_json_round_trip():
    edit = UnitEdit("blocks.1", 3, "set", 0.5, True, (1, 4))
    assert UnitEdit.from_json(edit.to_json()) == edit


def test_box_crop_reads_what_place_pattern_puts_back():
    from studio.core.hooks import box_crop, place_pattern

    box = (0.25, 0.125, 0.75, 0.625)  # rows 4-12, columns 2-10 of a 16 x 16 grid
    pattern = torch.randn(3, 4, 4)
    placed = place_pattern(pattern, box, (16, 16))[None]  # (1, 3, 16, 16)
    assert box_crop(placed, box, (4, 4)).shape == (1, 3, 4, 4)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    smooth = torch.stack([ys, xs, ys * xs / 16])[None]  # bilinear in each pixel: sampled and placed back exactly
    fine = box_crop(smooth, box, (64, 64))[0]
    back = place_pattern(fine, box, (16, 16))
    torch.testing.assert_close(back[:, 4:12, 2:10], smooth[0, :, 4:12, 2:10], atol=0.02, rtol=0)
    two = box_crop(torch.cat([smooth, 2 * smooth]), box, (8, 8))  # a batch crops row by row
    torch.testing.assert_close(two[1], 2 * two[0])
