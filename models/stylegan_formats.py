"""StyleGAN checkpoint layouts <-> our networks: NVIDIA pickles (records) and rosinality's ``g_ema`` state dicts.

    net = from_record(load_network_pickle(path)["G_ema"], "ffhq.pkl")         # StyleGAN2 / -ADA / 3
    net = from_rosinality(torch.load(path, weights_only=True), "550000.pt")   # rosinality/stylegan2-pytorch
    ckpt = to_rosinality_checkpoint(net)        # {"g_ema": state dict, "latent_avg": w_avg}: torch.save it

Our parameter names are NVIDIA's, so a pickle's tensors load by name; rosinality's names and shapes are mapped.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from studio.core.errors import ModelOpenError, UnsupportedOperation

from .safe_pickle import PersistentRecord
from .stylegan2_nets import StyleGAN2, StyleGANConfig
from .stylegan3_nets import StyleGAN3
from .stylegan_ops import ACTIVATIONS

_BASE = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_MAPPING = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_SYNTHESIS = {
    "stylegan2": {"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter", "conv_clamp",
                  "use_noise", "activation", "kernel_size", "channels"},
    "stylegan3": {"channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
                  "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res", "conv_kernel", "filter_size",
                  "lrelu_upsampling", "use_radial_filters", "conv_clamp"},
}
# Options that change speed or training only, never the image.
_NO_EFFECT = {"fp16_channels_last", "fused_modconv_default", "channels_last", "magnitude_ema_beta", "square"}


def build(config: StyleGANConfig) -> nn.Module:
    """Our network for ``config`` (random weights until tensors are loaded)."""
    return (StyleGAN3 if config.arch == "stylegan3" else StyleGAN2)(config)


def _plain(value: Any) -> Any:
    """numpy scalars and EasyDicts from a pickle as plain JSON-able Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_from_record(generator: PersistentRecord, label: str) -> StyleGANConfig:
    """The constructor arguments of a pickled ``Generator`` in our normalised form."""
    kwargs = dict(zip(_BASE, generator.init_args))
    kwargs.update(_plain(generator.init_kwargs))
    synthesis_record = generator.child("synthesis")
    if synthesis_record is None or generator.child("mapping") is None:
        raise ModelOpenError(f"{label}: its G_ema ({generator.class_name}) has no mapping and synthesis networks, "
                             "so it is not a StyleGAN2/3 generator.")
    children = {name: getattr(rec, "class_name", "") for name, rec in synthesis_record.modules.items()}
    if children.get("input") == "SynthesisInput":
        arch = "stylegan3"
    elif children.get("b4") == "SynthesisBlock":
        arch = "stylegan2"
    else:
        raise ModelOpenError(f"{label}: its synthesis network ({synthesis_record.class_name}) is neither StyleGAN2 "
                             "blocks (b4, b8, ...) nor StyleGAN3 layers (input, L0_...); it cannot be opened.")
    missing = [k for k in _BASE if k not in kwargs]
    if missing:
        raise ModelOpenError(f"{label}: its generator record lacks {', '.join(missing)}; the file is incomplete.")
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis.update({k: v for k, v in kwargs.items() if k not in _BASE})  # StyleGAN3-repo flattens them
    return _checked(StyleGANConfig(arch, *(int(kwargs[k]) for k in _BASE), mapping, synthesis), label)


