"""Quick boxes on the default Rooms model and the knob the app learns from four of them per side, for the tests of
the app's knob and of the regions it proposes."""
from __future__ import annotations

import numpy as np
import torch

from studio.core.rooms import world
from studio.knob_regions import learn_app_knob
from studio.knobs import Example, Knob

PRESENT, WANTED = (0, 3, 5, 6), (4, 7, 9, 10)  # seeds whose lamp 0 the Rooms world renders lit / unlit


def scene_of(gen, seed: int) -> world.Scene:
    return world.seed_scene(seed, gen.sample(seed).prompt)


def quick_box(gen, seed: int, lamp: int = 0, pad: int = 3) -> torch.Tensor:
    """The box a hand paints over a lamp and its light."""
    masks = world.truth(scene_of(gen, seed)).masks
    ys, xs = np.nonzero(masks[f"lamp{lamp}"] | masks[f"glow{lamp}"])
    mask = torch.zeros(128, 128)
    mask[max(ys.min() - pad, 0):ys.max() + pad + 1, max(xs.min() - pad, 0):xs.max() + pad + 1] = 1
    return mask


def app_knob(gen) -> Knob:
    """The "lamp off" knob learn_app_knob makes from quick boxes over lamp 0 of PRESENT (lit) and WANTED (unlit)."""
    present = [Example(gen.sample(s), quick_box(gen, s)) for s in PRESENT]
    wanted = [Example(gen.sample(s), quick_box(gen, s)) for s in WANTED]
    return learn_app_knob(gen, "lamp off", present, wanted)
