"""DDIM inversion on the tiny random SD: the inverted latent redraws the image through the normal render paths."""
from __future__ import annotations

import json

import pytest
import torch

from models.base import Sample
from models.registry import open_model
from models import sd_invert
from models.sd_invert import encode, pack_latent, unpack_latent
from studio.core.errors import Cancelled, StudioError
from studio.core.hooks import UnitEdit

STEPS = 4  # denoising steps: few, so the test takes seconds; the inversion's hardest step is the noisiest one


@pytest.fixture
def quick(monkeypatch):
    """No gradient refinement of stalled steps: for the tests about paths and files, not about closeness."""
    monkeypatch.setattr(sd_invert, "GRADIENT_STEPS", 0)


@pytest.fixture(scope="module")
def sd(tiny_sd_files):
    return open_model(str(tiny_sd_files.folder), device="cpu")


def made(sd, seed=3, prompt="a red house"):
    """A sample of the model's own, rendered the way an inversion redraws (DDIM, no guidance) and its image."""
    sample = sd.sample(seed, prompt, steps=STEPS, size=32, scheduler="ddim", guidance=1.0)
    with torch.inference_mode():
        return sample, sd.render([sample])[0]


def test_inverting_the_models_own_latent_redraws_its_image(sd):
    """The DDIM half on its own: the latent a seed's loop ends at, inverted, renders that seed's image again.

    Measured: max abs 1e-5 to 1e-4 (float32 noise through 4 UNet steps and the VAE); the test allows 2e-3."""
    sample, image = made(sd)
    with torch.no_grad():
        from studio.core.progress import Ticker
        clean = sd._denoised(sample, Ticker(STEPS))
    inverted = sd.invert_latent(clean, sample.prompt, STEPS)
    assert max(sd.last_inversion.residuals) < 1e-3  # each backward step lands where its forward step starts
    seed_noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(sd.last_inversion.latent, seed_noise, atol=2e-3)  # it found the seed's own noise
    with torch.inference_mode():
        again = sd.render([inverted])[0]
    assert float((again - image).abs().max()) < 2e-3


def test_an_image_the_model_made_is_inverted_and_redrawn_within_the_stated_tolerance(sd):
    """The whole path, from pixels: the random test VAE's encoder is far from its decoder's inverse (its encoding of
    the image decodes to mean abs 0.19 off), so Adam fits the latent first; the fit's loss must fall, and the redraw
    stays within max abs 0.6 and mean abs 0.1 of the image (measured: max 0.40, mean 0.081, for 4 steps and 80
    fitting steps), closer than the encoder's latent alone. The fitted latent lies off the random UNet's own paths,
    and there the noisiest step's fixed-point refinement stalls (its forward step misses by 0.73); the gradient
    refinement brings that to 0.11 (the other steps miss by under 0.02), and without it the redraw is max 0.62,
    mean 0.098 off. A real SD VAE's encoder starts far closer."""
    sample, image = made(sd)
    previews: list[int] = []
    inverted = sd.invert_image(image, sample.prompt, steps=80, denoise_steps=STEPS,
                               preview=lambda i, picture: previews.append(i))
    figures = sd.last_inversion
    assert figures.vae_losses[-1] < 0.5 * figures.vae_losses[0]
    assert previews and previews[0] == 0
    assert inverted.option("scheduler") == "ddim" and inverted.option("steps") == STEPS
    with torch.inference_mode():
        again = sd.render([inverted])[0]
        encoded_only = sd.sampler.decode(encode(sd.pipe, image[None]))[0]
    difference = (again - image).abs()
    assert float(difference.max()) < 0.6 and float(difference.mean()) < 0.1
    assert max(figures.residuals) < 0.3  # the stalled step was refined by gradients
    assert float(difference.mean()) < float((encoded_only - image).abs().mean())


