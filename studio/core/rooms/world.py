"""The Rooms world: procedural bedrooms whose every pixel has a known cause.

No model hub is reachable, so the default generator is trained on this world, and the world is the benchmark: unit
search, sliders and concept edits are measured against exact counterfactual renders (same room, lamp 1 switched off).

A fixed one-point-perspective camera looks at a back wall; two side walls, a floor and a ceiling run towards it. The
walls take one of eight named colours; the room may hold a window on the back wall and a bed on the floor, and stands
one to three floor lamps against the back wall, each lit (bright shade, a glow round it and a pool of light on the wall)
or unlit (dark shade, no light). Geometry is crisp, shading flat and light smooth, so a small conv net can learn it.

Use::

    rng = np.random.default_rng(0)
    scene = sample_scene(rng)
    t = truth(scene)                     # t.image, t.masks["lamp0"], t.masks["glow0"], t.lamps_lit, t.caption
    off = render(with_lamp(scene, 0, lit=False))
    z = encode_latent(scene)             # everything the caption does not say
    assert scene_from(z, caption(scene)).lamps[0].lit == scene.lamps[0].lit

Speed, CPU time on one core at 128 px (``benchmark()``; measured on a shared 2-core box under load 8): about 890
scenes/s for ``render``, 720/s for ``truth``, 115/s for ``detect_fields``.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

#: Wall palette, name -> RGB in [0, 1]; hues spaced so a nearest-colour test separates them even near lamp light.
WALL_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.18, 0.16),
    "orange": (0.92, 0.52, 0.12),
    "yellow": (0.90, 0.84, 0.22),
    "green": (0.28, 0.62, 0.24),
    "teal": (0.12, 0.56, 0.58),
    "blue": (0.20, 0.32, 0.80),
    "purple": (0.48, 0.24, 0.66),
    "pink": (0.92, 0.54, 0.72),
}
MAX_LAMPS = 3
#: Prior probability that a lamp is lit, that the room has a bed, that it has a window.
LIT_RATE = 0.6
BED_RATE = 0.7
WINDOW_RATE = 0.6
#: A lamp's glow mask holds the pixels its light changes by more than this (in [0, 1] intensity).
GLOW_THRESHOLD = 0.03
#: Closest two lamp slots may stand, as a fraction of the back wall's width (shades never touch).
LAMP_SPACING = 0.24
NUMBER_WORDS = ("one", "two", "three")

# Camera: the back wall is the image frame scaled by _S about the vanishing point (_CX, _CY); room coordinates
# X, Y in [0, 1] span the back wall, k in [_S, 1] is the scale of a plane between back wall and camera.
_CX, _CY, _S = 0.5, 0.40, 0.5
_SIDE_SHADE = (0.80, 0.72)  # left, right wall brightness relative to the back wall (flat shading)
_CEILING = (0.90, 0.89, 0.86)
_FLOOR_DARK, _FLOOR_LIGHT = np.array((0.48, 0.34, 0.23)), np.array((0.74, 0.60, 0.43))
_LIGHT = np.array((1.0, 0.86, 0.60), np.float32)  # warm lamp light, added to what it falls on
_GLOW_PEAK, _POOL_PEAK = 0.45, 0.50
_SHADE_LIT = (np.array((1.0, 0.95, 0.78)), np.array((0.98, 0.97, 0.92)))
_SHADE_UNLIT = (np.array((0.30, 0.25, 0.20)), np.array((0.22, 0.23, 0.28)))
_POLE = (0.16, 0.15, 0.15)
_FRAME, _GLASS = (0.94, 0.94, 0.92), (0.60, 0.78, 0.95)
_SHEET, _PILLOW, _HEADBOARD = (0.90, 0.90, 0.87), (0.97, 0.97, 0.95), (0.36, 0.24, 0.16)
_BLANKET = (np.array((0.40, 0.47, 0.62)), np.array((0.56, 0.62, 0.48)))
_BED_FRONT_K, _BED_TOP_Y, _HEADBOARD_Y = 0.78, 0.86, 0.70
# Label ids inside the renderer (masks are read from the final label image).
_BACK, _LEFT, _RIGHT, _CEIL, _FLOOR, _WINDOW, _BED = 0, 1, 2, 3, 4, 5, 6
_SHADE_ID, _POLE_ID = 10, 20


@dataclass(frozen=True)
class Lamp:
    """A floor lamp against the back wall. All shape parameters are unit values in [0, 1].

    ``x`` is the lamp's position along the back wall (0 left edge, 1 right edge; the prior keeps it in 0.08..0.92),
    ``height`` raises the shade, ``size`` widens it, ``tone`` moves the shade from warm to cool.
    """

    x: float
    lit: bool
    height: float = 0.5
    size: float = 0.5
    tone: float = 0.5


@dataclass(frozen=True)
class Scene:
    """One bedroom. Caption facts: ``wall``, ``bed``, ``window``, ``len(lamps)``; the rest are unit values in [0, 1].

    ``spare`` holds the lamp slots that are not shown (``lamps + spare`` is every slot of the latent), so that a latent
    round-trips and detectors can check where an extra lamp would stand. Bed and window geometry is kept when absent.
    """

    wall: str
    bed: bool
    window: bool
    lamps: tuple[Lamp, ...]
    bed_x: float = 0.5
    bed_width: float = 0.5
    bed_tone: float = 0.5
    window_x: float = 0.5
    window_width: float = 0.5
    window_height: float = 0.5
    floor_tone: float = 0.5
    spare: tuple[Lamp, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.wall not in WALL_COLOURS:
            raise ValueError(f"Unknown wall colour {self.wall!r}; use one of: {', '.join(WALL_COLOURS)}.")
        if not 1 <= len(self.lamps) <= MAX_LAMPS or len(self.lamps) + len(self.spare) > MAX_LAMPS:
            raise ValueError(f"A room holds 1 to {MAX_LAMPS} lamps (spare slots included), not {len(self.lamps)}.")


@dataclass(frozen=True)
class CaptionFields:
    """What a caption says: wall colour, bed present, window present, number of lamps (never whether one is lit)."""

    wall: str
    bed: bool
    window: bool
    lamps: int


@dataclass
class Truth:
    """A rendered scene with its causes: the image, a mask per object and lamp glow, lamp states and caption."""

    image: np.ndarray
    masks: dict[str, np.ndarray]
    lamps_lit: tuple[bool, ...]
    caption: str
    scene: Scene


# ---------------------------------------------------------------- prior


def _units(rng: np.random.Generator, n: int, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """n uniform unit values on a 2**-16 grid, so that the float32 latent holds them exactly."""
    return [round((lo + (hi - lo) * u) * 65536) / 65536 for u in rng.random(n)]


def _spread_xs(rng: np.random.Generator) -> list[float]:
    """Three lamp positions along the back wall, pairwise at least LAMP_SPACING apart, in random slot order."""
    lo, hi = 0.08, 0.92
    gaps = sorted(rng.random(MAX_LAMPS) * (hi - lo - (MAX_LAMPS - 1) * LAMP_SPACING))  # uniform over valid layouts
    xs = [round((lo + g + i * LAMP_SPACING) * 65536) / 65536 for i, g in enumerate(gaps)]
    return [xs[i] for i in rng.permutation(MAX_LAMPS)]


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a bedroom from the world's prior.

    Lamp count uniform in 1..3, each lamp lit with probability LIT_RATE, bed with BED_RATE, window with WINDOW_RATE;
    all MAX_LAMPS slots are drawn (never overlapping) and the unused ones kept as ``spare``::

        scene = sample_scene(np.random.default_rng(7))
    """
    wall = list(WALL_COLOURS)[int(rng.integers(len(WALL_COLOURS)))]
    bed = bool(rng.random() < BED_RATE)
    window = bool(rng.random() < WINDOW_RATE)
    n = int(rng.integers(1, MAX_LAMPS + 1))
    slots = tuple(Lamp(x, bool(rng.random() < LIT_RATE), *_units(rng, 3)) for x in _spread_xs(rng))
    return Scene(wall, bed, window, slots[:n], *_units(rng, len(_SCENE_KEYS)), spare=slots[n:])


