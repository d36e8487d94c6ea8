"""StyleGAN2 / -ADA / 3 checkpoints: safe loading, layers, rendering, truncation, partial re-render, edits, export."""
from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

from models.registry import open_model
from models.stylegan import StyleGANModel, bake_unit_scale, producing_conv
from models.stylegan_formats import rosinality_args, to_rosinality_checkpoint
from studio.core.errors import ModelOpenError, StudioError, UnsupportedOperation
from studio.core.hooks import UnitEdit, count_hooks
from tests.stylegan_files import CONFIGS, fake_nvidia_modules, tiny_net, write_nvidia_pickle

KINDS = list(CONFIGS)
LAYOUT = {"sg2": "stylegan3", "ada": "ada", "sg3t": "stylegan3", "sg3r": "stylegan3"}

# Rendered by NVIDIA's own reference code (NVlabs/stylegan3 networks, CPU reference ops) from the same seeded
# weights (tiny_net(kind).state_dict() loads strictly into their Generator): seed 3, psi 0.7, const noise,
# class 1 for the conditional one. (mean, pixels at _POINTS) of the image in [0, 1].
NVIDIA_REFERENCE = {
    "sg2": (0.418956, [0.380237, 0.36546, 0.851739, 0.402094, 0.770381, 0.047027]),
    "ada": (0.558419, [0.494231, 0.850337, 0.512761, 0.404714, 0.808889, 0.805483]),
    "sg3t": (0.360652, [0.409929, 0.391571, 0.085248, 0.479904, 0.456886, 0.006649]),
    "sg3r": (0.526638, [0.330475, 0.65076, 0.053246, 0.476451, 0.574412, 0.350957]),
}