def test_the_inverted_sample_is_json_exact_and_edits_apply_in_their_step_window(sd, quick):
    sample, image = made(sd)
    inverted = sd.invert_image(image, sample.prompt, steps=5, denoise_steps=STEPS)
    back = Sample.from_json(json.loads(json.dumps(inverted.to_json())))
    assert back == inverted
    assert torch.equal(unpack_latent(back.option("init_latent")), sd.last_inversion.latent[0].float())
    with torch.inference_mode():
        plain = sd.render([inverted])
        assert torch.equal(sd.render([back]), plain)
        with sd.editor() as editor:
            editor.set([UnitEdit("up_blocks.1.resnets.0", 3, "off", steps=(STEPS - 1, STEPS))])
            late = sd.render([inverted])
            editor.set([UnitEdit("up_blocks.1.resnets.0", 3, "off")])
            always = sd.render([inverted])
        state = sd.denoise_prefix([inverted], 2)  # a ranking's shared prefix starts from the inverted latent too
        resumed = sd.render([inverted], start=state)
    assert not torch.equal(late, plain) and not torch.equal(always, late)
    assert torch.allclose(resumed, plain, atol=1e-5)
    preview = sd._plan(Sample(0, inverted.prompt, {**inverted.options, "preview": True}))
    assert (preview.height, preview.width) == (32, 32)  # a preview keeps the inverted latent's size


def test_continuing_fits_further_and_cancelling_stops(sd, quick):
    sample, image = made(sd, seed=5)
    first = sd.invert_image(image, sample.prompt, steps=10, denoise_steps=STEPS)
    more = sd.invert_image(image, steps=10, start=first)  # starts from where the first result's path ends
    assert more.prompt == first.prompt and more.option("steps") == STEPS
    with torch.inference_mode():
        shown = float(((sd.render([first])[0] - image) ** 2).mean())
    # the fit starts at what was shown (the loss differs only where the decoder overshoots 0 or 1 off saturation)
    assert sd.last_inversion.vae_losses[0] == pytest.approx(shown, rel=0.05)
    assert sd.last_inversion.vae_losses[-1] < sd.last_inversion.vae_losses[0]
    calls = []
    with pytest.raises(Cancelled):
        sd.invert_image(image, sample.prompt, steps=10, denoise_steps=STEPS, cancel=None,
                        progress=lambda update: calls.append(update.done) or len(calls) < 4)


def test_bad_latents_and_images_are_one_sentence(sd, quick):
    with pytest.raises(StudioError, match="damaged"):
        unpack_latent({"shape": [4, 16, 16], "float32": "not base64!"})
    wrong = Sample(0, "a red house", {"steps": STEPS, "scheduler": "ddim",
                                      "init_latent": pack_latent(torch.zeros(4, 8, 8))})
    with torch.inference_mode():
        assert sd.render([wrong]).shape[-1] == 16  # the latent decides the size
    with pytest.raises(StudioError, match="pixels"):
        sd.invert_image(torch.rand(3, 1, 40), "a red house", steps=1, denoise_steps=STEPS)


def test_a_v_prediction_model_inverts_its_own_latent_too(tiny_sd_files, quick):
    """SD 2.x-v checkpoints predict v, not the noise: the backward step converts (the same UNet read as v here)."""
    from diffusers import DDIMScheduler  # heavy import (seconds): only diffusion tests need it

    from studio.core.progress import Ticker

    v = open_model(str(tiny_sd_files.folder), device="cpu")
    v.pipe.scheduler = DDIMScheduler.from_config(v.pipe.scheduler.config, prediction_type="v_prediction")
    sample, image = made(v)
    with torch.no_grad():
        clean = v._denoised(sample, Ticker(STEPS))
    inverted = v.invert_latent(clean, sample.prompt, STEPS)
    assert max(v.last_inversion.residuals) < 1e-3
    with torch.inference_mode():
        assert float((v.render([inverted])[0] - image).abs().max()) < 2e-3