# ---------------------------------------------------------------- captions


def fields(scene: Scene) -> CaptionFields:
    """The caption facts of a scene: ``fields(scene).lamps == len(scene.lamps)``."""
    return CaptionFields(scene.wall, scene.bed, scene.window, len(scene.lamps))


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


N_PARAPHRASES = 4


def caption(scene_or_fields: Scene | CaptionFields, style: int = 0) -> str:
    """Describe a scene in words; style 0 is canonical, styles 1..N_PARAPHRASES say the same facts otherwise.

    >>> caption(CaptionFields("blue", True, True, 2))
    'a bedroom with blue walls, a bed, a window and two lamps'
    >>> caption(CaptionFields("blue", True, True, 2), style=1)
    'a blue bedroom with two lamps, a bed and a window'
    """
    f = fields(scene_or_fields) if isinstance(scene_or_fields, Scene) else scene_or_fields
    if not 1 <= f.lamps <= MAX_LAMPS:
        raise ValueError(f"A caption can say 1 to {MAX_LAMPS} lamps, not {f.lamps}.")
    lamps = f"{NUMBER_WORDS[f.lamps - 1]} lamp{'s' if f.lamps > 1 else ''}"
    things = (["a bed"] if f.bed else []) + (["a window"] if f.window else [])
    c = f.wall
    if style == 0:
        return "a bedroom with " + _join([f"{c} walls", *things, lamps])
    if style == 1:
        return f"a {c} bedroom with " + _join([lamps, *things])
    if style == 2:
        return ", ".join(["bedroom", f"{c} walls", *things, lamps])
    if style == 3:
        return _join([lamps, *things]) + f" in a {c} bedroom"
    if style == 4:
        return "a bedroom: " + _join([f"{c} walls", lamps, *things])
    raise ValueError(f"Caption style {style} does not exist; use 0 to {N_PARAPHRASES}.")