def _points(h: int) -> list[tuple[int, int, int]]:
    return [(0, 0, 0), (1, h // 2, h // 3), (2, h - 1, h - 1), (0, h // 4, h - 2), (1, 3, 5), (2, h // 2 + 1, 1)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stylegan")
    marker = folder / "module_src_ran"
    paths = {kind: write_nvidia_pickle(folder / f"{kind}.pkl", tiny_net(kind), marker=marker, layout=LAYOUT[kind])
             for kind in KINDS}
    return paths, marker


@pytest.fixture(scope="module")
def gens(files):
    paths, marker = files
    opened = {kind: open_model(str(path), device="cpu") for kind, path in paths.items()}
    assert not marker.exists(), "opening a pickle executed its module_src"
    return opened


def _opts(gen: StyleGANModel) -> dict:
    return {"class": 1} if gen.net.config.c_dim else {}


@pytest.mark.parametrize("kind", KINDS)
def test_pickles_open_through_the_registry_with_their_layers(gens, kind):
    gen = gens[kind]
    cfg = CONFIGS[kind]
    assert isinstance(gen, StyleGANModel) and gen.family == "stylegan" and gen.arch == cfg.arch
    assert gen.dtype == torch.float32 and gen.resolution == (cfg.img_resolution,) * 2
    layers = gen.layers()
    assert layers[0].name == "mapping" and layers[0].units == cfg.w_dim and layers[0].size is None
    synthesis = [info for info in layers if info.name.startswith("synthesis.")]
    assert all(info.partial and info.units > 0 for info in layers)
    modules = dict(gen.module.named_modules())
    for info in synthesis:  # units and sizes are those of the traced activations
        assert info.name in modules
    acts = gen.trace([gen.sample(1, **_opts(gen))], [i.name for i in layers], stop=False)
    for info in synthesis:
        assert acts[info.name].shape[1:] == (info.units, *info.size)
    if cfg.arch == "stylegan2":
        res = cfg.img_resolution
        assert synthesis[0].name == "synthesis.b4.conv1" and synthesis[-1].name == f"synthesis.b{res}.conv1"
        assert synthesis[-1].size == (res, res) and len(synthesis) == 2 * (res.bit_length() - 3) + 1
    else:
        assert synthesis[0].name == "synthesis.input" and len(synthesis) == 1 + cfg.synthesis["num_layers"]
        assert synthesis[-1].size == (cfg.img_resolution,) * 2  # critically sampled layers: no margin
        assert synthesis[1].size[0] > cfg.img_resolution  # early layers carry a margin


@pytest.mark.parametrize("kind", KINDS)
def test_renders_match_nvidias_reference_implementation(gens, kind):
    gen = gens[kind]
    with torch.inference_mode():
        image = gen.render([gen.sample(3, psi=0.7, noise="const", **_opts(gen))])[0]
    mean, pixels = NVIDIA_REFERENCE[kind]
    assert image.mean().item() == pytest.approx(mean, abs=1e-4)
    assert [image[p].item() for p in _points(gen.resolution[0])] == pytest.approx(pixels, abs=2e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_render_is_deterministic_per_seed_and_truncation_zero_is_the_mean(gens, kind):
    gen = gens[kind]
    with torch.inference_mode():
        a = gen.render([gen.sample(s, **_opts(gen)) for s in (0, 1, 0)])
        b = gen.render([gen.sample(0, **_opts(gen))])
        mean = gen.render([gen.sample(s, psi=0.0, **_opts(gen)) for s in (0, 5, 9)])
    assert a.shape == (3, 3, *gen.resolution) and a.dtype == torch.float32
    assert 0.0 <= a.min().item() and a.max().item() <= 1.0
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)  # batch sizes differ: float rounding only
    torch.testing.assert_close(a[0], a[2], atol=1e-6, rtol=0)
    assert (a[0] - a[1]).abs().max() > 1e-2  # different seeds, different images
    torch.testing.assert_close(mean[0], mean[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(mean[0], mean[2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_partial_rerender_equals_full_render_from_every_layer(gens, kind):
    gen = gens[kind]
    samples = [gen.sample(2, **_opts(gen)), gen.sample(7, noise="random", **_opts(gen))]
    names = [info.name for info in gen.layers()]
    with torch.inference_mode():
        full = gen.render(samples)
        acts = gen.trace(samples, names, stop=False)
        for name in names:
            again = gen.forward_from(name, acts[name], samples)
            torch.testing.assert_close(again, full, atol=1e-5, rtol=0, msg=f"forward_from({name})")
        gen.render([gen.sample(11, **_opts(gen))])  # forget the carries: they are recomputed
        for name in (names[1], names[len(names) // 2], names[-1]):
            rows = [samples[1], samples[0], samples[1]]
            again = gen.forward_from(name, acts[name][[1, 0, 1]], rows)
            torch.testing.assert_close(again, full[[1, 0, 1]], atol=1e-5, rtol=0, msg=f"uncached {name}")


@pytest.mark.parametrize("kind", KINDS)
def test_unit_edits_change_the_image_and_ranking_can_batch_them(gens, kind):
    gen = gens[kind]
    sample = gen.sample(4, **_opts(gen))
    layer = gen.layers()[len(gen.layers()) // 2]
    with torch.inference_mode():
        base = gen.render([sample])
        with gen.editor() as editor:
            editor.set([UnitEdit(layer.name, u, "off") for u in range(layer.units // 2)])
            edited = gen.render([sample])
        assert count_hooks(gen.module) == 0
        assert (edited - base).abs().max() > 1e-3
        # ranking's pattern: trace once, switch one unit off per batch row, re-render only the later layers
        act = gen.trace([sample], [layer.name])[layer.name]
        rows = act.repeat(layer.units, *[1] * (act.dim() - 1))
        rows[torch.arange(layer.units), torch.arange(layer.units)] = 0
        per_unit = gen.forward_from(layer.name, rows, [sample] * layer.units)
    effect = (per_unit - base).abs().flatten(1).sum(1)
    assert per_unit.shape[0] == layer.units and bool((effect > 0).all())


@pytest.mark.parametrize("kind", ["sg2", "ada", "sg3t"])
def test_rank_units_scores_every_unit_as_full_renders_measure_it(gens, kind):
    from studio.ablation import measure_effect
    from studio.ranking import rank_units

    gen = gens[kind]
    samples = [gen.sample(s, **_opts(gen)) for s in (1, 2)]
    res = gen.resolution[0]
    mask = torch.zeros(res, res)
    mask[: res // 2, : res // 2] = 1
    layer = gen.layers()[3]
    ranking = rank_units(gen, samples, mask, layer.name)  # partial re-renders from the layer, batched
    assert sorted(u.unit for u in ranking.units) == list(range(layer.units)) and all(u.exact for u in ranking.units)
    best = ranking.units[0]
    with torch.inference_mode():
        before = gen.render(samples)
        with gen.editor() as editor:  # the same ablation by a hook and full renders
            editor.set([UnitEdit(layer.name, best.unit, "off")])
            after = gen.render(samples)
    inside, outside = measure_effect(before, after, mask)
    assert best.inside > 0 and inside.mean().item() == pytest.approx(best.inside, abs=1e-5)
    assert outside.mean().item() == pytest.approx(best.outside, abs=1e-5)


def test_sample_options_noise_w_plus_and_classes(gens):
    gen = gens["sg2"]
    with torch.inference_mode():
        const, random_a, random_b, none = gen.render([gen.sample(3), gen.sample(3, noise="random"),
                                                     gen.sample(3, noise="random"), gen.sample(3, noise="none")])
        w_plus = gen.sample(3, w_plus=True)
        assert len(w_plus.options["ws"]) == gen.net.num_ws
        torch.testing.assert_close(gen.render([w_plus])[0], const, atol=1e-5, rtol=0)
        w = gen.ws([gen.sample(3)])[0, 0]
        torch.testing.assert_close(gen.render([gen.sample(99, w=w.tolist())])[0], const, atol=1e-5, rtol=0)
        ada = gens["ada"]
        classes = ada.render([ada.sample(3, **{"class": c}) for c in range(3)])
    torch.testing.assert_close(random_a, random_b, atol=1e-5, rtol=0)
    assert (random_a - const).abs().max() > 1e-3 and (none - const).abs().max() > 1e-3
    assert (classes[0] - classes[1]).abs().max() > 1e-3
    for bad, match in (({"noise": "loud"}, "Noise mode"), ({"class": 5}, "Class 5"), ({"w": [0.0] * 3}, "explicit w")):
        with pytest.raises(StudioError, match=match):
            gen.sample(0, **bad) if "class" not in bad else ada.sample(0, **bad)


def test_half_precision_stays_on_gpus(files, gens):
    paths, _ = files
    assert open_model(str(paths["sg2"]), device="cpu", precision="fp16").dtype == torch.float32
    gen = gens["sg2"]
    assert [n for n, _, _ in gen.net.synthesis_layers() if gen.net.synthesis.layer(n[10:]).use_fp16] == [
        "synthesis.b16.conv0", "synthesis.b16.conv1", "synthesis.b32.conv0", "synthesis.b32.conv1"]


@pytest.mark.parametrize("kind", ["sg2", "sg3t"])
def test_the_half_precision_path_renders_close_to_fp32(files, kind):
    gen = open_model(str(files[0][kind]), device="cpu")  # GPUs take this path; forced here on every layer
    samples = [gen.sample(s) for s in (1, 2)]
    with torch.inference_mode():
        full = gen.render(samples)
        gen.net.synthesis.half = True
        for module in gen.module.modules():
            if hasattr(module, "use_fp16"):
                module.use_fp16 = True
        half = gen.render(samples)
        acts = gen.trace(samples, [gen.layers()[3].name])
    assert acts[gen.layers()[3].name].dtype == torch.float16 and half.dtype == torch.float32
    assert (half - full).abs().max().item() < 0.03


def test_bake_unit_scale_is_exact_where_it_says_so(files):
    paths, _ = files
    for kind in ("sg2", "sg3t"):
        gen = open_model(str(paths[kind]), device="cpu")
        sample = gen.sample(5)
        names = [info.name for info in gen.layers()]
        with torch.inference_mode():
            for layer, unit, gain in (("mapping", 3, 0.0), (names[-1], 2, 1.7)):
                with gen.editor() as editor:
                    editor.set([UnitEdit(layer, unit, "scale", gain)])
                    hooked = gen.render([sample])
                assert gen.bake_unit_scale(layer, unit, gain)
                torch.testing.assert_close(gen.render([sample]), hooked, atol=1e-5, rtol=0)
            before = {k: v.clone() for k, v in gen.module.state_dict().items()}
            assert not bake_unit_scale(gen, names[2], 1, 0.0)  # read by a demodulated conv: not exact
            assert all(torch.equal(before[k], v) for k, v in gen.module.state_dict().items())
        assert producing_conv(gen, names[2]).weight.shape[0] == gen.layer(names[2]).units


def test_rosinality_checkpoints_open_and_export_round_trips(files, gens, tmp_path):
    gen = gens["sg2"]
    checkpoint = to_rosinality_checkpoint(gen.net)
    assert checkpoint["g_ema"]["convs.0.conv.weight"].dim() == 5 and "noises.noise_0" in checkpoint["g_ema"]
    path = tmp_path / "550000.pt"
    torch.save({**checkpoint, "args": argparse.Namespace(size=32, n_mlp=2, latent=16)}, path)  # as train.py saves
    reopened = open_model(str(path), device="cpu")
    assert reopened.info()["format"] == "rosinality" and reopened.resolution == gen.resolution
    samples = [gen.sample(s) for s in (1, 2)]
    with torch.inference_mode():
        torch.testing.assert_close(reopened.render(samples), gen.render(samples), atol=1e-5, rtol=0)
    assert [i.units for i in reopened.layers()] == [i.units for i in gen.layers()]
    legacy = tmp_path / "legacy.pt"  # torch < 1.6 wrote plain pickles: older rosinality checkpoints are such
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    with torch.inference_mode():
        torch.testing.assert_close(open_model(str(legacy), device="cpu").render(samples[:1]), reopened.render(
            samples[:1]), atol=1e-6, rtol=0)
    assert rosinality_args(gen.net) is None  # tiny widths: no channel multiplier of rosinality's fits
    with pytest.raises(UnsupportedOperation, match="StyleGAN3"):
        to_rosinality_checkpoint(gens["sg3t"].net)
    with pytest.raises(UnsupportedOperation, match="class-conditional"):
        to_rosinality_checkpoint(gens["ada"].net)


class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.eval", "inside a snapshot"])
def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, how):
    marker = tmp_path / "owned"
    path = tmp_path / "network-snapshot.pkl"
    if how == "os.system":
        path.write_bytes(pickle.dumps(_Evil(os.system, f"touch {marker}")))
    elif how == "builtins.eval":
        path.write_bytes(pickle.dumps(_Evil(eval, f"open({str(marker)!r}, 'w').write('x')")))
    else:
        write_nvidia_pickle(path, tiny_net("sg2"), marker=marker, extra={"augment_pipe": _Evil(os.system, "true")})
    with pytest.raises(ModelOpenError, match=r"tries to import (posix|nt|os|builtins)\.(system|eval): refused, "
                                             r"this file may be malicious"):
        open_model(str(path), device="cpu")
    assert not marker.exists()


def test_pickles_of_other_things_and_damaged_pickles_get_clear_errors(files, tmp_path):
    paths, _ = files
    cases = {
        "list.pkl": (pickle.dumps([1, 2, 3]), "holds a pickled list, not a StyleGAN network pickle"),
        "dict.pkl": (pickle.dumps({"weights": [1.0]}), "without a StyleGAN generator: it has weights"),
        "half.pkl": (paths["sg3t"].read_bytes()[:5000], "not a readable pickle .*truncated or corrupt"),
        "text.pkl": (b"hello, I am a text file", "not a readable pickle"),
    }
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelOpenError, match=match):
            open_model(str(tmp_path / name), device="cpu")


def test_tensorflow_pickles_and_pt_files_with_code_are_explained(tmp_path):
    with fake_nvidia_modules():
        network = type("Network", (), {"__module__": "dnnlib.tflib.network"})
        import sys

        sys.modules["dnnlib.tflib"] = sys.modules["dnnlib.tflib.network"] = type(sys)("dnnlib.tflib.network")
        sys.modules["dnnlib.tflib.network"].Network = network
        try:
            data = pickle.dumps((network(), network(), network()))
        finally:
            sys.modules.pop("dnnlib.tflib", None), sys.modules.pop("dnnlib.tflib.network", None)
    (tmp_path / "karras2019.pkl").write_bytes(data)
    with pytest.raises(ModelOpenError, match="TensorFlow StyleGAN pickle; convert it"):
        open_model(str(tmp_path / "karras2019.pkl"), device="cpu")
    marker = tmp_path / "owned"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "hook": _Evil(os.system, f"touch {marker}")},
               tmp_path / "evil.pt")
    with pytest.raises(ModelOpenError, match="holds more than tensors"):
        open_model(str(tmp_path / "evil.pt"), device="cpu")
    assert not marker.exists()
    torch.save({"g_ema": {"conv.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ModelOpenError, match="not a rosinality StyleGAN2 state dict"):
        open_model(str(tmp_path / "other.pt"), device="cpu")
