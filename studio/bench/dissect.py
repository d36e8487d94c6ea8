"""``python -m studio bench dissect``: are the dissection's lamp labels causal, does Ray agree, does memory stay flat?

    python -m studio bench dissect --samples 300 --json

On the Rooms model (layer ``blocks.1``, Rooms truth concepts):

- ``label_precision``: of the units labelled lamp or glow (IoU >= 0.05), the share whose switch-off changes the
  lamps' region (lamp and glow truth masks) more than the rest of the room, measured as the truth benchmark does
  (mean absolute change per pixel inside against outside, :func:`studio.ablation.measure_effect`), on the first
  ``--check`` dissected seeds with a lit lamp;
- ``label_recall``: the share of the causal ranking's top ``--top`` units for the same region on the same seeds
  (:func:`studio.ranking.rank_units`, fast) that the dissection labels lamp or glow;
- ``ray_equal``: max relative difference of every statistic, Ray (2 local workers of 1 thread) against an
  in-process run at 1 thread (torch's sums round differently at another thread count: ``thread_rounding`` is
  that difference for the float statistics, in-process at 2 threads against 1);
- ``ray_overhead``: Ray wall time over the in-process wall time at the same 2 cores (in-process: 2 torch threads;
  Ray: 2 workers of 1 CPU and 1 thread each), everything the user of ``--ray`` waits for included: the local
  cluster's start, the actors' start (a Python with torch and a model copy each) and the run; the worst of
  ``--repeat`` back-to-back pairs. ``ray_overhead_joined`` leaves the cluster start out (``--ray ADDRESS`` joins
  a running one); ``ray_over_1_thread``: the last pair's Ray total over an in-process run at 1 thread right after
  it (on a loaded machine torch's 2 spinning threads can be slower than 1); ``samples_per_s``: samples dissected
  per second in-process (both phases);
- ``memory_growth``: peak resident memory of a dissection of ``--memory`` samples over one of a tenth as many,
  minus 1, each in its own process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from studio.ablation import measure_effect
from studio.commands.common import add_model_args, open_from_args
from studio.core.errors import StudioError
from studio.core.hooks import UnitEdit
from studio.dissect import Plan, dissect
from studio.dissect_ray import ray_runner
from studio.ranking import best_units, rank_units
from studio.segments import rooms_scene, rooms_segmenter

LAYER = "blocks.1"
LAMP_CONCEPTS = ("lamp", "glow")
TARGETS = {"label_precision": 0.8, "label_recall": 0.5, "ray_equal": 1e-5, "ray_overhead": 1.3,
           "memory_growth": 0.2}
_MEMORY_RUN = """
import resource, sys, torch
torch.set_num_threads(1)
from studio.exported import open_model
from studio.dissect import Plan, dissect
n, layer = int(sys.argv[1]), sys.argv[2]
gen = open_model("rooms", device="cpu")
d = dissect(gen, Plan("rooms", [layer], n, concepts="rooms", task_size=250))
print(int(d.stats[layer]["count"].max()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("dissect", help="dissection: lamp labels against switch-offs and ranking, Ray, memory",
                           description="Label precision and recall against causal checks, Ray against in-process, "
                                       "throughput and memory growth of a dissection.")
    add_model_args(p, seed=False, prompt=False)
    p.add_argument("--samples", type=int, default=300, help="samples dissected (default: 300)")
    p.add_argument("--task-size", type=int, default=None,
                   help="samples per task (default: the CLI's 250, at most a quarter of --samples so each of the "
                        "2 workers gets 2 tasks a phase)")
    p.add_argument("--repeat", type=int, default=1, help="back-to-back in-process / Ray timing pairs (default: 1)")
    p.add_argument("--check", type=int, default=8, help="lit-lamp seeds for the causal checks (default: 8)")
    p.add_argument("--top", type=int, default=20, help="ranked units recall is measured against (default: 20)")
    p.add_argument("--memory", type=int, default=5000,
                   help="samples of the large memory run (default: 5000; 0: no memory runs)")
    p.add_argument("--memory-layer", default=LAYER, help=f"layer of the memory runs (default: {LAYER})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    worst = 0.0
    for key in a:
        x, y = a[key].double(), b[key].double()
        scale = x.abs().max().clamp_min(1e-12)
        worst = max(worst, float((x - y).abs().max() / scale))
    return worst


def lamp_checks(generator, result, layer: str, count: int, top: int) -> dict:
    seg = rooms_segmenter()
    seeds = [s for s in range(result.plan.first_seed, result.plan.first_seed + result.plan.samples)
             if any(lamp.lit for lamp in rooms_scene(s).lamps)][:count]
    samples = [seg.sample(generator, s) for s in seeds]
    size = tuple(generator.resolution)
    idx = [seg.concepts.index(c) for c in LAMP_CONCEPTS]
    region = torch.stack([seg.masks(s, size)[idx].any(dim=0) for s in seeds]).float()
    labelled = result.units_for(layer, LAMP_CONCEPTS)
    causal = []
    with torch.inference_mode():
        before = generator.render(samples)
        with generator.editor() as editor:
            for unit in labelled:
                editor.set([UnitEdit(layer, unit, "off")])
                inside, outside = measure_effect(before, generator.render(samples), region)
                if float(inside.mean()) > float(outside.mean()):
                    causal.append(unit)
    ranking = rank_units(generator, samples, region, layer, method="fast")
    ranked = [unit for _, unit in best_units([ranking], top)]
    found = sorted(set(ranked) & set(labelled))
    return {"label_precision": round(len(causal) / len(labelled), 3) if labelled else 0.0,
            "label_recall": round(len(found) / len(ranked), 3) if ranked else 0.0,
            "labelled_units": labelled, "causal_units": causal, "ranked_units": ranked, "check_seeds": len(seeds)}


def memory_peak(samples: int, layer: str) -> tuple[int, int]:
    """(activation values counted per unit, peak resident KB) of a dissection of ``samples`` in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_RUN, str(samples), layer], capture_output=True, text=True,
                         check=True)
    counted, peak = out.stdout.strip().splitlines()[-1].split()
    return int(counted), int(peak)


def timing_pair(generator, plan: Plan) -> tuple[dict, object, object]:
    """One in-process run at 2 threads, then at once the same plan on a fresh local Ray cluster of 2 CPUs."""
    import ray  # optional extra: the Ray comparison needs it

    torch.set_num_threads(2)
    start = time.perf_counter()
    here = dissect(generator, plan)
    here_wall = time.perf_counter() - start
    torch.set_num_threads(1)  # the driver only merges; the 2 cores are the workers'
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cluster = time.perf_counter()
    runner, close = ray_runner(plan, workers=2, device="cpu")
    try:
        threads = runner.ready()
        actors = time.perf_counter()
        there = dissect(generator, plan, runner=runner)
    finally:
        close()
        ray.shutdown()
    end = time.perf_counter()
    if threads != [1, 1]:
        raise StudioError(f"The Ray workers ran {threads} torch threads, not one each: the cores were oversubscribed.")
    figures = {"load_average": round(os.getloadavg()[0], 2), "in_process_s": round(here_wall, 2),
               "ray_cluster_start_s": round(cluster - start, 2),
               "ray_actor_start_s": round(actors - cluster, 2), "ray_run_s": round(end - actors, 2),
               "ray_total_s": round(end - start, 2), "ray_overhead": round((end - start) / here_wall, 3),
               "ray_overhead_joined": round((end - cluster) / here_wall, 3)}
    return figures, here, there


def run(args: argparse.Namespace) -> int:
    args.model = args.model or "rooms"
    generator = open_from_args(args)
    task_size = args.task_size or max(1, min(250, args.samples // 4))
    plan = Plan(generator.source, [LAYER], args.samples, concepts="rooms", task_size=task_size)
    pairs = []
    for _ in range(max(1, args.repeat)):  # back to back, so a shared machine's load is alike for both runs
        pair, here, there = timing_pair(generator, plan)
        pairs.append(pair)
    # Torch's float sums depend on its thread count (a unit's sketch counts move where a value sits on a bucket
    # edge), so Ray's 1-thread workers are compared with an in-process run at 1 thread: any difference left is
    # Ray's doing (splitting, transfer, merging), not rounding; the 2-thread run's rounding is reported beside it.
    torch.set_num_threads(1)
    start = time.perf_counter()
    reference = dissect(generator, plan)
    one_thread = time.perf_counter() - start
    worst = max(pairs, key=lambda p: p["ray_overhead"])
    figures = {"samples": args.samples, "layer": LAYER, "task_size": task_size}
    figures.update(lamp_checks(generator, here, LAYER, args.check, args.top))
    floats = ("mean", "m2", "top_values")
    figures.update({**worst, "ray_equal": max_relative_difference(reference.tensors(), there.tensors()),
                    "thread_rounding": max_relative_difference(
                        {k: v for k, v in reference.tensors().items() if k.rsplit("/", 1)[1] in floats},
                        here.tensors()),
                    "timing_pairs": pairs, "in_process_1_thread_s": round(one_thread, 2),
                    "ray_over_1_thread": round(pairs[-1]["ray_total_s"] / one_thread, 3),
                    "samples_per_s": round(args.samples / pairs[0]["in_process_s"], 2), "targets": TARGETS})
    if args.memory:
        (few, small), (many, large) = (memory_peak(args.memory // 10, args.memory_layer),
                                       memory_peak(args.memory, args.memory_layer))
        if many * (args.memory // 10) != few * args.memory:  # flat memory by skipping samples is no streaming
            raise StudioError(f"The memory runs counted {few} and {many} values per unit, not 1:10: "
                              "a run skipped samples.")
        figures.update({"memory_growth": round(large / small - 1, 4),
                        "memory_samples": [args.memory // 10, args.memory], "peak_rss_kb": [small, large]})
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=1))
    return 0