def parse_caption(text: str) -> CaptionFields:
    """Read the facts back from a caption of any style; missing bed/window words mean absent.

    >>> parse_caption("two lamps and a bed in a teal bedroom")
    CaptionFields(wall='teal', bed=True, window=False, lamps=2)

    Raises ValueError naming what is missing when the caption gives no wall colour or no number of lamps.
    """
    words = re.findall(r"[a-z0-9]+", text.lower())
    colours = sorted({w for w in words if w in WALL_COLOURS}, key=words.index)
    if len(colours) != 1:
        problem = "names no wall colour" if not colours else f"names several wall colours ({', '.join(colours)})"
        raise ValueError(f"The caption {text!r} {problem}; name one of: {', '.join(WALL_COLOURS)}.")
    counts = [w for w, nxt in zip(words, words[1:]) if nxt in ("lamp", "lamps")]
    numbers = {**{w: i + 1 for i, w in enumerate(NUMBER_WORDS)}, **{str(i + 1): i + 1 for i in range(MAX_LAMPS)},
               "a": 1, "an": 1}
    if len(counts) != 1 or counts[0] not in numbers:
        raise ValueError(f"The caption {text!r} does not say how many lamps there are; write e.g. 'two lamps' "
                         f"(one to {NUMBER_WORDS[MAX_LAMPS - 1]}).")
    return CaptionFields(colours[0], "bed" in words, "window" in words, numbers[counts[0]])


# ---------------------------------------------------------------- latent

_LAMP_KEYS = ("x", "height", "size", "tone")
_SCENE_KEYS = ("bed_x", "bed_width", "bed_tone", "window_x", "window_width", "window_height", "floor_tone")
#: Names of the latent's entries, in order: per slot x, height, size, tone, lit (±1), then room geometry and tones.
LATENT_NAMES: tuple[str, ...] = tuple(
    f"lamp{i}_{k}" for i in range(MAX_LAMPS) for k in (*_LAMP_KEYS, "lit")
) + _SCENE_KEYS
LATENT_DIM = len(LATENT_NAMES)
_DEFAULT_SLOTS = (Lamp(0.2, False), Lamp(0.5, False), Lamp(0.8, False))


def _slots(scene: Scene) -> tuple[Lamp, ...]:
    """All MAX_LAMPS lamp slots of a scene: shown lamps, then spare, then defaults for slots a hand-made scene lacks."""
    have = scene.lamps + scene.spare
    return have + _DEFAULT_SLOTS[len(have):]


def encode_latent(scene: Scene) -> np.ndarray:
    """The scene's non-caption parameters as float32 (LATENT_DIM,) in [-1, 1]: unit values u become 2u - 1, lit ±1.

    >>> encode_latent(sample_scene(np.random.default_rng(0))).shape == (LATENT_DIM,)
    True
    """
    values: list[float] = []
    for lamp in _slots(scene):
        values += [2 * getattr(lamp, k) - 1 for k in _LAMP_KEYS] + [1.0 if lamp.lit else -1.0]
    values += [2 * getattr(scene, k) - 1 for k in _SCENE_KEYS]
    return np.asarray(values, np.float32)


def sample_latent(seed: int) -> np.ndarray:
    """The prior over non-caption parameters, deterministic in ``seed``: ``sample_latent(3)`` twice is equal."""
    return encode_latent(sample_scene(np.random.default_rng(seed)))


def natural_caption(seed: int) -> str:
    """The canonical caption of the room ``seed`` draws from the prior (what the benchmarks pair with its latent)."""
    return caption(sample_scene(np.random.default_rng(seed)))


def seed_scene(seed: int, fields: CaptionFields | str | None = None) -> Scene:
    """The room the model is asked for by ``seed`` and a caption: ``sample_latent(seed)`` with ``fields`` (None: the
    seed's :func:`natural_caption`)."""
    return scene_from(sample_latent(seed), natural_caption(seed) if fields is None else fields)


