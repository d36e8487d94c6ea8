"""``python -m studio bench faces``: render and partial re-render times of the real face generators.

For each installed built-in (``faces``: DCGAN 64 px, ``faces-hd``: MobileStyleGAN 1024 px), the median over
``--repeats`` of:

- ``open_s``: opening it through the registry (reading weights; for faces-hd parsing the IR and the style mean);
- ``render_s``: one full image, the baseline;
- ``partial_<where>_s`` / ``partial_<where>_ratio``: ``forward_from`` a traced activation at the first, middle
  and last layer, and its time over a full render's (median of pairs run alternately, so a shared machine's
  drifting load stays out of the ratio);
- ``reference_s`` / ``reference_ratio``: the package's own engine on the same input where it can run here
  (faces: its ``models.Generator``; faces-hd: its IR in OpenVINO, when ``openvino`` is installed), and our
  render time over it.

    python -m studio bench faces --models faces,faces-hd --repeats 3 --threads 1 --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from models.mobilestylegan import SYNTHESIS_XML, package_folder
from models.registry import available_models
from studio.bench.timing import paired
from studio.core.errors import StudioError
from studio.exported import open_model

MODELS = ("faces", "faces-hd")


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("faces", help="face generators: render and partial re-render times",
                           description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma list of faces, faces-hd (default: both)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the median is reported")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default: cpu)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"),
                   help="auto: fp16 on GPUs, fp32 on the CPU")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def _reference(name: str, gen, sample):
    """The package's own engine on the same input, or None where it cannot run here."""
    if name == "faces":
        try:
            from gan_face_generate.models import Generator as PackageGenerator
        except ImportError:
            return None
        from models.dcgan_faces import load_state, package_weights

        net = gen.net
        theirs = PackageGenerator(0, net.channels, net.nz, net.widths[-1]).eval().to(gen.device, gen.dtype)
        theirs.load_state_dict(load_state(package_weights()))
        z = gen.latents([sample])[:, :, None, None]
        return lambda: theirs(z)
    try:
        import openvino
    except ImportError:
        return None

    core = openvino.Core()
    threads = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(core.read_model(str(package_folder() / SYNTHESIS_XML)), "CPU", threads)
    style = gen.styles([sample]).float().cpu().numpy()
    compiled(style)  # warm-up: the first inference plans memory
    return lambda: compiled(style)


def bench_model(name: str, repeats: int, device: str, precision: str) -> dict:
    """Time opening, rendering and partial re-rendering the built-in ``name``."""

    start = time.perf_counter()
    gen = open_model(name, device=device, precision=precision)
    opened = time.perf_counter() - start
    sample = gen.sample(1)
    layers = [info.name for info in gen.layers() if info.size]
    row = {"model": name, "family": gen.family, "resolution": gen.resolution[0], "device": str(gen.device),
           "dtype": str(gen.dtype).removeprefix("torch."), "layers": len(gen.layers()),
           "parameters": sum(p.numel() for p in gen.module.parameters()), "open_s": round(opened, 3)}
    render = lambda: gen.render([sample])  # noqa: E731  (the baseline)
    with torch.inference_mode():
        render()  # warm-up
        full = []
        for where, layer in (("first", layers[0]), ("middle", layers[len(layers) // 2]), ("last", layers[-1])):
            act = gen.trace([sample], [layer])[layer]
            m = paired(lambda: gen.forward_from(layer, act, [sample]), render, repeats, gen.device)
            full.append(m["base_s"])
            row[f"partial_{where}_layer"] = layer
            row[f"partial_{where}_s"] = round(m["s"], 4)
            row[f"partial_{where}_ratio"] = round(m["ratio"], 3)
        row["render_s"] = round(statistics.median(full), 4)
        reference = _reference(name, gen, sample) if gen.device.type == "cpu" or name == "faces" else None
        if reference is not None:
            m = paired(reference, render, repeats, gen.device)
            row["reference"] = "package Generator" if name == "faces" else "package IR in OpenVINO"
            row["reference_s"] = round(m["s"], 4)
            row["reference_ratio"] = round(1 / m["ratio"], 3)  # ours over theirs
    return row


def run(args: argparse.Namespace) -> int:

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise StudioError(f"Unknown face model {', '.join(unknown)}: choose from {', '.join(MODELS)}.")
    entries = {e.name: e for e in available_models()}
    rows, skipped = [], []
    for name in names:
        if not entries[name].available:
            skipped.append({"model": name, "reason": entries[name].reason})
            continue
        print(f"benchmarking {name} ...", file=sys.stderr)
        rows.append(bench_model(name, args.repeats, args.device, args.precision))
    result = {"threads": torch.get_num_threads(), "models": rows, "skipped": skipped}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for row in rows:
        print(f"{row['model']:<9} {row['resolution']} px {row['dtype']}: open {row['open_s']:.2f} s, "
              f"render {row['render_s']:.3f} s")
        for where in ("first", "middle", "last"):
            print(f"  from {row[f'partial_{where}_layer']:<22} {row[f'partial_{where}_s']:.3f} s "
                  f"({row[f'partial_{where}_ratio']:.2f} of a render)")
        if "reference_s" in row:
            print(f"  {row['reference']}: {row['reference_s']:.3f} s (ours take {row['reference_ratio']:.2f}x)")
    for item in skipped:
        print(f"{item['model']}: skipped ({item['reason']})")
    return 0
