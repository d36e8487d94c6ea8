"""The inversion's StyleGAN noise maps (NVIDIA's noise regularisation) and the fine-tune of a layer's activation: both
ride with the sample as a tensor payload, render through the normal paths, and survive the JSON/tensor round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from models.base import RESIDUAL, Sample
from models.registry import open_model
from models.stylegan import NOISE, noise_penalty, normalise_noise_
from studio.bench.rooms import truth_scenes
from studio.cli import main
from studio.core import payload
from studio.core.errors import StudioError, UnsupportedOperation
from studio.core.hooks import UnitEdit
from studio.invert import Inversion, InvertError, finetune, invert, psnr

LAYER = "synthesis.b16.conv0"


@pytest.fixture(scope="module")
def sg2_inverted(sg2_inversion):
    return sg2_inversion[0]


@pytest.fixture(scope="module")
def sg2_tuned(sg2, sg2_inverted):
    return finetune(sg2, sg2_inverted, LAYER, 40)


def _rendered(gen, sample):
    with torch.inference_mode():
        return gen.render([sample])[0]


# -- noise --------------------------------------------------------------------------------------------------------
def test_the_noise_penalty_tells_white_noise_from_a_map_that_learnt_a_picture():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 32, 32, generator=g)
    ramp = torch.linspace(-1, 1, 32)
    smooth = (ramp[None, :] + ramp[:, None])[None] + 0.1 * torch.randn(1, 32, 32, generator=g)
    normalise_noise_(smooth)
    assert float(smooth.mean()) == pytest.approx(0, abs=1e-6) and float(smooth.pow(2).mean()) == pytest.approx(1)
    assert float(noise_penalty(white)[0]) < 0.01 < 1.0 < float(noise_penalty(smooth)[0])


def test_stylegan_noise_maps_are_optimised_and_ride_with_the_sample(sg2, sg2_target, sg2_inverted):
    inv = sg2_inverted
    assert inv.psnr > 30 and "noise maps" in inv.note
    maps = payload.named(inv.sample.options, NOISE)
    assert sorted(maps) == sorted(name for name, _ in sg2.net.noise_layers())
    moved = 0.0
    for name, value in maps.items():
        assert float(value.mean()) == pytest.approx(0, abs=1e-4)
        assert float(value.pow(2).mean()) == pytest.approx(1, abs=1e-3)
        assert float(noise_penalty(value[None])[0]) < 1e-3  # held to white noise
        moved = max(moved, float((value - sg2.net.synthesis.layer(name).noise_const).abs().max()))
    assert moved > 1e-3  # the maps were optimised, not left at the stored constants
    # the normal render uses the maps: the same latent with the stored constants renders another image
    plain = Sample(inv.sample.seed, None, {k: v for k, v in inv.sample.options.items() if k != payload.OPTION})
    assert not torch.equal(_rendered(sg2, plain), _rendered(sg2, inv.sample))
    # trace and forward_from take them too
    with torch.inference_mode():
        acts = sg2.trace([inv.sample], ["synthesis.b8.conv1"])
        again = sg2.forward_from("synthesis.b8.conv1", acts["synthesis.b8.conv1"], [inv.sample])[0]
    torch.testing.assert_close(again, _rendered(sg2, inv.sample), atol=1e-5, rtol=0)


def test_a_sample_whose_tensors_are_not_loaded_says_so(sg2):
    sample = Sample(0, None, {"psi": 1.0, payload.OPTION: "sha256:" + "0" * 40})
    with pytest.raises(StudioError, match="not loaded"):
        _rendered(sg2, sample)


# -- fine-tune ----------------------------------------------------------------------------------------------------
def test_the_fine_tune_gets_closer_and_edits_still_act_on_it(sg2, sg2_target, sg2_inverted, sg2_tuned):
    record = sg2_tuned.finetune
    assert record["layer"] == LAYER and record["steps"] == 40
    assert record["psnr_before"] == pytest.approx(sg2_inverted.psnr, abs=1e-3)
    assert record["psnr_after"] > record["psnr_before"] + 0.5 and sg2_tuned.psnr == pytest.approx(record["psnr_after"])
    image = _rendered(sg2, sg2_tuned.sample)
    assert psnr(image, sg2_target) == pytest.approx(sg2_tuned.psnr, abs=1e-3)
    residual = payload.named(sg2_tuned.sample.options, RESIDUAL)[LAYER]
    assert float(residual.abs().max()) > 0
    # the noise maps stay with it
    assert payload.named(sg2_tuned.sample.options, NOISE).keys() == payload.named(sg2_inverted.sample.options,
                                                                                 NOISE).keys()
    with torch.inference_mode():  # the traced activation is the corrected one, before edits too
        base = sg2.trace([sg2_inverted.sample], [LAYER])[LAYER]
        tuned = sg2.trace([sg2_tuned.sample], [LAYER], before_edits=True)[LAYER]
        torch.testing.assert_close(tuned, base + residual[None], atol=1e-5, rtol=0)
        again = sg2.forward_from("synthesis.b8.conv1", sg2.trace([sg2_tuned.sample], ["synthesis.b8.conv1"])[
            "synthesis.b8.conv1"], [sg2_tuned.sample])[0]
    torch.testing.assert_close(again, image, atol=1e-5, rtol=0)
    # a unit switched off on the fine-tuned layer acts after the correction: the image changes, and by what the
    # edit of the corrected activation gives
    unit = int(tuned[0].abs().mean(dim=(1, 2)).argmax())
    with sg2.editor() as editor, torch.inference_mode():
        editor.set([UnitEdit(LAYER, unit, "off")])
        edited = sg2.render([sg2_tuned.sample])[0]
    assert float((edited - image).abs().max()) > 0.01
    off = tuned.clone()
    off[:, unit] = 0
    with torch.inference_mode():
        expected = sg2.forward_from(LAYER, off, [sg2_tuned.sample])[0]
    torch.testing.assert_close(edited, expected, atol=1e-5, rtol=0)


def test_the_tensor_round_trip_renders_identically(sg2, sg2_tuned):
    data = json.loads(json.dumps(sg2_tuned.to_json()))
    tensors = {k: v.clone() for k, v in sg2_tuned.to_tensors().items()}
    assert any(k.startswith("sample/residual/") for k in tensors)
    assert any(k.startswith("sample/noise/") for k in tensors)
    before = _rendered(sg2, sg2_tuned.sample)
    payload._STORE.pop(sg2_tuned.sample.options[payload.OPTION])  # as in a fresh process
    with pytest.raises(StudioError, match="not loaded"):
        _rendered(sg2, sg2_tuned.sample)
    with pytest.raises(InvertError, match="not saved"):
        Inversion.from_json(data, {"target": tensors["target"]})
    tampered = dict(tensors)
    name = next(k for k in tensors if k.startswith("sample/residual/"))
    tampered[name] = tampered[name] + 1
    with pytest.raises(InvertError, match="not the ones"):
        Inversion.from_json(data, tampered)
    back = Inversion.from_json(data, tensors)
    assert back.finetune == sg2_tuned.finetune
    assert torch.equal(_rendered(sg2, back.sample), before)


def test_continuing_a_fine_tuned_inversion_drops_its_stale_correction(sg2, sg2_tuned):
    more = invert(sg2, None, steps=5, start=sg2_tuned)
    assert payload.named(more.sample.options, RESIDUAL) == {} and more.finetune is None
    assert payload.named(more.sample.options, NOISE)


def test_rooms_fine_tune_reproduces_more_exactly_and_round_trips():
    gen = open_model("rooms", device="cpu")
    scene = truth_scenes(gen, 1)[0]  # the world's true render of a held-out room: the model cannot make it exactly
    target = torch.from_numpy(np.ascontiguousarray(scene.lit.transpose(2, 0, 1)))
    # the latent search is tested elsewhere: start the fine-tune from the room's own seed and caption (about 30 dB)
    start = Inversion(scene.sample, psnr(_rendered(gen, scene.sample), target), 0, [], "", target, gen.name)
    inv = finetune(gen, start, "blocks.1", 25)
    record = inv.finetune
    assert record["psnr_before"] == pytest.approx(start.psnr, abs=1e-3)
    assert record["psnr_after"] > record["psnr_before"] + 2, record  # measured: 30.3 -> 35.4 dB
    image = _rendered(gen, inv.sample)
    with gen.editor() as editor, torch.inference_mode():
        editor.set([UnitEdit("blocks.1", 0, "off"), UnitEdit("blocks.1", 1, "off"), UnitEdit("blocks.1", 2, "off")])
        edited = gen.render([inv.sample])[0]
    assert float((edited - image).abs().max()) > 0.01
    data, tensors = json.loads(json.dumps(inv.to_json())), inv.to_tensors()
    payload._STORE.pop(inv.sample.options[payload.OPTION])
    back = Inversion.from_json(data, tensors)
    assert torch.equal(_rendered(gen, back.sample), image)


def test_a_fine_tune_is_refused_clearly(sg2, sg2_inverted):
    with pytest.raises(StudioError, match="has no layer"):
        finetune(sg2, sg2_inverted, "synthesis.b99.conv0", 5)
    with pytest.raises(InvertError, match="at least one step"):
        finetune(sg2, sg2_inverted, LAYER, 0)
    old = type(sg2).applies_corrections
    try:
        type(sg2).applies_corrections = False
        with pytest.raises(UnsupportedOperation, match="cannot fine-tune"):
            finetune(sg2, sg2_inverted, LAYER, 5)
    finally:
        type(sg2).applies_corrections = old


def test_the_cli_fine_tunes_the_inverted_picture(sg2, sg2_target, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray((sg2_target.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(photo)
    out = tmp_path / "out.png"
    assert main(["generate", "--model", sg2.source, "--image", str(photo), "--invert-steps", "40",
                 "--invert-finetune", LAYER, "--invert-finetune-steps", "15", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"Fine-tuning {LAYER} for 15 steps" in err
    made = np.asarray(Image.open(out), np.float32) / 255
    assert math.isfinite(psnr(torch.from_numpy(made), sg2_target.permute(1, 2, 0)))


def test_a_session_keeps_the_noise_and_the_correction(sg2, sg2_tuned, tmp_path):
    from studio.session import load_session, save_session
    from studio.state import StudioState

    edits = [UnitEdit(LAYER, 1, "off")]
    state = StudioState(model=sg2.source, sample=sg2_tuned.sample, inversion=sg2_tuned, edits=edits)
    with torch.inference_mode(), sg2.editor() as editor:
        editor.set(edits)
        before = sg2.render([sg2_tuned.sample])
    save_session(state.to_session(sg2), tmp_path / "mine.nstudio")
    # a sample with a payload but no inversion (a second image in the session) keeps its tensors too
    other = Sample(9, None, {**sg2_tuned.sample.options,
                             payload.OPTION: payload.put({**payload.of(sg2_tuned.sample.options),
                                                          "noise/b4.conv1": torch.zeros(4, 4)})})
    session = state.to_session(sg2)
    session.samples.append(other)
    save_session(session, tmp_path / "two.nstudio")
    other_image = _rendered(sg2, other)
    for key in (sg2_tuned.sample.options[payload.OPTION], other.options[payload.OPTION]):
        payload._STORE.pop(key)  # as in a fresh process
    back = StudioState.from_session(load_session(tmp_path / "mine.nstudio"))
    assert back.sample == sg2_tuned.sample and back.inversion.finetune == sg2_tuned.finetune
    with torch.inference_mode(), sg2.editor() as editor:
        editor.set(back.edits)
        assert torch.equal(sg2.render([back.sample]), before)
    payload._STORE.pop(sg2_tuned.sample.options[payload.OPTION])
    two = load_session(tmp_path / "two.nstudio")
    assert torch.equal(_rendered(sg2, two.samples[1]), other_image)
    assert torch.equal(_rendered(sg2, two.samples[0]), _rendered(sg2, sg2_tuned.sample))
