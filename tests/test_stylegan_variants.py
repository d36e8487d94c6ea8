"""StyleGAN checkpoints trained with non-default options, and files that only look like StyleGAN ones.

Each file is written the way its own code writes it (see tests/stylegan_files.py); the upstream file each case
follows is named in the test.
"""
from __future__ import annotations

import os
import pickle
import re

import pytest
import torch

from models.registry import open_model
from models.stylegan2_nets import StyleGANConfig
from models.safe_pickle import clipped
from models.stylegan_ops import setup_filter
from studio.core.errors import ModelOpenError
from tests.stylegan_files import tiny_net, write_nvidia_pickle, write_swagan_checkpoint

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



# stylegan2-ada-pytorch torch_utils/ops/bias_act.py, activation_funcs: each function and its def_gain.
NVIDIA_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0), "relu": (torch.relu, 2 ** 0.5),
    "lrelu": (lambda x: torch.nn.functional.leaky_relu(x, 0.2), 2 ** 0.5), "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0), "elu": (torch.nn.functional.elu, 1.0), "selu": (torch.nn.functional.selu, 1.0),
    "softplus": (torch.nn.functional.softplus, 1.0), "swish": (lambda x: torch.sigmoid(x) * x, 2 ** 0.5),
}


@pytest.fixture(scope="module")
def linear_gen(tmp_path_factory):
    folder = tmp_path_factory.mktemp("act")
    path = write_nvidia_pickle(folder / "linear.pkl", tiny_net(_sg2(activation="linear")), marker=folder / "ran",
                               layout="ada")
    return open_model(str(path), device="cpu")


@pytest.mark.parametrize("activation", list(NVIDIA_ACTIVATIONS))
def test_every_synthesis_activation_nvidia_offers_renders_exactly(tmp_path, linear_gen, activation):
    # stylegan2-ada-pytorch training/networks.py SynthesisLayer: bias_act(x, bias, act, gain=def_gain * gain, clamp);
    # the activation is a synthesis_kwargs option and changes no tensor, so the same seed gives the same weights.
    path = write_nvidia_pickle(tmp_path / f"{activation}.pkl", tiny_net(_sg2(activation=activation)),
                               marker=tmp_path / "ran", layout="ada")
    gen = open_model(str(path), device="cpu")
    func, gain = NVIDIA_ACTIVATIONS[activation]
    with torch.inference_mode():
        sample = gen.sample(3)
        image = gen.render([sample])
        pre = linear_gen.trace([sample], ["synthesis.b4.conv1"])["synthesis.b4.conv1"]  # bias added, no activation
        out = gen.trace([sample], ["synthesis.b4.conv1"])["synthesis.b4.conv1"]
    assert torch.isfinite(image).all()
    torch.testing.assert_close(out, func(pre) * gain, atol=1e-6, rtol=1e-6)


def test_an_activation_nvidia_does_not_offer_is_refused_at_open_time(tmp_path):
    net = tiny_net(_sg2())
    net.config.synthesis["activation"] = "gelu"  # a modified training script's option, as its pickle records it
    path = write_nvidia_pickle(tmp_path / "gelu.pkl", net, marker=tmp_path / "ran", layout="ada")
    with pytest.raises(ModelOpenError, match=r"^gelu\.pkl uses the synthesis activation 'gelu', which is not one of "
                                             r"NVIDIA's \(linear, .*swish\), so it cannot be rendered faithfully\.$"):
        open_model(str(path), device="cpu")


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_a_non_default_resample_filter_opens_and_is_used_where_nvidia_uses_it(tmp_path, architecture):
    # stylegan2-ada-pytorch training/networks.py SynthesisBlock: resample_filter goes to the block's own buffer
    # (image upsampling), conv0 and the resnet skip; conv1 is built without it, so it stores SynthesisLayer's
    # default setup_filter([1,3,3,1]).
    net = tiny_net(_sg2(architecture=architecture, resample_filter=[1, 2, 1]))
    for r in net.synthesis.resolutions:
        block = getattr(net.synthesis, f"b{r}")
        block.conv1.resample_filter = setup_filter([1, 3, 3, 1])  # what NVIDIA's pickle holds for conv1
        assert block.resample_filter.shape == (3, 3)
        if r > 4:
            assert block.conv0.resample_filter.shape == (3, 3)
    path = write_nvidia_pickle(tmp_path / "f121.pkl", net, marker=tmp_path / "ran", layout="ada")
    default = tiny_net(_sg2(architecture=architecture))  # the same weights with the default filter
    default_path = write_nvidia_pickle(tmp_path / "f1331.pkl", default, marker=tmp_path / "ran", layout="ada")
    gen, gen_default = open_model(str(path), device="cpu"), open_model(str(default_path), device="cpu")
    with torch.inference_mode():
        sample = gen.sample(3)
        image = gen.render([sample])
        acts = gen.trace([sample], ["synthesis.b8.conv1"])
        resumed = gen.forward_from("synthesis.b8.conv1", acts["synthesis.b8.conv1"], [sample])
        other = gen_default.render([sample])
    torch.testing.assert_close(resumed, image, atol=1e-6, rtol=0)
    assert (image - other).abs().max() > 1e-3  # the [1, 2, 1] filter is really applied


