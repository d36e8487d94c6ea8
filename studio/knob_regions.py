"""The app's way to learn a knob from quick masks, and where a knob's thing is on a new image (a region to propose).

:func:`learn_app_knob` is what the Seeds tab's "Learn knob", ``python -m studio knob learn`` without tuning flags
and ``python -m studio bench rooms --app`` all run: the settings chosen on the Rooms tuning rooms, and a "core" part
found from the user's quick masks alone (where the present and the wanted examples differ most), so one quick mask
per example gives the knob a second region like the bench's tight lamp box::

    knob = learn_app_knob(generator, "lamp off", present=lit_examples, wanted=unlit_examples)

The Seeds tab proposes a region as the quick mask of a new example (the user accepts or corrects it), and the
"across seeds" grid applies a knob there on each seed, so the grid shows whether the knob generalises::

    mask = propose_region(generator, knob, generator.sample(12))   # (H, W) float in {0, 1}, maybe empty
    edit = KnobEdit(knob, mask, strength=1.0)
"""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from .core.hooks import box_crop, mask_box
from .core.progress import ProgressCallback
from .knobs import Example, Knob, KnobError, learn_knob, place_box
from .knobs import _check_examples as check_examples

if TYPE_CHECKING:
    from models.base import Generator, Sample

#: A pixel belongs to the region when its score is at least this share of the image's best score.
SHARE_OF_PEAK = 0.35
#: A knob without examples proposes the strong run grown by this share of its size on each side (a hand paints a
#: little wide).
MARGIN = 0.15
#: A proposed box is at most this many times as wide as the strong run through the peak (see :func:`propose_region`).
WIDTH_CAP = 1.8
#: The app's knob: units and pattern grid of the whole painted region and of its self-found core (as the bench's).
APP_UNITS, APP_PATTERN = 48, 6
APP_CORE_UNITS, APP_CORE_PATTERN = 32, 4
#: The core part is the smallest box (on a ``CORE_GRID`` x ``CORE_GRID`` grid over the region's box) that holds this
#: share of the difference between the present and the wanted examples' images.
CORE_SHARE = 0.5
CORE_GRID = 12
#: The name of the self-found part on every example.
CORE = "core"


def app_layers(generator: "Generator") -> tuple[list[str], list[str]]:
    """The layers of the app's knob and of its core part: the three finest spatial layers at a quarter of the image's
    resolution or coarser (Rooms: ``blocks.0``-``blocks.2``), and for the core the finer two of them (Rooms:
    ``blocks.1``-``blocks.2``), since the core is smaller than the whole region. Every layer a knob edits then lies
    at a quarter of the resolution or coarser, so the finer layers (the Rooms decoder) may be trained to draw
    knob-edited lamps (``studio/rooms/knob_edits.py``) without moving the knob's activations."""
    spatial = [info for info in generator.layers() if info.size is not None]
    if not spatial:
        raise KnobError(f"{generator.name} has no spatial layer to learn a knob on.")
    side = max(generator.resolution)
    coarse = [i for i, info in enumerate(spatial) if max(info.size) * 4 <= side] or [0]
    main = coarse[-3:]
    part = main[1:] or main
    return [spatial[i].name for i in main], [spatial[i].name for i in part]


