"""Rooms training options of the crisp-lamp stage: a frozen prefix, lamp-edge weights, the pixel-step loss."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from studio.core.rooms import text as rtext
from studio.core.rooms import world
from studio.core.rooms.model import load_weights, save_weights
from studio.exported import open_model
from studio.knob_regions import app_layers
from studio.rooms import train as rtrain

TINY_MODEL = {"text_dim": 8, "stem_res": 4, "widths": [16, 24, 8, 4], "attn_blocks": [0, 1], "attn_heads": 2,
              "attn_head_dim": 4, "stem_hidden": 16}


def tiny_cfg(**overrides) -> dict:
    cfg = {"seed": 5, "threads": 1, "model": TINY_MODEL, "steps": 4, "max_minutes": 5, "batch": 2, "lr": 0.01,
           "min_lr_ratio": 0.5, "warmup_fraction": 0.0, "weight_decay": 0.1, "grad_clip": 1.0, "mse_weight": 1.0,
           "light_weight": 4.0, "lamp_weight": 5.0, "edge_weight": 3.0, "grad_weight": 0.5, "eval_scenes": 2,
           "eval_every": 1000, "log_every": 1000, "checkpoint_minutes": 60}
    cfg.update(overrides)
    return cfg


@pytest.fixture
def start_weights(tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(1)
    net = rtrain.RoomsGenerator(rtrain.model_config(cfg))
    with torch.no_grad():  # FiLM starts at zero; make every tensor non-trivial so a change is visible
        for lin in net.film:
            lin.weight.normal_(0, 0.3)
            lin.bias.normal_(0, 0.1)
    path = tmp_path / "start.safetensors"
    save_weights(net, path, list(rtext.VOCAB))
    return path


def test_frozen_prefix_stays_bit_identical_and_the_rest_trains(start_weights, tmp_path):
    out = tmp_path / "out.safetensors"
    rtrain.train(tiny_cfg(train_from_block=2), out, log=lambda _: None, init=start_weights)
    before = load_weights(start_weights)[0].state_dict()
    after = load_weights(out)[0].state_dict()
    prefix = ("text.", "stem.", "film.0.", "film.1.", "blocks.0.", "blocks.1.")
    frozen = [k for k in before if k.startswith(prefix)]
    trained = [k for k in before if not k.startswith(prefix)]
    assert "blocks.1.attn.to_k.weight" in frozen and "film.2.weight" in trained and "head.weight" in trained
    for key in frozen:  # weight decay and Adam never touch them
        assert torch.equal(before[key], after[key]), key
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight"))

    # so the frozen layers' activations are exactly the start's, and the image is not
    latent = torch.from_numpy(world.sample_latent(7))[None]
    tokens = torch.from_numpy(rtext.encode("a bedroom with blue walls and a lamp"))[None]
    a, b = load_weights(start_weights)[0].eval(), load_weights(out)[0].eval()
    with torch.no_grad():
        assert torch.equal(a.run_blocks(a.prepare(latent, tokens), stop=1), b.run_blocks(b.prepare(latent, tokens), stop=1))
        assert not torch.equal(a(latent, tokens), b(latent, tokens))


def test_without_a_prefix_everything_trains(start_weights, tmp_path):
    out = tmp_path / "out.safetensors"
    rtrain.train(tiny_cfg(), out, log=lambda _: None, init=start_weights)
    before, after = load_weights(start_weights)[0].state_dict(), load_weights(out)[0].state_dict()
    assert not torch.equal(before["blocks.0.conv.weight"], after["blocks.0.conv.weight"])


def test_bad_prefixes_are_refused_with_one_sentence(start_weights, tmp_path):
    with pytest.raises(ValueError, match="needs --init"):
        rtrain.train(tiny_cfg(train_from_block=1), tmp_path / "x.safetensors", log=lambda _: None)
    with pytest.raises(ValueError, match="0 to 4"):
        rtrain.train(tiny_cfg(train_from_block=9), tmp_path / "x.safetensors", log=lambda _: None,
                     init=start_weights)


def test_edge_weight_marks_the_lamps_outlines_lit_and_unlit_and_nothing_far_from_them():
    seed = next(s for s in range(200) if {lamp.lit for lamp in world.sample_scene(np.random.default_rng(s)).lamps}
                == {True, False})
    plain = rtrain.draw_example(seed, 64, light_weight=4.0, lamp_weight=5.0, style=0)
    edged = rtrain.draw_example(seed, 64, light_weight=4.0, lamp_weight=5.0, style=0, edge_weight=3.0)
    extra = edged.weight - plain.weight
    assert set(np.unique(extra).tolist()) == {0.0, 3.0}
    truth = world.truth(plain.scene, size=64)
    for i, lamp in enumerate(plain.scene.lamps):  # every lamp's shade outline gets the weight, lit or not
        shade = np.asarray(truth.masks[f"lamp{i}"], dtype=bool)
        assert (extra[shade] > 0).any(), (i, lamp.lit)
    region = np.zeros((64, 64), bool)
    for i in range(world.MAX_LAMPS):
        region |= np.asarray(truth.masks[f"lamp{i}"], bool) | np.asarray(truth.masks[f"glow{i}"], bool)
    stripes = np.tile((np.arange(64) % 2)[None, :, None], (64, 1, 3)).astype(np.float32)  # an edge at every pixel
    grown = rtrain.lamp_edges(stripes, region)  # so: the region grown by 2 px
    assert grown.sum() > region.sum()
    assert not (extra[~grown] > 0).any()  # only at most 2 px outside the lamps and their light


def test_pixel_step_loss_charges_a_blurred_edge_and_nothing_for_the_truth():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0
    blurred = image.clone()
    blurred[..., 3], blurred[..., 4] = 0.25, 0.75
    weight = torch.ones(1, 1, 8, 8)
    cfg = {"mse_weight": 1.0}
    assert float(rtrain.image_loss(image, image, weight, {**cfg, "grad_weight": 1.0})) == 0.0
    plain = float(rtrain.image_loss(blurred, image, weight, cfg))
    stepped = float(rtrain.image_loss(blurred, image, weight, {**cfg, "grad_weight": 1.0}))
    assert plain > 0 and stepped > plain


def test_extra_convs_grown_from_the_init_start_exact_and_train_behind_the_frozen_prefix(start_weights, tmp_path):
    grown = dict(TINY_MODEL, extra_convs=[0, 0, 0, 1])
    start = load_weights(start_weights)[0].eval()
    assert rtrain.grown_convs(start.config, rtrain.model_config(tiny_cfg(model=grown))) == \
        ["blocks.3.extra.0.weight", "blocks.3.extra.0.bias"]
    # at lr 0 (nothing moves): the grown net renders exactly as the init
    out0 = tmp_path / "zero.safetensors"
    rtrain.train(tiny_cfg(model=grown, lr=0.0, steps=1, train_from_block=3), out0, log=lambda _: None, init=start_weights)
    latent = torch.from_numpy(world.sample_latent(7))[None]
    tokens = torch.from_numpy(rtext.encode("a bedroom with blue walls and a lamp"))[None]
    zero = load_weights(out0)[0].eval()
    with torch.no_grad():
        assert torch.equal(start(latent, tokens), zero(latent, tokens))
    # trained: the new conv learns, the prefix before it stays bit-identical
    out = tmp_path / "out.safetensors"
    rtrain.train(tiny_cfg(model=grown, train_from_block=3), out, log=lambda _: None, init=start_weights)
    after = load_weights(out)[0].eval()
    assert after.state_dict()["blocks.3.extra.0.weight"].abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(start.run_blocks(start.prepare(latent, tokens), stop=2),
                           after.run_blocks(after.prepare(latent, tokens), stop=2))


def test_other_architectures_are_refused_as_init(start_weights, tmp_path):
    tiny = rtrain.model_config(tiny_cfg())
    assert rtrain.grown_convs(tiny, tiny) == []
    assert rtrain.grown_convs(rtrain.model_config(tiny_cfg(model=dict(TINY_MODEL, extra_convs=[1]))), tiny) is None
    with pytest.raises(ValueError, match="another architecture"):
        rtrain.train(tiny_cfg(model=dict(TINY_MODEL, widths=[16, 24, 8, 8])), tmp_path / "x.safetensors",
                     log=lambda _: None, init=start_weights)


KNOB_EDITS = {"examples": 4, "knobs": 1}


def test_knob_edited_inputs_are_what_the_app_renders_and_their_targets_the_switched_lamps(start_weights):
    from studio.exported import open_model
    from studio.knobs import KnobEdit
    from studio.live import LiveRenderer
    from studio.rooms import knob_edits

    data = knob_edits.edited_inputs(start_weights, 3, KNOB_EDITS, log=lambda _: None)
    assert len(data["inputs"]) == 4 and bool((data["seed"] < rtrain.HELDOUT_BASE).all())
    gen = open_model(str(start_weights), device="cpu")
    knob = knob_edits.lamp_knobs(gen, KNOB_EDITS)[0]
    live = LiveRenderer(gen)
    for row in range(4):
        seed = int(data["seed"][row])
        caption = world.natural_caption(seed)
        sample = gen.sample(seed, caption)
        mask = data["mask"][row].float()
        with torch.inference_mode():
            app = live.render(sample, (), None, [KnobEdit(knob, mask, float(data["strength"][row]))])[0]
            plain = gen.render([sample])[0]
            cond = gen.net.prepare(data["latent"][row:row + 1], data["tokens"][row:row + 1])
            rerun = gen.net.forward_from(2, data["inputs"][row:row + 1].float(), cond=cond)[0]
        edit = float((plain - app).abs().max())  # the knob's change (small on this tiny net), kept in float16
        assert edit > 0 and float((rerun - app).abs().max()) < 0.05 * edit
        room = world.seed_scene(seed, caption)
        target = data["image"][row].permute(1, 2, 0).float().numpy()
        switched = [i for i, lamp in enumerate(room.lamps)
                    if np.abs(world.truth(world.with_lamp(room, i, lit=not lamp.lit), 32).image - target).max() < 1e-3]
        assert switched, "the target is the room with one of its lamps switched"
        assert float(data["weight"][row][data["mask"][row]].mean()) > float(data["weight"][row][~data["mask"][row]].mean())
    live.close()


def test_knob_edits_train_the_rendering_behind_the_frozen_prefix_towards_the_switched_truth(start_weights, tmp_path):
    from studio.rooms import knob_edits

    data = knob_edits.edited_inputs(start_weights, 3, KNOB_EDITS, log=lambda _: None)

    def edited_loss(path) -> float:
        net, _ = load_weights(path)
        with torch.no_grad():
            cond = net.prepare(data["latent"], data["tokens"])
            pred = net.forward_from(2, data["inputs"].float(), cond=cond)
        return float(rtrain.image_loss(pred, data["image"].float(), data["weight"].float()[:, None], tiny_cfg()))

    out = tmp_path / "edited.safetensors"
    rtrain.train(tiny_cfg(train_from_block=3, steps=12, knob_edits=dict(KNOB_EDITS, weight=4.0)), out,
                 log=lambda _: None, init=start_weights)
    assert edited_loss(out) < edited_loss(start_weights)
    start, trained = load_weights(start_weights)[0].state_dict(), load_weights(out)[0].state_dict()
    assert all(torch.equal(start[k], trained[k]) for k in start if k.startswith(("stem.", "blocks.0.", "blocks.2.")))


def test_knob_edits_refuse_an_unfrozen_knob_layer_or_unknown_keys(start_weights, tmp_path):
    # the tiny model's knob edits blocks.0-1 (its core blocks.1): blocks.1 may not train
    with pytest.raises(ValueError, match="not before blocks.1"):
        rtrain.train(tiny_cfg(train_from_block=1, knob_edits=KNOB_EDITS), tmp_path / "x.safetensors",
                     log=lambda _: None, init=start_weights)
    with pytest.raises(ValueError, match="needs --init"):
        rtrain.train(tiny_cfg(knob_edits=KNOB_EDITS), tmp_path / "x.safetensors", log=lambda _: None,
                     init=start_weights)
    with pytest.raises(ValueError, match="unknown keys"):
        rtrain.train(tiny_cfg(train_from_block=3, knob_edits={"exampels": 4}), tmp_path / "x.safetensors",
                     log=lambda _: None, init=start_weights)


def test_the_shipped_weights_come_from_the_committed_stages_and_stage_3_leaves_the_app_knobs_layers_alone():
    rooms = Path(__file__).resolve().parent.parent / "resources" / "rooms"
    stages = json.loads((rooms / "default.json").read_text())["stages"]
    last = json.loads((rooms / stages[-1]).read_text())
    with safe_open(str(rooms / "rooms.safetensors"), "pt") as f:
        made_by = json.loads(f.metadata()["train_config"])
    assert made_by == last  # the shipped file says it is the last listed stage's output, settings and all
    main, part = app_layers(open_model("rooms", device="cpu"))
    edited = {int(name.split(".")[1]) for name in (*main, *part)}
    assert max(edited) < last["train_from_block"]  # the knob's layers stayed frozen while the decoder trained


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stage", [{}, {"train_from_block": 3, "knob_edits": dict(KNOB_EDITS, weight=4.0)}],
                         ids=["plain", "knob-edits"])
def test_a_stage_stopped_after_a_checkpoint_resumes_to_the_same_weights(start_weights, tmp_path, stage):
    cfg = tiny_cfg(steps=8, checkpoint_minutes=0, **stage)  # a checkpoint (and its state) after every step
    whole = tmp_path / "whole.safetensors"
    rtrain.train(cfg, whole, log=lambda _: None, init=start_weights, state_path=tmp_path / "whole.state")

    def stop_at_step_3(line: str) -> None:
        if line.startswith("checkpoint") and line.endswith("at step 3"):
            raise Interrupted

    resumed, state = tmp_path / "resumed.safetensors", tmp_path / "resumed.state"
    threads = threading.active_count()
    with pytest.raises(Interrupted):
        rtrain.train(cfg, resumed, log=stop_at_step_3, init=start_weights, state_path=state)
    assert threading.active_count() == threads  # the batch feed's thread stopped with the run
    said = []
    rtrain.train(cfg, resumed, log=said.append, init=start_weights, state_path=state)
    assert any("resumed from" in line and "at step 3" in line for line in said)
    a, b = load_weights(whole)[0].state_dict(), load_weights(resumed)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