def test_a_rosinality_swagan_checkpoint_is_refused_by_name(tmp_path):
    # rosinality/stylegan2-pytorch swagan.py (Generator, ToRGB with 3 * 4 wavelet channels and Haar iwt/dwt
    # buffers) saved by train.py --arch swagan ({"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}).
    path = write_swagan_checkpoint(tmp_path / "swagan-010000.pt", tiny_net(_sg2()))
    with pytest.raises(ModelOpenError, match=r"^swagan-010000\.pt is a rosinality SWAGAN checkpoint \(a wavelet "
                                             r"generator\), which Neuron Studio cannot open: [^.]*StyleGAN2[^.]*\.$"):
        open_model(str(path), device="cpu")
    bare = tmp_path / "swagan-g_ema.pt"  # only the generator, as convert scripts keep it: known by its Haar buffers
    torch.save({"g_ema": torch.load(path, weights_only=False)["g_ema"]}, bare)
    with pytest.raises(ModelOpenError, match=r"^swagan-g_ema\.pt is a rosinality SWAGAN checkpoint"):
        open_model(str(bare), device="cpu")


class _EvilStorage:
    """Pickles as a tensor storage does (torch.storage._load_from_bytes of a nested torch.save blob), but the
    blob is a pickle that calls os.system."""

    def __init__(self, marker, protocol: int) -> None:
        self.blob = pickle.dumps(_Call(os.system, f"touch {marker}"), protocol=protocol)

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.blob,)


class _Call:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_malicious_tensor_storage_is_refused_as_more_than_tensors(tmp_path, protocol):
    # torch/storage.py: a storage pickles as _load_from_bytes(torch.save(storage) bytes, legacy protocol 2); the
    # snapshot around it is stylegan2-ada-pytorch's training_loop.py dict. protocol 4 makes torch's weights-only
    # loader stop at an opcode instead of a global.
    marker = tmp_path / "owned"
    path = write_nvidia_pickle(tmp_path / "snapshot.pkl", tiny_net(_sg2()), marker=tmp_path / "ran", layout="ada",
                               extra={"augment_pipe": _EvilStorage(marker, protocol)})
    with pytest.raises(ModelOpenError) as caught:
        open_model(str(path), device="cpu")
    message = str(caught.value)
    what = (r"asks for posix\.system" if protocol == 2 else
            r"uses pickle instructions torch's weights-only loader refuses")
    expected = (r"snapshot\.pkl holds more than tensors: a tensor storage in it " + what +
                r" \(code, not data\); it was refused and nothing in it ran, but the file may be malicious\.")
    assert re.fullmatch(expected, message), message
    assert "PyTorch" not in message and not marker.exists()



def test_a_pt_file_with_code_names_what_it_asks_for_in_whole_words(tmp_path):
    # rosinality/stylegan2-pytorch train.py saves {"g_ema": ..., "args": ...} with torch.save; here one entry is code.
    marker = tmp_path / "owned"
    torch.save({"g_ema": {}, "hook": _Call(os.system, f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(ModelOpenError, match=r"^evil\.pt holds more than tensors \(asks for posix\.system\); it "
                                             r"was not loaded, because loading it could run code\.$"):
        open_model(str(tmp_path / "evil.pt"), device="cpu")
    assert not marker.exists()


def test_a_long_loader_message_is_cut_between_words():
    text = "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument " \
           "in `torch.load` from `False` to `True`. Re-running `torch.load` with it set will likely succeed"
    cut = clipped(text, 100)
    assert len(cut) <= 104 and cut.endswith(" ...") and text.startswith(cut[:-4]) and text[len(cut) - 4] == " "
