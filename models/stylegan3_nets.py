"""Our StyleGAN3 generator (configs T and R), written from "Alias-Free Generative Adversarial Networks".

Fourier-feature input, then layers that modulate-convolve and apply a *filtered* leaky ReLU (upsample,
bias + lrelu, low-pass downsample) computed in plain PyTorch from the filters stored in the checkpoint::

    net = StyleGAN3(StyleGANConfig("stylegan3", 32, 0, 32, 32, 3, {"num_layers": 2}, {"channel_base": 512}))
    img = net.synthesis(net.broadcast(net.mapping(z)))     # (B, 3, 32, 32)
    net.synthesis.layer_names                              # ['input', 'L0_36_16', ..., 'L14_32_3']

The chain has no skip paths, so re-rendering from a layer needs only its output.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2_nets import MappingNetwork, StyleGANConfig
from .stylegan_ops import FullyConnected, bias_act, lowpass_filter, upfirdn2d


def layer_specs(w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 32768,
                channel_max: int = 512, num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
                first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                num_fp16_res: int = 4) -> dict[str, Any]:
    """Per-layer cutoffs, stopbands, sampling rates, sizes and widths of the paper's geometric progression."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return {"cutoffs": cutoffs, "rates": rates, "half_widths": half_widths, "sizes": sizes.astype(int),
            "channels": channels.astype(int), "num_layers": num_layers, "num_critical": num_critical,
            "fp16": rates * 2 ** num_fp16_res > img_resolution}


