"""StyleGAN checkpoints trained with non-default options, and files that only look like StyleGAN ones.

Each file is written the way its own code writes it (see tests/stylegan_files.py); the upstream file each case
follows is named in the test.
"""
from __future__ import annotations

import pytest
import torch

from models.registry import open_model
from models.stylegan2_nets import StyleGANConfig
from studio.core.errors import ModelOpenError
from tests.stylegan_files import tiny_net, write_nvidia_pickle

_BASE = dict(mapping={"num_layers": 2}, channel_base=128, channel_max=16, num_fp16_res=0)


def _sg2(**synthesis) -> StyleGANConfig:
    return StyleGANConfig.stylegan2(16, 16, 16, **{**_BASE, **synthesis})


def test_a_checkpoint_trained_without_noise_renders_in_every_noise_mode(tmp_path):
    # stylegan2-ada-pytorch training/networks.py SynthesisLayer: use_noise=False registers neither noise_const
    # nor noise_strength, and every noise_mode then adds nothing; train.py passes it in synthesis_kwargs.
    net = tiny_net(_sg2(use_noise=False))
    assert not any("noise" in k for k in net.state_dict())
    path = write_nvidia_pickle(tmp_path / "nonoise.pkl", net, marker=tmp_path / "ran", layout="ada")
    gen = open_model(str(path), device="cpu")
    with torch.inference_mode():
        images = gen.render([gen.sample(3, noise=mode) for mode in ("const", "random", "none")])
        mixed = gen.render([gen.sample(3, noise="random"), gen.sample(3, noise="const")])
    assert torch.isfinite(images).all() and images.std() > 1e-3
    torch.testing.assert_close(images[1], images[0], atol=1e-6, rtol=0)  # no noise is added in any mode
    torch.testing.assert_close(images[2], images[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[0], images[0], atol=1e-6, rtol=0)