def scene_from(latent: np.ndarray, fields: CaptionFields | str) -> Scene:
    """Build the scene a latent and a caption describe (the first ``fields.lamps`` slots are shown).

    Exact inverse of encode_latent for sampled scenes (their values lie on a 2**-16 grid); values clip to [0, 1].

    >>> s = sample_scene(np.random.default_rng(1))
    >>> scene_from(encode_latent(s), caption(s)).wall == s.wall
    True
    """
    f = parse_caption(fields) if isinstance(fields, str) else fields
    z = np.asarray(latent, np.float64).reshape(-1)
    if z.shape != (LATENT_DIM,):
        raise ValueError(f"A Rooms latent has {LATENT_DIM} entries, this one {z.size}.")
    unit = np.clip((z + 1) / 2, 0.0, 1.0)
    slots = []
    for i in range(MAX_LAMPS):
        u = unit[5 * i: 5 * i + 4]
        slots.append(Lamp(float(u[0]), bool(z[5 * i + 4] > 0), float(u[1]), float(u[2]), float(u[3])))
    rest = [float(v) for v in unit[5 * MAX_LAMPS:]]
    return Scene(f.wall, f.bed, f.window, tuple(slots[:f.lamps]), *rest, spare=tuple(slots[f.lamps:]))


def with_lamp(scene: Scene, index: int, lit: bool) -> Scene:
    """The same room with lamp ``index`` switched on or off: ``render(with_lamp(s, 0, False))``."""
    lamps = list(scene.lamps)
    lamps[index] = replace(lamps[index], lit=bool(lit))
    return replace(scene, lamps=tuple(lamps))


def with_wall(scene: Scene, wall: str) -> Scene:
    """The same room painted another colour: ``with_wall(s, "green")``."""
    return replace(scene, wall=wall)


def with_fields(scene: Scene, f: CaptionFields | str) -> Scene:
    """The same room (same latent) with other caption facts, e.g. ``with_fields(s, "a red bedroom with one lamp")``."""
    return scene_from(encode_latent(scene), f)


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Grid:
    """Per-size constants: the bare room's labels, its anti-aliased edge pixels, and back-wall coordinates."""

    label: np.ndarray  # (H, W) uint8 region id of each pixel's majority
    weights: np.ndarray  # (H, W, 5) anti-aliased share of each region
    floor_share: np.ndarray  # (H, W, 1) float32 share of floor
    wall_vis: np.ndarray  # (H, W) share of each pixel that is back wall
    box: tuple[int, int, int, int]  # rows r0:r1, cols c0:c1 holding the back wall
    wall_x: np.ndarray  # (W,) room X of each column on the back wall plane
    wall_y: np.ndarray  # (H,) room Y of each row


@lru_cache(maxsize=8)
def _grid(size: int) -> _Grid:
    ss = 4  # supersampling for the room's diagonal edges
    t = (np.arange(size * ss) + 0.5) / (size * ss)
    u, v = np.meshgrid(t, t)
    ax = (u - _CX) / np.where(u < _CX, _CX, 1 - _CX)
    ay = (v - _CY) / np.where(v < _CY, _CY, 1 - _CY)
    side = np.abs(ax) >= np.abs(ay)
    region = np.where(side, np.where(ax < 0, _LEFT, _RIGHT), np.where(ay < 0, _CEIL, _FLOOR))
    region = np.where(np.maximum(np.abs(ax), np.abs(ay)) <= _S, _BACK, region)
    onehot = (region[..., None] == np.arange(5)).astype(np.float32)
    weights = onehot.reshape(size, ss, size, ss, 5).mean(axis=(1, 3))
    c = (np.arange(size) + 0.5) / size
    room = (_CX + (c - _CX) / _S).astype(np.float32)  # the back-wall room coordinate of each column
    room_y = (_CY + (c - _CY) / _S).astype(np.float32)
    inside = np.flatnonzero((room > -0.05) & (room < 1.05))
    rows = np.flatnonzero((room_y > -0.05) & (room_y < 1.05))
    box = (int(rows[0]), int(rows[-1]) + 1, int(inside[0]), int(inside[-1]) + 1)
    return _Grid(np.argmax(weights, axis=2).astype(np.uint8), weights, weights[..., _FLOOR:] + 0,
                 np.ascontiguousarray(weights[..., _BACK]), box, room, room_y)


@lru_cache(maxsize=64)
def _walls_image(wall: str, size: int) -> np.ndarray:
    """The bare room without its floor (walls and ceiling), cached per colour: render adds the floor's tone."""
    c = np.asarray(WALL_COLOURS[wall])
    table = np.stack([c, c * _SIDE_SHADE[0], c * _SIDE_SHADE[1], _CEILING, (0, 0, 0)]).astype(np.float32)
    image = _grid(size).weights @ table
    image.flags.writeable = False  # shared between renders
    return image


