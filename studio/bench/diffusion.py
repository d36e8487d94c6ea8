"""``python -m studio bench diffusion``: seconds per image, per preview frame, and the shared-prefix saving.

Builds random-weight Stable Diffusion pipelines in the process (tiny SD 1.x and SDXL shapes; with ``--sd15`` the
real SD 1.5 sizes: UNet 860 M parameters, 512 px, 64x64 latents) and times, on the chosen device::

    python -m studio bench diffusion --json
    python -m studio bench diffusion --sd15 --steps 2 --json

- ``image_s``: one image, ``--steps`` steps with classifier-free guidance, VAE decode included;
- ``preview_s``: one preview frame (``preview`` option: at most 8 steps at half size) and ``preview_ratio``;
- ``step_s``: a one-step image; from CPU seconds, ``per_step_cpu_s`` (one guided UNet step, batch 2) and
  ``decode_cpu_s`` (the VAE);
- ``resume_batch_s`` / ``full_batch_s``: a ranking batch of ``--batch`` copies continuing from a cached prefix
  that covers half the steps, against rendering them from step 0 (``prefix_speedup``).

Wall seconds, and under ``cpu_s`` the process's CPU seconds of the same runs: on a shared machine the wall clock
counts other programs' time, and with ``--threads 1`` CPU seconds are what an idle machine's clock would show.
The ratios are taken from CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.diffusion import DiffusionModel
from models.sd_random import full_size, tiny_sd, tiny_sdxl
from studio.bench.timing import timed
from studio.core.device import CHOICES, describe, pick_dtype, resolve_device


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("diffusion", help="Stable Diffusion: seconds per image, preview frame, prefix reuse",
                           description="Time random-weight Stable Diffusion pipelines: full image, preview frame, "
                                       "one step, and a ranking batch resumed from a shared prefix.")
    p.add_argument("--sd15", action="store_true", help="also time the real SD 1.5 sizes (slow on a CPU)")
    p.add_argument("--only-sd15", action="store_true", help="time only the SD 1.5 sizes")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 25 tiny, 2 for SD 1.5)")
    p.add_argument("--batch", type=int, default=4, help="copies in the resumed ranking batch (default: 4)")
    p.add_argument("--repeat", type=int, default=3, help="runs per figure, the median is kept (default: 3)")
    p.add_argument("--device", default="auto", choices=CHOICES)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def measure(generator, steps: int, batch: int, size: int | None = None, repeat: int = 3) -> dict:
    """Median times of one generator over ``repeat`` runs (see the module docstring), after a warm-up render."""
    size = size or generator.resolution[0]
    s = generator.sample(1, "a red house with a blue door", steps=steps, size=size)
    preview = generator.sample(1, s.prompt, **{**s.options, "preview": True})
    one_step = generator.sample(1, s.prompt, **{**s.options, "steps": 1})

    cpu: dict[str, float] = {}

    def median_of(name: str, fn) -> float:
        runs = [timed(fn, generator.device) for _ in range(max(1, repeat))]
        cpu[name] = round(statistics.median(c for _, c in runs), 4)
        return round(statistics.median(w for w, _ in runs), 4)

    with torch.inference_mode():
        generator.render([one_step])  # warm-up
        figures = {"image_s": median_of("image_s", lambda: generator.render([s])),
                   "preview_s": median_of("preview_s", lambda: generator.render([preview])),
                   "step_s": median_of("step_s", lambda: generator.render([one_step]))}
        half = steps // 2
        state = generator.denoise_prefix([s], half)
        figures["resume_batch_s"] = median_of("resume_batch_s", lambda: generator.render([s] * batch, start=state))
        figures["full_batch_s"] = median_of("full_batch_s", lambda: generator.render([s] * batch))
    plan = generator.plan([preview])
    per_step = (cpu["image_s"] - cpu["step_s"]) / max(1, steps - 1)
    return {**figures, "cpu_s": cpu, "per_step_cpu_s": round(per_step, 4),
            "decode_cpu_s": round(max(0.0, cpu["step_s"] - per_step), 4), "preview_ratio": round(cpu["preview_s"] / cpu["image_s"], 3),
            "prefix_speedup": round(cpu["full_batch_s"] / cpu["resume_batch_s"], 2),
            "preview_size": [plan.height, plan.width], "preview_steps": plan.steps, "steps": steps, "size": size,
            "prefix_steps": half, "batch": batch, "unet_parameters": sum(p.numel() for p in generator.unet.parameters())}


def run(args: argparse.Namespace) -> int:

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = pick_dtype(device, True, args.precision)
    results: dict = {"device": describe(device, dtype), "threads": torch.get_num_threads()}
    builds = [] if args.only_sd15 else [("tiny_sd1", lambda d: tiny_sd(d), "sd1", args.steps or 25, None),
                                        ("tiny_sdxl", lambda d: tiny_sdxl(d), "sdxl", args.steps or 25, None)]
    if args.sd15 or args.only_sd15:
        builds.append(("sd15_size", lambda d: full_size("sd1", d), "sd1", args.steps or 2, 512))
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, kind, steps, size in builds:
            start = time.perf_counter()
            pipe = build(Path(tmp) / name)
            built = time.perf_counter() - start
            gen = DiffusionModel(pipe.to(dtype), kind, device, dtype, name=name)
            repeat = 1 if name == "sd15_size" else args.repeat  # minutes per run on a CPU
            results[name] = {**measure(gen, steps, args.batch, size, repeat), "build_s": round(built, 2)}
            if not args.json:
                print(f"{name}: {results[name]}", file=sys.stderr)
            del gen, pipe
    print(json.dumps(results, indent=None if args.json else 1))
    return 0
