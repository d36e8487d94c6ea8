"""Regions proposed from a knob's units, on the Rooms model: they land on a lit lamp, not an unlit one, and the knob
applied there switches that lamp off while the room's other lit lamp stays lit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.core.rooms import world
from studio.exported import open_model
from studio.knob_regions import learn_app_knob, present_score, propose_region
from studio.knobs import Example, KnobEdit


@pytest.fixture(scope="module")
def rooms():
    return open_model("rooms", device="cpu")


def scene_of(gen, seed):
    return world.seed_scene(seed, gen.sample(seed).prompt)


def example(gen, seed: int, lamp: int = 0, pad: int = 3) -> Example:
    masks = world.truth(scene_of(gen, seed)).masks
    ys, xs = np.nonzero(masks[f"lamp{lamp}"] | masks[f"glow{lamp}"])
    mask = torch.zeros(128, 128)
    mask[max(ys.min() - pad, 0):ys.max() + pad + 1, max(xs.min() - pad, 0):xs.max() + pad + 1] = 1
    return Example(gen.sample(seed), mask)


@pytest.fixture(scope="module")
def knob(rooms):
    """The knob the Seeds tab's Learn makes from 4 + 4 quick boxes (``learn_app_knob``)."""
    return learn_app_knob(rooms, "lamp off", [example(rooms, s) for s in (0, 3, 5, 6)],
                          [example(rooms, s) for s in (4, 7, 9, 10)])


def test_the_proposed_region_lands_on_a_lit_lamp_and_the_knob_switches_it_off_there(rooms, knob):
    held_out = range(12, 24)  # none of them an example
    for seed in held_out:
        scene = scene_of(rooms, seed)
        if not any(lamp.lit for lamp in scene.lamps):
            continue
        masks = world.truth(scene).masks
        region = propose_region(rooms, knob, rooms.sample(seed)).numpy() > 0
        cover = [float(region[masks[f"lamp{i}"]].mean()) for i in range(len(scene.lamps))]
        lit = [lamp.lit for lamp in scene.lamps]
        assert max(c for c, on in zip(cover, lit) if on) >= 0.4, (seed, cover)
        assert all(c < 0.1 for c, on in zip(cover, lit) if not on), (seed, cover)
        with torch.inference_mode(), rooms.editor() as editor:
            editor.set_knobs([KnobEdit(knob, torch.from_numpy(region.astype(np.float32)), 1.0)])
            image = rooms.render([rooms.sample(seed)])[0].permute(1, 2, 0).float().numpy()
        after = [world.detect_lit(image, scene, i) for i in range(len(scene.lamps))]
        assert sum(after) == sum(lit) - 1, (seed, lit, after)  # exactly the proposed lamp went off


def test_the_score_is_higher_on_a_lit_lamp_than_on_an_unlit_one(rooms, knob):
    seed = 0  # lamp 0 lit, lamp 1 unlit
    masks = world.truth(scene_of(rooms, seed)).masks
    score = present_score(rooms, knob, rooms.sample(seed)).numpy()
    assert score[masks["lamp0"]].mean() > 0 > score[masks["lamp1"]].mean()
