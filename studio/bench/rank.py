"""``python -m studio bench rank``: exact and fast unit ranking against each other and against a naive loop.

On the default model, at a layer of at least 256 units, for ``--sets`` problems of ``--seeds`` images each (on
Rooms: the light of one lamp, its truth mask per image, ``world.truth(scene).masks["glow<i>"]``)::

    python -m studio bench rank --json
    {"exact_units_per_s": 3.9, "fast_speedup": 22.4, "top20_recall": 0.88, "naive_speedup": 1.4, ...}

Times are this process's CPU seconds (``time.process_time``), one torch thread by default: the machine is shared,
and CPU time counts the work done rather than the wait for a core. Wall-clock figures are reported beside them
(``*_wall``).

- ``exact_units_per_s``: units of the layer ranked per second by the exact ranking (every unit, every image);
- ``fast_speedup``: exact seconds / fast seconds, same problem, same process (fast timed ``--repeats`` times,
  median);
- ``top20_recall``: share of the exact top 20 that the fast ranking's top 20 contains (mean over sets);
- ``naive_speedup``: a loop of one full render per unit (all images in one batch, an Editor hook switching the
  unit off) against the exact ranking; the loop runs ``--naive-units`` units spread over the layer, half before
  and half after the exact ranking, and is extrapolated to every unit (``naive_extrapolated``). Its effects are
  checked against the exact ranking's (``naive_max_abs_diff``).
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from studio.attribution import COLOURS, DEFAULT_COLOURS
from studio.bench.timing import Clock
from studio.commands.common import add_model_args, open_from_args
from studio.core.device import describe
from studio.core.errors import StudioError
from studio.core.hooks import UnitEdit
from studio.ranking import measure_effect, rank_units

#: Rooms problems: caption facts, which lamp's light is masked, the first seed searched for a lit lamp.
ROOMS_SETS = [(("blue", True, False, 2), 0, 0), (("green", False, True, 3), 1, 100),
              (("red", True, True, 3), 2, 200), (("teal", True, False, 2), 1, 300)]


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("rank", help="unit ranking: exact speed, fast speedup and recall, naive loop",
                           description="Exact ranking speed, fast ranking speedup and top-20 recall against the exact "
                                       "one, and the exact ranking against a loop of one full render per unit.")
    add_model_args(p, seed=False, prompt=False)
    p.add_argument("--layer", help="layer to rank (default: the first with at least 256 units)")
    p.add_argument("--seeds", type=int, default=4, help="images per problem (default: 4)")
    p.add_argument("--sets", type=int, default=2, help="problems (masks and seeds) to average over (default: 2)")
    p.add_argument("--candidates", type=int, default=None, help="fast: units checked exactly (default: ranking's)")
    p.add_argument("--colours", choices=COLOURS, default=None,
                   help="fast: colour weighting of the gradient passes (default: the ranking's)")
    p.add_argument("--naive-units", type=int, default=16, help="units the naive loop times (default: 16)")
    p.add_argument("--repeats", type=int, default=3, help="fast rankings timed per problem (default: 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1, so CPU seconds measure work; 0: torch's own choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def problems(generator, sets: int, seeds: int) -> list[tuple[list, torch.Tensor, str]]:
    """``sets`` (samples, masks, description): lamp-light truth masks on Rooms, a centred disc elsewhere."""
    if generator.family == "rooms":
        from studio.core.rooms import world

        out = []
        for (fields, lamp, first) in ROOMS_SETS[:sets]:
            caption = world.caption(world.CaptionFields(*fields))
            found, masks, seed = [], [], first
            while len(found) < seeds:
                scene = world.seed_scene(seed, caption)
                if scene.lamps[lamp].lit:
                    found.append(generator.sample(seed, caption))
                    masks.append(torch.from_numpy(world.truth(scene, generator.resolution[0]).masks[f"glow{lamp}"]))
                seed += 1
            out.append((found, torch.stack(masks).float(), f"light of lamp {lamp}: {caption}"))
        return out
    h, w = generator.resolution
    yy, xx = torch.meshgrid(torch.arange(h) - h / 2 + 0.5, torch.arange(w) - w / 2 + 0.5, indexing="ij")
    disc = ((yy**2 + xx**2).sqrt() < min(h, w) / 4).float()
    return [([generator.sample(s + 100 * i) for s in range(seeds)], disc, "centred disc") for i in range(sets)]


class NaiveLoop:
    """One full render per unit (an Editor hook switches it off), a unit at a time, so it can be interleaved with
    the exact ranking (same machine load); keeps its own time and each unit's (inside, outside)."""

    def __init__(self, generator, samples, masks, layer: str, units: list[int]) -> None:

        self.generator, self.samples, self.masks, self.layer = generator, samples, masks, layer
        self.todo = list(units)
        self.cpu = self.wall = 0.0
        self.effects: dict[int, tuple[float, float]] = {}
        self._edit, self._measure = UnitEdit, measure_effect
        with torch.inference_mode():
            self.base = generator.render(samples)

    def step(self) -> None:
        """Render the next unit, if any is left."""
        if not self.todo:
            return
        unit = self.todo.pop(0)
        with Clock() as clock, torch.inference_mode(), self.generator.editor() as editor:
            editor.set([self._edit(self.layer, unit, "off")])
            inside, outside = self._measure(self.base, self.generator.render(self.samples), self.masks)
            self.effects[unit] = (float(inside.mean()), float(outside.mean()))
        self.cpu, self.wall = self.cpu + clock.cpu, self.wall + clock.wall


