"""A knob strength drag places the knob's pattern and resizes its mask once, not once per frame; a new mask anew."""
from __future__ import annotations

import torch

import studio.core.hooks as hooks
from studio.knobs import Knob, KnobEdit, KnobRegion, model_layout
from studio.live import LiveRenderer
from tests.toy import ToyGenerator

LAYERS = {"blocks.0": [1, 4, 9], "blocks.1": [2, 5]}


def knob_of(gen) -> Knob:
    torch.manual_seed(0)
    units = {layer: torch.tensor(u) for layer, u in LAYERS.items()}
    wanted = {layer: torch.randn(len(u), 3, 3) for layer, u in LAYERS.items()}
    present = {layer: torch.randn(len(u), 3, 3) for layer, u in LAYERS.items()}
    return Knob("by hand", model_layout(gen), units, wanted, present, side_gain=True)  # as learned: with side gains


def box(x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    m = torch.zeros(32, 32)
    m[y0:y1, x0:x1] = 1.0
    return m


def fresh(gen, sample, edit) -> torch.Tensor:
    """The same edit through a new editor: nothing cached."""
    with torch.inference_mode(), gen.editor() as editor:
        editor.set_knobs([edit])
        return gen.render([sample])


def test_a_drag_places_once_and_a_new_mask_places_again(monkeypatch):
    gen = ToyGenerator()
    knob, sample = knob_of(gen), gen.sample(3)
    placed, boxes = [], []
    place, find = hooks.place_pattern, hooks.mask_box
    monkeypatch.setattr(hooks, "place_pattern", lambda *a: placed.append(1) or place(*a))
    monkeypatch.setattr(hooks, "mask_box", lambda *a, **k: boxes.append(1) or find(*a, **k))
    live = LiveRenderer(gen)
    try:
        first = box(2, 4, 14, 20)
        images = []
        for strength in (0.2, 0.5, 0.9, 1.4, -0.7, 1.0):  # a drag, one new KnobEdit per frame as the panel makes
            images.append(live.render(sample, knobs=[KnobEdit(knob, first, strength)])[0])
        # one placement per layer and pattern (wanted, and present once the strength went below 0), each with its
        # side gain (3x3 patterns), not per frame
        assert len(placed) == 2 * 2 * len(LAYERS) and len(boxes) == 2 * len(LAYERS)
        assert torch.equal(images[-1], fresh(gen, sample, KnobEdit(knob, first, 1.0)))
        assert torch.equal(images[2], fresh(gen, sample, KnobEdit(knob, first, 0.9)))

        second = box(16, 10, 30, 28)  # the row's Mask button: a new mask tensor
        placed.clear()
        moved = live.render(sample, knobs=[KnobEdit(knob, second, 1.0)])[0]
        assert len(placed) == 2 * len(LAYERS)
        assert torch.equal(moved, fresh(gen, sample, KnobEdit(knob, second, 1.0)))
        assert not torch.allclose(moved, images[-1], atol=1e-4)
        placed.clear()  # (the fresh renders above placed in their own editors)
        again = live.render(sample, knobs=[KnobEdit(knob, second, 1.3)])[0]
        assert not placed and torch.equal(again, fresh(gen, sample, KnobEdit(knob, second, 1.3)))
    finally:
        live.close()


def test_a_knob_with_a_part_region_places_once_per_drag_too(monkeypatch):
    """The region's own mask (its part of the painted box) is cut once per painted mask, not once per frame, so
    its targets share their placements like the knob's own."""
    gen = ToyGenerator()
    knob, sample = knob_of(gen), gen.sample(3)
    torch.manual_seed(1)
    knob.regions.append(KnobRegion("lamp", (0.25, 0.25, 0.75, 0.75), {"blocks.1": torch.tensor([3, 7])},
                                   {"blocks.1": torch.randn(2, 2, 2)}, {"blocks.1": torch.randn(2, 2, 2)}))
    placed = []
    place = hooks.place_pattern
    monkeypatch.setattr(hooks, "place_pattern", lambda *a: placed.append(1) or place(*a))
    live = LiveRenderer(gen)
    try:
        mask = box(2, 4, 14, 20)
        images = [live.render(sample, knobs=[KnobEdit(knob, mask, s)])[0] for s in (0.2, 0.6, 1.0)]
        assert len(placed) == 2 * (len(LAYERS) + 1)  # each pattern of the knob's layers and the region's, and its gain
        assert torch.equal(images[-1], fresh(gen, sample, KnobEdit(knob, mask, 1.0)))
    finally:
        live.close()
