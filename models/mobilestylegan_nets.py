"""MobileStyleGAN (Belousov 2021, arXiv:2104.04767) in PyTorch: our implementation, loaded from the package's IR.

    net = MobileStyleGAN(MobileConfig(style_dim=512, widths=(512, 512, 512, 512, 512, 256, 128, 64)))
    style = net.mapping(z, psi=0.5)                  # (B, 512): pixel norm, 8 dense layers, truncation
    img = net.synthesis(style)                       # (B, 3, 1024, 1024) in about [-1, 1]
    img = net.synthesis(style, start="b64.conv1", x=act)   # partial: only the stages after b64.conv1 run

Synthesis: a learned 4x4 constant, a modulated 3x3 conv (``b4.conv1``), then one block per resolution 8..512:
``up`` (style-modulated channels, then an inverse Haar wavelet transform: C channels at h -> C/4 at 2h),
``conv1`` and ``conv2`` (modulated depthwise-separable convs). Each modulated conv multiplies its input by an
affine map of the style, convolves (demodulation is the fixed ``style_inv`` of MobileStyleGAN, so it is folded
into the weights), adds its constant noise and bias, and applies LeakyReLU(0.2). The last block's output goes
through a modulated 1x1 conv to 12 wavelet channels (low RGB + 3 high bands per colour) and a last inverse
transform to 1024 px RGB. One style vector drives every layer (no w+).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Haar (db1) synthesis filters, the only wavelet MobileStyleGAN uses.
HAAR = 1 / math.sqrt(2)
NOISE_MODES = ("const", "none")


@dataclass(frozen=True)
class MobileConfig:
    """Sizes of a MobileStyleGAN: widths[0] at 4x4, then one width per block (8, 16, ... px)."""

    style_dim: int = 512
    widths: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128, 64)
    mapping_layers: int = 8
    slope: float = 0.2  # LeakyReLU slope, everywhere
    mapping_gain: float = math.sqrt(2)  # after each mapping activation (StyleGAN's fused_lrelu)
    eps: float = 1e-8  # pixel norm

    @property
    def hidden_resolution(self) -> int:
        return 4 << (len(self.widths) - 1)

    @property
    def img_resolution(self) -> int:
        return 2 * self.hidden_resolution

    def to_json(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}


def haar_synthesis(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse Haar transform: (B, 4C, h, w) as [low C | high 3C, interleaved per channel] -> (B, C, 2h, 2w).

    The high part is ``view(B, C, 3, h, w)`` as MobileStyleGAN splits it (pytorch_wavelets' LH, HL, HH order).
    One grouped transposed conv does all four sub-bands at once (stride 2, 2x2 kernels: no overlap).
    """
    b, _, h, w = x.shape
    low = x[:, :channels, None]
    high = x[:, channels:].reshape(b, channels, 3, h, w)
    bands = torch.cat([low, high], dim=2).reshape(b, 4 * channels, h, w)
    kernel = _haar_kernels(x.dtype, x.device).repeat(channels, 1, 1, 1)
    return F.conv_transpose2d(bands, kernel, stride=2, groups=channels)


