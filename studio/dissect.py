"""Dissection: what every unit of a layer does, over many samples, with streaming statistics that merge exactly.

A dissection is a list of independent tasks (layer x range of samples) in two phases: ``stats`` (mean, variance,
a quantile sketch and the top-k samples of every unit) and, once a layer's 99th-percentile "on" level is known,
``iou`` (the intersections of each unit's thresholded, upsampled map with each concept's masks)::

    plan = Plan(model="rooms", layers=["blocks.1"], samples=2000, concepts="rooms")
    result = dissect(gen, plan, partial="d.partial.safetensors", progress=TextProgressBar("dissect"))
    result.save("dissection.safetensors")
    for row in result.labels("blocks.1"):                 # unit, best concept, IoU, second best
        print(row.unit, row.concept, row.iou, row.second, row.second_iou)

Every accumulator is a sum or a Chan merge, and results merge in task order, so a resumed run, a run split over Ray
workers and one pass give the same numbers; memory does not grow with the number of samples. The file format is
described in docs/dissection.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from .core.atomic import atomic_path
from .core.errors import StudioError
from .core.hooks import box_crop, mask_box
from .core.images import to_uint8
from .core.progress import ProgressCallback, Ticker
from .knobs import Knob, KnobError, model_layout
from .segments import Segmenter, open_segmenter

FORMAT = "neuron-studio/dissection"
VERSION = "1"
#: GAN Dissection's floor: a unit is labelled with a concept only when their IoU reaches it.
IOU_FLOOR = 0.05

# The quantile sketch: log-spaced buckets with a fixed relative width (as DDSketch), the same for every run, so
# sketches merge by adding counts. |x| < SKETCH_MIN falls in the zero bucket; |x| > SKETCH_MAX in the outermost one.
SKETCH_GAMMA = 1.02
SKETCH_MIN, SKETCH_MAX = 1e-4, 1e4
SKETCH_SIDE = int(math.ceil(math.log(SKETCH_MAX / SKETCH_MIN) / math.log(SKETCH_GAMMA))) + 1
SKETCH_BINS = 2 * SKETCH_SIDE + 1


@dataclass(frozen=True)
class Plan:
    """What to dissect. ``concepts``: ``rooms``, an examples JSON path or None; ``quantile``: the "on" level."""

    model: str
    layers: list[str]
    samples: int
    first_seed: int = 0
    prompt: str | None = None
    concepts: str | None = None
    top: int = 12
    task_size: int = 250
    batch: int = 25
    quantile: float = 0.99

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Task:
    """One independent piece: a phase on a layer for the seeds ``seeds`` (a contiguous slice of the plan's)."""

    index: int
    phase: str  # stats | iou
    layer: str
    seeds: tuple[int, ...]


def plan_tasks(plan: Plan, segmenter: Segmenter | None) -> list[Task]:
    """Every task in merge order: all ``stats`` tasks, then all ``iou`` tasks (they need the layer's thresholds)."""
    seeds = list(range(plan.first_seed, plan.first_seed + plan.samples))
    iou_seeds = [] if segmenter is None else (segmenter.seeds if segmenter.seeds is not None else seeds)
    tasks: list[Task] = []
    for phase, pool in (("stats", seeds), ("iou", iou_seeds)):
        for layer in plan.layers:
            for start in range(0, len(pool), plan.task_size):
                tasks.append(Task(len(tasks), phase, layer, tuple(pool[start:start + plan.task_size])))
    return tasks


def plan_sample(generator, plan: Plan, segmenter: Segmenter | None, seed: int):
    """The sample a seed stands for in this dissection (the segmenter's prompt for it, else the plan's)."""
    if segmenter is not None:
        return segmenter.sample(generator, seed) if plan.prompt is None else generator.sample(seed, plan.prompt)
    return generator.sample(seed, plan.prompt)


# -- accumulators ----------------------------------------------------------------------------------------------------
def sketch_bins(values: Tensor) -> Tensor:
    """The sketch bucket of each value (any shape, int64): negatives below the zero bucket, positives above."""
    mag = values.abs().double().clamp(SKETCH_MIN, SKETCH_MAX)
    idx = torch.ceil(torch.log(mag / SKETCH_MIN) / math.log(SKETCH_GAMMA)).long().clamp(0, SKETCH_SIDE - 1)
    zero = values.abs() < SKETCH_MIN
    return torch.where(zero, SKETCH_SIDE, torch.where(values < 0, SKETCH_SIDE - 1 - idx, SKETCH_SIDE + 1 + idx))


def bin_values() -> Tensor:
    """(SKETCH_BINS,) float64: the value each bucket stands for (the DDSketch midpoint, relative error ~1 %)."""
    i = torch.arange(SKETCH_SIDE, dtype=torch.float64)
    upper = SKETCH_MIN * SKETCH_GAMMA ** i
    mid = 2 * upper / (1 + SKETCH_GAMMA)
    return torch.cat([-mid.flip(0), torch.zeros(1, dtype=torch.float64), mid])


def sketch_quantile(sketch: Tensor, q: float) -> Tensor:
    """(C,) the ``q`` quantile of each unit from its (C, SKETCH_BINS) counts."""
    cum = sketch.cumsum(dim=1)
    # the value at 0-based rank ceil(q * (n - 1)), as torch.quantile(..., interpolation="higher")
    rank = (q * (cum[:, -1].double() - 1)).ceil().long() + 1
    index = torch.searchsorted(cum, rank[:, None]).clamp_max(SKETCH_BINS - 1)[:, 0]
    return bin_values()[index]


def select_top(values: Tensor, seeds: Tensor, boxes: Tensor, top: int) -> dict[str, Tensor]:
    """Each unit's ``top`` samples by value, ties to the lower seed: the same whatever the split into tasks."""
    order = torch.sort(seeds, dim=1, stable=True).indices
    order = order.gather(1, torch.sort(values.gather(1, order), dim=1, descending=True, stable=True).indices)
    order = order[:, :top]
    return {"top_values": values.gather(1, order), "top_seeds": seeds.gather(1, order),
            "top_boxes": boxes.gather(1, order[..., None].expand(-1, -1, 4))}


def merge_stats(a: dict[str, Tensor] | None, b: dict[str, Tensor], top: int) -> dict[str, Tensor]:
    """Chan's merge of counts, means and squared deviations; sketch counts add; top-k of both (value, then seed)."""
    if a is None:
        return {k: v.clone() for k, v in b.items()}
    na, nb = a["count"].double(), b["count"].double()
    n = na + nb
    delta = b["mean"] - a["mean"]
    out = {"count": a["count"] + b["count"], "mean": a["mean"] + delta * (nb / n),
           "m2": a["m2"] + b["m2"] + delta * delta * (na * nb / n), "sketch": a["sketch"] + b["sketch"]}
    out.update(select_top(torch.cat([a["top_values"], b["top_values"]], dim=1),
                          torch.cat([a["top_seeds"], b["top_seeds"]], dim=1),
                          torch.cat([a["top_boxes"], b["top_boxes"]], dim=1), top))
    return out


def merge_iou(a: dict[str, Tensor] | None, b: dict[str, Tensor]) -> dict[str, Tensor]:
    """Intersections, 'on' pixel counts and concept areas are integer counts: they add."""
    return {k: v.clone() for k, v in b.items()} if a is None else {k: a[k] + b[k] for k in a}


def peak_boxes(acts: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Per (sample, unit) the peak activation and a half-image box around it, (B, C) and (B, C, 4) y0 x0 y1 x1."""
    b, c, h, w = acts.shape
    flat = acts.reshape(b, c, h * w)
    values, where = flat.max(dim=2)
    H, W = int(size[0]), int(size[1])
    cy = ((where // w).double() + 0.5) * H / h
    cx = ((where % w).double() + 0.5) * W / w
    bh, bw = H // 2, W // 2
    y0 = (cy - bh / 2).round().long().clamp(0, H - bh)
    x0 = (cx - bw / 2).round().long().clamp(0, W - bw)
    return values, torch.stack([y0, x0, y0 + bh, x0 + bw], dim=-1).int()


def task_stats(acts: Tensor, seeds: Sequence[int], size: tuple[int, int], top: int) -> dict[str, Tensor]:
    """Statistics of one batch of activations (B, C, h, w) of the samples ``seeds``."""
    c = acts.shape[1]
    x = acts.detach().float().cpu()
    per_unit = x.transpose(0, 1).reshape(c, -1).double()
    mean = per_unit.mean(dim=1)
    m2 = ((per_unit - mean[:, None]) ** 2).sum(dim=1)
    bins = sketch_bins(per_unit) + torch.arange(c)[:, None] * SKETCH_BINS
    sketch = torch.bincount(bins.reshape(-1), minlength=c * SKETCH_BINS).reshape(c, SKETCH_BINS)
    values, boxes = peak_boxes(x, size)
    ids = torch.tensor(list(seeds), dtype=torch.int64)[None].expand(c, -1)
    return {"count": torch.tensor(per_unit.shape[1], dtype=torch.int64), "mean": mean, "m2": m2, "sketch": sketch,
            **select_top(values.t().contiguous(), ids.contiguous(), boxes.transpose(0, 1).contiguous(), top)}


def unit_maps(acts: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) activation maps upsampled bilinearly to the image (as GAN Dissection)."""
    return F.interpolate(acts.float(), size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)


def task_iou(acts: Tensor, masks: Tensor, thresholds: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
    """Counts of one batch: intersections (C, K) of 'on' maps with concept masks (B, K, H, W), 'on' pixels, areas.

    Only units whose peak in an image exceeds their level are upsampled there: a bilinear map never exceeds its
    largest input, so the others have no 'on' pixel in that image (exact, and most units are off most of the time).
    """
    acts = acts.detach().float().cpu()
    c, k = acts.shape[1], masks.shape[1]
    inter = torch.zeros(c, k, dtype=torch.int64)
    on_count = torch.zeros(c, dtype=torch.int64)
    level = thresholds.float()
    firing = acts.flatten(2).amax(dim=2) > level  # (B, C)
    for b in range(acts.shape[0]):
        units = firing[b].nonzero()[:, 0]
        if not len(units):
            continue
        on = (unit_maps(acts[b:b + 1, units], size)[0] > level[units, None, None]).float().flatten(1)  # (n, P)
        # exact: one image's counts are integers below 2**24 (images under 4096 x 4096)
        inter[units] += (on @ masks[b].float().flatten(1).t()).round().long()
        on_count[units] += on.sum(dim=1).round().long()
    return {"inter": inter, "on": on_count, "area": masks.sum(dim=(0, 2, 3)).long()}


def run_task(generator, plan: Plan, segmenter: Segmenter | None, task: Task,
             thresholds: Tensor | None = None) -> dict[str, Tensor]:
    """One task's partial result, in batches of ``plan.batch`` samples (the same code in-process and on workers)."""
    size = tuple(generator.resolution)
    result: dict[str, Tensor] | None = None
    with torch.inference_mode():
        for start in range(0, len(task.seeds), plan.batch):
            seeds = task.seeds[start:start + plan.batch]
            samples = [plan_sample(generator, plan, segmenter, s) for s in seeds]
            acts = generator.trace(samples, [task.layer])[task.layer]
            if acts.dim() != 4:
                raise StudioError(f"Layer {task.layer} has no spatial map to dissect; pick a convolutional layer.")
            if task.phase == "stats":
                result = merge_stats(result, task_stats(acts, seeds, size, plan.top), plan.top)
            else:
                masks = segmenter.masks_of(generator, seeds, samples, size)
                result = merge_iou(result, task_iou(acts, masks, thresholds, size))
    return result


# -- the result ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitLabel:
    """One row of the unit-label table: the best concept (None below the IoU floor) and the runner-up."""

    unit: int
    concept: str | None
    iou: float
    best: str
    second: str | None
    second_iou: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Dissection:
    """Merged results of the first ``done`` tasks (all of them when complete)."""

    plan: Plan
    concepts: tuple[str, ...]
    total: int
    done: int = 0
    stats: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    iou: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    def merge(self, task: Task, result: dict[str, Tensor]) -> None:
        if task.index != self.done:
            raise StudioError(f"Task {task.index} merged out of order (expected {self.done}).")
        if task.phase == "stats":
            self.stats[task.layer] = merge_stats(self.stats.get(task.layer), result, self.plan.top)
        else:
            self.iou[task.layer] = merge_iou(self.iou.get(task.layer), result)
        self.done += 1

    # -- figures
    def mean(self, layer: str) -> Tensor:
        return self.stats[layer]["mean"]

    def variance(self, layer: str) -> Tensor:
        """Population variance of each unit over every position of every sample."""
        s = self.stats[layer]
        return s["m2"] / s["count"].double()

    def quantile(self, layer: str, q: float) -> Tensor:
        return sketch_quantile(self.stats[layer]["sketch"], q)

    def thresholds(self, layer: str) -> Tensor:
        """(C,) each unit's 'on' level: its ``plan.quantile`` activation."""
        return self.quantile(layer, self.plan.quantile)

    def iou_table(self, layer: str) -> Tensor:
        """(C, K) float64 IoU of each unit's 'on' region with each concept, over all segmented samples."""
        c = self.iou[layer]
        union = c["on"][:, None] + c["area"][None, :] - c["inter"]
        return c["inter"].double() / union.clamp_min(1).double()

    def labels(self, layer: str, floor: float = IOU_FLOOR) -> list[UnitLabel]:
        """The unit-label table (GAN Dissection's): best and second-best concept by IoU; no label below ``floor``."""
        if layer not in self.iou:
            raise StudioError(f"This dissection has no concept IoU for {layer}: run it with --concepts.")
        table = self.iou_table(layer)
        rows = []
        for unit in range(table.shape[0]):
            order = torch.argsort(table[unit], descending=True, stable=True).tolist()
            best = float(table[unit, order[0]])
            second = order[1] if len(order) > 1 else None
            rows.append(UnitLabel(unit, self.concepts[order[0]] if best >= floor else None, best,
                                  self.concepts[order[0]], None if second is None else self.concepts[second],
                                  0.0 if second is None else float(table[unit, second])))
        return rows

    def units_for(self, layer: str, concepts: Iterable[str], floor: float = IOU_FLOOR) -> list[int]:
        wanted = set(concepts)
        return [row.unit for row in self.labels(layer, floor) if row.concept in wanted]

    # -- file
    def tensors(self) -> dict[str, Tensor]:
        out = {}
        for layer, parts in self.stats.items():
            out.update({f"{layer}/{k}": v.contiguous() for k, v in parts.items()})
            if self.complete:
                out[f"{layer}/threshold"] = self.thresholds(layer).contiguous()
        for layer, parts in self.iou.items():
            out.update({f"{layer}/iou_{k}": v.contiguous() for k, v in parts.items()})
            if self.complete:
                out[f"{layer}/iou"] = self.iou_table(layer).contiguous()
        return out

    def save(self, path: str | Path) -> Path:
        """Write atomically as safetensors with JSON metadata (docs/dissection.md)."""
        meta = {"format": FORMAT, "version": VERSION, "plan": json.dumps(self.plan.to_json()),
                "concepts": json.dumps(list(self.concepts)), "done": str(self.done), "total": str(self.total),
                "sketch": json.dumps({"gamma": SKETCH_GAMMA, "min": SKETCH_MIN, "max": SKETCH_MAX,
                                      "bins": SKETCH_BINS}), "iou_floor": str(IOU_FLOOR)}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(self.tensors(), str(tmp), metadata=meta)
        return Path(path)


def load_dissection(path: str | Path) -> Dissection:
    """Read a dissection file (complete or partial); a file of another kind raises one clear sentence."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except FileNotFoundError as error:
        raise StudioError(f"No dissection file at {path}.") from error
    except (OSError, ValueError, SafetensorError) as error:
        raise StudioError(f"{path.name} is not a readable dissection file ({error}).") from error
    if meta.get("format") != FORMAT:
        raise StudioError(f"{path.name} is not a dissection (its format is {meta.get('format')!r}).")
    result = Dissection(Plan.from_json(json.loads(meta["plan"])), tuple(json.loads(meta["concepts"])),
                        int(meta["total"]), int(meta["done"]))
    derived = {"threshold", "iou"}
    for key, value in tensors.items():
        layer, name = key.rsplit("/", 1)
        if name in derived:
            continue
        if name.startswith("iou_"):
            result.iou.setdefault(layer, {})[name[4:]] = value
        else:
            result.stats.setdefault(layer, {})[name] = value
    return result


# -- running ---------------------------------------------------------------------------------------------------------
#: Runs tasks (all of one phase) and yields (task, result) in any order; thresholds by layer for ``iou`` tasks.
Runner = Callable[[list[Task], dict[str, Tensor]], Iterator[tuple[Task, dict[str, Tensor]]]]


def in_process_runner(generator, plan: Plan, segmenter: Segmenter | None) -> Runner:
    def run(tasks: list[Task], thresholds: dict[str, Tensor]) -> Iterator[tuple[Task, dict[str, Tensor]]]:
        for task in tasks:
            yield task, run_task(generator, plan, segmenter, task, thresholds.get(task.layer))
    return run


def dissect(generator, plan: Plan, *, partial: str | Path | None = None, resume: bool = False,
            progress: ProgressCallback | None = None, runner: Runner | None = None) -> Dissection:
    """Run (or finish) a dissection; after each merged task the partial result is saved atomically to ``partial``.

    ``resume`` continues from ``partial`` when it holds the same plan. ``runner`` defaults to this process
    (:func:`in_process_runner`); :mod:`studio.dissect_ray` gives one on a Ray cluster. ``progress`` counts samples;
    returning False stops after the current task (its result saved) with :class:`~studio.core.errors.Cancelled`.

    >>> result = dissect(gen, Plan("rooms", ["blocks.1"], 500, concepts="rooms"), partial="d.partial.safetensors")
    """
    if plan.samples < 1:
        raise StudioError("A dissection needs at least one sample.")
    for layer in plan.layers:
        generator.layer(layer)  # LayerNotFound names the nearest layers
    segmenter = open_segmenter(plan.concepts)
    tasks = plan_tasks(plan, segmenter)
    state = Dissection(plan, tuple(segmenter.concepts) if segmenter else (), len(tasks))
    if resume and partial is not None and Path(partial).exists():
        saved = load_dissection(partial)
        if saved.plan != plan:
            raise StudioError(f"{Path(partial).name} holds another dissection's partial result; "
                              "run without --resume to start over.")
        state = saved
    ticker = Ticker(sum(len(t.seeds) for t in tasks), progress, unit="samples",
                    message=", ".join(plan.layers))
    ticker.done = sum(len(t.seeds) for t in tasks[:state.done])
    ticker.report()
    runner = runner or in_process_runner(generator, plan, segmenter)
    for phase in ("stats", "iou"):
        todo = [t for t in tasks[state.done:] if t.phase == phase]
        if not todo:
            continue
        thresholds = {layer: state.thresholds(layer) for layer in state.stats} if phase == "iou" else {}
        pending: dict[int, tuple[Task, dict[str, Tensor]]] = {}
        for task, result in runner(todo, thresholds):
            pending[task.index] = (task, result)
            while state.done in pending:  # merge in task order: the same numbers however tasks were spread
                done_task, done_result = pending.pop(state.done)
                state.merge(done_task, done_result)
                if partial is not None:
                    state.save(partial)
                ticker.advance(len(done_task.seeds), message=f"{done_task.phase} {done_task.layer}")
    return state


# -- galleries -------------------------------------------------------------------------------------------------------
def _layer_stats(result: "Dissection", layer: str, units: Sequence[int]) -> dict[str, Tensor]:
    stats = result.stats.get(layer)
    if stats is None:
        raise StudioError(f"This dissection has no statistics for {layer}; it holds {', '.join(result.stats)}.")
    count = stats["mean"].shape[0]
    for unit in units:
        if not 0 <= unit < count:
            raise StudioError(f"{layer} has units 0 to {count - 1}, not {unit}.")
    return stats


def _top_samples(generator, result: "Dissection", layer: str, units: Sequence[int], count: int | None):
    """The gallery seeds of ``units`` (each its first ``count``), every distinct one traced and rendered once."""
    stats = _layer_stats(result, layer, units)
    k = stats["top_seeds"].shape[1] if count is None else min(count, stats["top_seeds"].shape[1])
    seeds = {unit: stats["top_seeds"][unit, :k].tolist() for unit in units}
    distinct = sorted({s for unit in units for s in seeds[unit]})
    segmenter = open_segmenter(result.plan.concepts) if result.plan.concepts == "rooms" else None
    samples = [plan_sample(generator, result.plan, segmenter, s) for s in distinct]
    return stats, k, seeds, {s: i for i, s in enumerate(distinct)}, samples


def units_tiles(generator, result: Dissection, layer: str, units: Sequence[int], count: int | None = None,
                tile: int = 96) -> dict[int, list[np.ndarray]]:
    """Each unit's top ``count`` samples (all kept ones by default) re-rendered, its 'on' region bright and the rest
    dimmed, cropped to the peak box: {unit: [(tile, tile, 3) uint8, strongest first]}. A sample in several units'
    galleries is rendered once."""
    units = list(dict.fromkeys(int(u) for u in units))
    stats, k, seeds, index, samples = _top_samples(generator, result, layer, units, count)
    if not samples:
        return {unit: [] for unit in units}
    with torch.inference_mode():
        images = generator.render(samples).float().cpu().clamp(0, 1)
        acts = generator.trace(samples, [layer])[layer].float().cpu()
    levels = result.thresholds(layer)
    size = tuple(generator.resolution)
    out = {}
    for unit in units:
        tiles = []
        for seed, (y0, x0, y1, x1) in zip(seeds[unit], stats["top_boxes"][unit, :k].tolist()):
            i = index[seed]
            on = unit_maps(acts[i:i + 1, unit:unit + 1], size)[0] > levels[unit]
            crop = to_uint8((images[i] * (0.35 + 0.65 * on.float()))[:, y0:y1, x0:x1])
            tiles.append(np.asarray(Image.fromarray(crop).resize((tile, tile), Image.NEAREST)))
        out[unit] = tiles
    return out


def gallery_tiles(generator, result: Dissection, layer: str, unit: int, count: int | None = None,
                  tile: int = 96) -> list[np.ndarray]:
    """The unit's top samples re-rendered, its 'on' region outlined bright and the rest dimmed, cropped to the peak
    box: a list of (tile, tile, 3) uint8 images, strongest first."""
    return units_tiles(generator, result, layer, [unit], count, tile)[int(unit)]


def knob_from_units(generator, result: Dissection, layer: str, units: Sequence[int], name: str | None = None,
                    count: int | None = None, pattern: int = 6) -> Knob:
    """A knob made of dissected units: strength 1 switches them off where it is painted, -1 pulls them towards how
    they fire in their galleries (each unit's activation over the box of its 'on' region in its top ``count``
    samples, as a ``pattern`` x ``pattern`` grid, averaged), so a lamp unit's knob at -1 draws what it fires on.

    >>> knob = knob_from_units(gen, result, "blocks.1", [12, 40], name="lamp units")
    """
    units = sorted(dict.fromkeys(int(u) for u in units))
    if not units:
        raise KnobError("Select one or more units of the dissection to make a knob of.")
    stats, k, seeds, index, samples = _top_samples(generator, result, layer, units, count)
    if not samples:
        raise KnobError("These units have no gallery samples to learn how they fire from.")
    with torch.inference_mode():
        acts = generator.trace(samples, [layer])[layer].float().cpu()
    levels = result.thresholds(layer)
    size = tuple(generator.resolution)
    present = []
    for unit in units:
        crops = []
        for seed in seeds[unit]:
            act = acts[index[seed]:index[seed] + 1, unit:unit + 1]
            box = mask_box((unit_maps(act, size)[0, 0] > levels[unit]).float())
            if box is not None:  # a top sample always fires above the level; an empty one adds nothing
                crops.append(box_crop(act, box, (pattern, pattern))[0, 0])
        present.append(torch.stack(crops).mean(0) if crops else torch.zeros(pattern, pattern))
    present_t = torch.stack(present)
    label = name.strip() if name and name.strip() else f"{layer} units {', '.join(map(str, units[:6]))}" + (
        "..." if len(units) > 6 else "")
    return Knob(label, model_layout(generator), {layer: torch.tensor(units, dtype=torch.long)},
                {layer: torch.zeros_like(present_t)}, {layer: present_t})


def gallery_image(tiles: Sequence[np.ndarray], columns: int = 6, gap: int = 2) -> np.ndarray:
    """Tiles in a grid on a dark background, (H, W, 3) float32 in [0, 1] (what ``save_image`` writes)."""
    if not tiles:
        raise StudioError("This unit has no gallery samples.")
    t = tiles[0].shape[0]
    cols = min(columns, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    out = np.full((rows * (t + gap) + gap, cols * (t + gap) + gap, 3), 24, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[gap + r * (t + gap):gap + r * (t + gap) + t, gap + c * (t + gap):gap + c * (t + gap) + t] = tile
    return out.astype(np.float32) / 255.0
