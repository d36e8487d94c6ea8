"""Tiny StyleGAN generators with seeded random weights, written in the real file formats.

NVIDIA ``.pkl``: the exact reduce structure ``torch_utils.persistence`` produces (``_reconstruct_persistent_obj(meta)``
with ``module_src``, ``class_name`` and the module ``__dict__`` as state; ``dnnlib.util.EasyDict`` kwargs; tensors
pickled by torch itself). Fake ``torch_utils``/``dnnlib`` modules exist in ``sys.modules`` only while writing, and
every ``module_src`` is code that would write ``marker`` if anything executed it.

    net = tiny_net("sg3r")                                   # our network, seeded weights
    write_nvidia_pickle(tmp / "g.pkl", net, marker=tmp / "ran", layout="ada")
"""
from __future__ import annotations

import argparse
import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from models.stylegan2_nets import MappingNetwork, Skip, StyleGAN2, StyleGANConfig, SynthesisBlock, SynthesisLayer, \
    SynthesisNetwork, ToRGB
from models.stylegan3_nets import StyleGAN3, SynthesisInput, SynthesisLayer3, SynthesisNetwork3
from models.stylegan_formats import build, to_rosinality_checkpoint
from models.stylegan_ops import FullyConnected

CONFIGS: dict[str, StyleGANConfig] = {
    # StyleGAN2 config F layout (skip), fp16 flags on the top two resolutions, clamped like NVIDIA's defaults
    "sg2": StyleGANConfig.stylegan2(16, 16, 32, mapping={"num_layers": 2}, channel_base=256, channel_max=32,
                                    num_fp16_res=2, conv_clamp=256),
    # StyleGAN2-ADA: class-conditional, resnet synthesis (written with ADA's nested synthesis_kwargs)
    "ada": StyleGANConfig.stylegan2(16, 16, 16, c_dim=3, mapping={"num_layers": 2}, channel_base=128,
                                    channel_max=16, architecture="resnet", num_fp16_res=0),
    "sg3t": StyleGANConfig("stylegan3", 16, 0, 16, 16, 3, {"num_layers": 2},
                           {"channel_base": 256, "channel_max": 16, "num_layers": 6, "num_critical": 2,
                            "margin_size": 4}),
    "sg3r": StyleGANConfig("stylegan3", 16, 0, 16, 16, 3, {"num_layers": 2},
                           {"channel_base": 512, "channel_max": 16, "num_layers": 6, "num_critical": 2,
                            "margin_size": 4, "conv_kernel": 1, "use_radial_filters": True}),
}

_NVIDIA_NAMES = {StyleGAN2: "Generator", StyleGAN3: "Generator", MappingNetwork: "MappingNetwork",
                 FullyConnected: "FullyConnectedLayer", SynthesisNetwork: "SynthesisNetwork",
                 SynthesisBlock: "SynthesisBlock", SynthesisLayer: "SynthesisLayer", ToRGB: "ToRGBLayer",
                 Skip: "Conv2dLayer", SynthesisNetwork3: "SynthesisNetwork", SynthesisInput: "SynthesisInput",
                 SynthesisLayer3: "SynthesisLayer"}


@torch.no_grad()
def tiny_net(kind: str | StyleGANConfig, seed: int = 0) -> nn.Module:
    """Our network for ``CONFIGS[kind]`` (or a config) with seeded weights, non-zero noise strengths, biases, w_avg."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build(CONFIGS[kind] if isinstance(kind, str) else kind)
        for name, p in net.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
            elif name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
        net.mapping.w_avg.copy_(torch.randn_like(net.mapping.w_avg) * 0.5)
        for name, b in net.named_buffers():
            if name.endswith("magnitude_ema"):
                b.fill_(0.7)
    return net.eval().requires_grad_(False)


class _Persistent:
    """Pickles as NVIDIA's persistence does: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,)


@contextlib.contextmanager
def fake_nvidia_modules() -> Iterator[type]:
    """``torch_utils.persistence`` and ``dnnlib.util`` in ``sys.modules`` while writing; yields ``EasyDict``."""
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]
    saved = {n: sys.modules.get(n) for n in names}
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called: only referenced by the pickle
        raise AssertionError("the writer's stand-in must never run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easydict
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util})
    try:
        yield easydict
    finally:
        for n, module in saved.items():
            if module is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = module


