"""The Rooms generator: shapes, exact partial re-renders, the caption path, weights on disk, the committed model."""
from __future__ import annotations

import json

import pytest
import torch

from studio.core.errors import ModelOpenError
from studio.core.resources import RESOURCES
from studio.core.rooms import text as rtext
from studio.core.rooms import world
from studio.core.rooms.model import RoomsConfig, RoomsGenerator, load_weights, save_weights

WEIGHTS = RESOURCES / "rooms" / "rooms.safetensors"


def tiny(**overrides) -> RoomsGenerator:
    cfg = RoomsConfig(latent_dim=world.LATENT_DIM, vocab_size=len(rtext.VOCAB), text_dim=8, stem_res=4,
                      widths=(16, 24, 8, 4), attn_blocks=(0, 1), attn_heads=2, attn_head_dim=4, stem_hidden=16)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    net = RoomsGenerator(cfg).eval()
    with torch.no_grad():  # FiLM starts at zero; make it matter so the tests see the latent path
        for lin in net.film:
            lin.weight.normal_(0, 0.3)
    return net


def inputs(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    latent = torch.stack([torch.from_numpy(world.sample_latent(s)) for s in range(n)])
    captions = [world.caption(world.sample_scene(__import__("numpy").random.default_rng(s)), style=s % 5)
                for s in range(n)]
    tokens = torch.stack([torch.from_numpy(rtext.encode(c)) for c in captions])
    return latent, tokens


def test_shapes_and_range():
    net = tiny()
    latent, tokens = inputs(3)
    with torch.inference_mode():
        img = net(latent, tokens)
    assert img.shape == (3, 3, 32, 32) and net.config.image_size == 32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


@pytest.mark.parametrize("block", [-1, 0, 1, 2, 3])
def test_forward_from_equals_full_forward(block):
    net = tiny()
    latent, tokens = inputs(2)
    with torch.inference_mode():
        full = net(latent, tokens)
        cond = net.prepare(latent, tokens)
        h = cond.stem if block < 0 else net.run_blocks(cond, stop=block)
        assert torch.equal(net.forward_from(block, h, cond=cond), full)
        assert torch.equal(net.forward_from(block, h, latent, tokens), full)


def test_traced_block_output_restarts_exactly():
    net = tiny()
    latent, tokens = inputs(2)
    seen = {}
    handle = net.blocks[1].register_forward_hook(lambda m, a, out: seen.__setitem__("h", out))
    with torch.inference_mode():
        full = net(latent, tokens)
        handle.remove()
        assert torch.equal(net.forward_from(1, seen["h"], latent, tokens), full)


def test_caption_reaches_image_only_through_key_value_projections():
    net = tiny()
    latent, _ = inputs(1)
    red = torch.from_numpy(rtext.encode("a bedroom with red walls and one lamp"))[None]
    blue = torch.from_numpy(rtext.encode("a bedroom with blue walls and one lamp"))[None]
    with torch.inference_mode():
        assert not torch.allclose(net(latent, red), net(latent, blue))
        for attn in net.cross_attentions().values():
            attn.to_k.weight.zero_()
            attn.to_v.weight.zero_()
        assert torch.equal(net(latent, red), net(latent, blue))
    names = set(net.cross_attentions())
    assert names == {"blocks.0.attn", "blocks.1.attn"}
    assert all(a.to_k.bias is None and a.to_v.bias is None for a in net.cross_attentions().values())


def test_padding_is_ignored_and_word_order_is_not_positional():
    net = tiny()
    latent, _ = inputs(1)
    a = torch.from_numpy(rtext.encode("two lamps and a bed in a red bedroom"))[None]
    b = torch.from_numpy(rtext.encode("a red bedroom with two lamps and a bed"))[None]
    empty = torch.zeros_like(a)
    with torch.inference_mode():
        assert torch.isfinite(net(latent, empty)).all()  # an empty prompt reads nothing, no NaN
        with torch.no_grad():
            net.text.embed.weight[rtext.VOCAB.index("with")] = 0  # bag of words: order cannot matter
            net.text.embed.weight[rtext.VOCAB.index("in")] = 0
            net.text.embed.weight[rtext.VOCAB.index("bedroom")] = 0
        assert torch.allclose(net(latent, a), net(latent, b), atol=1e-6)


def test_config_json_round_trip():
    cfg = tiny().config
    assert RoomsConfig.from_json(cfg.to_json()) == cfg
    assert RoomsConfig.from_json(json.loads(cfg.to_json())) == cfg


def test_safetensors_round_trip(tmp_path):
    net = tiny()
    path = tmp_path / "rooms.safetensors"
    save_weights(net, path, list(rtext.VOCAB), {"steps": "7"})
    loaded, meta = load_weights(path)
    assert meta["format"] == "neuron-studio/rooms" and meta["steps"] == "7"
    assert json.loads(meta["vocab"]) == list(rtext.VOCAB)
    assert loaded.config == net.config
    latent, tokens = inputs(2)
    with torch.inference_mode():
        assert torch.allclose(loaded(latent, tokens), net(latent, tokens), atol=1e-5)  # loaded is channels_last
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temporary file


def test_missing_or_corrupt_weights_give_one_clear_sentence(tmp_path):
    with pytest.raises(ModelOpenError, match="not found"):
        load_weights(tmp_path / "nothing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelOpenError, match="not usable Rooms weights"):
        load_weights(bad)


@pytest.mark.skipif(not WEIGHTS.exists(), reason="committed Rooms weights not present")
def test_committed_weights_load_and_render():
    net, meta = load_weights(WEIGHTS)
    assert meta["format"] == "neuron-studio/rooms"
    assert json.loads(meta["vocab"]) == list(rtext.VOCAB)
    assert net.config.latent_dim == world.LATENT_DIM and net.config.image_size >= 128
    assert max(net.config.widths) >= 256
    latent = torch.from_numpy(world.sample_latent(3))[None]
    tokens = torch.from_numpy(rtext.encode(world.caption(world.CaptionFields("blue", True, True, 2))))[None]
    with torch.inference_mode():
        img = net(latent, tokens)
    assert img.shape == (1, 3, 128, 128) and torch.isfinite(img).all()


# -- the adapter (models/rooms.py) behind the model contract ------------------------------------------------------
def open_tiny(tmp_path):
    from models import registry
    from models.rooms import FAMILY, RoomsModel

    path = tmp_path / "tiny-rooms.safetensors"
    save_weights(tiny(), path, list(rtext.VOCAB))
    found = registry.probe(path)
    assert FAMILY.sniff(found)
    gen = FAMILY.open_path(found, torch.device("cpu"), "auto")
    assert isinstance(gen, RoomsModel)
    return gen


def test_adapter_layers_render_and_partial_re_render(tmp_path):
    gen = open_tiny(tmp_path)
    assert [(i.name, i.units, i.size, i.partial) for i in gen.layers()] == [
        ("blocks.0", 16, (4, 4), True), ("blocks.1", 24, (8, 8), True), ("blocks.2", 8, (16, 16), True),
        ("blocks.3", 4, (32, 32), True)]
    samples = [gen.sample(3), gen.sample(4, "three lamps in a red bedroom")]
    assert samples[0].prompt == gen.default_prompt == "a bedroom with blue walls, a bed, a window and two lamps"
    with torch.inference_mode():
        full = gen.render(samples)
        assert full.shape == (2, 3, 32, 32)
        for layer in ("blocks.0", "blocks.1", "blocks.2"):
            acts = gen.trace(samples, [layer])
            assert torch.equal(gen.forward_from(layer, acts[layer], samples), full)


def test_adapter_unit_edit_and_latent_option(tmp_path):
    from studio.core.hooks import UnitEdit, count_hooks

    gen = open_tiny(tmp_path)
    sample = gen.sample(5)
    with torch.inference_mode():
        before = gen.render([sample])
        with gen.editor() as editor:
            editor.set([UnitEdit("blocks.1", u, "off") for u in range(24)])
            assert not torch.equal(gen.render([sample]), before)
        assert count_hooks(gen.module) == 0
        same = gen.render([gen.sample(99, latent=world.sample_latent(5).tolist())])
    assert torch.equal(same, before)


def test_adapter_cross_attention_and_prompt_encoding(tmp_path):
    gen = open_tiny(tmp_path)
    pairs = gen.cross_attention()
    assert [p.name for p in pairs] == ["blocks.0.attn", "blocks.1.attn"]
    assert pairs[0].to_k.in_features == gen.module.config.text_dim
    enc = gen.encode_prompt("a bedroom with red walls and one lamp")
    assert enc.tokens[:8] == ["a", "bedroom", "with", "red", "walls", "and", "one", "lamp"]
    assert enc.embeddings.shape == (rtext.MAX_TOKENS, gen.module.config.text_dim)
    assert enc.content.tolist() == [True] * 8 + [False] * (rtext.MAX_TOKENS - 8)
    red = rtext.VOCAB.index("red")
    assert torch.equal(enc.embeddings[3], gen.module.text.embed.weight[red])


def test_registry_knows_the_rooms_family():
    from models import registry

    assert "models.rooms" in registry.FAMILY_MODULES
    names = {e.name: e for e in registry.available_models()}
    assert names["rooms"].family == "rooms"


@pytest.mark.skipif(not WEIGHTS.exists(), reason="committed Rooms weights not present")
def test_builtin_opens_and_renders_the_default_prompt():
    from models import open_model

    gen = open_model("rooms", device="cpu")
    with torch.inference_mode():
        img = gen.render([gen.sample(0)])
    assert gen.family == "rooms" and img.shape == (1, 3, 128, 128)
    assert {i.units for i in gen.layers()} >= {256}


def test_adapter_caches_conditioning_but_never_serves_it_stale(tmp_path):
    gen = open_tiny(tmp_path)
    samples = [gen.sample(2)]
    with torch.inference_mode():
        acts = gen.trace(samples, ["blocks.1"])["blocks.1"]
        first = gen.forward_from("blocks.1", acts, samples)
        assert gen._cond_key is not None
        cached = gen._cond
        assert torch.equal(gen.forward_from("blocks.1", acts, samples), first) and gen._cond is cached
        other = gen.forward_from("blocks.1", acts, [gen.sample(7)])  # later blocks read the seed's latent (FiLM)
        assert not torch.equal(other, first)
    with torch.no_grad():
        gen.net.film[2].bias += 0.5  # an in-place weight change bumps the version counter
    with torch.inference_mode():
        assert not torch.equal(gen.forward_from("blocks.1", acts, samples), first)


# -- architecture options of the shipped model: FiLM without lit flags, trunk depth, pixel-shuffle head -----------
LIT = tuple(i for i, name in enumerate(world.LATENT_NAMES) if name.endswith("_lit"))


def deep_tiny() -> RoomsGenerator:
    return tiny(widths=(16, 24, 8), extra_convs=(0, 2), upscale=2, film_exclude=LIT)


def test_film_exclude_hides_the_lit_flags_from_film_but_not_from_the_stem():
    net = deep_tiny()
    latent, tokens = inputs(2)
    flipped = latent.clone()
    flipped[:, list(LIT)] *= -1
    with torch.inference_mode():
        a, b = net.prepare(latent, tokens), net.prepare(flipped, tokens)
        assert all(torch.equal(sa, sb) and torch.equal(ta, tb) for (sa, ta), (sb, tb) in zip(a.film, b.film))
        assert not torch.equal(a.stem, b.stem)  # the lamps' state still reaches the image through the stem
        other = latent.clone()
        other[:, 0] += 0.5  # a non-excluded entry still drives FiLM
        assert not torch.equal(net.prepare(other, tokens).film[0][0], a.film[0][0])


def test_extra_convs_and_pixel_shuffle_head_keep_partial_re_renders_exact():
    net = deep_tiny()
    assert net.config.image_size == 4 * 2**2 * 2 and len(net.blocks[1].extra) == 2 and not net.blocks[0].extra
    assert net.head.out_channels == 3 * 4
    latent, tokens = inputs(2)
    with torch.inference_mode():
        full = net(latent, tokens)
        assert full.shape == (2, 3, 32, 32)
        cond = net.prepare(latent, tokens)
        for block in range(len(net.blocks)):
            assert torch.equal(net.forward_from(block, net.run_blocks(cond, stop=block), cond=cond), full)


def test_bake_unit_scale_is_exact_with_the_pixel_shuffle_head(tmp_path):
    from models import registry
    from models.rooms import FAMILY
    from studio.core.hooks import UnitEdit

    path = tmp_path / "deep.safetensors"
    save_weights(deep_tiny(), path, list(rtext.VOCAB))
    gen = FAMILY.open_path(registry.probe(path), torch.device("cpu"), "auto")
    sample = gen.sample(3)
    for layer in ("blocks.1", "blocks.2"):  # the last block feeds the shuffled RGB head
        with torch.inference_mode(), gen.editor() as editor:
            editor.set([UnitEdit(layer, 1, "scale", 0.25)])
            hooked = gen.render([sample])
        saved = {k: v.clone() for k, v in gen.module.state_dict().items()}
        assert gen.bake_unit_scale(layer, 1, 0.25)
        with torch.inference_mode():
            assert torch.allclose(gen.render([sample]), hooked, atol=1e-6)
        gen.module.load_state_dict(saved)


def test_training_sparsity_penalty_is_scale_free_and_leaves_the_image_alone():
    from studio.rooms.train import forward_with_sparsity, hoyer_ratio

    one_hot, flat = torch.zeros(1, 16, 2, 2), torch.ones(1, 16, 2, 2)
    one_hot[:, 3] = 5.0
    assert torch.allclose(hoyer_ratio(one_hot), torch.full((1, 2, 2), 0.25), atol=1e-5)
    assert torch.allclose(hoyer_ratio(flat), torch.ones(1, 2, 2), atol=1e-5)
    h = torch.randn(2, 16, 3, 3)
    assert torch.allclose(hoyer_ratio(7.0 * h), hoyer_ratio(h), atol=1e-5)  # shrinking h cannot dodge it

    net = deep_tiny()
    latent, tokens = inputs(2)
    with torch.no_grad():
        plain, none = forward_with_sparsity(net, latent, tokens, {})
        image, penalty = forward_with_sparsity(net, latent, tokens, {"1": 2.0})
        assert none == 0.0 and torch.allclose(image, plain)
        cond = net.prepare(latent, tokens)
        expected = 2.0 * hoyer_ratio(net.run_blocks(cond, stop=1)).mean()
        assert float(penalty) == pytest.approx(float(expected), rel=1e-5)


def test_relu_blocks_make_units_exactly_zero_where_off_and_restart_exactly():
    net = tiny(widths=(16, 24, 8), upscale=2, relu_blocks=(1,))
    latent, tokens = inputs(2)
    with torch.inference_mode():
        cond = net.prepare(latent, tokens)
        h = net.run_blocks(cond, stop=1)
        assert float(h.min()) == 0.0 and bool((h == 0).any())  # off means exactly zero
        assert float(net.run_blocks(cond, stop=0).min()) < 0  # other blocks keep SiLU's negative tail
        assert torch.equal(net.forward_from(1, h, cond=cond), net(latent, tokens))
