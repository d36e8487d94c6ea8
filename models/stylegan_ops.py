"""Plain-PyTorch building blocks shared by our StyleGAN2 and StyleGAN3 networks (no custom CUDA ops).

    y = bias_act(x, bias, "lrelu", gain=2 ** 0.5, clamp=256)     # bias, activation, gain, clamp
    y = upfirdn2d(x, f, up=2, padding=(1, 1, 1, 1), gain=4)       # zero-insert, pad, FIR filter, decimate
    y = modulated_conv2d(x, weight, styles, demodulate=True)      # StyleGAN2's weight (de)modulation
    f = lowpass_filter(numtaps=12, cutoff=2.0, width=4.0, fs=32)  # Kaiser-windowed sinc, like StyleGAN3's design

Tensors keep NVIDIA's parameter layout (``weight`` (O, I, k, k), ``bias`` (O,)) so checkpoints load by name.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The elementwise activations NVIDIA's ``bias_act`` offers (``activation_funcs``), each with its ``def_gain``.
ACTIVATIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "linear": lambda x, alpha: x,
    "relu": lambda x, alpha: F.relu(x),
    "lrelu": lambda x, alpha: F.leaky_relu(x, alpha),
    "tanh": lambda x, alpha: torch.tanh(x),
    "sigmoid": lambda x, alpha: torch.sigmoid(x),
    "elu": lambda x, alpha: F.elu(x),
    "selu": lambda x, alpha: F.selu(x),
    "softplus": lambda x, alpha: F.softplus(x),
    "swish": lambda x, alpha: torch.sigmoid(x) * x,
}
ACTIVATION_GAIN = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "tanh": 1.0, "sigmoid": 1.0,
                   "elu": 1.0, "selu": 1.0, "softplus": 1.0, "swish": math.sqrt(2)}


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, alpha: float = 0.2) -> torch.Tensor:
    """``clamp(act(x + b) * gain)`` with ``b`` broadcast over dim 1; ``gain`` defaults to the activation's."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.dim() - 2))
    if act not in ACTIVATIONS:
        raise ValueError(f"activation '{act}' is not implemented")
    if act != "linear":
        x = ACTIVATIONS[act](x, alpha)
    gain = ACTIVATION_GAIN[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def _pads(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, (x, y) or (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(int(p) for p in padding)  # type: ignore[return-value]


def _fir_axis(x: torch.Tensor, f: torch.Tensor, up: int, down: int, p0: int, p1: int, axis: int) -> torch.Tensor:
    """One axis of upfirdn2d with a 1-D filter ``f`` (already flipped and scaled)."""
    b, c, h, w = x.shape
    if up > 1:  # zero insertion along the axis
        if axis == 3:
            x = F.pad(x.reshape(b, c, h, w, 1), [0, up - 1]).reshape(b, c, h, w * up)
        else:
            x = F.pad(x.reshape(b, c, h, 1, w), [0, 0, 0, up - 1]).reshape(b, c, h * up, w)
    pad = [max(p0, 0), max(p1, 0), 0, 0] if axis == 3 else [0, 0, max(p0, 0), max(p1, 0)]
    x = F.pad(x, pad)
    if p0 < 0 or p1 < 0:  # negative padding crops
        n = x.shape[axis]
        x = x.narrow(axis, max(-p0, 0), n - max(-p0, 0) - max(-p1, 0))
    k = f.numel()
    weight = f.to(x.dtype).reshape(1, 1, 1, k) if axis == 3 else f.to(x.dtype).reshape(1, 1, k, 1)
    stride = (1, down) if axis == 3 else (down, 1)
    return F.conv2d(x, weight.expand(c, 1, *weight.shape[2:]), stride=stride, groups=c)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: int | Sequence[int] = 0, gain: float = 1.0, flip_filter: bool = False) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the FIR filter ``f`` and keep every ``down``-th pixel.

    ``f``: (taps,) separable or (kh, kw) 2-D; ``None`` is the identity. ``gain`` scales the output.
    Matches the semantics of NVIDIA's reference ``upfirdn2d`` (convolution, not correlation).
    """
    x0, x1, y0, y1 = _pads(padding)
    if f is None:
        f = torch.ones(1, dtype=torch.float32, device=x.device)
    f = f.to(device=x.device, dtype=torch.float32)
    if not flip_filter:
        f = f.flip(list(range(f.dim())))
    if f.dim() == 1:
        f = f * math.sqrt(gain)  # applied once per axis
        x = _fir_axis(x, f, up, down, x0, x1, axis=3)
        return _fir_axis(x, f, up, down, y0, y1, axis=2)
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    weight = (f * gain).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample keeping the image centred (the skip path of StyleGAN2's toRGB outputs)."""
    taps = f.shape[-1]
    p0, p1 = (taps + up - 1) // 2, (taps - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None) -> torch.Tensor:
    """Convolve each sample with ``weight`` modulated by its ``styles`` (B, I), demodulated per output channel.

    Scales the activations before and after one shared convolution (mathematically the per-sample-weight
    grouped convolution); ``up=2`` is a transposed convolution followed by the low-pass ``resample_filter``.
    """
    batch, cin = styles.shape
    out_channels, _, kh, kw = weight.shape
    weight = weight.to(torch.float32)
    styles = styles.to(torch.float32)
    if x.dtype == torch.float16 and demodulate:  # keep fp16 activations from overflowing; demodulation undoes it
        weight = weight * (1 / math.sqrt(cin * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)
    dcoefs = None
    if demodulate:  # sum over (i, k) of (w[o,i,k] s[i])^2 = s^2 @ (sum_k w^2): no per-sample weight copy
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (B, O)
    x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
    w = weight.to(x.dtype)
    if up > 1:
        taps = resample_filter.shape[-1]
        pad0 = padding + (taps + up - 1) // 2 - (kw - 1)
        pad1 = padding + (taps - up) // 2 - (kw - up)
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=up)
        x = upfirdn2d(x, resample_filter, padding=(pad0, pad1, pad0, pad1), gain=up * up)
    else:
        x = F.conv2d(x, w, padding=padding)
    if dcoefs is not None:
        x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
    return x


class FullyConnected(nn.Module):
    """A dense layer with equalized learning rate: stored ``weight``/``bias`` times runtime gains."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float | Sequence[float] = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.lr_multiplier = float(lr_multiplier)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        init = torch.as_tensor(np.broadcast_to(np.asarray(bias_init, np.float32), [out_features]).copy())
        self.bias = nn.Parameter(init / lr_multiplier) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) @ (self.weight * self.weight_gain).t()
        b = self.bias * self.bias_gain if self.bias is not None else None
        return bias_act(x, b, self.activation)


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass FIR filter, separable (1-D) or radially symmetric (2-D jinc); None if 1 tap.

    The window's beta follows Kaiser's empirical formulas for the attenuation the transition ``width`` allows,
    and the taps are normalised to unit DC gain (what ``scipy.signal.firwin`` does for a low-pass).
    """
    if numtaps <= 1:
        return None
    nyq = fs / 2
    atten = 2.285 * (numtaps - 1) * math.pi * (width / nyq) + 7.95
    if atten > 50:
        beta = 0.1102 * (atten - 8.7)
    elif atten > 21:
        beta = 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    else:
        beta = 0.0
    window = np.kaiser(numtaps, beta)
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        c = cutoff / nyq
        f = c * np.sinc(c * m) * window
        return torch.as_tensor(f / f.sum(), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = torch.as_tensor(np.hypot(*np.meshgrid(x, x)), dtype=torch.float64)
    arg = 2 * cutoff * math.pi * r
    jinc = torch.where(r > 0, torch.special.bessel_j1(arg) / (math.pi * r.clamp_min(1e-30)),
                       torch.full_like(r, cutoff))
    f = jinc.numpy() * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """A normalised resampling filter as NVIDIA stores it: 2-D outer product for short filters, 1-D from 8 taps."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    if f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()