def _px(X: float, Y: float, k: float, size: int) -> tuple[float, float]:
    """Room point (X, Y) on the plane of scale k -> pixel coordinates (cv2 convention: pixel i spans [i, i+1])."""
    return (_CX + k * (X - _CX)) * size, (_CY + k * (Y - _CY)) * size


def _lamp_geometry(lamp: Lamp) -> tuple[float, float, float]:
    """Shade width, height and centre height in room units."""
    w = 0.11 + 0.07 * lamp.size
    return w, 0.8 * w, 0.40 + 0.17 * lamp.height


def _shade_colour(lamp: Lamp, lit: bool) -> np.ndarray:
    lo, hi = _SHADE_LIT if lit else _SHADE_UNLIT
    return lo + (hi - lo) * lamp.tone


def _window_rect(scene: Scene) -> tuple[float, float, float, float]:
    w = 0.18 + 0.16 * scene.window_width
    x = 0.12 + w / 2 + (0.76 - w) * scene.window_x
    top, h = 0.14, 0.20 + 0.14 * scene.window_height
    return x - w / 2, top, x + w / 2, top + h


def _bed_span(scene: Scene) -> tuple[float, float]:
    w = 0.34 + 0.16 * scene.bed_width
    x = 0.05 + w / 2 + (0.90 - w) * scene.bed_x
    return x - w / 2, x + w / 2


class _Canvas:
    """An image being painted, with the label of the topmost object per pixel and the back wall's visible share."""

    def __init__(self, scene: Scene, size: int):
        g = self.grid = _grid(size)
        floor = (_FLOOR_DARK + (_FLOOR_LIGHT - _FLOOR_DARK) * scene.floor_tone).astype(np.float32)
        self.size = size
        self.image = _walls_image(scene.wall, size) + g.floor_share * floor
        self.label = g.label.copy()
        self.wall_vis = g.wall_vis.copy()  # how much of each pixel still shows bare back wall
        self.track_vis = True  # render() stops tracking once the light pools are laid

    def poly(self, pts: Sequence[tuple[float, float]], colour: Sequence[float], label: int) -> None:
        """Paint a convex polygon (pixel coordinates) with anti-aliased edges."""
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0 = max(int(min(xs)) - 1, 0), max(int(min(ys)) - 1, 0)
        x1, y1 = min(int(max(xs)) + 2, self.size), min(int(max(ys)) + 2, self.size)
        if x1 <= x0 or y1 <= y0:
            return
        buf = np.zeros((y1 - y0, x1 - x0), np.uint8)
        shifted = [(round((x - x0) * 16), round((y - y0) * 16)) for x, y in pts]
        cv2.fillConvexPoly(buf, np.array(shifted, np.int32), 255, cv2.LINE_AA, 4)
        a = buf.astype(np.float32)
        a *= 1 / 255
        sub = self.image[y0:y1, x0:x1]
        sub += (np.asarray(colour, np.float32) - sub) * a[..., None]
        self.label[y0:y1, x0:x1][buf >= 128] = label
        if self.track_vis:
            self.wall_vis[y0:y1, x0:x1] *= 1 - a

    def rect(self, X0: float, Y0: float, X1: float, Y1: float, k: float, colour, label: int) -> None:
        """Paint a rectangle lying in the plane of scale k (room units)."""
        s = self.size
        self.poly([_px(X0, Y0, k, s), _px(X1, Y0, k, s), _px(X1, Y1, k, s), _px(X0, Y1, k, s)], colour, label)


_POOL_RY, _POOL_RX0, _POOL_SPREAD, _GLOW_R = 0.58, 0.45, 0.80, 1.5  # light shapes, in shade widths / room units


def _box_slices(g: _Grid, x0: float, x1: float, y0: float, y1: float, wall: bool = True) -> tuple[slice, slice]:
    """Pixel rows and columns covering room box [x0, x1] x [y0, y1], cut to the back wall's box if ``wall``."""
    r0, r1, c0, c1 = g.box if wall else (0, g.wall_y.size, 0, g.wall_x.size)
    cols = np.searchsorted(g.wall_x, (x0, x1))
    rows = np.searchsorted(g.wall_y, (y0, y1))
    return slice(max(int(rows[0]), r0), min(int(rows[1]), r1)), slice(max(int(cols[0]), c0), min(int(cols[1]), c1))


