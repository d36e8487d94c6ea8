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
- ``ray_overhead``: Ray wall time over the in-process wall time on the same 2 cores, everything the user of
  ``--ray`` waits for included: the local cluster's start, the actors' start (a Python with torch and a model copy
  each) and the run (Ray: 2 workers of 1 CPU and 1 thread each). The in-process baseline is the faster of two runs
  timed in a child process with ``OMP_WAIT_POLICY=PASSIVE`` (``in_process_2_threads_s``, ``in_process_1_thread_s``;
  ``in_process_s`` is the faster, ``in_process_threads`` its thread count): by default torch's OpenMP threads
  spin while they wait for each other, and on a loaded machine 2 spinning threads run several times slower than 1,
  which would flatter Ray. The worst of ``--repeat`` back-to-back triples (2 threads, 1 thread, Ray).
  ``ray_overhead_joined`` leaves the cluster start out (``--ray ADDRESS`` joins a running one);
  ``ray_over_1_thread``: the last triple's Ray total over its 1-thread run; ``samples_per_s``: samples dissected
  per second in-process at the baseline (both phases);
- ``memory_growth``: peak resident memory of a dissection of ``--memory`` samples over one of a tenth as many,
  minus 1, each in its own process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from studio.ablation import measure_effect
from studio.commands.common import add_model_args, open_from_args
from studio.core.errors import StudioError
from studio.core.hooks import UnitEdit
from studio.dissect import Plan, dissect, load_dissection
from studio.dissect_ray import ray_runner
from studio.exported import open_model
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


_OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # read when torch loads, so it must be in the child's environment
#: The repository root: the child (``-m`` puts its working folder first on the path) imports this ``studio``.
ROOT = Path(__file__).resolve().parents[2]


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


def in_process_child(args: argparse.Namespace, plan: Plan, threads: int, folder: Path) -> tuple[float, object]:
    """(wall seconds of the dissection alone, its result) of ``plan`` at ``threads`` torch threads in a fresh Python
    whose OpenMP threads sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``)."""
    out = folder / f"in_process_{threads}.safetensors"
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else str(args.model)  # the child's cwd
    command = [sys.executable, "-m", "studio.bench.dissect", "--child", json.dumps(plan.to_json()), str(threads),
               str(out), model, args.device, args.precision]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **_OMP_ENV})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise StudioError(f"The in-process run at {threads} thread(s) failed in its child process: {last}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["threads"] != threads or report["omp_wait_policy"] != _OMP_ENV["OMP_WAIT_POLICY"]:
        raise StudioError(f"The in-process child ran {report['threads']} torch threads with OMP_WAIT_POLICY="
                          f"{report['omp_wait_policy']}, not {threads} with {_OMP_ENV['OMP_WAIT_POLICY']}.")
    return report["seconds"], load_dissection(out)


def _child(argv: list[str]) -> int:
    """The child of :func:`in_process_child`: PLAN_JSON THREADS OUTPUT MODEL DEVICE PRECISION."""
    plan_json, threads, output, model, device, precision = argv
    torch.set_num_threads(int(threads))
    generator = open_model(model, device=device, precision=precision)
    plan = Plan.from_json(json.loads(plan_json))
    start = time.perf_counter()
    result = dissect(generator, plan)
    seconds = time.perf_counter() - start
    result.save(output)
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
    return 0


def timing_pair(args: argparse.Namespace, generator, plan: Plan, folder: Path) -> tuple[dict, object, object, object]:
    """In-process runs at 2 and 1 threads (each in a child process), then at once the same plan on a fresh local
    Ray cluster of 2 CPUs; (figures, 2-thread result, 1-thread result, Ray result)."""
    import ray  # optional extra: the Ray comparison needs it

    two_wall, here = in_process_child(args, plan, 2, folder)
    one_wall, reference = in_process_child(args, plan, 1, folder)
    here_wall = min(two_wall, one_wall)
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
    figures = {"load_average": round(os.getloadavg()[0], 2), "in_process_2_threads_s": round(two_wall, 2),
               "in_process_1_thread_s": round(one_wall, 2), "in_process_s": round(here_wall, 2),
               "in_process_threads": 2 if two_wall <= one_wall else 1,
               "ray_cluster_start_s": round(cluster - start, 2),
               "ray_actor_start_s": round(actors - cluster, 2), "ray_run_s": round(end - actors, 2),
               "ray_total_s": round(end - start, 2), "ray_overhead": round((end - start) / here_wall, 3),
               "ray_overhead_joined": round((end - cluster) / here_wall, 3),
               "ray_over_1_thread": round((end - start) / one_wall, 3)}
    return figures, here, reference, there


def run(args: argparse.Namespace) -> int:
    args.model = args.model or "rooms"
    generator = open_from_args(args)
    task_size = args.task_size or max(1, min(250, args.samples // 4))
    plan = Plan(generator.source, [LAYER], args.samples, concepts="rooms", task_size=task_size)
    pairs = []
    with tempfile.TemporaryDirectory(prefix="bench-dissect-") as folder:
        for _ in range(max(1, args.repeat)):  # back to back, so a shared machine's load is alike for all runs
            pair, here, reference, there = timing_pair(args, generator, plan, Path(folder))
            pairs.append(pair)
    # Torch's float sums depend on its thread count (a unit's sketch counts move where a value sits on a bucket
    # edge), so Ray's 1-thread workers are compared with the in-process run at 1 thread: any difference left is
    # Ray's doing (splitting, transfer, merging), not rounding; the 2-thread run's rounding is reported beside it.
    torch.set_num_threads(1)
    worst = max(pairs, key=lambda p: p["ray_overhead"])
    figures = {"samples": args.samples, "layer": LAYER, "task_size": task_size}
    figures.update(lamp_checks(generator, here, LAYER, args.check, args.top))
    floats = ("mean", "m2", "top_values")
    figures.update({**worst, "ray_equal": max_relative_difference(reference.tensors(), there.tensors()),
                    "thread_rounding": max_relative_difference(
                        {k: v for k, v in reference.tensors().items() if k.rsplit("/", 1)[1] in floats},
                        here.tensors()),
                    "timing_pairs": pairs, "ray_over_1_thread": pairs[-1]["ray_over_1_thread"],
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


if __name__ == "__main__":  # the in-process baseline's child: python -m studio.bench.dissect --child ...
    if sys.argv[1:2] != ["--child"]:
        raise SystemExit("usage: python -m studio bench dissect (this module's own entry is for its child runs)")
    raise SystemExit(_child(sys.argv[2:]))
