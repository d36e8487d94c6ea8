"""Where on an image a knob's thing is in its "present" state, from the knob's own units: a region to propose.

The Seeds tab proposes it as the quick mask of a new example (the user accepts or corrects it), and the
"across seeds" grid applies a knob there on each seed, so the grid shows whether the knob generalises::

    mask = propose_region(generator, knob, generator.sample(12))   # (H, W) float in {0, 1}, maybe empty
    edit = KnobEdit(knob, mask, strength=1.0)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .knobs import Knob

if TYPE_CHECKING:
    from models.base import Generator, Sample

#: A pixel belongs to the region when its score is at least this share of the image's best score.
SHARE_OF_PEAK = 0.35
#: The proposed box grows by this share of its size on each side (a hand paints a little wide).
MARGIN = 0.15


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


def propose_region(generator: "Generator", knob: Knob, sample: "Sample") -> torch.Tensor:
    """(H, W) box mask around the strongest "present" spot of ``sample`` (all zeros when nothing looks present)."""
    score = present_score(generator, knob, sample)
    h, w = score.shape
    peak = float(score.max())
    mask = torch.zeros(h, w)
    if peak <= 0:
        return mask
    y, x = divmod(int(score.argmax()), w)
    strong = score >= SHARE_OF_PEAK * peak
    # the strong pixels connected to the peak along its row and column give the box (no labelling library needed)
    rows, cols = strong[:, x], strong[y, :]
    y0, y1 = _run(rows, y)
    x0, x1 = _run(cols, x)
    dy, dx = int(MARGIN * (y1 - y0 + 1)), int(MARGIN * (x1 - x0 + 1))
    mask[max(y0 - dy, 0):min(y1 + dy, h - 1) + 1, max(x0 - dx, 0):min(x1 + dx, w - 1) + 1] = 1
    return mask


def _run(line: torch.Tensor, at: int) -> tuple[int, int]:
    """The first and last index of the run of True values in ``line`` that contains ``at``."""
    start = stop = at
    while start > 0 and bool(line[start - 1]):
        start -= 1
    while stop < len(line) - 1 and bool(line[stop + 1]):
        stop += 1
    return start, stop
