"""Our StyleGAN2 / StyleGAN2-ADA generator (config F: modulated convs, noise, toRGB skips), written from the paper.

Parameter names follow NVIDIA's checkpoints, so their tensors load by name::

    net = StyleGAN2(StyleGANConfig.stylegan2(z_dim=32, w_dim=32, img_resolution=32, channel_base=256))
    w = net.mapping(z, c, psi)                       # (B, w_dim): the hookable "mapping" layer
    img = net.synthesis(net.broadcast(w))            # (B, C, H, W) in about [-1, 1]
    net.synthesis.layer_names                        # ['b4.conv1', 'b8.conv0', 'b8.conv1', ...]

Re-rendering from a layer needs what the skip paths carried past it (the toRGB image so far and, for
``resnet``, the block input): ``forward(..., record=d)`` stores that carry per layer and
``forward(..., start=name, x=activation, carry=d[name])`` runs only the layers after ``name``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .stylegan_ops import (
    ACTIVATION_GAIN,
    FullyConnected,
    bias_act,
    modulated_conv2d,
    normalize_2nd_moment,
    setup_filter,
    upsample2d,
)

#: A per-layer noise source: (layer name, batch, resolution) -> (B, 1, r, r) noise, or None for no noise.
NoiseFn = Callable[[str, int, int], "torch.Tensor | None"]


@dataclass
class StyleGANConfig:
    """Constructor arguments of a generator, as NVIDIA's pickles record them (normalised)."""

    arch: str  # "stylegan2" | "stylegan3"
    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    mapping: dict[str, Any] = field(default_factory=dict)
    synthesis: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def stylegan2(cls, z_dim: int = 512, w_dim: int = 512, img_resolution: int = 256, *, c_dim: int = 0,
                  img_channels: int = 3, mapping: dict | None = None, **synthesis: Any) -> "StyleGANConfig":
        return cls("stylegan2", z_dim, c_dim, w_dim, img_resolution, img_channels, dict(mapping or {}), synthesis)

    def to_json(self) -> dict:
        return {"arch": self.arch, "z_dim": self.z_dim, "c_dim": self.c_dim, "w_dim": self.w_dim,
                "img_resolution": self.img_resolution, "img_channels": self.img_channels,
                "mapping": dict(self.mapping), "synthesis": dict(self.synthesis)}


class MappingNetwork(nn.Module):
    """z (and a class label) -> w, truncated towards ``w_avg`` by psi. Its output (B, w_dim) is the hook point."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, *, num_layers: int = 8, embed_features: int | None = None,
                 layer_features: int | None = None, activation: str = "lrelu", lr_multiplier: float = 0.01,
                 w_avg_beta: float | None = 0.995) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_layers = z_dim, c_dim, w_dim, num_layers
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim else 0
        layer_features = w_dim if layer_features is None else layer_features
        sizes = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim:
            self.embed = FullyConnected(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(sizes[i], sizes[i + 1], activation=activation,
                                                   lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: torch.Tensor | float = 1.0,
                w: torch.Tensor | None = None, use_w: torch.Tensor | None = None) -> torch.Tensor:
        """w for each row; rows where ``use_w`` is set take the given ``w`` instead (hooks still see them)."""
        parts = [normalize_2nd_moment(z.to(torch.float32))] if self.z_dim else []
        if self.c_dim:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        psi = torch.as_tensor(psi, dtype=x.dtype, device=x.device).reshape(-1, 1)
        x = self.w_avg + psi * (x - self.w_avg)
        if w is not None and use_w is not None:
            x = torch.where(use_w.reshape(-1, 1), w.to(x), x)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias and leaky ReLU: one hookable layer, units = channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", conv_clamp: float | None = None,
                 resample_filter: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.use_noise, self.activation, self.conv_clamp = use_noise, activation, conv_clamp
        self.padding = kernel_size // 2
        self.use_fp16 = False  # set by the network for its highest resolutions
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]) if resample_filter is None
                             else resample_filter.clone())
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None,
                gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter)
        if self.use_noise and noise is not None:
            x = x + (noise * self.noise_strength).to(x.dtype)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, ACTIVATION_GAIN[self.activation] * gain, clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation: a block's contribution to the image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class Skip(nn.Module):
    """The resnet architecture's 1x1 upsampling shortcut (no bias, no modulation)."""

    def __init__(self, in_channels: int, out_channels: int, resample_filter: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("resample_filter", resample_filter.clone())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, gain: float) -> torch.Tensor:
        x = torch.nn.functional.conv2d(x, (self.weight * self.weight_gain).to(x.dtype))
        return upsample2d(x, self.resample_filter) * gain  # 1x1 conv commutes with the upsampling