def _box_image(image: torch.Tensor, mask: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, G, G) the image over the mask's box measured from the mean colour just around that box, and (G, G) how
    much of each cell the mask covers."""
    box = mask_box(mask)
    crop = box_crop(image[None], box, (grid, grid))[0]
    cover = box_crop(mask[None, None], box, (grid, grid))[0, 0]
    h, w = mask.shape[-2:]
    y0, x0, y1, x1 = box
    pad = max(2, int(0.1 * max(h, w)))
    r0, c0 = max(int(y0 * h) - pad, 0), max(int(x0 * w) - pad, 0)
    r1, c1 = min(int(round(y1 * h)) + pad, h), min(int(round(x1 * w)) + pad, w)
    ring = torch.zeros(h, w, dtype=torch.bool)
    ring[r0:r1, c0:c1] = True
    ring[int(y0 * h):int(round(y1 * h)), int(x0 * w):int(round(x1 * w))] = False
    around = image[:, ring].float().mean(1) if bool(ring.any()) else image.float().mean((-1, -2))
    return crop - around[:, None, None], cover


def core_box(images_present: Sequence[torch.Tensor], masks_present: Sequence[torch.Tensor],
             images_wanted: Sequence[torch.Tensor], masks_wanted: Sequence[torch.Tensor],
             share: float = CORE_SHARE, grid: int = CORE_GRID) -> tuple[float, float, float, float]:
    """Where in the painted regions' boxes the present and wanted examples differ most: (y0, x0, y1, x1) as fractions
    of the box, the smallest box of cells holding ``share`` of the difference between the groups' mean images (each
    measured from its surroundings, so the walls' colours cancel), weighted by how often the masks cover each cell.
    """
    p = [_box_image(i, m, grid) for i, m in zip(images_present, masks_present)]
    w = [_box_image(i, m, grid) for i, m in zip(images_wanted, masks_wanted)]
    diff = torch.stack([c for c, _ in p]).mean(0) - torch.stack([c for c, _ in w]).mean(0)
    cover = torch.stack([m for _, m in p + w]).mean(0)
    mass = diff.norm(dim=0) * cover
    total = float(mass.sum())
    if total <= 0:
        return (0.0, 0.0, 1.0, 1.0)
    cum = F.pad(mass.cumsum(0).cumsum(1), (1, 0, 1, 0))
    best = None
    for r0 in range(grid):
        for r1 in range(r0 + 1, grid + 1):
            for c0 in range(grid):
                for c1 in range(c0 + 1, grid + 1):
                    held = float(cum[r1, c1] - cum[r0, c1] - cum[r1, c0] + cum[r0, c0])
                    if held >= share * total:
                        key = ((r1 - r0) * (c1 - c0), -held)
                        if best is None or key < best[0]:
                            best = (key, (r0, c0, r1, c1))
                        break  # a wider box from this corner only holds more
    r0, c0, r1, c1 = best[1]  # type: ignore[index]
    return (r0 / grid, c0 / grid, r1 / grid, c1 / grid)


def learn_app_knob(generator: "Generator", name: str, present: Sequence[Example], wanted: Sequence[Example],
                   progress: ProgressCallback | None = None, *, core_share: float = CORE_SHARE) -> Knob:
    """Learn a knob as the app does, from one quick mask per example: units compared cell by cell with targets
    relative to the surroundings (``select="cells"``, ``relative=True``) on :func:`app_layers`, and a "core" part
    region, :func:`core_box` placed on every example's mask (unless the examples already name parts of their own).

    >>> knob = learn_app_knob(gen, "lamp off", present=[Example(s1, m1), ...], wanted=[Example(s5, m5), ...])
    >>> [r.name for r in knob.regions]
    ['core']
    """
    main, part = app_layers(generator)
    examples = [*present, *wanted]
    named = bool(examples) and all(ex.parts for ex in examples)
    if present and wanted and not named and core_share < 1:
        check_examples(generator, "present", present)  # an empty or misfit mask: one sentence, before rendering
        check_examples(generator, "wanted", wanted)
        with torch.inference_mode():
            images = [generator.render([ex.sample])[0].float().cpu() for ex in examples]
        k = len(present)
        masks = [ex.mask.float().cpu() for ex in examples]
        box = core_box(images[:k], masks[:k], images[k:], masks[k:], core_share)
        present = [Example(ex.sample, ex.mask, {CORE: place_box(ex.mask, box)}) for ex in present]
        wanted = [Example(ex.sample, ex.mask, {CORE: place_box(ex.mask, box)}) for ex in wanted]
    return learn_knob(generator, name, present=present, wanted=wanted, layers=main, units=APP_UNITS,
                      pattern=APP_PATTERN, part_layers=part, part_units=APP_CORE_UNITS,
                      part_pattern=APP_CORE_PATTERN, select="cells", relative=True, progress=progress)


def present_score(generator: "Generator", knob: Knob, sample: "Sample") -> torch.Tensor:
    """(H, W) CPU map: how much more the knob's units look "present" than "wanted" at each pixel (> 0: present).

    Per layer, each unit's distance to its mean wanted value minus its distance to its mean present value, over the
    spread between the two, averaged over the units, upsampled to the image and averaged over the layers. A unit whose
    targets are relative to the region's surroundings (``knob.relative``) is read relative to its mean over the
    image, since no region is painted yet.
    """
    layers = [layer for layer, units in knob.units.items() if len(units)]
    with torch.inference_mode():
        acts = generator.trace([sample], layers)
        total = torch.zeros(1, 1, *generator.resolution)
        for layer in layers:
            units = knob.units[layer].to(acts[layer].device)
            a = acts[layer][:1, units].float().cpu()  # (1, K, h, w)
            if layer in knob.relative:
                a = a - knob.relative[layer].float().view(1, -1, 1, 1) * a.mean((-1, -2), keepdim=True)
            present = knob.present[layer].float().mean((-1, -2)).view(1, -1, 1, 1)
            wanted = knob.wanted[layer].float().mean((-1, -2)).view(1, -1, 1, 1)
            spread = (present - wanted).abs().clamp(min=1e-6)
            score = (((a - wanted).abs() - (a - present).abs()) / spread).mean(1, keepdim=True)
            total += F.interpolate(score, size=generator.resolution, mode="bilinear", align_corners=False)
    return (total / max(len(layers), 1))[0, 0]


def example_size(knob: Knob) -> tuple[float, float] | None:
    """The typical (median) height and width, in pixels of the image, of the boxes of the knob's example masks (present
    and wanted; a knob loaded from file keeps its examples), or None when it has none.

    A knob's targets are patterns placed on the painted region's box (centred and scaled to it), so a region proposed
    on a new image should be a box of this size: then the pattern lands where it lay on the examples.
    """
    heights, widths = [], []
    for ex in [*knob.examples.get("present", []), *knob.examples.get("wanted", [])]:
        box = mask_box(ex.mask)
        if box is not None:
            h, w = ex.mask.shape[-2:]
            heights.append((box[2] - box[0]) * h)
            widths.append((box[3] - box[1]) * w)
    return (statistics.median(heights), statistics.median(widths)) if heights else None


def propose_region(generator: "Generator", knob: Knob, sample: "Sample") -> torch.Tensor:
    """(H, W) box mask on the strongest "present" spot of ``sample`` (all zeros when nothing looks present).

    The box has the examples' height (:func:`example_size`) and their width up to ``WIDTH_CAP`` times the strong run
    (``SHARE_OF_PEAK``) through the peak along its row, centred on the middle of the strong runs along the peak's row
    and column and shifted inside the image where it would stick out; a knob without examples gets the strong runs
    grown by ``MARGIN``. Measured on the Rooms model, seeds 12-60 with a lit lamp (39), for the shipped lamp-off, a
    knob by :func:`learn_app_knob` and one by ``learn_knob``'s defaults, each from 4 + 4 quick boxes: the box holds
    >= 40 % of a lit lamp and < 10 % of every unlit one on 39, 39 and 39 seeds (the older box round the strong runs
    plus the margin: 39, 38, 37), and the knob applied there switches exactly that lamp off, the others as they
    were and none erased, on 31, 33 and 24 (older: 13, 16, 19; seeds 61-160, 82 with a lit lamp: 57, 67, 50 against
    30, 26, 50). The examples' full width switches more lamps off (37, 39, 32 of 39) but reaches over a neighbouring
    unlit lamp on 4 or 5 seeds (cover 35, 35, 34); capping at 1.6 times the run loses switches (26, 31, 18) and 2.0
    already covers an unlit lamp; the strong run plus ``MARGIN`` (1.3 times) switches 22, 26, 9. Centring on the
    peak itself switches 27, 33, 9, on the centroid of the strong connected area 29, 34, 22. (All measured on the
    two-stage Rooms weights; on the shipped three-stage ones, seeds 12-60: the box holds the lamp as above on 39, 39
    and 38 seeds, the bare defaults' box touching an unlit lamp on seed 17, and the knob switches exactly that lamp
    off on 36, 39 and 33.)
    """
    score = present_score(generator, knob, sample)
    h, w = score.shape
    peak = float(score.max())
    mask = torch.zeros(h, w)
    if peak <= 0:
        return mask
    y, x = divmod(int(score.argmax()), w)
    strong = score >= SHARE_OF_PEAK * peak
    # the strong pixels connected to the peak along its row and column give the spot (no labelling library needed)
    rows, cols = strong[:, x], strong[y, :]
    y0, y1 = _run(rows, y)
    x0, x1 = _run(cols, x)
    size = example_size(knob)
    if size is None:
        dy, dx = int(MARGIN * (y1 - y0 + 1)), int(MARGIN * (x1 - x0 + 1))
        mask[max(y0 - dy, 0):min(y1 + dy, h - 1) + 1, max(x0 - dx, 0):min(x1 + dx, w - 1) + 1] = 1
        return mask
    bh = min(max(int(round(size[0])), 1), h)
    bw = min(max(int(round(min(size[1], WIDTH_CAP * (x1 - x0 + 1)))), 1), w)
    top = min(max(int(round((y0 + y1 + 1 - bh) / 2)), 0), h - bh)  # centred on the runs, shifted inside the image
    left = min(max(int(round((x0 + x1 + 1 - bw) / 2)), 0), w - bw)
    mask[top:top + bh, left:left + bw] = 1
    return mask


def _run(line: torch.Tensor, at: int) -> tuple[int, int]:
    """The first and last index of the run of True values in ``line`` that contains ``at``."""
    start = stop = at
    while start > 0 and bool(line[start - 1]):
        start -= 1
    while stop < len(line) - 1 and bool(line[stop + 1]):
        stop += 1
    return start, stop