def _lamp_light(lamp: Lamp, g: _Grid) -> tuple[tuple[slice, slice], np.ndarray, tuple[slice, slice], np.ndarray]:
    """A lamp's light at full strength: the pool on the back wall and the glow round the shade, each on its own box."""
    w, _, yc = _lamp_geometry(lamp)
    reach = _POOL_RX0 * w + _POOL_SPREAD * _POOL_RY
    pool_box = _box_slices(g, lamp.x - reach, lamp.x + reach, yc - _POOL_RY, yc + _POOL_RY)
    dx = g.wall_x[pool_box[1]][None, :] - lamp.x
    dy = g.wall_y[pool_box[0]][:, None] - yc
    rx = _POOL_RX0 * w + _POOL_SPREAD * np.abs(dy)  # a cone of light opening up and down from the shade
    q = np.minimum((dx / rx) ** 2 + (dy * (1 / _POOL_RY)) ** 2, 1)
    pool = _POOL_PEAK * (1 - q) ** 2
    r = _GLOW_R * w
    glow_box = _box_slices(g, lamp.x - r, lamp.x + r, yc - r, yc + r, wall=False)
    gx = g.wall_x[glow_box[1]][None, :] - lamp.x
    gy = g.wall_y[glow_box[0]][:, None] - yc
    r2 = np.minimum((gx * gx + gy * gy) * (1 / (r * r)), 1)  # round in the image: wall units scale alike in x and y
    glow = _GLOW_PEAK * (1 - r2) ** 2
    return pool_box, pool, glow_box, glow


def _paint_lamp(canvas: _Canvas, lamp: Lamp, slot: int) -> None:
    s, k = canvas.size, _S
    w, h, yc = _lamp_geometry(lamp)
    top, bottom = yc - h / 2, yc + h / 2
    pole = 0.013
    canvas.rect(lamp.x - pole, bottom, lamp.x + pole, 0.985, k, _POLE, _POLE_ID + slot)
    canvas.poly([_px(lamp.x - 0.04, 1.0, k, s), _px(lamp.x + 0.04, 1.0, k, s), _px(lamp.x + 0.028, 0.972, k, s),
                 _px(lamp.x - 0.028, 0.972, k, s)], _POLE, _POLE_ID + slot)
    canvas.poly([_px(lamp.x - 0.33 * w, top, k, s), _px(lamp.x + 0.33 * w, top, k, s),
                 _px(lamp.x + 0.5 * w, bottom, k, s), _px(lamp.x - 0.5 * w, bottom, k, s)],
                _shade_colour(lamp, lamp.lit), _SHADE_ID + slot)


def _paint_bed(canvas: _Canvas, scene: Scene) -> None:
    """The mattress, in front of the lamps (the headboard is painted behind them)."""
    s, k0, k1 = canvas.size, _S, _BED_FRONT_K
    x0, x1 = _bed_span(scene)
    yt = _BED_TOP_Y
    blanket = _BLANKET[0] + (_BLANKET[1] - _BLANKET[0]) * scene.bed_tone

    def quad(xa: float, xb: float, ka: float, kb: float, colour) -> None:  # a patch of the mattress top
        canvas.poly([_px(xa, yt, ka, s), _px(xb, yt, ka, s), _px(xb, yt, kb, s), _px(xa, yt, kb, s)], colour, _BED)

    for xe, faces in ((x0, x0 > _CX), (x1, x1 < _CX)):  # a side of the bed faces the camera when off-centre
        if faces:
            canvas.poly([_px(xe, yt, k0, s), _px(xe, yt, k1, s), _px(xe, 1, k1, s), _px(xe, 1, k0, s)],
                        blanket * 0.7, _BED)
    kb = k0 + 0.35 * (k1 - k0)
    quad(x0, x1, k0, kb, _SHEET)
    inset = 0.06 * (x1 - x0)
    quad(x0 + inset, x1 - inset, k0 + 0.04 * (k1 - k0), k0 + 0.25 * (k1 - k0), _PILLOW)
    quad(x0, x1, kb, k1, blanket)
    canvas.rect(x0, yt, x1, 1.0, k1, blanket * 0.8, _BED)