class SynthesisBlock(nn.Module):
    """One resolution: ``const`` or ``conv0`` (2x up), ``conv1``, and ``torgb`` for skip / last blocks."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str, resample_filter: torch.Tensor, conv_clamp: float | None,
                 **layer_kwargs: Any) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.architecture = in_channels, resolution, architecture
        self.register_buffer("resample_filter", resample_filter.clone())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp,
                                        resample_filter=resample_filter, **layer_kwargs)
        # NVIDIA's block passes its filter to conv0, the skip and the image upsampling, not to conv1 (which keeps
        # SynthesisLayer's default [1, 3, 3, 1]; it never resamples, but checkpoints store that buffer)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp,
                                    **layer_kwargs)
        self.has_torgb = is_last or architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        if in_channels and architecture == "resnet":
            self.skip = Skip(in_channels, out_channels, resample_filter)
        self.num_conv = 1 if in_channels == 0 else 2


class SynthesisNetwork(nn.Module):
    """Blocks ``b4`` ... ``b{resolution}``; a flat sequence of layers that can start after any of them."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, architecture: str = "skip",
                 resample_filter: list[float] | None = None, conv_clamp: float | None = None,
                 channels: list[int] | None = None, **layer_kwargs: Any) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"resolution {img_resolution} is not a power of two")
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown architecture '{architecture}'")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.architecture = architecture
        self.resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        if channels is not None and len(channels) != len(self.resolutions):
            raise ValueError(f"{len(channels)} channel counts for {len(self.resolutions)} resolutions")
        channels = dict(zip(self.resolutions, channels)) if channels is not None else {  # explicit: rosinality files
            r: min(channel_base // r, channel_max) for r in self.resolutions}
        fp16_from = max(2 ** (int(np.log2(img_resolution)) + 1 - num_fp16_res), 8)
        filt = setup_filter(resample_filter or [1, 3, 3, 1])
        self.num_ws = 0
        self.layer_names: list[str] = []
        for r in self.resolutions:
            block = SynthesisBlock(channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, img_channels,
                                   r == img_resolution, architecture, filt, conv_clamp, **layer_kwargs)
            for name in (["conv0"] if r > 4 else []) + ["conv1"]:
                getattr(block, name).use_fp16 = r >= fp16_from and num_fp16_res > 0
                self.layer_names.append(f"b{r}.{name}")
            self.num_ws += block.num_conv
            setattr(self, f"b{r}", block)
        self.num_ws += 1  # the last toRGB has a w of its own
        self.half = False  # run the fp16-flagged layers in half precision (GPU only)

    def layer(self, name: str) -> SynthesisLayer:
        block, conv = name.split(".")
        return getattr(getattr(self, block), conv)

    def forward(self, ws: torch.Tensor, noise: NoiseFn | None = None, *, start: str | None = None,
                x: torch.Tensor | None = None, carry: dict | None = None, stop_before: str | None = None,
                record: dict | None = None) -> torch.Tensor | dict:
        """The image from per-layer latents ``ws`` (B, num_ws, w_dim), or the carry entering ``stop_before``.

        ``start``/``x``/``carry``: resume after layer ``start`` whose output is ``x``. ``record``: filled with
        each layer's carry (what the skip paths hold while the layer runs).
        """
        noise = noise or (lambda name, batch, res: None)
        img = carry.get("img") if carry else None
        block_in = carry.get("block_in") if carry else None
        running = start is None
        w_idx = 0
        for r in self.resolutions:
            block: SynthesisBlock = getattr(self, f"b{r}")
            names = (["conv0"] if r > 4 else []) + ["conv1"]
            block_ws = ws[:, w_idx: w_idx + block.num_conv + 1]
            w_idx += block.num_conv
            if running and r == 4:
                x = block.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(torch.float32)
            for i, conv in enumerate(names):
                name = f"b{r}.{conv}"
                resnet = conv == "conv1" and r > 4 and self.architecture == "resnet"
                if running:
                    layer: SynthesisLayer = getattr(block, conv)
                    if conv == "conv0":
                        block_in = x
                    if name == stop_before:
                        return {"img": img, "block_in": block_in}
                    if record is not None:
                        record[name] = {"img": img, "block_in": block_in}
                    dtype = torch.float16 if self.half and layer.use_fp16 else torch.float32
                    x = layer(x.to(dtype), block_ws[:, i], noise(name, x.shape[0], r), math.sqrt(0.5) if resnet else 1)
                elif name == start:
                    running = True  # x is this layer's (hooked) output; what follows it still runs
                else:
                    continue
                if resnet:  # the shortcut joins after the layer's output (and its hooks)
                    x = block.skip(block_in.to(x.dtype), math.sqrt(0.5)) + x
            if not running:
                continue
            if img is not None:
                img = upsample2d(img, block.resample_filter)
            if block.has_torgb:
                y = block.torgb(x, block_ws[:, block.num_conv]).to(torch.float32)
                img = y if img is None else img + y
        if not running:
            raise ValueError(f"no synthesis layer named '{start}'")
        return img


class StyleGAN2(nn.Module):
    """``mapping`` + ``synthesis``: the module the adapter hooks (``mapping``, ``synthesis.b8.conv0``, ...)."""

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__()
        self.config = config
        self.synthesis = SynthesisNetwork(config.w_dim, config.img_resolution, config.img_channels,
                                          **config.synthesis)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, **config.mapping)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def synthesis_layers(self) -> list[tuple[str, int, int]]:
        """(name, channels, resolution) of each hookable synthesis layer, in forward order."""
        return [(f"synthesis.{n}", self.synthesis.layer(n).out_channels, self.synthesis.layer(n).resolution)
                for n in self.synthesis.layer_names]

    def noise_layers(self) -> list[tuple[str, int]]:
        """(name, resolution) of each layer that takes noise."""
        return [(n, self.synthesis.layer(n).resolution) for n in self.synthesis.layer_names
                if self.synthesis.layer(n).use_noise]