def _checked(config: StyleGANConfig, label: str) -> StyleGANConfig:
    """Drop options without effect on images; refuse ones our implementation does not have."""
    for group, allowed in (("mapping", _MAPPING), ("synthesis", _SYNTHESIS[config.arch])):
        options = getattr(config, group)
        for key in list(options):
            if key in _NO_EFFECT:
                del options[key]
            elif key not in allowed:
                raise ModelOpenError(f"{label} uses the {group} option {key}={options[key]!r}, which Neuron Studio's "
                                     f"{config.arch} implementation does not have, so it cannot render it faithfully.")
    for group in ("mapping", "synthesis"):
        activation = getattr(config, group).get("activation", "lrelu")
        if activation not in ACTIVATIONS:
            raise ModelOpenError(f"{label} uses the {group} activation {activation!r}, which is not one of NVIDIA's "
                                 f"({', '.join(ACTIVATIONS)}), so it cannot be rendered faithfully.")
    if config.arch == "stylegan2" and config.synthesis.get("architecture", "skip") not in ("orig", "skip", "resnet"):
        raise ModelOpenError(f"{label} uses synthesis architecture {config.synthesis['architecture']!r}; "
                             "only orig, skip and resnet exist.")
    return config


def load_tensors(net: nn.Module, tensors: Mapping[str, torch.Tensor], label: str) -> nn.Module:
    """Copy ``tensors`` into ``net`` by name; missing, extra or misshapen tensors give one sentence."""
    own = net.state_dict()
    tensors = dict(tensors)
    if "mapping.w_avg" not in tensors:  # trained without tracking w_avg: estimate it once, deterministically
        tensors["mapping.w_avg"] = estimate_w_avg(net, tensors)
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    if missing or extra or wrong:
        detail = (f"missing {', '.join(missing[:3])}" if missing else
                  f"unexpected {', '.join(extra[:3])}" if extra else f"shape {wrong[0]}")
        raise ModelOpenError(f"{label}: its tensors do not fit the architecture its settings describe ({detail}); "
                             "the file may come from a modified StyleGAN.")
    net.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    return net.eval().requires_grad_(False)


@torch.no_grad()
def estimate_w_avg(net: nn.Module, tensors: Mapping[str, torch.Tensor], count: int = 4096) -> torch.Tensor:
    """The mean w over ``count`` seeded z (class 0 for conditional models)."""
    mapping = net.mapping
    mapping.load_state_dict({k[len("mapping."):]: v.to(torch.float32) for k, v in tensors.items()
                             if k.startswith("mapping.") and k != "mapping.w_avg"}, strict=False)
    z = torch.randn(count, mapping.z_dim, generator=torch.Generator().manual_seed(0))
    c = torch.zeros(count, mapping.c_dim)
    if mapping.c_dim:
        c[:, 0] = 1
    mapping.w_avg.zero_()
    return mapping(z, c, 1.0).mean(dim=0)


def from_record(generator: PersistentRecord, label: str) -> nn.Module:
    """Our network holding a pickled ``G_ema``'s tensors."""
    config = config_from_record(generator, label)
    try:
        net = build(config)
    except (ValueError, TypeError, AssertionError) as error:
        raise ModelOpenError(f"{label}: its generator settings cannot be built ({error}).") from error
    return load_tensors(net, generator.state_dict(), label)


# -- rosinality/stylegan2-pytorch --------------------------------------------------------------------------------
_ROS_LR = 0.01  # rosinality's default lr_mlp: stored mapping weights are in these units


def _ros_index(res: int) -> int:
    return int(math.log2(res)) - 3  # b8 -> 0, b16 -> 1, ...


