"""Causal unit ranking: which units of a layer make what is under a painted mask?

Each unit (channel) of the layer is switched off (``zero``) or set to its mean (``mean``), the image is
re-rendered, and the change is measured inside the mask and outside it::

    samples = [gen.sample(s, prompt) for s in (1, 2, 3)]          # several seeds: units of the concept
    ranking = rank_units(gen, samples, mask, "blocks.1")            # exact: every unit switched off in turn
    ranking = rank_units(gen, samples, mask, "blocks.1", method="fast")   # estimate all, check the top exactly
    for u in ranking.top(10):
        print(u.unit, u.score, u.inside, u.outside, u.exact)
    best = rank_layers(gen, samples, mask)[0].layer                 # the layer with the most specific units

Effects (:func:`measure_effect`): the mean absolute change per pixel (averaged over RGB) inside the mask and
outside it, the mask's values weighting pixels; averaged over the images. Score (:func:`specificity_score`):
``inside / (outside + floor)``, ``floor`` four times the layer's mean inside effect: units rank by how much they
change the mask, discounted once their change outside rivals that (a unit changing the whole room scores low, a
dead unit 0). Chosen on the Rooms truth task's tuning scenes (``python -m studio bench rooms``: mask a lamp's
light, switch the top units off, is the lamp off?) against ``inside - outside``, ``inside * contrast`` and floors
of 0.25 to 4: it switched off 8 of 12 lamps with ``blocks.1`` top 20 (inside - outside: 8, a floor of 0.25: 4)
and 11 of 12 with ``blocks.3`` top 20 switched off inside the mask (inside - outside: 4).

The exact path re-renders only the layers after the edited one (``Generator.forward_from``) for many
(unit, image) pairs per batch; models without that (diffusion) render in full with a per-image ablation hook,
optionally only within a window of denoising steps. The fast path lives in :mod:`studio.attribution`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from .ablation import Ablator, measure_effect, run_chunked  # noqa: F401  (measure_effect: public here)
from .attribution import estimate_effects
from .core.errors import MaskError, StudioError, UnsupportedOperation
from .core.images import mask_from_array
from .core.progress import ProgressCallback, ProgressUpdate, Ticker

METHODS = ("exact", "fast")
ABLATIONS = ("zero", "mean")
#: The score's floor on the outside effect, in units of the layer's mean inside effect.
FLOOR = 4.0
#: Units the fast path checks exactly, unless ``candidates`` says otherwise.
DEFAULT_CANDIDATES = 5


@dataclass(frozen=True)
class UnitScore:
    """One unit's effect: mean absolute change per pixel inside and outside the mask, and its score."""

    unit: int
    score: float
    inside: float
    outside: float
    exact: bool  # measured by re-rendering (True) or estimated from gradients (False)

    def to_json(self) -> dict:
        return {"unit": self.unit, "score": self.score, "inside": self.inside, "outside": self.outside,
                "exact": self.exact}


@dataclass
class Ranking:
    """Every unit of one layer, best first, with how they were measured.

    >>> ranking.top(3)[0].unit          # the unit whose switch-off changes the mask most specifically
    >>> Ranking.from_json(ranking.to_json()) == ranking
    True
    """

    layer: str
    method: str  # exact | fast
    ablation: str  # zero | mean
    seeds: list[int]
    units: list[UnitScore]  # sorted by score, best first; every unit of the layer appears once
    seconds: float
    notes: list[str] = field(default_factory=list)

    def top(self, k: int) -> list[UnitScore]:
        return self.units[:max(0, int(k))]

    @property
    def exact_units(self) -> list[int]:
        """The units whose numbers come from re-rendering."""
        return [u.unit for u in self.units if u.exact]

    def to_json(self) -> dict:
        return {"layer": self.layer, "method": self.method, "ablation": self.ablation, "seeds": list(self.seeds),
                "units": [u.to_json() for u in self.units], "seconds": self.seconds, "notes": list(self.notes)}

    @classmethod
    def from_json(cls, data: dict) -> "Ranking":
        units = [UnitScore(int(u["unit"]), float(u["score"]), float(u["inside"]), float(u["outside"]),
                           bool(u["exact"])) for u in data["units"]]
        return cls(str(data["layer"]), str(data["method"]), str(data.get("ablation", "zero")),
                   [int(s) for s in data.get("seeds", [])], units, float(data.get("seconds", 0.0)),
                   [str(n) for n in data.get("notes", [])])


