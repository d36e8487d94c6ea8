"""The knob the app learns from one quick mask per example (studio.knob_regions.learn_app_knob): its self-found core,
the knob it makes on the default model, the command line and benchmark that run the same function, and the region
the Seeds tab proposes for a knob on a new seed (studio.knob_regions.propose_region): a box sized like the boxes
painted on the knob's examples, since the knob's targets are patterns placed on the box."""
from __future__ import annotations

import json
import statistics
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.base import Sample
from studio.bench import rooms as bench
from studio import knob_regions as kr
from studio.cli import main
from studio.core.hooks import mask_box
from studio.core.rooms import world
from studio.exported import open_model
from studio.knob_regions import CORE, app_layers, core_box, learn_app_knob
from studio.knobs import Example, KnobEdit, KnobError, learn_knob, load_knob, save_knob
from tests.rooms_knob import PRESENT, WANTED, app_knob, quick_box, scene_of
from tests.toy import ToyGenerator

HELD_OUT = (1, 8)  # two lit lamps each; not among the examples
#: Held-out seeds where the older proposal (the strong runs plus a 15 % margin) missed: the app's knob applied on it
#: left the lamp lit or erased it; on the box sized like the examples it switches exactly that lamp off.
PROPOSE_SEEDS = (15, 18, 21, 22)


