"""The model contract, checked the same way on every adapter with its tiny model.

Each family's own tests check what only that family does; these check what every generator promises: images in
(B, 3, H, W) and [0, 1], partial re-renders equal full renders, baked unit scales render as the hook edit, and a
saved session renders the same after loading.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from models.base import Generator
from models.registry import open_model
from studio.core.hooks import UnitEdit, count_hooks
from studio.session import Session, load_session, save_session
from tests.faces_files import tiny_dcgan, tiny_mobilestylegan, write_mobilestylegan_ir, write_weights_tar
from tests.stylegan_files import tiny_net, write_nvidia_pickle
from tests.toy import ToyGenerator
from tests.toy_text import ToyTextGenerator

ATOL = 1e-5
GAIN = 0.5
NO_BAKE_RULE = {"toy-text"}  # families whose adapter keeps the base contract's "never exact"


def _rooms(root: Path, request: pytest.FixtureRequest) -> Generator:
    return open_model("rooms", device="cpu")


def _stylegan(kind: str) -> Callable[[Path, pytest.FixtureRequest], Generator]:
    def build(root: Path, request: pytest.FixtureRequest) -> Generator:
        path = write_nvidia_pickle(root / f"{kind}.pkl", tiny_net(kind), marker=root / "module_src_ran")
        return open_model(str(path), device="cpu")
    return build


def _dcgan(root: Path, request: pytest.FixtureRequest) -> Generator:
    return open_model(str(write_weights_tar(root / "weights.tar", tiny_dcgan())), device="cpu")


def _mobilestylegan(root: Path, request: pytest.FixtureRequest) -> Generator:
    folder = write_mobilestylegan_ir(root / "msg", tiny_mobilestylegan())
    return open_model(str(folder / "SynthesisNetwork.xml"), device="cpu")


def _sd(root: Path, request: pytest.FixtureRequest) -> Generator:
    # a model of its own from the shared folder: the bake check changes its weights (and puts them back)
    return open_model(str(request.getfixturevalue("tiny_sd_files").folder), device="cpu")


# name -> (build the model in a folder, the sample options that keep its render small)
ADAPTERS: dict[str, tuple[Callable[[Path, pytest.FixtureRequest], Generator], dict]] = {
    "rooms": (_rooms, {}),
    "toy": (lambda root, request: ToyGenerator(), {}),
    "toy-text": (lambda root, request: ToyTextGenerator(), {}),
    "stylegan2": (_stylegan("sg2"), {}),
    "stylegan3": (_stylegan("sg3t"), {}),
    "sd": (_sd, {"steps": 2, "size": 32, "scheduler": "ddim"}),
    "dcgan": (_dcgan, {}),
    "mobilestylegan": (_mobilestylegan, {}),
}


@pytest.fixture(scope="module", params=list(ADAPTERS))
def adapter(request, tmp_path_factory) -> tuple[Generator, dict]:
    build, options = ADAPTERS[request.param]
    return build(tmp_path_factory.mktemp(request.param), request), options


def _samples(gen: Generator, options: dict) -> list:
    return [gen.sample(3, **options), gen.sample(8, **options)]


def test_render_is_a_batch_of_rgb_images_in_0_1(adapter):
    gen, options = adapter
    with torch.inference_mode():
        images = gen.render(_samples(gen, options))
    height, width = gen.resolution if "size" not in options else (options["size"], options["size"])
    assert images.shape == (2, 3, height, width)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert not torch.equal(images[0], images[1])  # the seed reaches the image


def test_forward_from_a_traced_activation_equals_the_full_render(adapter):
    gen, options = adapter
    partial = [info.name for info in gen.layers() if info.partial]
    samples = _samples(gen, options)
    with torch.inference_mode():
        full = gen.render(samples)
        acts = gen.trace(samples, partial, stop=False) if partial else {}
        for name in partial:
            torch.testing.assert_close(gen.forward_from(name, acts[name], samples), full, atol=ATOL, rtol=0,
                                       msg=f"forward_from({name})")


def test_a_baked_unit_scale_renders_as_the_hook_edit(adapter):
    gen, options = adapter
    sample = gen.sample(4, **options)
    saved = {k: v.clone() for k, v in gen.module.state_dict().items()}
    baked = []
    try:
        for info in gen.layers():
            with torch.inference_mode(), gen.editor() as editor:
                editor.set([UnitEdit(info.name, 1, "scale", GAIN)])
                hooked = gen.render([sample])
            if not gen.bake_unit_scale(info.name, 1, GAIN):
                assert all(torch.equal(saved[k], v) for k, v in gen.module.state_dict().items()), info.name
                continue
            baked.append(info.name)
            with torch.inference_mode():
                torch.testing.assert_close(gen.render([sample]), hooked, atol=ATOL, rtol=0, msg=info.name)
            gen.module.load_state_dict(saved)  # layers stay independent
    finally:
        gen.module.load_state_dict(saved)
    assert count_hooks(gen.module) == 0
    assert bool(baked) == (gen.family not in NO_BAKE_RULE)  # a bake rule that never bakes is not tested


def test_a_session_round_trip_renders_the_same(adapter, tmp_path):
    gen, options = adapter
    layer = gen.layers()[-1].name
    edits = [UnitEdit(layer, 1, "scale", GAIN), UnitEdit(layer, 0, "off")]
    samples = _samples(gen, options)
    with torch.inference_mode():
        plain = gen.render(samples)
        with gen.editor() as editor:
            editor.set(edits)
            edited = gen.render(samples)
    session = Session.capture(gen, samples=samples, unit_edits=edits)
    loaded = load_session(save_session(session, tmp_path / "round.nstudio"))
    assert loaded.unit_edits == edits and [s.to_json() for s in loaded.samples] == [s.to_json() for s in samples]
    torch.testing.assert_close(loaded.render(gen), edited, atol=ATOL, rtol=0)
    assert not torch.equal(edited, plain)  # the edits reached the image, so the check above means something
    assert count_hooks(gen.module) == 0
    with torch.inference_mode():
        torch.testing.assert_close(gen.render(samples), plain, atol=0, rtol=0)  # and left with the session


# families whose adapter declares an inversion space (the others: diffusion inverts in its own way, the toys have none)
INVERTS = {"rooms", "stylegan", "dcgan", "mobilestylegan"}


def test_an_inversion_space_renders_what_its_samples_render_and_has_gradients(adapter):
    gen, options = adapter
    space = gen.inversion_space()
    assert (space is not None) == (gen.family in INVERTS), gen.family
    if space is None:
        return
    starts = list(space.starts[:2])
    tensors = {k: v.detach().clone().requires_grad_(True) for k, v in space.init(starts).items()}
    # move away from the start so the check is not only about the start's own options
    with torch.no_grad():
        for v in tensors.values():
            v.add_(torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    images = space.render(tensors, starts)
    images.mean().backward()
    assert all(v.grad is not None and float(v.grad.abs().sum()) > 0 for v in tensors.values())
    with torch.inference_mode():
        rendered = gen.render(space.to_samples(tensors, starts))
    torch.testing.assert_close(rendered, images.detach(), atol=ATOL, rtol=0)
    if space.widen is not None:  # the wider space starts where the narrow one was, and widening twice is once
        wide = space.widen({k: v.detach() for k, v in tensors.items()})
        with torch.no_grad():
            torch.testing.assert_close(space.render(wide, starts), images.detach(), atol=ATOL, rtol=0)
        assert space.widen(wide).keys() == wide.keys()
        with torch.inference_mode():
            torch.testing.assert_close(gen.render(space.to_samples(wide, starts)), images.detach(), atol=ATOL,
                                       rtol=0)


# families whose render and forward_from apply a sample's payload residuals (an inversion's fine-tune)
CORRECTS = {"rooms", "stylegan", "dcgan", "mobilestylegan"}


def test_a_sample_payload_residual_is_added_ahead_of_edits_in_render_trace_and_forward_from(adapter):
    from studio.core import payload
    from models.base import RESIDUAL, Sample

    gen, options = adapter
    assert gen.applies_corrections == (gen.family in CORRECTS), gen.family
    if not gen.applies_corrections:
        return
    spatial = [info.name for info in gen.layers() if info.partial and info.size is not None]
    layer, later = spatial[len(spatial) // 2 - 1], spatial[len(spatial) // 2]
    plain = _samples(gen, options)
    with torch.inference_mode():
        acts = gen.trace(plain[:1], [layer])[layer]
    residual = torch.randn(acts.shape[1:], generator=torch.Generator().manual_seed(2)) * float(acts.std())
    key = payload.put({RESIDUAL + layer: residual})
    corrected = [Sample(plain[0].seed, plain[0].prompt, {**plain[0].options, payload.OPTION: key}), plain[1]]
    with torch.inference_mode():
        before_plain = gen.render(plain)
        images = gen.render(corrected)
        assert not torch.equal(images[0], before_plain[0])
        torch.testing.assert_close(images[1], before_plain[1], atol=ATOL, rtol=0)  # only its own row
        traced = gen.trace(corrected, [layer, later], stop=False, before_edits=True)
        torch.testing.assert_close(traced[layer][0], acts[0] + residual, atol=ATOL, rtol=1e-4)  # batch of 2 vs 1
        for name in (layer, later):
            torch.testing.assert_close(gen.forward_from(name, traced[name], corrected), images, atol=ATOL, rtol=0)
        with gen.editor() as editor:  # an edit of that layer acts on the corrected activation
            editor.set([UnitEdit(layer, 0, "off")])
            edited = gen.render(corrected)
        off = traced[layer].clone()
        off[:, 0] = 0
        torch.testing.assert_close(edited, gen.forward_from(layer, off, corrected), atol=ATOL, rtol=0)