class SynthesisInput(nn.Module):
    """Fourier features at frequencies inside a disc, rotated and translated by an affine map of w."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.channels, self.size, self.sampling_rate, self.bandwidth = channels, int(size), sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnected(w_dim, 4, bias_init=[1, 0, 0, 0])
        nn.init.zeros_(self.affine.weight)
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        batch = w.shape[0]
        t = self.affine(w)  # (cos, sin, tx, ty) up to scale
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rot = torch.eye(3, device=w.device).repeat(batch, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        shift = torch.eye(3, device=w.device).repeat(batch, 1, 1)
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        transform = rot @ shift @ self.transform.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transform[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transform[:, :2, :2]  # (B, C, 2)
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Pixel centres of a size x size grid spanning [-0.5, 0.5] * size / sampling_rate, in (x, y) order.
        coords = (torch.arange(self.size, device=w.device, dtype=torch.float32) * 2 + 1) / self.size - 1
        coords = coords * (0.5 * self.size / self.sampling_rate)
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1)  # (H, W, 2)
        x = torch.einsum("hwk,bck->bhwc", grid, freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2).contiguous()


class SynthesisLayer3(nn.Module):
    """Modulated conv, then bias + leaky ReLU at a higher sampling rate between low-pass filters."""

    def __init__(self, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool, in_channels: int,
                 out_channels: int, in_size: int, out_size: int, in_sampling_rate: float, out_sampling_rate: float,
                 in_cutoff: float, out_cutoff: float, in_half_width: float, out_half_width: float, *,
                 conv_kernel: int = 3, filter_size: int = 6, lrelu_upsampling: int = 2,
                 use_radial_filters: bool = False, conv_clamp: float | None = 256) -> None:
        super().__init__()
        self.is_torgb, self.use_fp16 = is_torgb, bool(use_fp16)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size, self.out_size = int(in_size), int(out_size)
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        tmp_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.up_factor = int(np.rint(tmp_rate / in_sampling_rate))
        self.down_factor = int(np.rint(tmp_rate / out_sampling_rate))
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        radial = use_radial_filters and not is_critically_sampled
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", lowpass_filter(up_taps, in_cutoff, in_half_width * 2, tmp_rate))
        self.register_buffer("down_filter", lowpass_filter(down_taps, out_cutoff, out_half_width * 2, tmp_rate,
                                                           radial=radial))
        # Pad so that output samples sit where the symmetric interpretation of the paper puts them.
        total = (self.out_size - 1) * self.down_factor + 1
        total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        total += up_taps + down_taps - 2
        lo = (total + self.up_factor) // 2
        self.padding = (lo, total - lo, lo, total - lo)

    def forward(self, x: torch.Tensor, w: torch.Tensor, half: bool = False) -> torch.Tensor:
        dtype = torch.float16 if half and self.use_fp16 else torch.float32
        styles = self.affine(w)
        weight = self.weight.to(torch.float32)
        dcoefs = None
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel ** 2)
        else:  # pre-normalise rows (scale r) and each sample's styles, then demodulate; r is folded into dcoefs
            squares = weight.square().sum(dim=[2, 3])  # (O, I)
            r = (squares.sum(dim=1) / (self.in_channels * self.conv_kernel ** 2)).rsqrt()  # (O,)
            styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
            dcoefs = r * (r.square() * (styles.square() @ squares.t()) + 1e-8).rsqrt()  # (B, O)
        styles = styles * self.magnitude_ema.rsqrt()  # the input gain, applied after demodulation
        if dcoefs is not None and dtype == torch.float16:  # half precision convolves the normalised rows
            weight, dcoefs = weight * r.reshape(-1, 1, 1, 1), dcoefs / r
        x = x.to(dtype) * styles.to(dtype)[:, :, None, None]
        x = F.conv2d(x, weight.to(dtype), padding=self.conv_kernel - 1)
        if dcoefs is not None:
            x = x * dcoefs.to(dtype)[:, :, None, None]
        gain, slope = (1.0, 1.0) if self.is_torgb else (math.sqrt(2), 0.2)
        x = bias_act(x, self.bias)
        x = upfirdn2d(x, self.up_filter, up=self.up_factor, padding=self.padding, gain=self.up_factor ** 2)
        x = bias_act(x, None, "lrelu" if slope != 1 else "linear", gain=gain, clamp=self.conv_clamp, alpha=slope)
        return upfirdn2d(x, self.down_filter, down=self.down_factor)


class SynthesisNetwork3(nn.Module):
    """``input`` then ``L0_<size>_<channels>`` ... with the last one the toRGB layer."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
                 first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                 output_scale: float = 0.25, num_fp16_res: int = 4, **layer_kwargs: Any) -> None:
        super().__init__()
        self.img_resolution, self.img_channels, self.output_scale = img_resolution, img_channels, output_scale
        self.num_ws = num_layers + 2
        s = layer_specs(w_dim, img_resolution, img_channels, channel_base=channel_base, channel_max=channel_max,
                        num_layers=num_layers, num_critical=num_critical, first_cutoff=first_cutoff,
                        first_stopband=first_stopband, last_stopband_rel=last_stopband_rel,
                        margin_size=margin_size, num_fp16_res=num_fp16_res)
        self.input = SynthesisInput(w_dim, int(s["channels"][0]), int(s["sizes"][0]), float(s["rates"][0]),
                                    float(s["cutoffs"][0]))
        self.layer_names: list[str] = []
        for i in range(num_layers + 1):
            prev = max(i - 1, 0)
            layer = SynthesisLayer3(
                w_dim, i == num_layers, i >= num_layers - num_critical, bool(s["fp16"][i]),
                int(s["channels"][prev]), int(s["channels"][i]), int(s["sizes"][prev]), int(s["sizes"][i]),
                int(s["rates"][prev]), int(s["rates"][i]), float(s["cutoffs"][prev]), float(s["cutoffs"][i]),
                float(s["half_widths"][prev]), float(s["half_widths"][i]), **layer_kwargs)
            name = f"L{i}_{layer.out_size}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)
        self.half = False

    def forward(self, ws: torch.Tensor, noise: Any = None, *, start: str | None = None,
                x: torch.Tensor | None = None, carry: dict | None = None, stop_before: str | None = None,
                record: dict | None = None) -> torch.Tensor | dict:
        """The image from ``ws`` (B, num_ws, w_dim); ``start``/``x`` resume after a layer (StyleGAN3 has no noise)."""
        ws = ws.to(torch.float32)
        names = ["input"] + self.layer_names
        begin = 0 if start is None else names.index(start) + 1
        if start is None:
            if stop_before == "input":
                return {}
            x = self.input(ws[:, 0])
            begin = 1
        for i in range(begin, len(names)):
            if names[i] == stop_before:
                return {}
            if record is not None:
                record[names[i]] = {}
            x = getattr(self, names[i])(x, ws[:, i], self.half)
        x = x.to(torch.float32)
        return x * self.output_scale if self.output_scale != 1 else x


class StyleGAN3(nn.Module):
    """``mapping`` + ``synthesis`` for StyleGAN3; same interface as :class:`models.stylegan2_nets.StyleGAN2`."""

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__()
        self.config = config
        self.synthesis = SynthesisNetwork3(config.w_dim, config.img_resolution, config.img_channels,
                                           **config.synthesis)
        self.num_ws = self.synthesis.num_ws
        mapping = {"num_layers": 2, **config.mapping}
        self.mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, **mapping)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def synthesis_layers(self) -> list[tuple[str, int, int]]:
        """(name, channels, size) of each hookable layer; the final toRGB layer is left out."""
        syn = self.synthesis
        return [("synthesis.input", syn.input.channels, syn.input.size)] + [
            (f"synthesis.{n}", getattr(syn, n).out_channels, getattr(syn, n).out_size) for n in syn.layer_names[:-1]]

    def noise_layers(self) -> list[tuple[str, int]]:
        return []