def _meta(module: nn.Module, kwargs: dict, source: str) -> _Persistent:
    state: dict[str, Any] = {
        "training": False,
        "_parameters": OrderedDict(module._parameters), "_buffers": OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(), "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(), "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict((n, _meta(c, {}, source) if c is not None else None)
                                for n, c in module._modules.items()),
        "_init_args": (), "_init_kwargs": kwargs,
    }
    if isinstance(module, FullyConnected):
        state["weight_gain"] = np.float64(module.weight_gain)  # numpy scalars, as in real snapshots
    if isinstance(module, SynthesisInput):
        state["size"] = np.broadcast_to(np.asarray(module.size), [2])
    meta = {"type": "class", "version": 6, "module_src": source, "class_name": _NVIDIA_NAMES[type(module)],
            "state": state}
    return _Persistent(meta)


def write_nvidia_pickle(path: Path, net: nn.Module, *, marker: Path, layout: str = "stylegan3",
                        extra: dict | None = None) -> Path:
    """A training snapshot {G, D, G_ema, augment_pipe, training_set_kwargs} as NVIDIA writes it.

    ``layout="ada"`` nests the synthesis options under ``synthesis_kwargs`` (stylegan2-ada-pytorch);
    ``"stylegan3"`` flattens them (NVlabs/stylegan3 for both architectures).
    """
    config: StyleGANConfig = net.config
    source = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src ran')\n"
    with fake_nvidia_modules() as easydict:
        kwargs: dict[str, Any] = {"z_dim": config.z_dim, "c_dim": config.c_dim, "w_dim": config.w_dim,
                                  "img_resolution": config.img_resolution, "img_channels": config.img_channels,
                                  "mapping_kwargs": easydict(config.mapping)}
        if layout == "ada":
            kwargs["synthesis_kwargs"] = easydict(config.synthesis, fp16_channels_last=False)
        else:
            kwargs.update(config.synthesis)
        generator = _meta(net, kwargs, source)
        snapshot = {"G": generator, "D": None, "G_ema": generator, "augment_pipe": None,
                    "training_set_kwargs": easydict(resolution=config.img_resolution, use_labels=bool(config.c_dim)),
                    **(extra or {})}
        with open(path, "wb") as f:
            pickle.dump(snapshot, f, protocol=4)
    return path


def _haar() -> dict[str, torch.Tensor]:
    """The 2x2 Haar filters swagan.py's get_haar_wavelet registers (ll, lh, hl, hh buffers)."""
    low = torch.ones(1, 2) / 2 ** 0.5
    high = torch.tensor([[-1.0, 1.0]]) / 2 ** 0.5
    return {"ll": low.T * low, "lh": high.T * low, "hl": low.T * high, "hh": high.T * high}


def write_swagan_checkpoint(path: Path, net: nn.Module) -> Path:
    """A rosinality ``swagan.py`` training checkpoint: StyleGAN2's keys, but each ToRGB predicts 3 * 4 wavelet
    channels and holds inverse/forward Haar transforms (``iwt``/``dwt``), plus a final ``iwt``; ``args.arch``
    is ``"swagan"`` as train.py saves it. Its image is twice the resolution of the convolutions."""
    g_ema = dict(to_rosinality_checkpoint(net)["g_ema"])
    with torch.random.fork_rng():
        torch.manual_seed(1)
        for key in [k for k in g_ema if k.startswith(("to_rgb1.", "to_rgbs."))]:
            if key.endswith("conv.weight"):
                g_ema[key] = torch.randn(1, 12, *g_ema[key].shape[2:])
            elif key.endswith(".bias"):
                g_ema[key] = torch.zeros(1, 12, 1, 1)
    haar = _haar()
    for i in range(len({k.split(".")[1] for k in g_ema if k.startswith("to_rgbs.")})):
        for name, f in haar.items():
            g_ema[f"to_rgbs.{i}.iwt.{name}"] = f if name in ("ll", "hh") else -f
            g_ema[f"to_rgbs.{i}.dwt.{name}"] = f
    for name, f in haar.items():
        g_ema[f"iwt.{name}"] = f if name in ("ll", "hh") else -f
    args = argparse.Namespace(arch="swagan", size=2 * net.config.img_resolution, latent=net.config.w_dim, n_mlp=2,
                              channel_multiplier=2)
    torch.save({"g": g_ema, "d": {}, "g_ema": g_ema, "g_optim": {}, "d_optim": {}, "args": args, "ada_aug_p": 0.0},
               path)
    return path
