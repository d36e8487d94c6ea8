"""Concept segmenters for dissection: which pixels of a sample show each concept.

A segmenter names its concepts, says which samples it can segment and gives their masks at image size::

    seg = rooms_segmenter()                          # the Rooms world's truth masks
    seg.concepts                                     # ("lamp", "glow", "bed", "window", "wall", "floor", "ceiling")
    sample = seg.sample(gen, 7)                      # seed 7 with its natural caption
    masks = seg.masks(7, (128, 128))                 # (K, H, W) bool, one per concept
    seg = examples_segmenter("examples.json")        # user-painted masks: [{"seed": 3, "mask": "lamp.png",
                                                     #                       "concept": "lamp"}, ...]
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .core.errors import StudioError
from .core.images import load_mask
from .core.rooms import world

#: The Rooms world's concepts, from :func:`studio.core.rooms.world.truth` (lamps and glows pooled over slots).
ROOMS_CONCEPTS = ("lamp", "glow", "bed", "window", "wall", "floor", "ceiling")


@dataclass
class Segmenter:
    """Concept masks for samples. ``seeds`` is None when any seed can be segmented (a world with truth)."""

    name: str
    concepts: tuple[str, ...]
    seeds: list[int] | None = None
    prompts: dict[int, str | None] = field(default_factory=dict)

    def sample(self, generator, seed: int):
        """The sample the masks describe (the seed's own prompt where the segmenter knows one)."""
        return generator.sample(seed, self.prompts.get(seed))

    def masks(self, seed: int, size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "concepts": list(self.concepts), "seeds": self.seeds}


def rooms_scene(seed: int) -> world.Scene:
    """The room a seed shows in dissection: its latent with its natural caption (as the truth benchmark draws it)."""
    natural = world.sample_scene(np.random.default_rng(seed))
    return world.scene_from(world.sample_latent(seed), world.caption(natural))


class RoomsSegmenter(Segmenter):
    """Truth masks of the Rooms world: every seed, each with its natural caption (walls, bed, window, lamps vary)."""

    def sample(self, generator, seed: int):
        return generator.sample(seed, world.caption(rooms_scene(seed)))

    def masks(self, seed: int, size: tuple[int, int]) -> torch.Tensor:
        scene = rooms_scene(seed)
        t = world.truth(scene, int(size[0]))
        lit = [i for i, lamp in enumerate(scene.lamps) if lamp.lit]
        none = np.zeros_like(t.masks["wall"])
        lamp = np.logical_or.reduce([t.masks[f"lamp{i}"] for i in range(len(scene.lamps))] + [none])
        # a glow exists only where a lit lamp casts it (truth() gives every slot's would-be glow)
        glow = np.logical_or.reduce([t.masks[f"glow{i}"] for i in lit] + [none]) & ~lamp
        by_name = {"lamp": lamp, "glow": glow, "bed": t.masks["bed"], "window": t.masks["window"],
                   "wall": t.masks["wall"] & ~lamp & ~glow, "floor": t.masks["floor"], "ceiling": t.masks["ceiling"]}
        return torch.from_numpy(np.stack([by_name[c] for c in self.concepts]))


def rooms_segmenter() -> Segmenter:
    return RoomsSegmenter("rooms", ROOMS_CONCEPTS)


class ExamplesSegmenter(Segmenter):
    """User-painted masks: only the listed seeds, each with masks for some concepts (others empty there)."""

    def __init__(self, name: str, concepts: tuple[str, ...], examples: list[dict], base: Path) -> None:
        super().__init__(name, concepts, sorted({int(e["seed"]) for e in examples}),
                         {int(e["seed"]): e.get("prompt") for e in examples})
        self.examples, self.base = examples, base

    def masks(self, seed: int, size: tuple[int, int]) -> torch.Tensor:
        out = torch.zeros((len(self.concepts), *size), dtype=torch.bool)
        for e in self.examples:
            if int(e["seed"]) == seed:
                mask, _ = load_mask(self.base / e["mask"], tuple(size))
                out[self.concepts.index(e["concept"])] |= mask >= 0.5
        return out


def examples_segmenter(path: str | Path) -> Segmenter:
    """Read a JSON list of ``{"seed": int, "mask": "file.png", "concept": "name", "prompt": optional}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise StudioError(f"No concept examples file at {path}.") from error
    except (OSError, ValueError) as error:
        raise StudioError(f"{path.name} is not a JSON list of examples ({error}).") from error
    if not isinstance(data, list) or not data or not all(
            isinstance(e, dict) and {"seed", "mask", "concept"} <= set(e) for e in data):
        raise StudioError(f"{path.name} must be a non-empty JSON list of objects with seed, mask and concept.")
    concepts = tuple(dict.fromkeys(str(e["concept"]) for e in data))
    return ExamplesSegmenter(path.name, concepts, data, path.parent)


def open_segmenter(spec: str | None) -> Segmenter | None:
    """``rooms``, a path to an examples JSON file, or None (no concepts: statistics and galleries only)."""
    if not spec:
        return None
    if spec == "rooms":
        return rooms_segmenter()
    return examples_segmenter(spec)


def concept_names(segmenter: Segmenter | None) -> Sequence[str]:
    return () if segmenter is None else segmenter.concepts