def from_rosinality(checkpoint: Mapping[str, Any], label: str) -> nn.Module:
    """Our StyleGAN2 from a rosinality checkpoint (``{"g_ema": state_dict, "latent_avg"?: w, "args"?: ...}``)."""
    sd = checkpoint.get("g_ema")
    if getattr(checkpoint.get("args"), "arch", None) == "swagan" or (isinstance(sd, Mapping) and "iwt.ll" in sd):
        raise ModelOpenError(f"{label} is a rosinality SWAGAN checkpoint (a wavelet generator), which Neuron Studio "
                             "cannot open: of rosinality's generators only StyleGAN2 is supported.")
    if not isinstance(sd, Mapping) or "input.input" not in sd or "style.1.weight" not in sd:
        raise ModelOpenError(f"{label}: its 'g_ema' is not a rosinality StyleGAN2 state dict (no input.input / "
                             "style.1.weight tensors).")
    args = checkpoint.get("args")
    lr_mlp = float(getattr(args, "lr_mlp", _ROS_LR) or _ROS_LR)
    n_mlp = len([k for k in sd if k.startswith("style.") and k.endswith(".weight")])
    w_dim, z_dim = sd["style.1.weight"].shape
    n_up = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    resolution = 2 ** (n_up + 2)
    channels = [int(sd["conv1.conv.weight"].shape[1])] + [int(sd[f"convs.{2 * j}.conv.weight"].shape[1])
                                                          for j in range(n_up)]
    kernel = sd.get("convs.0.conv.blur.kernel") if n_up else None
    config = StyleGANConfig.stylegan2(int(z_dim), int(w_dim), resolution, mapping={
        "num_layers": n_mlp, "lr_multiplier": lr_mlp}, channels=channels, conv_clamp=None)
    net = build(config)
    ours: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        ours[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        ours[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    if checkpoint.get("latent_avg") is not None:
        ours["mapping.w_avg"] = torch.as_tensor(checkpoint["latent_avg"]).reshape(-1)
    ours["synthesis.b4.const"] = sd["input.input"][0]
    layers = [("synthesis.b4.conv1", "conv1", "noises.noise_0")]
    for j in range(n_up):
        r = 2 ** (j + 3)
        layers += [(f"synthesis.b{r}.conv0", f"convs.{2 * j}", f"noises.noise_{2 * j + 1}"),
                   (f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", f"noises.noise_{2 * j + 2}")]
    for name, ros, noise in layers:
        ours[f"{name}.weight"] = sd[f"{ros}.conv.weight"][0]
        ours[f"{name}.affine.weight"] = sd[f"{ros}.conv.modulation.weight"]
        ours[f"{name}.affine.bias"] = sd[f"{ros}.conv.modulation.bias"]
        ours[f"{name}.noise_strength"] = sd[f"{ros}.noise.weight"].reshape([])
        ours[f"{name}.bias"] = sd[f"{ros}.activate.bias"]
        ours[f"{name}.noise_const"] = sd[noise].reshape(sd[noise].shape[-2:]) if noise in sd else \
            net.state_dict()[f"{name}.noise_const"]
    for r in net.synthesis.resolutions:
        ros = "to_rgb1" if r == 4 else f"to_rgbs.{_ros_index(r)}"
        ours[f"synthesis.b{r}.torgb.weight"] = sd[f"{ros}.conv.weight"][0]
        ours[f"synthesis.b{r}.torgb.affine.weight"] = sd[f"{ros}.conv.modulation.weight"]
        ours[f"synthesis.b{r}.torgb.affine.bias"] = sd[f"{ros}.conv.modulation.bias"]
        ours[f"synthesis.b{r}.torgb.bias"] = sd[f"{ros}.bias"].reshape(-1)
    filt = (kernel / kernel.sum()).to(torch.float32) if kernel is not None else None
    for key, value in net.state_dict().items():
        if key.endswith("resample_filter"):
            ours[key] = filt if filt is not None else value
    return load_tensors(net, ours, label)


def rosinality_problem(net: nn.Module) -> str | None:
    """Why ``net`` cannot be written in rosinality's layout, or None when it can."""
    config: StyleGANConfig = net.config
    syn = config.synthesis
    if config.arch != "stylegan2":
        return "rosinality's stylegan2-pytorch has no StyleGAN3 architecture"
    checks = [(config.c_dim == 0, "it is class-conditional"),
              (syn.get("architecture", "skip") == "skip", f"it uses the {syn.get('architecture')} architecture"),
              (config.z_dim == config.w_dim, "its z and w sizes differ"),
              (config.mapping.get("layer_features") in (None, config.w_dim), "its mapping layers are not w-sized"),
              (config.mapping.get("activation", "lrelu") == "lrelu", "its mapping activation is not leaky ReLU"),
              (syn.get("kernel_size", 3) == 3 and syn.get("use_noise", True) and
               syn.get("activation", "lrelu") == "lrelu", "its synthesis layers differ from config F"),
              (net.synthesis.b4.resample_filter.shape == (4, 4), "its resampling filter is not 4x4")]
    for ok, why in checks:
        if not ok:
            return f"rosinality's layout cannot hold it: {why}"
    return None


def to_rosinality_checkpoint(net: nn.Module) -> dict[str, Any]:
    """``{"g_ema": state_dict, "latent_avg": w_avg}`` in rosinality/stylegan2-pytorch's layout (``torch.save`` it).

    Exact for StyleGAN2 config F (skip) generators without classes; conv clamping (a float16 guard) has no
    counterpart there and is dropped. Raises :class:`UnsupportedOperation` for what the layout cannot hold.
    """
    problem = rosinality_problem(net)
    if problem:
        raise UnsupportedOperation(problem + ".")
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
    lr = float(net.config.mapping.get("lr_multiplier", 0.01))
    out: dict[str, torch.Tensor] = {}
    for i in range(net.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"] * (lr / _ROS_LR)
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"] * (lr / _ROS_LR)
    out["input.input"] = sd["synthesis.b4.const"].unsqueeze(0)
    blur = sd["synthesis.b4.resample_filter"] * 4  # rosinality keeps the x4 upsampling gain in the kernel
    noise_index = 0
    for r in net.synthesis.resolutions:
        for conv in (["conv0"] if r > 4 else []) + ["conv1"]:
            name = f"synthesis.b{r}.{conv}"
            ros = "conv1" if r == 4 else f"convs.{2 * _ros_index(r) + (conv == 'conv1')}"
            out[f"{ros}.conv.weight"] = sd[f"{name}.weight"].unsqueeze(0)
            out[f"{ros}.conv.modulation.weight"] = sd[f"{name}.affine.weight"]
            out[f"{ros}.conv.modulation.bias"] = sd[f"{name}.affine.bias"]
            if conv == "conv0":
                out[f"{ros}.conv.blur.kernel"] = blur.clone()
            out[f"{ros}.noise.weight"] = sd[f"{name}.noise_strength"].reshape(1)
            out[f"{ros}.activate.bias"] = sd[f"{name}.bias"]
            out[f"noises.noise_{noise_index}"] = sd[f"{name}.noise_const"][None, None]
            noise_index += 1
        ros = "to_rgb1" if r == 4 else f"to_rgbs.{_ros_index(r)}"
        if r > 4:
            out[f"{ros}.upsample.kernel"] = blur.clone()
        out[f"{ros}.conv.weight"] = sd[f"synthesis.b{r}.torgb.weight"].unsqueeze(0)
        out[f"{ros}.conv.modulation.weight"] = sd[f"synthesis.b{r}.torgb.affine.weight"]
        out[f"{ros}.conv.modulation.bias"] = sd[f"synthesis.b{r}.torgb.affine.bias"]
        out[f"{ros}.bias"] = sd[f"synthesis.b{r}.torgb.bias"].reshape(1, -1, 1, 1)
    return {"g_ema": out, "latent_avg": sd["mapping.w_avg"]}


def rosinality_args(net: nn.Module) -> dict[str, int] | None:
    """``Generator(size, style_dim, n_mlp, channel_multiplier)`` arguments that rebuild ``net`` in rosinality's
    own code, or None when its channel widths follow no channel multiplier (our loader still reads the file)."""
    if rosinality_problem(net):
        return None
    channels = [net.synthesis.layer(f"b{r}.conv1").out_channels for r in net.synthesis.resolutions]
    for multiplier in (1, 2, 4):
        expected = [512 if r <= 32 else 16384 * multiplier // r for r in net.synthesis.resolutions]
        if channels == expected:
            return {"size": net.config.img_resolution, "style_dim": net.config.w_dim,
                    "n_mlp": net.mapping.num_layers, "channel_multiplier": multiplier}
    return None
