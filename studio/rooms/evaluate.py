"""Quality gates of the Rooms generator on held-out scenes: fidelity, caption adherence, lamp state, speed.

    python -m studio.rooms.evaluate --weights resources/rooms/rooms.safetensors --scenes 500 --json

Each held-out seed gives a scene, its caption (random paraphrase) and its exact render. The generated image is
compared with the render (PSNR) and read back with the world's detectors: wall colour, lamp count, bed and window
must match the caption; lit lamps must appear lit and unlit ones unlit, at the world's rate.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from studio.core.rooms import world
from studio.core.rooms.model import RoomsGenerator, load_weights
from studio.rooms.train import HELDOUT_BASE, draw_example, psnr

#: The gates the model card promises.
GATES = {"psnr_db": 24.0, "adherence": 0.95, "lit_rate_tolerance": 0.05}


@torch.inference_mode()
def evaluate(net: RoomsGenerator, scenes: int = 500, batch: int = 25, first_seed: int = HELDOUT_BASE) -> dict:
    """Metrics over ``scenes`` held-out seeds; see the module docstring.

    >>> net, _ = load_weights("resources/rooms/rooms.safetensors")
    >>> evaluate(net, scenes=50)["psnr_db"]["mean"]
    """
    net.eval()
    psnrs: list[float] = []
    match = {"wall": 0, "lamps": 0, "bed": 0, "window": 0, "all": 0}
    truth_match = {"wall": 0, "lamps": 0, "bed": 0, "window": 0, "all": 0}
    lamps_total = lit_true = lit_generated = lit_agree = 0
    for start in range(0, scenes, batch):
        exs = [draw_example(first_seed + i, light_weight=0.0) for i in range(start, min(scenes, start + batch))]
        latent = torch.from_numpy(np.stack([e.latent for e in exs]))
        tokens = torch.from_numpy(np.stack([e.tokens for e in exs]))
        target = torch.from_numpy(np.stack([e.image for e in exs])).permute(0, 3, 1, 2)
        pred = net(latent, tokens).clamp(0, 1)
        psnrs += psnr(pred, target).tolist()
        images = pred.permute(0, 2, 3, 1).contiguous().numpy()
        for ex, img in zip(exs, images):
            want = world.fields(ex.scene)
            for counts, seen in ((match, img), (truth_match, ex.image)):
                got = world.detect_fields(seen, ex.scene)
                ok = {
                    "wall": got.wall == want.wall,
                    "lamps": int(got.lamps) == int(want.lamps),
                    "bed": bool(got.bed) == bool(want.bed),
                    "window": bool(got.window) == bool(want.window),
                }
                ok["all"] = all(ok.values())
                for key, value in ok.items():
                    counts[key] += int(value)
            for i, lamp in enumerate(ex.scene.lamps):
                lit = bool(world.detect_lit(img, ex.scene, i))
                lamps_total += 1
                lit_true += int(bool(lamp.lit))
                lit_generated += int(lit)
                lit_agree += int(lit == bool(lamp.lit))
    n = len(psnrs)
    arr = np.asarray(psnrs)
    lit_rate = lit_generated / max(1, lamps_total)
    result = {
        "scenes": n,
        "psnr_db": {"mean": float(arr.mean()), "median": float(np.median(arr)), "p05": float(np.percentile(arr, 5)),
                    "min": float(arr.min())},
        "adherence": {k: v / n for k, v in match.items()},
        "detector_on_truth": {k: v / n for k, v in truth_match.items()},
        "lamps": {"count": lamps_total, "lit_rate_generated": lit_rate, "lit_rate_truth": lit_true / max(1, lamps_total),
                  "lit_rate_world": float(world.LIT_RATE), "lit_state_accuracy": lit_agree / max(1, lamps_total),
                  "unlit_rate_generated": 1.0 - lit_rate},
    }
    result["gates"] = {
        "psnr": result["psnr_db"]["mean"] >= GATES["psnr_db"],
        "adherence": result["adherence"]["all"] >= GATES["adherence"],
        "lamp_state": 0.0 < lit_rate < 1.0 and abs(lit_rate - float(world.LIT_RATE)) <= GATES["lit_rate_tolerance"],
    }
    return result


@torch.inference_mode()
def timings(net: RoomsGenerator, block: int | None = None, repeats: int = 30, threads: int = 2) -> dict:
    """Median milliseconds for one full 1-image render and for a partial re-render after ``block``.

    ``block`` defaults to the widest block (the 256-unit layer), the one a slider most often edits.
    """
    torch.set_num_threads(threads)
    net.eval()
    if block is None:
        block = max(range(len(net.blocks)), key=lambda i: net.config.widths[i])
    latent = torch.from_numpy(world.sample_latent(HELDOUT_BASE)).float()[None]
    tokens = torch.zeros(1, net.config.max_tokens, dtype=torch.long)
    tokens[0, :4] = torch.arange(1, 5)
    for _ in range(3):
        net(latent, tokens)
    full, prep, part = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net(latent, tokens)
        full.append(time.perf_counter() - t0)
    cond = net.prepare(latent, tokens)
    h = net.run_blocks(cond, stop=block)
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.forward_from(block, h, cond=cond)
        part.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        net.prepare(latent, tokens)
        prep.append(time.perf_counter() - t0)
    return {
        "threads": threads,
        "full_render_ms": 1000 * statistics.median(full),
        "partial_block": f"blocks.{block}",
        "partial_render_ms": 1000 * statistics.median(part),
        "prepare_ms": 1000 * statistics.median(prep),
    }


def format_report(result: dict) -> str:
    p, a, lamps = result["psnr_db"], result["adherence"], result["lamps"]
    lines = [
        f"held-out scenes: {result['scenes']}",
        f"PSNR vs ground truth: mean {p['mean']:.2f} dB, median {p['median']:.2f}, 5th pct {p['p05']:.2f}",
        "caption adherence: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in a.items()),
        "detectors on truth: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in result["detector_on_truth"].items()),
        f"lamps: {lamps['count']}, lit generated {100 * lamps['lit_rate_generated']:.1f}% vs world "
        f"{100 * lamps['lit_rate_world']:.1f}% (truth sample {100 * lamps['lit_rate_truth']:.1f}%), "
        f"state accuracy {100 * lamps['lit_state_accuracy']:.1f}%",
        "gates: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in result["gates"].items()),
    ]
    if "timings" in result:
        t = result["timings"]
        lines.append(f"speed ({t['threads']} threads): full {t['full_render_ms']:.1f} ms, from {t['partial_block']} "
                     f"{t['partial_render_ms']:.1f} ms, prepare {t['prepare_ms']:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("resources/rooms/rooms.safetensors"))
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-timing", action="store_true", help="skip the render-speed measurement")
    parser.add_argument("--timing-only", action="store_true", help="only measure render speed")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    net, meta = load_weights(args.weights)
    if args.timing_only:
        print(json.dumps(timings(net, threads=args.threads), indent=2))
        return 0
    result = evaluate(net, args.scenes)
    result["weights"] = {"path": str(args.weights), "steps": meta.get("steps"), "train_minutes": meta.get("train_minutes")}
    if not args.no_timing:
        result["timings"] = timings(net, threads=args.threads)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0 if all(result["gates"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