@pytest.fixture(scope="module")
def rooms():
    torch.set_num_threads(1)
    return open_model("rooms", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def knob(rooms):
    return app_knob(rooms)


def test_the_core_is_the_smallest_box_that_holds_the_difference():
    image = torch.zeros(3, 64, 64)
    lit = image.clone()
    lit[:, 20:28, 40:48] = 1.0  # the two states differ in one 8 x 8 patch only
    mask = torch.zeros(64, 64)
    mask[16:48, 16:64] = 1  # a quick box round it: rows 16-48, columns 16-64
    y0, x0, y1, x1 = core_box([lit, lit], [mask, mask], [image, image], [mask, mask], share=0.9, grid=8)
    # the patch lies at rows 4/32-12/32 and columns 24/48-32/48 of the box (centre 0.25, 0.58): the core is a small
    # box round it
    assert y0 <= 0.25 <= y1 and x0 <= 28 / 48 <= x1
    assert (y1 - y0) * (x1 - x0) <= 0.25
    same = core_box([image], [mask], [image], [mask])
    assert same == (0.0, 0.0, 1.0, 1.0)  # no difference: the whole box


def test_the_app_knob_finds_its_core_on_the_default_model_and_switches_held_out_lamps_off(rooms, knob):
    main_layers, part_layers = app_layers(rooms)
    assert main_layers == ["blocks.0", "blocks.1", "blocks.2"] and part_layers == ["blocks.1", "blocks.2"]
    assert [r.name for r in knob.regions] == [CORE]
    y0, x0, y1, x1 = knob.regions[0].box
    assert 0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1 and (y1 - y0) * (x1 - x0) < 0.8  # a part, not the whole box
    assert all(CORE in ex.parts for ex in knob.examples["present"] + knob.examples["wanted"])
    for seed in HELD_OUT:
        sample, room = rooms.sample(seed), scene_of(rooms, seed)
        with torch.inference_mode(), rooms.editor() as editor:
            before = rooms.render([sample])[0].permute(1, 2, 0).numpy()
            editor.set_knobs([KnobEdit(knob, quick_box(rooms, seed), 1.0)])
            after = rooms.render([sample])[0].permute(1, 2, 0).numpy()
        assert [world.detect_lit(before, room, i) for i in range(2)] == [True, True]
        assert [world.detect_lit(after, room, i) for i in range(2)] == [False, True], seed  # the other lamp still lit
        assert world.detect_fields(after, room) == world.detect_fields(before, room), seed  # not erased


def test_examples_with_their_own_parts_keep_them_and_bad_examples_get_one_sentence(rooms):
    top = torch.zeros(128, 128)
    top[:64] = 1
    present = [Example(rooms.sample(s), quick_box(rooms, s), {"top": top * quick_box(rooms, s)}) for s in PRESENT[:2]]
    wanted = [Example(rooms.sample(s), quick_box(rooms, s), {"top": top * quick_box(rooms, s)}) for s in WANTED[:2]]
    assert [r.name for r in learn_app_knob(rooms, "k", present, wanted).regions] == ["top"]
    empty = [Example(rooms.sample(4), torch.zeros(128, 128))]
    with pytest.raises(KnobError, match="empty"):
        learn_app_knob(rooms, "k", present, empty)
    with pytest.raises(KnobError, match="at least one wanted"):
        learn_app_knob(rooms, "k", present, [])


def test_a_model_without_spatial_layers_gets_one_sentence():
    class Flat(ToyGenerator):
        def layers(self):
            return [info for info in super().layers() if info.size is None]

    toy = Flat()
    sample = Sample(seed=0)
    with pytest.raises(KnobError, match="no spatial layer"):
        learn_app_knob(toy, "k", [Example(sample, torch.ones(toy.resolution))],
                       [Example(sample, torch.ones(toy.resolution))])


def test_the_command_line_learns_the_app_knob(tmp_path, capsys, rooms):
    from PIL import Image

    args = []
    for flag, seeds in (("--present", PRESENT), ("--wanted", WANTED)):
        for s in seeds:
            path = tmp_path / f"{s}.png"
            Image.fromarray((quick_box(rooms, s).numpy() * 255).astype(np.uint8)).save(path)
            args += [flag, f"{s}:{path}"]
    out = tmp_path / "k.safetensors"
    assert main(["knob", "learn", "--model", "rooms", "--device", "cpu", "--name", "lamp off", "--app", *args,
                 "-o", str(out)]) == 0
    assert "region core:" in capsys.readouterr().out
    assert [r.name for r in load_knob(out).regions] == [CORE]


def test_the_benchmark_measures_the_app_knob_with_strokes(capsys):
    assert main(["bench", "rooms", "--model", "rooms", "--device", "cpu", "--seeds", "1", "--tuning-scenes", "--app",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    knob = data["methods"]["knob"]
    assert knob["learned_by"] == "studio.knob_regions.learn_app_knob" and set(knob["masks"]) == {"truth", "rough",
                                                                                                 "stroke"}
    for figures in knob["masks"].values():
        assert 0 <= figures["really_off"] <= 1 and figures["relight_psnr"] > 0
    assert data["met"] == bench.target_verdict(data) and data["met"]["lit_psnr"] == (data["lit_psnr"] >= 26.0)
    assert main(["bench", "rooms", "--model", "rooms", "--device", "cpu", "--seeds", "1", "--knob-from", "tuned",
                 "--example-masks", "stroke"]) == 2
    assert "Stroke masks" in capsys.readouterr().err


def test_it_switches_held_out_lamps_off_where_the_bare_defaults_do_not(rooms):
    examples = bench.knob_examples(rooms, masks="rough", part=None)  # 4 lit + 4 unlit tuning lamps, quick boxes
    scenes = bench.truth_scenes(rooms, 8)  # held-out rooms, none an example
    app = bench.app_benchmark(rooms, scenes, learn_app_knob(rooms, "lamp off", *examples), kinds=("rough",))
    bare = bench.app_benchmark(rooms, scenes, learn_knob(rooms, "lamp off", present=examples[0], wanted=examples[1]),
                               kinds=("rough",))
    app_rough, bare_rough = app["methods"]["knob"]["masks"]["rough"], bare["methods"]["knob"]["masks"]["rough"]
    assert app_rough["really_off"] >= 0.85 and app_rough["outside_change"] <= 0.005
    # shipped weights: 8 of 8 really off at 22.1 dB against the bare defaults' 6 of 8 at 17.4 dB (outside 0.007)
    assert app_rough["really_off"] >= bare_rough["really_off"] + 0.2
    assert app_rough["relight_psnr"] >= bare_rough["relight_psnr"] + 3.0


def test_a_quick_box_over_both_lamps_switches_one_off_and_leaves_the_other(rooms):
    """Held-out rooms 2000000010 and 2000000012 stand two lit lamps 0.26 apart: the quick box over one also covers
    most of the other's shade. The whole region pulls its side columns only as much as the examples changed there
    (``Knob.gain``), so the other lamp stays lit and unchanged (without that, it changed by 0.09 and 0.15)."""
    knob = bench.app_knob(rooms)
    for seed in (2000000010, 2000000012):
        scene = bench.truth_scenes(rooms, 1, seed)[0]
        assert scene.seed == seed
        room, model, ceiling = bench.model_and_ceiling(rooms, scene, [], [], [])
        mask = torch.from_numpy(bench.rough_mask(scene.region).astype(np.float32))
        lamps = world.truth(room, 128).masks
        covered = [j for j, lamp in enumerate(room.lamps) if lamp.lit and j != scene.lamp
                   and float(mask.numpy()[lamps[f"lamp{j}"]].mean()) > 0.5]
        assert covered  # the box covers most of another lit lamp
        with torch.inference_mode(), rooms.editor() as editor:
            editor.set_knobs([KnobEdit(knob, mask, 1.0)])
            edited = rooms.render([scene.sample])[0].permute(1, 2, 0).float().numpy()
        figures = bench.user_figures(model, edited, scene, room, ceiling)
        assert figures["really_off"] and all(figures["kept"]), (seed, figures)


def box_pixels(mask: torch.Tensor) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = mask_box(mask)
    h, w = mask.shape
    return round(y0 * h), round(x0 * w), round(y1 * h), round(x1 * w)


def test_example_size_is_the_median_box_of_the_example_masks_and_survives_a_file(rooms, knob, tmp_path):
    boxes = [box_pixels(ex.mask) for ex in knob.examples["present"] + knob.examples["wanted"]]
    expected = (statistics.median(b[2] - b[0] for b in boxes), statistics.median(b[3] - b[1] for b in boxes))
    assert kr.example_size(knob) == pytest.approx(expected)
    assert kr.example_size(load_knob(save_knob(knob, tmp_path / "lamp-off.safetensors"))) == pytest.approx(expected)
    assert kr.example_size(replace(knob, examples={"present": [], "wanted": []})) is None


def test_the_proposed_box_has_the_examples_size_shifted_inside_the_image(rooms, knob, monkeypatch):
    eh, ew = kr.example_size(knob)
    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")

    def spot(cy, cx, sy, sx):  # a strong spot whose run at SHARE_OF_PEAK is about 2.9 sy by 2.9 sx pixels
        return lambda *_: torch.exp(-((ys - cy) / sy) ** 2 / 2 - ((xs - cx) / sx) ** 2 / 2)

    monkeypatch.setattr(kr, "present_score", spot(60, 64, 8, 8))  # a wide spot: the width is not capped
    y0, x0, y1, x1 = box_pixels(kr.propose_region(rooms, knob, rooms.sample(12)))
    assert abs((y1 - y0) - eh) <= 1 and abs((x1 - x0) - ew) <= 1
    assert abs((y0 + y1) / 2 - 60.5) <= 1 and abs((x0 + x1) / 2 - 64.5) <= 1  # centred on the spot
    monkeypatch.setattr(kr, "present_score", spot(5, 122, 8, 12))  # in a corner: the same box, moved inside
    y0, x0, y1, x1 = box_pixels(kr.propose_region(rooms, knob, rooms.sample(12)))
    assert abs((y1 - y0) - eh) <= 1 and abs((x1 - x0) - ew) <= 1 and y0 == 0 and x1 == 128
    monkeypatch.setattr(kr, "present_score", spot(60, 64, 8, 2))  # a narrow spot: at most WIDTH_CAP times its run
    strong = kr.present_score()[60] >= kr.SHARE_OF_PEAK
    y0, x0, y1, x1 = box_pixels(kr.propose_region(rooms, knob, rooms.sample(12)))
    assert abs((y1 - y0) - eh) <= 1 and abs((x1 - x0) - kr.WIDTH_CAP * int(strong.sum())) <= 1


def test_the_proposed_box_on_the_model_has_the_examples_height(rooms, knob):
    eh, ew = kr.example_size(knob)
    for seed in PROPOSE_SEEDS:
        y0, x0, y1, x1 = box_pixels(kr.propose_region(rooms, knob, rooms.sample(seed)))
        assert abs((y1 - y0) - eh) <= 1 and x1 - x0 <= ew + 1, seed


def test_a_knob_without_examples_still_proposes_the_box_round_its_strong_spot(rooms, knob):
    bare = replace(knob, examples={"present": [], "wanted": []})
    for seed in PROPOSE_SEEDS[:2]:
        scene = scene_of(rooms, seed)
        region = kr.propose_region(rooms, bare, rooms.sample(seed)).numpy() > 0
        masks = world.truth(scene).masks
        cover = [float(region[masks[f"lamp{i}"]].mean()) for i in range(len(scene.lamps))]
        assert max(c for c, lamp in zip(cover, scene.lamps) if lamp.lit) >= 0.4, (seed, cover)


def test_the_app_knob_on_the_proposed_box_switches_exactly_that_lamp_off_on_held_out_seeds(rooms, knob):
    for seed in PROPOSE_SEEDS:
        sample, scene = rooms.sample(seed), scene_of(rooms, seed)
        masks = world.truth(scene).masks
        region = kr.propose_region(rooms, knob, sample)
        on = region.numpy() > 0
        cover = [float(on[masks[f"lamp{i}"]].mean()) for i in range(len(scene.lamps))]
        target = int(np.argmax(cover))
        assert scene.lamps[target].lit and cover[target] >= 0.4, (seed, cover)
        with torch.inference_mode(), rooms.editor() as editor:
            before = rooms.render([sample])[0].permute(1, 2, 0).float().numpy()
            editor.set_knobs([KnobEdit(knob, region, 1.0)])
            after = rooms.render([sample])[0].permute(1, 2, 0).float().numpy()
        lit_before = [world.detect_lit(before, scene, i) for i in range(len(scene.lamps))]
        lit_after = [world.detect_lit(after, scene, i) for i in range(len(scene.lamps))]
        expected = [on and i != target for i, on in enumerate(lit_before)]
        assert lit_before[target] and lit_after == expected, (seed, lit_before, lit_after)  # that lamp, only that one
        assert world.detect_fields(after, scene).lamps == world.detect_fields(before, scene).lamps, seed  # not erased