@dataclass
class LayerSummary:
    """How specific the best units of one layer are for the mask (:func:`rank_layers`)."""

    layer: str
    units: int
    size: tuple[int, int] | None
    best_score: float
    mean_top_score: float  # mean score of the layer's top ``top`` units
    ranking: Ranking


# -- effects and score ---------------------------------------------------------------------------------------------
def specificity_score(inside: Tensor, outside: Tensor) -> Tensor:
    """``inside / (outside + floor)`` for every unit of a layer; ``floor`` = four times the mean of ``inside``.

    >>> specificity_score(torch.tensor([0.03, 0.03, 0.0]), torch.tensor([0.0, 0.04, 0.0]))   # [0.375, 0.25, 0.0]
    """
    floor = (FLOOR * inside.float().mean()).clamp_min(1e-12)
    return inside / (outside + floor)


# -- masks ---------------------------------------------------------------------------------------------------------
def prepare_masks(mask: Tensor | Any, size: tuple[int, int], count: int) -> tuple[Tensor, list[str]]:
    """(count, H, W) float masks from one (H, W) mask or one per image; checked, resized with a note if needed.

    An empty mask, a mask of another aspect ratio, or a wrong number of masks raise :class:`MaskError`.
    """
    m = torch.as_tensor(mask).detach().to("cpu", torch.float32)
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() == 2:
        one, note = mask_from_array(m.numpy(), size)
        return one.expand(count, *one.shape).clone(), [note] if note else []
    if m.dim() != 3:
        raise MaskError(f"A mask is (H, W) or one per image (B, H, W), not of shape {tuple(m.shape)}.")
    if m.shape[0] != count:
        raise MaskError(f"{m.shape[0]} masks were given for {count} images: give one mask, or one per image.")
    masks, notes = [], []
    for i in range(count):
        one, note = mask_from_array(m[i].numpy(), size, name=f"The mask of image {i + 1}")
        masks.append(one)
        if note:
            notes.append(note)
    return torch.stack(masks), notes


# -- ranking -------------------------------------------------------------------------------------------------------
def rank_units(generator, samples: Sequence, mask: Tensor, layer: str, *, method: str = "exact",
               ablation: str = "zero", candidates: int | None = None, chunk: int | None = None,
               steps: tuple[int, int] | None = None, progress: ProgressCallback | None = None,
               colours: str | None = None) -> Ranking:
    """Rank every unit of ``layer`` by how specifically switching it off changes the image inside ``mask``.

    samples: the images (several seeds: scores are averaged, so a unit found is a unit of the concept).
    mask: (H, W) shared, or (B, H, W) one per sample, in [0, 1] at image resolution.
    method: ``exact`` re-renders every unit; ``fast`` estimates every unit from gradients and re-renders the
    top ``candidates`` (their :attr:`UnitScore.exact` is True). ablation: ``zero`` or ``mean``.
    chunk: images per forward pass (default from the model and device; halved on out-of-memory).
    steps: diffusion only, switch units off in denoising steps ``[start, stop)``.
    colours: fast only, the gradient passes' colour weighting (:func:`studio.attribution.estimate_effects`).
    progress: called with :class:`ProgressUpdate` (unit ``"units"``); returning False raises ``Cancelled``.

    >>> ranking = rank_units(gen, [gen.sample(1), gen.sample(2)], mask, "blocks.1", method="fast")
    """
    start = time.perf_counter()
    samples = list(samples)
    if not samples:
        raise StudioError("Ranking needs at least one image: give one or more seeds.")
    if method not in METHODS:
        raise StudioError(f"Unknown ranking method '{method}': use exact or fast.")
    if ablation not in ABLATIONS:
        raise StudioError(f"Unknown ablation '{ablation}': use zero (switch off) or mean (set to its mean).")
    if steps is not None and not (0 <= steps[0] < steps[1]):
        raise StudioError(f"Step window {tuple(steps)} is empty: give start < stop, both from 0.")
    info = generator.layer(layer)  # LayerNotFound names the nearest layers
    masks, notes = prepare_masks(mask, tuple(generator.resolution), len(samples))
    masks = masks.to(generator.device)
    if bool((masks.amin(dim=(-2, -1)) > 1 - 1e-6).all()):
        notes.append("The mask covers the whole image, so nothing is outside it: units rank by their inside effect.")
    ticker = Ticker(info.units, progress, unit="units", message=info.name)
    ticker.report()
    # the fast path's gradient pass renders the unedited images on the CPU; a GPU measures memory on a base pass
    eager = method == "exact" or generator.device.type == "cuda"
    ablator = Ablator(generator, samples, masks, info, ablation, steps, eager=eager)
    size = chunk or ablator.default_chunk()
    inside = outside = None
    if method == "fast":
        try:
            inside, outside = estimate_effects(ablator, chunk=size, colours=colours)
        except UnsupportedOperation as error:
            notes.append(f"{error} The fast ranking needs gradients, so every unit was checked exactly.")
    if inside is None:
        inside, outside, size = run_chunked(ablator, list(range(info.units)), size, ticker, notes)
        exact = torch.ones(info.units, dtype=torch.bool)
    else:
        count = min(info.units, DEFAULT_CANDIDATES if candidates is None else max(0, int(candidates)))
        ticker.advance(info.units - count, message=f"{info.name}: checking {count} candidates")
        chosen = torch.argsort(specificity_score(inside, outside), descending=True, stable=True)[:count]
        exact = torch.zeros(info.units, dtype=torch.bool)
        if count:
            ins, outs, size = run_chunked(ablator, chosen.tolist(), size, ticker, notes)
            inside, outside = _calibrated(inside, outside, chosen, ins, outs)
            exact[chosen] = True
    scores = specificity_score(inside, outside)
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    units = [UnitScore(u, float(scores[u]), float(inside[u]), float(outside[u]), bool(exact[u])) for u in order]
    return Ranking(info.name, method, ablation, [s.seed for s in samples], units, time.perf_counter() - start,
                   notes)