_KERNELS: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _haar_kernels(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (dtype, device)
    if key not in _KERNELS:
        g0, g1 = torch.tensor([HAAR, HAAR]), torch.tensor([HAAR, -HAAR])
        # rows x columns: LL = g0 g0, LH = g1 (rows) g0 (cols), HL = g0 g1, HH = g1 g1
        k = torch.stack([torch.outer(g0, g0), torch.outer(g1, g0), torch.outer(g0, g1), torch.outer(g1, g1)])
        _KERNELS[key] = k[:, None].to(device=device, dtype=dtype)  # (4, 1, 2, 2)
    return _KERNELS[key]


def modulate(x: torch.Tensor, style_scale: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x * style_scale[:, :, None, None]`` written in one pass in the layout the next op runs fastest on.

    Depthwise and 1x1 convs run about twice as fast channels-last on the CPU; the wavelet step on NCHW.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    scale = style_scale[:, :, None, None]
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        return (x * scale).contiguous(memory_format=fmt)  # out= has no autograd (gradient ranking needs it)
    return torch.mul(x, scale, out=torch.empty_like(x, memory_format=fmt))


class PixelNorm(nn.Module):
    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class Mapping(nn.Module):
    """z -> style: pixel norm, dense layers (equalized-lr scale already in the weights), truncation toward the mean.

    Its output (the truncated style) is the ``mapping`` layer users see.
    """

    def __init__(self, cfg: MobileConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.norm = PixelNorm(cfg.eps)
        self.fc = nn.ModuleList(nn.Linear(cfg.style_dim, cfg.style_dim) for _ in range(cfg.mapping_layers))
        self.register_buffer("style_mean", torch.zeros(cfg.style_dim))

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        """The untruncated style."""
        x = self.norm(z)
        for fc in self.fc:
            x = F.leaky_relu(fc(x), self.cfg.slope) * self.cfg.mapping_gain
        return x

    def forward(self, z: torch.Tensor, psi: torch.Tensor | float = 1.0) -> torch.Tensor:
        psi = torch.as_tensor(psi, dtype=z.dtype, device=z.device).reshape(-1, 1)
        return torch.lerp(self.style_mean.to(z.dtype), self.raw(z), psi)


class StyledConv(nn.Module):
    """Modulate, [depthwise k x k], conv (demodulation folded), + noise + bias, LeakyReLU: one layer of units."""

    def __init__(self, cin: int, cout: int, style_dim: int, kernel: int, resolution: int, *, depthwise: bool,
                 slope: float = 0.2) -> None:
        super().__init__()
        self.modulation = nn.Linear(style_dim, cin)  # includes 1/sqrt(fan_in) of the modulated conv
        self.weight_dw = nn.Parameter(torch.zeros(cin, 1, kernel, kernel)) if depthwise else None
        self.weight = nn.Parameter(torch.zeros(cout, cin, 1 if depthwise else kernel, 1 if depthwise else kernel))
        self.register_buffer("noise", torch.zeros(1, 1, resolution, resolution))  # noise x its learned weight
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))
        self.padding, self.slope = kernel // 2, slope
        self.use_noise = True

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = modulate(x, self.modulation(style), True)
        if self.weight_dw is not None:
            x = F.conv2d(x, self.weight_dw, padding=self.padding, groups=x.shape[1])
            x = F.conv2d(x, self.weight)
        else:
            x = F.conv2d(x, self.weight, padding=self.padding)
        if self.use_noise:
            x = x.add_(self.noise)  # in place: x is this layer's own fresh tensor
        return F.leaky_relu_(x.add_(self.bias), self.slope)


class WaveletUp(nn.Module):
    """Style-modulated channels, then the inverse Haar transform: (B, C, h, w) -> (B, C/4, 2h, 2w)."""

    def __init__(self, cin: int, style_dim: int) -> None:
        super().__init__()
        self.modulation = nn.Linear(style_dim, cin)
        self.channels = cin // 4

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return haar_synthesis(modulate(x, self.modulation(style), False), self.channels)


class ToWavelets(nn.Module):
    """Modulated 1x1 conv (no demodulation) + bias -> 12 channels: RGB low band and 3 high bands per colour."""

    def __init__(self, cin: int, style_dim: int) -> None:
        super().__init__()
        self.modulation = nn.Linear(style_dim, cin)
        self.weight = nn.Parameter(torch.zeros(12, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, 12, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return F.conv2d(modulate(x, self.modulation(style), True), self.weight).add_(self.bias)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, style_dim: int, resolution: int, slope: float) -> None:
        super().__init__()
        self.up = WaveletUp(cin, style_dim)
        self.conv1 = StyledConv(cin // 4, cout, style_dim, 3, resolution, depthwise=True, slope=slope)
        self.conv2 = StyledConv(cout, cout, style_dim, 3, resolution, depthwise=True, slope=slope)


class Synthesis(nn.Module):
    """style -> image through named stages ``b4.conv1``, ``b8.up``, ``b8.conv1``, ``b8.conv2``, ... ``b512.conv2``."""

    def __init__(self, cfg: MobileConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = cfg.widths[0]
        self.input = nn.Parameter(torch.zeros(1, c0, 4, 4))
        self.b4 = nn.Module()
        self.b4.conv1 = StyledConv(c0, c0, cfg.style_dim, 3, 4, depthwise=False, slope=cfg.slope)
        cin = c0
        for i, cout in enumerate(cfg.widths[1:]):
            setattr(self, f"b{8 << i}", Block(cin, cout, cfg.style_dim, 8 << i, cfg.slope))
            cin = cout
        self.to_img = ToWavelets(cin, cfg.style_dim)
        self.stages: list[tuple[str, int, int]] = [("b4.conv1", c0, 4)]  # (name, units, resolution)
        for i, cout in enumerate(cfg.widths[1:]):
            res, cin = 8 << i, (cfg.widths[i])
            self.stages += [(f"b{res}.up", cin // 4, res), (f"b{res}.conv1", cout, res), (f"b{res}.conv2", cout, res)]

    def stage(self, name: str) -> nn.Module:
        block, part = name.split(".")
        return getattr(getattr(self, block), part)

    def set_noise(self, on: bool) -> None:
        for module in self.modules():
            if isinstance(module, StyledConv):
                module.use_noise = on

    def forward(self, style: torch.Tensor, *, start: str | None = None, x: torch.Tensor | None = None
                ) -> torch.Tensor:
        """The (B, 3, H, W) image; with ``start`` and its activation ``x`` only the later stages run."""
        names = [name for name, _, _ in self.stages]
        dtype = self.input.dtype  # float16 when the adapter halved the synthesis (GPUs)
        style = style.to(dtype)
        if start is None:
            first = 0
            x = self.input.to(dtype).expand(style.shape[0], -1, -1, -1)
        else:
            first = names.index(start) + 1
            x = x.to(dtype)
        for name in names[first:]:
            x = self.stage(name)(x, style)
        wavelets = self.to_img(x, style)
        return haar_synthesis(wavelets.float(), 3)


class MobileStyleGAN(nn.Module):
    """Mapping and synthesis of a MobileStyleGAN."""

    def __init__(self, cfg: MobileConfig) -> None:
        super().__init__()
        self.config = cfg
        self.mapping = Mapping(cfg)
        self.synthesis = Synthesis(cfg)

    def synthesis_layers(self) -> Sequence[tuple[str, int, int]]:
        """(dotted name under ``synthesis``, units, resolution) of each stage, in forward order."""
        return self.synthesis.stages

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        return self.synthesis(self.mapping(z, psi))
