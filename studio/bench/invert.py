"""``python -m studio bench invert``: does a user's own image come back, and does the lamp knob then work on it?

    python -m studio bench invert --json --scenes 6
    {"rooms": {"reconstruction_psnr": ..., "seconds": ..., "relight_psnr": ..., "really_off": ..., ...},
     "faces": {"reconstruction_psnr": null, "not_measured": "..."},
     "diffusion": {"roundtrip_max_abs": 0.40, "ddim_max_abs": 7e-06, ...}}

Rooms: the world's TRUE render of held-out rooms (seeds from ``studio.bench.rooms.HELD_OUT_FIRST``, disjoint from
training's: images the model never produced) is inverted with :func:`studio.invert.invert` (caption searched too);
``reconstruction_psnr`` is the mean PSNR of the inverted sample's normal render against that truth, ``seconds`` the
mean CPU time per image, ``caption_right`` the share of rooms whose caption facts were found. Then the shipped
lamp-off knob (:func:`studio.knobs.shipped_knobs`) is applied at strength 1 through the app's
:class:`studio.live.LiveRenderer` on the lamp's truth region and on a rough box round it, and scored against the
world's unlit render of the same room with the truth benchmark's own :func:`studio.bench.rooms.user_figures`
(``relight_psnr``: PSNR in the region against the unlit truth; ``really_off``: the world's detectors say the lamp is
off and nothing else changed). ``seed_model`` gives the same knob figures on the model's own render of each room's
seed and caption (what the knob does when nothing had to be inverted): the gap is what inversion costs.
``finetune``: the same rooms after the optional fine-tune of ``blocks.1``'s activation (:func:`studio.invert.finetune`,
``--finetune-steps``, 0 for none): its ``reconstruction_psnr`` against the one without (``psnr_before``), its CPU
``seconds``, and the lamp-off knob on the fine-tuned sample (rough mask), so a closer reconstruction that the knob
no longer switches off would show; ``reconstruction_psnr_finetuned`` repeats its mean.

Faces: ``faces`` is the DCGAN of the optional package gan-face-generate; without it the JSON says so.
Diffusion: :func:`bench_diffusion` on the tiny random SD 1.x pipeline (models/sd_random.py, 32 px, 4 DDIM steps):
an image the model made is inverted from its pixels (``DiffusionModel.invert_image``: the VAE latent fitted, then DDIM
run backwards with fixed-point refinement) and redrawn; ``roundtrip_max_abs`` / ``roundtrip_mean_abs`` compare the
redraw with the image (tests/test_diffusion_invert.py states the tolerance: max 0.6, mean 0.1; the random VAE's
encoder is far from its decoder's inverse), ``ddim_max_abs`` the DDIM half alone (the model's own final latent
inverted and redrawn; tolerance 2e-3).
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

from models.registry import available_models, open_model
from studio.core.errors import StudioError
from studio.core.rooms import world
from studio.invert import DEFAULT_FINETUNE_STEPS, DEFAULT_STEPS, finetune, invert, psnr
from studio.knobs import KnobEdit, shipped_knobs
from studio.live import LiveRenderer

from .rooms import HELD_OUT_FIRST, _image, rough_mask, save_strip, truth_scenes, user_figures

#: Reconstruction PSNR the issue asks of Rooms inversions of true renders.
TARGET_PSNR = 26.0


def bench_rooms(scenes: int, steps: int, first: int = HELD_OUT_FIRST, progress=None, picture=None,
                finetune_steps: int = DEFAULT_FINETUNE_STEPS, finetune_layer: str = "blocks.1") -> dict:
    """Invert ``scenes`` held-out true renders and switch their lamp off with the shipped knob; then fine-tune
    ``finetune_layer`` for ``finetune_steps`` (0: not) and score both again."""
    generator = open_model("rooms", device="cpu")
    knobs = {k.name: k for k in shipped_knobs(generator)}
    if "lamp-off" not in knobs:
        raise StudioError("The Rooms model ships no lamp-off knob here (resources/rooms/knobs); restore it from git.")
    knob = knobs["lamp-off"]
    rows = {"truth": [], "rough": []}
    seed_rows = {"truth": [], "rough": []}
    recon, seconds, captions, per_scene, strips = [], [], [], [], []
    tuned_recon, tuned_seconds, tuned_rows = [], [], []
    live = LiveRenderer(generator)
    try:
        for n, scene in enumerate(truth_scenes(generator, scenes, first)):
            room = world.seed_scene(scene.seed, scene.caption)
            target = torch.from_numpy(np.ascontiguousarray(scene.lit.transpose(2, 0, 1)))
            began = time.process_time()
            inv = invert(generator, target, steps=steps)
            seconds.append(time.process_time() - began)
            with torch.inference_mode():
                model = _image(generator.render([inv.sample]))
                own = _image(generator.render([scene.sample]))
            recon.append(psnr(torch.from_numpy(model), torch.from_numpy(scene.lit)))
            right = world.parse_caption(inv.caption) == world.parse_caption(scene.caption)
            captions.append(right)
            for kind, region in (("truth", scene.region), ("rough", rough_mask(scene.region))):
                mask = torch.from_numpy(region.astype(np.float32))
                edited = _image(live.render(inv.sample, (), None, [KnobEdit(knob, mask, 1.0)])[0])
                rows[kind].append(user_figures(model, edited, scene, room))
                edited_own = _image(live.render(scene.sample, (), None, [KnobEdit(knob, mask, 1.0)])[0])
                seed_rows[kind].append(user_figures(own, edited_own, scene, room))
                if kind == "rough" and len(strips) < 4:
                    strips.append((scene.lit, model, edited, scene.unlit))
            per_scene.append({"seed": scene.seed, "psnr": round(recon[-1], 2), "caption": scene.caption,
                              "caption_found": inv.caption, "really_off": rows["rough"][-1]["really_off"]})
            if finetune_steps:
                began = time.process_time()
                tuned = finetune(generator, inv, finetune_layer, finetune_steps)
                tuned_seconds.append(time.process_time() - began)
                with torch.inference_mode():
                    tuned_image = _image(generator.render([tuned.sample]))
                tuned_recon.append(psnr(torch.from_numpy(tuned_image), torch.from_numpy(scene.lit)))
                mask = torch.from_numpy(rough_mask(scene.region).astype(np.float32))
                edited = _image(live.render(tuned.sample, (), None, [KnobEdit(knob, mask, 1.0)])[0])
                tuned_rows.append(user_figures(tuned_image, edited, scene, room))
                per_scene[-1]["psnr_finetuned"] = round(tuned_recon[-1], 2)
            if progress is not None:
                progress(n + 1, scenes, scene.seed, recon[-1])
    finally:
        live.close()

    def summary(items: list[dict]) -> dict:
        return {"relight_psnr": round(statistics.mean(r["psnr"] for r in items), 2),
                "really_off": round(sum(r["really_off"] for r in items) / len(items), 3),
                "outside_change": round(statistics.mean(r["outside"] for r in items), 4)}

    knob_masks = {kind: summary(items) for kind, items in rows.items()}
    extra = {"picture": str(save_strip(strips, picture))} if picture else {}
    if tuned_recon:
        extra["reconstruction_psnr_finetuned"] = round(statistics.mean(tuned_recon), 2)
        extra["finetune"] = {"layer": finetune_layer, "steps": finetune_steps,
                             "reconstruction_psnr": round(statistics.mean(tuned_recon), 2),
                             "reconstruction_psnr_min": round(min(tuned_recon), 2),
                             "psnr_before": round(statistics.mean(recon), 2),
                             "seconds": round(statistics.mean(tuned_seconds), 2),
                             "knob_rough_mask": summary(tuned_rows)}
    return {**extra, "reconstruction_psnr": round(statistics.mean(recon), 2),
            "reconstruction_psnr_min": round(min(recon), 2),
            "target_psnr": TARGET_PSNR,
            "seconds": round(statistics.mean(seconds), 2),
            "seconds_are": "CPU time per image (process time, all threads), inversion only",
            "caption_right": round(sum(captions) / len(captions), 3),
            # the figures the issue names, on rough masks (what a hand paints); both masks below
            "relight_psnr": knob_masks["rough"]["relight_psnr"], "really_off": knob_masks["rough"]["really_off"],
            "knob": {"name": knob.name, "strength": 1.0, "masks": knob_masks},
            "seed_model": {"masks": {kind: summary(items) for kind, items in seed_rows.items()}},
            "scenes": len(recon), "first_seed": first, "steps": steps, "threads": torch.get_num_threads(),
            "per_scene": per_scene}


def bench_faces(steps: int) -> dict:
    """Inversion into the DCGAN faces of one of its own held-out seeds, when the package is installed."""
    entries = {e.name: e for e in available_models()}
    entry = entries.get("faces")
    if entry is None or not entry.available:
        reason = entry.reason if entry is not None else "the faces family is not registered"
        return {"reconstruction_psnr": None, "not_measured": f"faces is not installed here: {reason}"}
    generator = open_model("faces", device="cpu")
    seed = HELD_OUT_FIRST
    with torch.inference_mode():
        target = generator.render([generator.sample(seed)])[0].cpu()
    inv = invert(generator, target, steps=steps)
    return {"reconstruction_psnr": round(inv.psnr, 2), "image": f"its own held-out seed {seed}", "steps": steps,
            "seconds": round(inv.seconds, 2)}


def bench_diffusion(steps: int = 4, fit_steps: int = 80) -> dict:
    """The tiny random SD round trip: invert an image the model made, redraw it, compare (see the module doc)."""
    import tempfile  # only this benchmark builds a model on disk

    from models.diffusion import open_folder
    from models.sd_random import tiny_sd
    from studio.core.progress import Ticker

    with tempfile.TemporaryDirectory(prefix="bench-invert-sd-") as root:
        pipe = tiny_sd(Path(root) / "build")
        pipe.save_pretrained(Path(root) / "folder")
        generator = open_folder(Path(root) / "folder", torch.device("cpu"), "fp32")
    sample = generator.sample(3, "a red house", steps=steps, size=32, scheduler="ddim", guidance=1.0)
    with torch.inference_mode():
        image = generator.render([sample])[0]
    began = time.perf_counter()
    inverted = generator.invert_image(image, sample.prompt, fit_steps, denoise_steps=steps)
    seconds = time.perf_counter() - began
    figures = generator.last_inversion
    with torch.inference_mode():
        again = generator.render([inverted])[0]
    with torch.no_grad():
        own = generator.invert_latent(generator._denoised(sample, Ticker(steps)), sample.prompt, steps)
    with torch.inference_mode():
        ddim = float((generator.render([own])[0] - image).abs().max())
    difference = (again - image).abs()
    return {"roundtrip_max_abs": round(float(difference.max()), 4),
            "roundtrip_mean_abs": round(float(difference.mean()), 4),
            "roundtrip_psnr": round(psnr(again, image), 2), "ddim_max_abs": float(f"{ddim:.3g}"),
            "vae_fit_loss": [round(figures.vae_losses[0], 5), round(figures.vae_losses[-1], 5)],
            "step_residuals": [float(f"{r:.3g}") for r in figures.residuals], "denoise_steps": steps,
            "fit_steps": fit_steps, "seconds": round(seconds, 2), "tolerance": {"max_abs": 0.6, "mean_abs": 0.1},
            "model": "tiny random SD 1.x (models/sd_random.py), 32 px"}


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("invert", help="inversion of your own image: Rooms true renders, faces, diffusion",
                           description="Invert the world's true renders of held-out rooms into the Rooms model, "
                                       "score the reconstruction, then switch the lamp off with the shipped knob "
                                       "and score it against the world's unlit render.")
    p.add_argument("--scenes", type=int, default=6, help="held-out rooms with a lit lamp (default: 6)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimisation steps (default: {DEFAULT_STEPS})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; 0: torch's choice)")
    p.add_argument("--finetune-steps", type=int, default=DEFAULT_FINETUNE_STEPS,
                   help=f"then fine-tune blocks.1's activation this many steps and score again (default: "
                        f"{DEFAULT_FINETUNE_STEPS}; 0: no fine-tune)")
    p.add_argument("--picture", default=None,
                   help="save true render | inverted | lamp-off knob on it (rough mask) | unlit truth rows of the "
                        "first 4 rooms to this PNG")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scenes < 1:
        raise StudioError("The inversion benchmark needs at least one scene: give --scenes 1 or more.")

    def report(done: int, total: int, seed: int, value: float) -> None:
        print(f"\rinvert rooms: {done}/{total} (seed {seed}: {value:.1f} dB)", end="\n" if done == total else "",
              file=sys.stderr, flush=True)

    if args.finetune_steps < 0:
        raise StudioError("--finetune-steps is 0 (no fine-tune) or more.")
    result = {"rooms": bench_rooms(args.scenes, args.steps, progress=report, picture=args.picture,
                                   finetune_steps=args.finetune_steps),
              "faces": bench_faces(args.steps), "diffusion": bench_diffusion()}
    if args.json:
        print(json.dumps(result))
        return 0
    r = result["rooms"]
    print(f"rooms: {r['scenes']} held-out true renders inverted to {r['reconstruction_psnr']:.1f} dB (target "
          f">= {TARGET_PSNR:g}), {r['seconds']:.0f} s each, caption right {r['caption_right']:.0%}; lamp-off knob "
          f"on the inverted image: relight {r['relight_psnr']:.1f} dB, really off {r['really_off']:.0%}")
    if "finetune" in r:
        f = r["finetune"]
        print(f"rooms, {f['layer']} fine-tuned {f['steps']} steps: {f['psnr_before']:.1f} -> "
              f"{f['reconstruction_psnr']:.1f} dB, {f['seconds']:.0f} s each; lamp-off knob on it: relight "
              f"{f['knob_rough_mask']['relight_psnr']:.1f} dB, really off {f['knob_rough_mask']['really_off']:.0%}")
    print(f"faces: {result['faces'].get('reconstruction_psnr') or result['faces'].get('not_measured')}")
    d = result["diffusion"]
    print(f"diffusion (tiny random SD): round trip max abs {d['roundtrip_max_abs']:.3f}, mean abs "
          f"{d['roundtrip_mean_abs']:.3f}; the DDIM half alone {d['ddim_max_abs']:.1e}")
    return 0