def measure(generator, layer: str, seeds: int = 4, sets: int = 2, candidates: int | None = None,
            naive_units: int = 16, repeats: int = 3, colours: str | None = None) -> dict:
    """Run every measurement on ``sets`` problems; per-set figures and their aggregates."""

    info = generator.layer(layer)
    spread = sorted({round(i * info.units / max(1, naive_units)) % info.units for i in range(naive_units)})
    rows = []
    for samples, masks, what in problems(generator, sets, seeds):
        naive = NaiveLoop(generator, samples, masks, layer, spread)
        def interleave(update) -> None:  # naive units spread between exact passes; their time is taken out below
            if naive.todo and update.fraction >= (len(spread) - len(naive.todo) + 1) / (len(spread) + 1):
                naive.step()

        fast_clocks, fast = [], None

        def fast_once() -> None:
            nonlocal fast
            with Clock() as clock:
                fast = rank_units(generator, samples, masks, layer, method="fast", candidates=candidates,
                                 colours=colours)
            fast_clocks.append(clock)

        fast_once()
        cpu0, wall0 = naive.cpu, naive.wall
        with Clock() as exact_clock:
            exact = rank_units(generator, samples, masks, layer, method="exact", progress=interleave)
        exact_clock.cpu -= naive.cpu - cpu0
        exact_clock.wall -= naive.wall - wall0
        while naive.todo:
            naive.step()
        for _ in range(max(1, repeats) - 1):
            fast_once()
        row = {"problem": what, "seeds": [s.seed for s in samples]}
        for kind, suffix in (("cpu", ""), ("wall", "_wall")):
            exact_s = getattr(exact_clock, kind)
            fast_s = statistics.median(getattr(c, kind) for c in fast_clocks)
            naive_s = getattr(naive, kind) / max(1, len(spread)) * info.units
            row.update({f"exact_s{suffix}": round(exact_s, 3), f"fast_s{suffix}": round(fast_s, 3),
                        f"naive_s{suffix}": round(naive_s, 3),
                        f"fast_speedup{suffix}": round(exact_s / fast_s, 2),
                        f"naive_speedup{suffix}": round(naive_s / exact_s, 2)})
        by_unit = {u.unit: u for u in exact.units}
        top_exact = {u.unit for u in exact.top(20)}
        row.update({"top20_recall": len(top_exact & {u.unit for u in fast.top(20)}) / 20,
                    "top1_same": exact.units[0].unit == fast.units[0].unit,
                    "fast_exact_units": len(fast.exact_units),
                    "naive_max_abs_diff": max(max(abs(i - by_unit[u].inside), abs(o - by_unit[u].outside))
                                              for u, (i, o) in naive.effects.items()),
                    "exact_top5": [u.unit for u in exact.top(5)], "fast_top5": [u.unit for u in fast.top(5)]})
        rows.append(row)
    result = {"top20_recall": round(statistics.mean(r["top20_recall"] for r in rows), 3)}
    for suffix in ("", "_wall"):
        exact_total = sum(r[f"exact_s{suffix}"] for r in rows)
        result.update({
            f"exact_units_per_s{suffix}": round(info.units * len(rows) / exact_total, 3),
            f"fast_speedup{suffix}": round(exact_total / sum(r[f"fast_s{suffix}"] for r in rows), 2),
            f"naive_speedup{suffix}": round(sum(r[f"naive_s{suffix}"] for r in rows) / exact_total, 2)})
    result.update({
        "clock": "process CPU seconds (the *_wall figures: wall-clock seconds)",
        "layer": layer, "units": info.units, "seeds_per_set": seeds, "sets": rows,
        "naive_units_timed": len(spread), "naive_extrapolated": len(spread) < info.units,
        "candidates": rows[0]["fast_exact_units"], "colours": colours or DEFAULT_COLOURS,
        "targets": {"fast_speedup": 20, "top20_recall": 0.8, "naive_speedup": 5}})
    return result


def run(args: argparse.Namespace) -> int:

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = open_from_args(args)
    layer = args.layer or next((i.name for i in generator.layers() if i.units >= 256 and i.size), None)
    if layer is None:
        raise StudioError(f"{generator.name} has no spatial layer with 256 or more units; name one with --layer.")
    result = measure(generator, layer, args.seeds, args.sets, args.candidates, args.naive_units, args.repeats,
                     args.colours)
    result.update({"model": generator.name, "device": describe(generator.device, generator.dtype),
                   "threads": torch.get_num_threads()})
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{generator.name} {layer} ({result['units']} units) on {result['device']}, {result['threads']} threads, "
          "CPU seconds")
    for r in result["sets"]:
        print(f"  {r['problem']}, seeds {r['seeds']}: exact {r['exact_s']:.1f} s, fast {r['fast_s']:.2f} s "
              f"({r['fast_speedup']}x, recall {r['top20_recall']:.2f}), naive {r['naive_s']:.1f} s "
              f"({r['naive_speedup']}x)")
    print(f"exact {result['exact_units_per_s']} units/s; fast {result['fast_speedup']}x with top-20 recall "
          f"{result['top20_recall']}; exact vs naive loop {result['naive_speedup']}x")
    return 0
