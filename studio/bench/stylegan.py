"""``python -m studio bench stylegan``: render and partial re-render times of realistic StyleGAN generators.

Each family is built from our own modules with seeded random weights at full width (StyleGAN2 config F:
channel base 32768, 512 max, 8 mapping layers; StyleGAN3-T: base 32768, 512 max; StyleGAN3-R: base 65536,
1024 max, 1x1 convs, radial filters) and put behind the StyleGAN adapter. Per family, the median over
``--repeats`` of:

- ``render_s`` / ``render_cpu_s``: one full image (mapping + every synthesis layer), wall and process CPU
  seconds: the baseline;
- ``partial_<where>_s`` / ``_cpu_s``: ``forward_from`` a traced activation at the first, middle and last
  synthesis layer, and ``partial_<where>_ratio``: its cost over a full render's, the median of pairs run
  alternately, in CPU time on the CPU (robust when other programs share the cores; use ``--threads 1``) and
  wall time on GPUs: what a live slider on that layer costs relative to re-rendering everything.

    python -m studio bench stylegan --resolution 256 --families sg2,sg3t --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from models.stylegan import StyleGANModel
from models.stylegan2_nets import StyleGANConfig
from models.stylegan_formats import build
from studio.bench.timing import paired
from studio.core.device import pick_dtype, resolve_device

FAMILIES = {
    "sg2": lambda res: StyleGANConfig.stylegan2(512, 512, res, mapping={"num_layers": 8}, channel_base=32768,
                                                channel_max=512, conv_clamp=256),
    "sg3t": lambda res: StyleGANConfig("stylegan3", 512, 0, 512, res, 3, {"num_layers": 2},
                                       {"channel_base": 32768, "channel_max": 512}),
    "sg3r": lambda res: StyleGANConfig("stylegan3", 512, 0, 512, res, 3, {"num_layers": 2},
                                       {"channel_base": 65536, "channel_max": 1024, "conv_kernel": 1,
                                        "use_radial_filters": True}),
}


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("stylegan", help="StyleGAN render and partial re-render times",
                           description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="sg2,sg3t", help=f"comma list of {', '.join(FAMILIES)} (default: sg2,sg3t)")
    p.add_argument("--resolution", type=int, default=256, help="image size in pixels (default: 256)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the median is reported")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default: cpu)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"),
                   help="auto: fp16 on GPUs where the architecture flags it, fp32 on the CPU")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def bench_family(kind: str, resolution: int, repeats: int, device: str, precision: str) -> dict:
    """Time renders of a full-width random ``kind`` generator behind the adapter."""

    dev = resolve_device(device)
    dtype = pick_dtype(dev, True, precision) if dev.type != "cpu" else torch.float32
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build(FAMILIES[kind](resolution)).eval().requires_grad_(False)
    gen = StyleGANModel(net, dev, dtype, name=f"random-{kind}", source="bench", file_format="built")
    sample = gen.sample(1)
    layers = [info.name for info in gen.layers() if info.name.startswith("synthesis.")]
    row = {"family": kind, "arch": gen.arch, "resolution": resolution, "device": str(gen.device),
           "dtype": str(gen.dtype).removeprefix("torch."), "parameters": sum(p.numel() for p in net.parameters()),
           "layers": len(layers)}
    render = lambda: gen.render([sample])  # noqa: E731  (the baseline)
    with torch.inference_mode():
        render()  # warm-up
        full, full_cpu = [], []
        for where, layer in (("first", layers[0]), ("middle", layers[len(layers) // 2]), ("last", layers[-1])):
            act = gen.trace([sample], [layer])[layer]
            m = paired(lambda: gen.forward_from(layer, act, [sample]), render, repeats, gen.device)
            full.append(m["base_s"])
            full_cpu.append(m["base_cpu_s"])
            row[f"partial_{where}_layer"] = layer
            row[f"partial_{where}_s"] = round(m["s"], 4)
            row[f"partial_{where}_cpu_s"] = round(m["cpu_s"], 4)
            row[f"partial_{where}_ratio"] = round(m["ratio"], 4)
        row["render_s"] = round(statistics.median(full), 4)
        row["render_cpu_s"] = round(statistics.median(full_cpu), 4)
    return row


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = [k.strip() for k in args.families.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAMILIES]
    if unknown:
        from studio.core.errors import StudioError

        raise StudioError(f"Unknown StyleGAN family {', '.join(unknown)}: choose from {', '.join(FAMILIES)}.")
    rows = []
    for kind in kinds:
        print(f"benchmarking {kind} at {args.resolution} px ...", file=sys.stderr)
        rows.append(bench_family(kind, args.resolution, args.repeats, args.device, args.precision))
    result = {"threads": torch.get_num_threads(), "families": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in rows:
            print(f"{row['family']} {row['resolution']}px on {row['device']} ({row['dtype']}): "
                  f"render {row['render_s']}s (cpu {row['render_cpu_s']}s); partial from "
                  + ", ".join(f"{row[f'partial_{w}_layer']} {row[f'partial_{w}_s']}s "
                              f"({row[f'partial_{w}_ratio']:.0%})" for w in ("first", "middle", "last")))
    return 0
