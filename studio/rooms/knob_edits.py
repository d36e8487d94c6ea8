"""Knob-edited activations for training the Rooms renderer: a trial stage's data (``knob_edits`` in a training config).

The layers a lamp knob edits (:func:`studio.knob_regions.app_layers`) lie in a frozen prefix (``train_from_block``);
this module switches lamps off (and, with strength -1, on) on training scenes with lamp knobs learned from training
seeds, exactly as the app applies them (:class:`studio.live.LiveRenderer`), and keeps the input of the first trained
block with the truth of the same room with that lamp switched: the renderer can then also learn to draw an edited
lamp as the world would::

    data = edited_inputs(Path("rooms.safetensors"), block=4, spec={"examples": 3000})
    data["inputs"]          # (N, C, H, W) float16: what blocks.4 reads under the knob edit
    data["latent"], data["tokens"], data["image"], data["weight"]   # model inputs, the switched truth, loss weight
    data["mask"], data["seed"], data["knob"], data["strength"]       # how each was edited (lamp_knobs()[knob])

Every seed drawn here is below ``studio.rooms.train.HELDOUT_BASE`` (the training seeds): the truth benchmark's
held-out rooms and its knob's tuning examples are never seen. Results of the trial: ``resources/rooms/MODEL_CARD.md``.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from studio.bench import rooms as bench
from studio.core.rooms import world
from studio.exported import open_model
from studio.knob_regions import app_layers, learn_app_knob
from studio.knobs import KnobEdit
from studio.live import LiveRenderer
from studio.rooms.train import HELDOUT_BASE, loss_weight

#: Defaults of a ``knob_edits`` config entry (every key may be given).
DEFAULTS = {
    "examples": 3000,         # edited scenes kept (in memory, about 0.4 MB each at 128 px)
    "knobs": 6,               # lamp knobs learned (each from 4 lit + 4 unlit examples), used in turn at random
    "knob_first": 100_000_000,  # knob j's lit examples from knob_first + j * knob_stride, unlit 10**6 further
    "knob_stride": 7_000_000,
    "scene_first": 200_000_000,  # edited scenes from here on
    "lamp_on_share": 0.35,    # an unlit lamp is kept (lit by strength -1) with this chance, a lit one always
    "seed": 7,
    "light_weight": 6.0, "lamp_weight": 20.0, "edge_weight": 12.0,  # the loss weights, as draw_example's
    "weight": 1.0,            # the edited images' loss, relative to the plain batch's
}


def spec_of(entry: Mapping) -> dict:
    """The ``knob_edits`` entry with defaults filled in; an unknown key is a one-sentence ValueError."""
    unknown = sorted(set(entry) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"knob_edits has unknown keys {unknown}: use {sorted(DEFAULTS)}.")
    return {**DEFAULTS, **entry}


def lamp_knobs(generator, spec: Mapping) -> list:
    """The ``knobs`` lamp-off knobs of ``spec``, learned as the app learns them, from quick boxes and round strokes
    in turn (as users paint), each on its own training seeds."""
    spec = spec_of(spec)
    knobs = []
    for j in range(spec["knobs"]):
        present, wanted = bench.knob_examples(generator, first=spec["knob_first"] + j * spec["knob_stride"],
                                              masks=("rough", "stroke")[j % 2], part=None)
        knobs.append(learn_app_knob(generator, f"lamp-off {j}", present, wanted))
    return knobs


def edited_inputs(init: Path, block: int, spec: Mapping, log: Callable[[str], None] = print) -> dict[str, torch.Tensor]:
    """Edited inputs of ``blocks.<block>`` of the model at ``init`` and their targets (see the module's docstring).

    The knobs' layers must all come before ``block`` (they are frozen, so the inputs stay valid while the rest
    trains); otherwise a one-sentence ValueError.
    """
    spec = spec_of(spec)
    if spec["knob_first"] + spec["knobs"] * spec["knob_stride"] + bench.UNLIT_OFFSET >= HELDOUT_BASE:
        raise ValueError(f"knob_edits must learn its knobs on training seeds (below {HELDOUT_BASE}).")
    generator = open_model(str(init), device="cpu")
    net = generator.net
    main, part = app_layers(generator)
    late = [name for name in (*main, *part) if int(name.split(".")[1]) >= block]
    if late:
        raise ValueError(f"knob_edits needs every knob layer frozen, but {late[0]} is not before blocks.{block}: "
                         f"raise train_from_block.")
    size = int(generator.resolution[0])
    knobs = lamp_knobs(generator, spec)
    log(f"knob_edits: {len(knobs)} lamp knobs learned on training seeds ({', '.join(main)}; core {', '.join(part)})")
    seen: dict[str, torch.Tensor] = {}
    hook = net.blocks[block].register_forward_pre_hook(lambda _m, args: seen.__setitem__("h", args[0].detach().clone()))
    live = LiveRenderer(generator)
    rng = random.Random(spec["seed"])
    rows: dict[str, list] = {key: [] for key in ("inputs", "latent", "tokens", "image", "weight", "mask", "seed",
                                                 "knob", "strength")}
    seed = spec["scene_first"]
    try:
        while len(rows["inputs"]) < spec["examples"]:
            if seed >= HELDOUT_BASE:
                raise ValueError(f"knob_edits ran into the held-out seeds ({HELDOUT_BASE}): lower scene_first.")
            caption = world.natural_caption(seed)
            scene = world.seed_scene(seed, caption)
            sample_seed, seed = seed, seed + 1
            if not scene.lamps:
                continue
            i = rng.randrange(len(scene.lamps))
            lit = scene.lamps[i].lit
            if not lit and rng.random() > spec["lamp_on_share"]:
                continue
            mask = torch.from_numpy(bench.user_mask(scene, i, size, rng.choice(bench.USER_MASKS)).astype(np.float32))
            sample = generator.sample(sample_seed, caption)
            k = rng.randrange(len(knobs))
            strength = 1.0 if lit else -1.0
            with torch.inference_mode():
                live.render(sample, (), None, [KnobEdit(knobs[k], mask, strength)])
            switched = world.with_lamp(scene, i, lit=not lit)
            truth = world.truth(switched, size)
            image = truth.image.astype(np.float32)
            rows["inputs"].append(seen.pop("h")[0].half())
            rows["latent"].append(generator.latents([sample])[0].float())
            rows["tokens"].append(generator.tokens([sample])[0])
            rows["image"].append(torch.from_numpy(image).permute(2, 0, 1).half())
            weight = loss_weight(truth, spec["light_weight"], spec["lamp_weight"], spec["edge_weight"],
                                 also_light=bench.lamp_region(scene, i, size))  # the lamp's light, lit or not
            rows["weight"].append(torch.from_numpy(weight).half())
            rows["mask"].append(mask.to(torch.bool))
            rows["seed"].append(torch.tensor(sample_seed))
            rows["knob"].append(torch.tensor(k))
            rows["strength"].append(torch.tensor(strength))
            if len(rows["inputs"]) % 1000 == 0 and len(rows["inputs"]) < spec["examples"]:
                log(f"knob_edits: {len(rows['inputs'])} of {spec['examples']} edited scenes drawn")
    finally:
        hook.remove()
        live.close()
    log(f"knob_edits: {len(rows['inputs'])} edited scenes from seeds {spec['scene_first']}-{seed - 1}")
    return {key: torch.stack(values) for key, values in rows.items()}


def edited_batch(data: Mapping[str, torch.Tensor], count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``count`` rows drawn at random: inputs, latent, tokens, image, weight (float32; weight (B, 1, H, W))."""
    idx = torch.randint(0, len(data["inputs"]), (count,), generator=generator)
    return (data["inputs"][idx].float().contiguous(memory_format=torch.channels_last), data["latent"][idx],
            data["tokens"][idx], data["image"][idx].float(), data["weight"][idx].float()[:, None])