def _compose(scene: Scene, lamps: Sequence[Lamp], size: int, bed: bool, window: bool,
             lights: bool) -> tuple[_Canvas, list[np.ndarray]]:
    """Paint a room with the given lamps (slot order); with ``lights``, also return each lamp's full light change."""
    canvas = _Canvas(scene, size)
    if window:
        x0, y0, x1, y1 = _window_rect(scene)
        f = 0.022
        canvas.rect(x0, y0, x1, y1, _S, _FRAME, _WINDOW)
        canvas.rect(x0 + f, y0 + f, x1 - f, y1 - f, _S, _GLASS, _WINDOW)
    light = [_lamp_light(l, canvas.grid) if l.lit or lights else None for l in lamps]
    for lamp, li in zip(lamps, light):
        if lamp.lit:
            box, pool = li[0], li[1]
            canvas.image[box] += (pool * canvas.wall_vis[box])[..., None] * _LIGHT  # light on the bare back wall
    canvas.track_vis = lights
    if bed:
        bx0, bx1 = _bed_span(scene)
        canvas.rect(bx0, _HEADBOARD_Y, bx1, 1.0, _S, _HEADBOARD, _BED)
    for i, lamp in enumerate(lamps):
        _paint_lamp(canvas, lamp, i)
    if bed:
        _paint_bed(canvas, scene)
    for lamp, li in zip(lamps, light):
        if lamp.lit:
            canvas.image[li[2]] += li[3][..., None] * _LIGHT
    np.clip(canvas.image, 0.0, 1.0, out=canvas.image)
    change = []
    for li in light if lights else ():
        c = np.zeros((size, size), np.float32)  # painting is linear: the pool shows where the bare wall still does
        c[li[0]] += li[1] * canvas.wall_vis[li[0]]
        c[li[2]] += li[3]
        change.append(c)
    return canvas, change


# ---------------------------------------------------------------- rendering


def render(scene: Scene, size: int = 128) -> np.ndarray:
    """The scene as an image, (size, size, 3) float32 in [0, 1]; deterministic, so counterfactuals are exact."""
    canvas, _ = _compose(scene, scene.lamps, size, scene.bed, scene.window, lights=False)
    return canvas.image


def truth(scene: Scene, size: int = 128) -> Truth:
    """Render a scene with its masks: 'wall', 'floor', 'ceiling', 'bed', 'window', 'lamp<i>' and 'glow<i>'.

    ``glow<i>`` is where lamp i's light, when lit, changes the image by more than GLOW_THRESHOLD, whatever its state;
    absent objects give all-False masks::

        t = truth(scene); t.image[t.masks["lamp0"]].mean()
    """
    canvas, change = _compose(scene, scene.lamps, size, scene.bed, scene.window, lights=True)
    lab = canvas.label
    masks = {
        "wall": lab <= _RIGHT,
        "floor": lab == _FLOOR,
        "ceiling": lab == _CEIL,
        "bed": lab == _BED,
        "window": lab == _WINDOW,
    }
    for i in range(MAX_LAMPS):
        masks[f"lamp{i}"] = (lab == _SHADE_ID + i) | (lab == _POLE_ID + i)
    for i in range(MAX_LAMPS):
        masks[f"glow{i}"] = change[i] > GLOW_THRESHOLD if i < len(change) else np.zeros_like(masks["wall"])
    return Truth(canvas.image, masks, tuple(l.lit for l in scene.lamps), caption(scene), scene)


# ---------------------------------------------------------------- detectors
# They judge an image (rendered or generated) against the scene it should show: the scene gives where each object would
# be, the image decides what is there, by comparing each object's region with renders of "present" and "absent".


def _geometry(scene: Scene) -> Scene:
    """The scene's geometry alone: every slot shown and unlit, a fixed colour (a cache key for the detectors)."""
    slots = tuple(replace(l, lit=False) for l in _slots(scene))
    return replace(scene, wall="red", bed=False, window=False, lamps=slots, spare=())


