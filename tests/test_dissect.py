"""Dissection on the Rooms model, small: blocks.0 (128 units at 8x8), a dozen seeds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import open_model
from studio.cli import main
from studio.core.errors import Cancelled, StudioError
import studio.dissect
from studio.dissect import (IOU_FLOOR, Plan, dissect, gallery_image, gallery_tiles, load_dissection, merge_stats,
                            run_task, sketch_quantile, task_stats)
from studio.segments import examples_segmenter, rooms_segmenter

LAYER = "blocks.0"
PLAN = Plan("rooms", [LAYER], samples=12, first_seed=5, concepts="rooms", top=4, task_size=4, batch=4)


@pytest.fixture(scope="module")
def gen():
    torch.set_num_threads(1)
    return open_model("rooms", device="cpu")


@pytest.fixture(scope="module")
def whole(gen):
    return dissect(gen, PLAN)


def same(a, b) -> None:
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def test_statistics_match_a_direct_computation(gen, whole):
    samples = [rooms_segmenter().sample(gen, s) for s in range(5, 17)]
    with torch.inference_mode():  # traced in the plan's batches: a float32 convolution's sums depend on the batch
        # size on some CPUs (1e-7 relative here), which is not what this test is about
        acts = torch.cat([gen.trace(samples[i:i + PLAN.batch], [LAYER])[LAYER].double()
                          for i in range(0, len(samples), PLAN.batch)])
    per_unit = acts.transpose(0, 1).reshape(acts.shape[1], -1)
    assert torch.allclose(whole.mean(LAYER), per_unit.mean(1), rtol=1e-10, atol=1e-12)
    assert torch.allclose(whole.variance(LAYER), per_unit.var(1, unbiased=False), rtol=1e-9, atol=1e-12)
    q = torch.quantile(per_unit, 0.99, dim=1, interpolation="higher")
    assert torch.allclose(whole.thresholds(LAYER), q, rtol=0.011, atol=1e-4)  # the sketch's 1 % relative error
    peak = acts.amax(dim=(2, 3))  # (B, C): each unit's top sample is the one with the largest peak
    best = torch.tensor([5 + int(peak[:, u].argmax()) for u in range(acts.shape[1])])
    assert torch.equal(whole.stats[LAYER]["top_seeds"][:, 0], best)


def test_merging_partial_results_equals_one_pass(gen):
    torch.manual_seed(0)
    acts = torch.randn(9, 5, 4, 4).relu() * 3
    one = task_stats(acts, list(range(9)), (16, 16), top=3)
    parts = None
    for lo, hi in ((0, 2), (2, 7), (7, 9)):
        parts = merge_stats(parts, task_stats(acts[lo:hi], list(range(lo, hi)), (16, 16), top=3), top=3)
    assert torch.equal(one["sketch"], parts["sketch"]) and torch.equal(one["count"], parts["count"])
    assert torch.allclose(one["mean"], parts["mean"], rtol=1e-13) and torch.allclose(one["m2"], parts["m2"], rtol=1e-12)
    for key in ("top_values", "top_seeds", "top_boxes"):
        assert torch.equal(one[key], parts[key]), key
    assert torch.allclose(sketch_quantile(one["sketch"], 0.5), sketch_quantile(parts["sketch"], 0.5))


def test_another_split_into_tasks_gives_the_same_result(gen, whole):
    other = dissect(gen, replace(PLAN, task_size=8))  # the same batches of 4, split into tasks differently
    assert torch.allclose(other.mean(LAYER), whole.mean(LAYER), rtol=1e-12)
    for key in ("sketch", "top_seeds"):
        assert torch.equal(other.stats[LAYER][key], whole.stats[LAYER][key])
    for key in ("inter", "on", "area"):
        assert torch.equal(other.iou[LAYER][key], whole.iou[LAYER][key])


def test_a_stopped_run_resumes_to_the_same_result(gen, whole, tmp_path):
    partial = tmp_path / "d.partial.safetensors"
    calls = []

    def stop_after_two_tasks(update):
        calls.append(update.done)
        return update.done < 8  # 4 samples a task: stop once two are merged (and saved)

    with pytest.raises(Cancelled):
        dissect(gen, PLAN, partial=partial, progress=stop_after_two_tasks)
    saved = load_dissection(partial)
    assert saved.done == 2 and not saved.complete
    resumed_from = []
    result = dissect(gen, PLAN, partial=partial, resume=True, progress=lambda u: resumed_from.append(u.done))
    assert resumed_from[0] == 8 and result.complete
    same(result, whole)
    with pytest.raises(StudioError, match="another dissection"):
        dissect(gen, replace(PLAN, samples=8), partial=partial, resume=True)


def test_file_round_trip_and_label_table(whole, tmp_path):
    path = whole.save(tmp_path / "d.safetensors")
    back = load_dissection(path)
    same(back, whole)
    rows = back.labels(LAYER)
    assert len(rows) == 128 and rows == whole.labels(LAYER)
    assert all((r.concept is None) == (r.iou < IOU_FLOOR) for r in rows)
    assert all(r.iou >= r.second_iou for r in rows)
    assert {r.best for r in rows} <= set(back.concepts)
    assert any(r.concept for r in rows)  # a dozen rooms already label some units
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(StudioError, match="not a readable dissection"):
        load_dissection(tmp_path / "bad.safetensors")


def test_examples_concepts_from_painted_masks(gen, tmp_path):
    seg = rooms_segmenter()
    lamp = seg.masks(3, (128, 128))[0].numpy()
    Image.fromarray((lamp * 255).astype(np.uint8)).save(tmp_path / "lamp3.png")
    (tmp_path / "ex.json").write_text(json.dumps([{"seed": 3, "mask": "lamp3.png", "concept": "lamp"}]))
    loaded = examples_segmenter(tmp_path / "ex.json")
    assert loaded.concepts == ("lamp",) and loaded.seeds == [3]
    assert torch.equal(loaded.masks(3, (128, 128))[0], torch.from_numpy(lamp))
    plan = Plan("rooms", [LAYER], samples=4, concepts=str(tmp_path / "ex.json"), top=2, task_size=4, batch=4)
    result = dissect(gen, plan)
    assert int(result.iou[LAYER]["area"][0]) == int(lamp.sum())
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(StudioError, match="seed, mask and concept"):
        examples_segmenter(tmp_path / "bad.json")


def test_gallery_shows_the_top_samples(gen, whole):
    tiles = gallery_tiles(gen, whole, LAYER, 7, tile=32)
    assert len(tiles) == 4 and tiles[0].shape == (32, 32, 3)
    grid = gallery_image(tiles, columns=2)
    assert grid.shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    assert np.allclose(grid[34:36, :, :], 24 / 255) and np.allclose(grid[2:34, 2:34], tiles[0] / 255)
    with pytest.raises(StudioError, match="units 0 to 127"):
        gallery_tiles(gen, whole, LAYER, 500)


def test_cli_dissect_and_show(tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    assert main(["dissect", "--layer", LAYER, "--samples", "4", "--concepts", "rooms", "--top", "3",
                 "--task-size", "2", "--device", "cpu", "-o", str(out)]) == 0
    assert "units labelled" in capsys.readouterr().out
    assert not (tmp_path / "d.partial.safetensors").exists()
    png = tmp_path / "g.png"
    assert main(["dissect", "show", str(out), "--unit", "3", "--device", "cpu", "-o", str(png)]) == 0
    with Image.open(png) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[1] > 96 and pixels.std() > 10  # room pictures, not a blank sheet
    assert main(["dissect", "show", str(out), "--device", "cpu", "-o", str(png)]) == 2


def test_iou_counts_equal_upsampling_every_unit():
    from studio.dissect import task_iou, unit_maps

    torch.manual_seed(1)
    acts = torch.randn(3, 6, 4, 4)
    masks = torch.rand(3, 2, 16, 16) > 0.6
    level = torch.quantile(acts.transpose(0, 1).reshape(6, -1), 0.9, dim=1).double()
    on = unit_maps(acts, (16, 16)) > level.float()[None, :, None, None]  # every unit, every image
    want = torch.einsum("bchw,bkhw->ck", on.long(), masks.long())
    got = task_iou(acts, masks, level, (16, 16))
    assert torch.equal(got["inter"], want) and torch.equal(got["on"], on.sum(dim=(0, 2, 3)))
    assert torch.equal(got["area"], masks.sum(dim=(0, 2, 3)))


def test_a_killed_cli_run_resumes_to_the_same_table(tmp_path, capsys, monkeypatch):
    """SIGKILL a ``dissect`` process once some tasks are saved; ``--resume`` finishes it to the uninterrupted file."""
    root = Path(__file__).resolve().parent.parent
    args = ["dissect", "--layer", LAYER, "--samples", "16", "--first-seed", "5", "--concepts", "rooms", "--top", "3",
            "--task-size", "2", "--device", "cpu", "--json"]
    whole_file, killed_file = tmp_path / "whole.safetensors", tmp_path / "killed.safetensors"
    partial = tmp_path / "killed.partial.safetensors"
    # one torch thread there as here: float sums round by thread count, and the tables must be equal
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "studio", *args, "-o", str(killed_file)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not partial.exists():
            assert proc.poll() is None, "the dissection ended before saving a partial result"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    saved = load_dissection(partial)  # written atomically: whole, whenever the kill came
    assert 1 <= saved.done < saved.total and not killed_file.exists()
    assert main([*args, "-o", str(whole_file)]) == 0
    whole_table = json.loads(capsys.readouterr().out)
    ran = []
    monkeypatch.setattr(studio.dissect, "run_task", lambda *a: ran.append(a[3].index) or run_task(*a))
    assert main([*args, "--resume", "-o", str(killed_file)]) == 0
    assert ran == list(range(saved.done, saved.total))  # only the tasks the killed run had not saved
    resumed_table = json.loads(capsys.readouterr().out)
    assert not partial.exists()
    same(load_dissection(killed_file), load_dissection(whole_file))
    assert resumed_table == whole_table and any(row["concept"] for row in whole_table[LAYER])


def test_units_tiles_render_each_seed_once_and_match_one_units_gallery(gen, whole, monkeypatch):
    from studio.dissect import units_tiles

    rendered = []
    real = gen.render
    monkeypatch.setattr(gen, "render", lambda samples: rendered.append(len(samples)) or real(samples))
    tiles = units_tiles(gen, whole, LAYER, [3, 7, 3], count=3, tile=16)
    seeds = {s for u in (3, 7) for s in whole.stats[LAYER]["top_seeds"][u, :3].tolist()}
    assert list(tiles) == [3, 7] and set(rendered) == {len(seeds)}  # batches of the distinct seeds, each once
    for unit in (3, 7):
        alone = gallery_tiles(gen, whole, LAYER, unit, count=3, tile=16)
        assert len(tiles[unit]) == 3
        for a, b in zip(tiles[unit], alone):  # another batch may round a pixel differently, no more
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_a_knob_of_units_switches_them_off_at_1_and_draws_their_pattern_at_minus_1(gen, whole):
    from studio.core.hooks import UnitEdit
    from studio.dissect import knob_from_units
    from studio.knobs import KnobEdit, KnobError

    knob = knob_from_units(gen, whole, LAYER, [7, 3])
    assert knob.units[LAYER].tolist() == [3, 7] and knob.name == f"{LAYER} units 3, 7"
    knob.check(gen)
    sample = rooms_segmenter().sample(gen, 5)
    everywhere = torch.ones(tuple(gen.resolution))
    with torch.inference_mode(), gen.editor() as editor:
        editor.set_knobs([KnobEdit(knob, everywhere, 1.0)])
        by_knob = gen.render([sample])
        editor.set_knobs([])
        editor.set([UnitEdit(LAYER, 3, "off"), UnitEdit(LAYER, 7, "off")])
        switched_off = gen.render([sample])
        editor.set([])
        plain = gen.render([sample])
        editor.set_knobs([KnobEdit(knob, everywhere, -1.0)])
        drawn = gen.trace([sample], [LAYER])[LAYER][0, [3, 7]]
    assert torch.allclose(by_knob, switched_off, atol=1e-5) and not torch.allclose(by_knob, plain, atol=1e-3)
    # at -1 the units take the pattern learned from where they fire in their galleries: strong, like their peaks
    peaks = whole.stats[LAYER]["top_values"][[3, 7], 0]
    assert (drawn.amax(dim=(1, 2)) > 0.3 * peaks).all()
    with pytest.raises(KnobError, match="Select one or more units"):
        knob_from_units(gen, whole, LAYER, [])
