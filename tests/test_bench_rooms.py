"""The Rooms truth benchmark on the committed weights: held-out scenes, figures in range, switched-off units darken."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from studio.bench import rooms as bench
from studio.core.rooms import world



@pytest.fixture(scope="module")
def gen():
    from models.registry import open_model

    return open_model("rooms", device="cpu", precision="fp32")


def test_truth_scenes_are_held_out_with_a_lit_lamp_and_exact_counterfactuals(gen):
    scenes = bench.truth_scenes(gen, 2)
    assert len(scenes) == 2 and all(s.seed >= 10**9 for s in scenes)  # training seeds lie below 10**9
    for s in scenes:
        scene = world.seed_scene(s.seed, s.caption)
        assert scene.lamps[s.lamp].lit and not any(l.lit for l in scene.lamps[:s.lamp])  # the first lit lamp
        assert s.region.any() and not s.region.all()
        change = np.abs(s.lit - s.unlit).max(axis=-1)
        assert change[s.region].max() > 0.2 and change[~s.region].max() <= world.GLOW_THRESHOLD + 1e-6  # light stays in
        assert s.lit[s.region].mean() > s.unlit[s.region].mean()


def test_switching_off_the_ranked_units_darkens_the_lamp_region(gen):
    scenes = bench.truth_scenes(gen, 2)
    # blocks.3 (32 units): its top 5 carry most of the light on the tuning seeds, and ranking it exactly is quick
    result = bench.evaluate(gen, scenes, layer="blocks.3", top=5, method="exact", keep_images=True)
    for key in ("scenes", "lamp_off_rate", "relight_psnr", "outside_change", "units_used", "local", "layer",
                "method", "seconds", "baseline", "alternative", "units_per_scene"):
        assert key in result
    assert result["scenes"] == 2 and result["local"] is bench.DEFAULT_LOCAL
    assert result["alternative"]["local"] is (not bench.DEFAULT_LOCAL)
    for figures in (result, result["alternative"]):
        assert 0 <= figures["lamp_off_rate"] <= 1 and 0 <= figures["outside_change"] <= 1
        assert 0 < figures["units_used"] <= 5 and figures["relight_psnr"] > 0
    assert result["baseline"]["lamp_off_rate"] == 0.0 and result["baseline"]["outside_change"] == 0.0
    for scene, (lit, model, edited, unlit) in zip(scenes, result.pop("images")):
        assert edited[scene.region].mean() < model[scene.region].mean() - 0.01  # the lamp's light goes down
    assert result["brightness_drop"] > 0.01 and result["darkening"] > 0.2
    json.dumps(result)  # the figures are plain JSON


def test_local_edit_leaves_the_outside_alone_and_rows_save(gen, tmp_path):
    scenes = bench.truth_scenes(gen, 1)
    result = bench.evaluate(gen, scenes, layer="blocks.4", top=3, local=True, keep_images=True)
    assert result["local"] is True and result["layer"] == "blocks.4"
    # a local switch-off changes the outside only through the mask's blurred edge after the layer's convs
    assert result["outside_change"] <= result["alternative"]["outside_change"]
    path = bench.save_strip(result["images"], tmp_path / "strip.png")
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (4 * 128 + 4 * 2, 128 + 2)


def test_cli_prints_one_json_object_and_refuses_no_scenes(capsys):
    from studio.cli import main

    torch.set_num_threads(1)
    assert main(["bench", "rooms", "--seeds", "1", "--layer", "blocks.4", "--top", "2", "--threads", "1",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ranked = data["methods"]["ranked_off"]
    assert data["scenes"] == 1 and ranked["layers"] == "blocks.4" and ranked["masks"]["rough"]["units_used"] <= 2
    assert main(["bench", "rooms", "--seeds", "0"]) == 2
    assert "at least one scene" in capsys.readouterr().err


def test_rounds_hold_chosen_units_off_and_restore_the_weights(gen):
    scenes = bench.truth_scenes(gen, 1)
    before = {k: v.clone() for k, v in gen.module.state_dict().items()}
    mask = torch.from_numpy(scenes[0].region.astype(np.float32))
    units = bench._rounds_of_ranking(gen, scenes[0], mask, "blocks.4", 4, 0.0, "exact", "zero", 2)
    assert 0 < len(units) <= 4 and len(set(units)) == len(units)
    after = gen.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the held-off units were only borrowed


def test_all_layers_pools_the_best_units_over_layers_and_switches_them_off_locally(gen):
    scenes = bench.truth_scenes(gen, 1)
    result = bench.evaluate(gen, scenes, layer=bench.ALL_LAYERS, top=6, local=True, method="fast")
    assert result["layers"] == [i.name for i in gen.layers() if i.size]
    assert result["units_used"] == 6 and sum(result["units_per_layer"].values()) == 6
    assert result["outside_change"] < result["alternative"]["outside_change"]  # local edits stay in the region
    assert result["darkening"] > 0.1
    with pytest.raises(ValueError, match="single name"):
        bench.evaluate(gen, scenes, layer="blocks.0,blocks.1", top=4, rounds=2)
    from studio.core.errors import LayerNotFound

    with pytest.raises(LayerNotFound):
        bench.resolve_layers(gen, "blocks.1,blocks.9")


def _result(lit, ceiling, relight, really_off=1.0, outside=0.001, kept=1.0):
    rough = {"really_off": really_off, "relight_psnr": relight, "outside_change": outside, "other_lamp_kept": kept}
    return {"lit_psnr": lit, "ceiling_psnr": ceiling, "methods": {"knob": {"masks": {"rough": rough}}}}


def test_the_verdict_needs_every_target_and_a_gap_closed_by_a_fallen_ceiling_does_not_pass():
    assert bench.target_verdict(_result(26.5, 25.0, 23.0))["all"]  # gap 2.0, lit lamps at 26.5 dB
    met = bench.target_verdict(_result(24.8, 25.0, 21.5))  # the shipped weights' figures: gap 3.5, lit 24.8
    assert not met["all"] and not met["relight_gap_db"] and not met["lit_psnr"] and met["really_off"]
    fallen = bench.target_verdict(_result(23.9, 22.9, 20.6))  # gap 2.3 only because the model got worse
    assert fallen["relight_gap_db"] and not fallen["lit_psnr"] and not fallen["all"]
    for wrong in (_result(26.5, 25.0, 23.0, really_off=0.85), _result(26.5, 25.0, 23.0, outside=0.006),
                  _result(26.5, 25.0, 23.0, kept=0.9)):
        assert not bench.target_verdict(wrong)["all"]
    no_pair = bench.target_verdict(_result(26.5, 25.0, 23.0, kept=None))  # no room with a second lit lamp
    assert no_pair["other_lamp_kept"] is None and no_pair["all"]


def test_the_oracle_knob_with_each_rooms_own_lamp_off_activations_nearly_reaches_the_ceiling(gen, capsys, tmp_path):
    from studio.bench import rooms_oracle as oracle

    scenes = bench.truth_scenes(gen, 3)
    knob = bench.app_knob(gen, "rough")
    result = oracle.oracle_benchmark(gen, scenes, knob, cells=(6,), keep_images=True)
    m = result["methods"]
    model, knobbed, cells6, own, ceil, unlit = result["images"][0]  # one row per room, in the docstring's order
    assert len(result["images"]) == 3 and np.array_equal(ceil, bench.model_and_ceiling(gen, scenes[0], [], [], [])[2])
    r = scenes[0].region
    assert np.abs(own - unlit)[r].mean() < np.abs(knobbed - unlit)[r].mean() < np.abs(model - unlit)[r].mean()
    assert set(m) == {"knob", "own", "own_cells_6", "others_cells_6"}
    assert sum(result["units"].values()) == sum(len(u) for u in oracle.knob_units(knob).values()) <= knob.unit_count
    # the room's own targets, placed back exactly: within 1 dB of the ceiling (0.8 here; placed back blurred, 1.3;
    # read from the lit render, far below), and far above the other rooms' mean pattern
    assert m["own"]["gap_db"] < 1.0 and m["own"]["really_off"] == 1.0
    assert m["own"]["relight_psnr"] > max(m["knob"]["relight_psnr"], m["others_cells_6"]["relight_psnr"]) + 1.0
    assert m["own_cells_6"]["relight_psnr"] < m["own"]["relight_psnr"]  # the pattern's cells lose the fine shape
    from studio.cli import main

    picture = tmp_path / "oracle.png"
    assert main(["bench", "rooms", "--oracle", "--seeds", "1", "--threads", "1", "--json", "--picture",
                 str(picture)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["picture"] == str(picture) and picture.stat().st_size > 1000 and "images" not in printed
    assert printed["methods"]["own"]["gap_db"] < printed["methods"]["knob"]["gap_db"]
