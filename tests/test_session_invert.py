"""An inverted image travels with its session: saved, reopened, it renders identically and nothing is inverted again
(for Rooms, whose latent and caption the sample holds, and for diffusion, whose inverted latent it holds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import sd_invert
from models.registry import open_model
from studio import invert as invert_module
from studio.core.hooks import UnitEdit
from studio.core.rooms import world
from studio.session import load_session, save_session
from studio.state import StudioState


@pytest.fixture(scope="module")
def rooms():
    return open_model("rooms", device="cpu")


def _reopen_without_inverting(state, generator, path, monkeypatch):
    save_session(state.to_session(generator), path)

    def refuse(*args, **kwargs):
        raise AssertionError("a reopened session must not invert again")

    monkeypatch.setattr(invert_module, "invert", refuse)
    monkeypatch.setattr(type(generator), "invert_image", refuse)
    monkeypatch.setattr(type(generator), "inversion_space", refuse)
    return StudioState.from_session(load_session(path))


def test_a_rooms_inversion_and_its_edits_reopen_and_render_bit_for_bit(rooms, tmp_path, monkeypatch):
    # what an inversion of a world render yields (its scene latent and caption), made directly: this test is about
    # the session, and a real inversion takes tens of seconds here (tests/test_gui_invert.py runs one)
    scene = world.sample_scene(np.random.default_rng(2_000_000_002))
    photo = torch.from_numpy(world.render(scene, 128)).permute(2, 0, 1).contiguous()
    found = rooms.sample(0, world.caption(scene), latent=[float(v) for v in world.encode_latent(scene)])
    with torch.inference_mode():
        value = invert_module.psnr(rooms.render([found])[0], photo)
    inversion = invert_module.Inversion(found, value, 120, [0.02, 0.01], "Inverted.", photo, "rooms", 3.5)
    state = StudioState(model="rooms", sample=inversion.sample, inversion=inversion,
                        edits=[UnitEdit("blocks.1", 3, "off")])
    with torch.inference_mode(), rooms.editor() as editor:
        editor.set(state.edits)
        before = rooms.render([state.sample])
    back = _reopen_without_inverting(state, rooms, tmp_path / "mine.nstudio", monkeypatch)
    assert back.sample == inversion.sample and back.edits == state.edits
    assert back.inversion.steps == inversion.steps and back.inversion.losses == inversion.losses
    assert back.inversion.caption == inversion.caption and back.inversion.note == inversion.note
    assert torch.equal(back.inversion.target, inversion.target)  # what "Continue optimising" needs
    with torch.inference_mode(), rooms.editor() as editor:
        editor.set(back.edits)
        assert torch.equal(rooms.render([back.sample]), before)


def test_a_diffusion_inversion_reopens_from_its_latent(tiny_sd_files, tmp_path, monkeypatch):
    monkeypatch.setattr(sd_invert, "GRADIENT_STEPS", 0)  # closeness is not this test's subject
    sd = open_model(str(tiny_sd_files.folder), device="cpu")
    sample = sd.sample(4, "a blue house", steps=3, size=32, scheduler="ddim", guidance=1.0)
    with torch.inference_mode():
        image = sd.render([sample])[0]
    inverted = sd.invert_image(image, sample.prompt, 4, denoise_steps=3)
    with torch.inference_mode():
        before = sd.render([inverted])
    inversion = invert_module.Inversion(inverted, invert_module.psnr(before[0], image), 4, [], "", image.cpu())
    state = StudioState(model=sd.source, sample=inverted, inversion=inversion)
    back = _reopen_without_inverting(state, sd, tmp_path / "sd.nstudio", monkeypatch)
    assert back.sample == inverted
    with torch.inference_mode():
        assert torch.equal(sd.render([back.sample]), before)


def test_a_session_without_an_inversion_has_none(toy, tmp_path):
    state = StudioState(model="toy", sample=toy.sample(1))
    save_session(state.to_session(toy), tmp_path / "plain.nstudio")
    session = load_session(tmp_path / "plain.nstudio")
    assert session.inversion is None and StudioState.from_session(session).inversion is None
    assert "inversion" not in session.to_document()[0]