def _calibrated(inside: Tensor, outside: Tensor, chosen: Tensor, exact_in: Tensor,
                exact_out: Tensor) -> tuple[Tensor, Tensor]:
    """Estimates rescaled so the checked units' estimates sum to their exact sums, then the exact values put in.

    The first-order estimate runs low (|sum| <= sum ||); one factor for inside and one for outside keeps the
    unchecked units comparable with the checked ones in one sorted list.
    """
    inside, outside = inside.clone(), outside.clone()
    if len(chosen) >= 3:
        for est, true in ((inside, exact_in), (outside, exact_out)):
            total = float(est[chosen].sum())
            if total > 0 and float(true.sum()) > 0:
                est.mul_(float(true.sum()) / total)
    inside[chosen], outside[chosen] = exact_in, exact_out
    return inside, outside


def rank_layers(generator, samples: Sequence, mask: Tensor, layers: Sequence[str] | None = None, *,
                method: str = "fast", top: int = 10, progress: ProgressCallback | None = None,
                **kw: Any) -> list[LayerSummary]:
    """Rank the units of several layers (default: every spatial layer); the layer whose top units score best first.

    >>> best = rank_layers(gen, samples, mask)[0]
    >>> best.layer, best.mean_top_score, best.ranking.top(5)
    """
    infos = [generator.layer(name) for name in layers] if layers else [i for i in generator.layers() if i.size]
    if not infos:
        raise StudioError(f"{generator.name} has no layers with a spatial size to rank.")
    total, done = sum(i.units for i in infos), 0
    start = time.perf_counter()

    def relay(update: ProgressUpdate) -> bool | None:  # one bar over all layers
        if progress is None:
            return None
        finished = done + update.done
        rate = finished / max(time.perf_counter() - start, 1e-9)
        return progress(ProgressUpdate(finished, total, rate, update.unit, update.message))

    summaries = []
    for info in infos:
        ranking = rank_units(generator, samples, mask, info.name, method=method, progress=relay, **kw)
        done += info.units
        scores = [u.score for u in ranking.top(top)]
        summaries.append(LayerSummary(info.name, info.units, info.size, scores[0], sum(scores) / len(scores),
                                      ranking))
    summaries.sort(key=lambda s: s.mean_top_score, reverse=True)
    return summaries


def best_units(rankings: Sequence[Ranking], top: int, min_share: float = 0.0) -> list[tuple[str, int]]:
    """The ``top`` best (layer, unit) pairs over one or several layers' rankings, by score; positive scores only,
    and at least ``min_share`` of the best pair's score.

    Each layer's score is already relative to that layer (its floor is the layer's mean inside effect), so one
    sorted list over layers says which units, wherever they are, are most specific to the mask.

    >>> best_units([s.ranking for s in rank_layers(gen, samples, mask)], top=20)   # [("blocks.1", 17), ...]
    """
    pool = sorted(((u.score, r.layer, u.unit) for r in rankings for u in r.units if u.score > 0),
                  key=lambda row: row[0], reverse=True)
    if not pool:
        return []
    floor = min_share * pool[0][0]
    return [(layer, unit) for score, layer, unit in pool[:max(0, int(top))] if score >= floor]