@lru_cache(maxsize=256)
def _clean_wall(geometry: Scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of wall pixels no object, window or lamp light of any slot can reach, and their shading."""
    canvas, change = _compose(geometry, _slots(geometry), size, bed=True, window=True, lights=True)
    clean = canvas.label <= _RIGHT
    for c in change:
        clean &= c < 0.005
    clean = cv2.erode(clean.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # off anti-aliased edges
    if clean.sum() < 20:  # a crowded room: fall back to every wall pixel
        clean = canvas.label <= _RIGHT
    where = np.flatnonzero(clean)
    where = where[np.linspace(0, where.size - 1, min(where.size, 400)).astype(int)]  # 400 voters are plenty
    factor = np.asarray((1.0, *_SIDE_SHADE), np.float32)[canvas.label.reshape(-1)[where]]
    return where, factor


def detect_wall(image: np.ndarray, scene: Scene) -> str:
    """Nearest palette colour, by majority over wall pixels clear of lamps, light pools, window and bed.

    ``detect_wall(render(s), s) == s.wall``
    """
    clean, factor = _clean_wall(_geometry(scene), image.shape[0])
    pixels = np.asarray(image, np.float32).reshape(-1, 3)[clean]
    palette = np.asarray(list(WALL_COLOURS.values()), np.float32)
    expected = factor[:, None, None] * palette[None]  # (N, colours, 3): side walls are shaded darker
    votes = np.argmin(((pixels[:, None] - expected) ** 2).sum(-1), axis=1)
    return list(WALL_COLOURS)[int(np.bincount(votes, minlength=len(palette)).argmax())]


def _nearer_present(image: np.ndarray, region: np.ndarray, present: Sequence[np.ndarray],
                    absent: np.ndarray) -> bool:
    """Does the image look, inside region, more like one of the 'present' renders than the 'absent' one?"""
    if not region.any():
        return False

    def err(h: np.ndarray) -> float:
        return float(np.sqrt(((image[region] - h[region]) ** 2).sum(-1)).mean())

    return min(err(h) for h in present) < err(absent)


def detect_fields(image: np.ndarray, scene: Scene) -> CaptionFields:
    """The caption facts an image shows, judged where the scene puts each object; every lamp slot is checked.

    ``detect_fields(render(s), s) == fields(s)``
    """
    image = np.asarray(image, np.float32)
    size = image.shape[0]
    room = replace(scene, wall=detect_wall(image, scene))
    lamps = room.lamps

    def draw(lamp_list: Sequence[Lamp], bed: bool, window: bool) -> _Canvas:
        return _compose(room, lamp_list, size, bed, window, lights=False)[0]

    full, bare = draw(lamps, True, True), draw(lamps, False, False)  # bed and window never overlap each other
    bed = _nearer_present(image, full.label == _BED, [full.image], bare.image)
    window = _nearer_present(image, full.label == _WINDOW, [full.image], bare.image)
    slots = _slots(scene)
    lit = draw([replace(l, lit=True) for l in slots], bed, window)
    unlit = draw([replace(l, lit=False) for l in slots], bed, window)
    empty = draw([], bed, window)
    count = 0
    for i in range(MAX_LAMPS):
        region = (lit.label == _SHADE_ID + i) | (lit.label == _POLE_ID + i)
        count += _nearer_present(image, region, [lit.image, unlit.image], empty.image)
    return CaptionFields(room.wall, bed, window, count)


@lru_cache(maxsize=256)
def _shade_regions(geometry: Scene, size: int) -> np.ndarray:
    """(H, W) int8: the slot whose shade covers each pixel, -1 elsewhere (bed and window never cover a shade)."""
    label = _compose(geometry, geometry.lamps, size, bed=False, window=False, lights=False)[0].label.astype(np.int8)
    return np.where((label >= _SHADE_ID) & (label < _SHADE_ID + MAX_LAMPS), label - _SHADE_ID, -1).astype(np.int8)


def detect_lit(image: np.ndarray, scene: Scene, index: int) -> bool:
    """Is lamp ``index`` lit? Its shade's median colour against the lit (with its own glow) and the unlit shade.

    ``detect_lit(render(s), s, 0) == s.lamps[0].lit``
    """
    lamp = _slots(scene)[index]
    shade = _shade_regions(_geometry(scene), image.shape[0]) == index
    if not shade.any():
        return False
    colour = np.median(np.asarray(image, np.float32)[shade], axis=0)
    lit_colour = np.clip(_shade_colour(lamp, True) + _GLOW_PEAK * _LIGHT, 0, 1)
    return bool(np.linalg.norm(colour - lit_colour) < np.linalg.norm(colour - _shade_colour(lamp, False)))


__all__ = [
    "WALL_COLOURS", "MAX_LAMPS", "LIT_RATE", "BED_RATE", "WINDOW_RATE", "GLOW_THRESHOLD", "LAMP_SPACING",
    "NUMBER_WORDS", "N_PARAPHRASES", "LATENT_DIM", "LATENT_NAMES", "Lamp", "Scene", "CaptionFields", "Truth",
    "sample_scene", "render", "truth", "caption", "parse_caption", "fields", "encode_latent", "sample_latent",
    "natural_caption", "seed_scene", "scene_from", "with_lamp", "with_wall", "with_fields", "detect_wall",
    "detect_fields", "detect_lit", "benchmark",
]


def benchmark(n: int = 300, size: int = 128) -> dict[str, float]:
    """Scenes per second of CPU time on this process's core, for render, truth and detect_fields.

    ``python -c "from studio.core.rooms import benchmark; print(benchmark())"``; CPU time, not wall time, so busy
    neighbours barely move the figure.
    """

    scenes = [sample_scene(np.random.default_rng(i)) for i in range(n)]
    images = [render(s, size) for s in scenes]  # warms the per-size caches
    rates = {}
    for name, work in (("render", lambda s, im: render(s, size)), ("truth", lambda s, im: truth(s, size)),
                       ("detect_fields", lambda s, im: detect_fields(im, s))):
        start = time.process_time()
        for s, im in zip(scenes, images):
            work(s, im)
        rates[name] = n / (time.process_time() - start)
    return rates

