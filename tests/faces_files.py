"""Tiny face generators with seeded random weights, written in the real packages' file formats.

``gan-face-generate``: ``weights.tar`` is a torch.save zip holding ``{"netG_state_dict": ...}`` in the DCGAN
tutorial's ``main.N`` layout. ``random-face``: ``MappingNetwork.xml/.bin`` and ``SynthesisNetwork.xml/.bin``,
OpenVINO IR v10 with the op types and structure of the package's files (ONNX-exported: MatMul + Add + a dynamic
Reshape per style affine, constant noise Adds, PReLU, depthwise GroupConvolution, and the inverse Haar transform
as six GroupConvolutionBackpropData per upsampling).

    net = tiny_dcgan(); write_weights_tar(tmp / "weights.tar", net)
    msg = tiny_mobilestylegan(); write_mobilestylegan_ir(tmp / "msg", msg)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from models.dcgan_faces import DCGAN
from models.mobilestylegan_nets import HAAR, MobileConfig, MobileStyleGAN, StyledConv
from models.openvino_ir import IRWriter

I64 = "I64"


# -- DCGAN -------------------------------------------------------------------------------------------------------
def tiny_dcgan(seed: int = 0, nz: int = 8, widths: tuple[int, ...] = (16, 8, 8)) -> DCGAN:
    """A 32 px DCGAN with random weights, BatchNorm statistics measured on random z (as training leaves them)."""
    torch.manual_seed(seed)
    net = DCGAN(nz, widths)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.momentum = None  # a cumulative average over the calibration pass
            elif isinstance(module, torch.nn.ConvTranspose2d):
                module.weight.normal_(0, 1 / math.sqrt(module.weight.shape[0]))
        net.train()(torch.randn(64, nz))
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = 0.1
    return net.eval()


def write_weights_tar(path: Path, net: DCGAN) -> Path:
    """As gan-face-generate ships it: ``torch.save({"netG_state_dict": state}, "weights.tar")``."""
    torch.save({"netG_state_dict": net.to_state_dict()}, path)
    return path


# -- MobileStyleGAN -----------------------------------------------------------------------------------------------
def tiny_mobilestylegan(seed: int = 0, style_dim: int = 16, widths: tuple[int, ...] = (16, 16, 8),
                        mapping_layers: int = 2) -> MobileStyleGAN:
    """A 32 px MobileStyleGAN (hidden 16 px) with random weights, noise and biases."""
    torch.manual_seed(seed)
    net = MobileStyleGAN(MobileConfig(style_dim=style_dim, widths=widths, mapping_layers=mapping_layers))
    with torch.no_grad():
        for name, tensor in net.named_parameters():
            if name.endswith("modulation.bias"):
                tensor.uniform_(0.5, 1.5)
            elif "modulation" in name:
                tensor.normal_(0, 0.3 / math.sqrt(style_dim))
            elif name.startswith("mapping"):
                tensor.normal_(0, 1 / math.sqrt(style_dim)) if tensor.dim() == 2 else tensor.normal_(0, 0.1)
            elif tensor.dim() == 4 and tensor.shape[1] == 1:  # depthwise 3x3
                tensor.normal_(0, 1 / 3)
            elif tensor.dim() == 4 and tensor.shape[-1] > 1 and tensor.shape[0] > 1 and name != "synthesis.input":
                tensor.normal_(0, 1 / math.sqrt(tensor.shape[1] * 9))
            elif name.endswith("bias"):
                tensor.normal_(0, 0.1)
            elif tensor.dim() == 4:
                tensor.normal_(0, 1 / math.sqrt(max(tensor.shape[1], 1)))
        for module in net.modules():
            if isinstance(module, StyledConv):
                module.noise.normal_(0, 0.05)
    return net.eval()


class _Writer(IRWriter):
    """IRWriter plus the sub-graphs the ONNX exporter writes around every op of MobileStyleGAN."""

    def c(self, array, dtype=np.float32) -> int:
        return self.const(np.asarray(array, dtype))

    def i64(self, *values: int) -> int:
        return self.const(np.array(values, np.int64))

    def dim_of(self, source, axis: int) -> int:
        """Unsqueeze(Gather(ShapeOf(source), axis)): one dimension of a tensor, as a (1,) tensor."""
        shape = self.op("ShapeOf", [source], (len(self.dims(source)),), {"output_type": "i64"}, precision=I64)
        item = self.op("Gather", [shape, self.c(axis, np.int64), self.c(0, np.int64)], (), {"batch_dims": "0"},
                       precision=I64)
        return self.op("Unsqueeze", [item, self.i64(0)], (1,), precision=I64)

    def concat(self, parts: list[int]) -> int:
        """A shape tensor from (1,) pieces (``dim_of`` results and ``i64`` constants)."""
        return self.op("Concat", parts, (len(parts),), {"axis": "0"}, precision=I64)

    def binary(self, kind: str, a, b, out: tuple[int, ...], name: str = "", names: str | None = None) -> int:
        return self.op(kind, [a, b], out, {"auto_broadcast": "numpy"}, name, names=names)


def _affine(ir: _Writer, style: int, linear: torch.nn.Linear, scale: float | None) -> int:
    """MatMul + Add, reshaped to (B, C, 1, 1) with the batch read from the style, times the conv's 1/sqrt(fan_in)."""
    divide = scale if scale is not None else 1.0
    weight = linear.weight.detach().numpy() / divide
    bias = linear.bias.detach().numpy()[None] / divide
    c = weight.shape[0]
    mm = ir.op("MatMul", [style, ir.c(weight)], (1, c), {"transpose_a": "false", "transpose_b": "true"})
    add = ir.binary("Add", mm, ir.c(bias), (1, c))
    target = ir.concat([ir.dim_of(style, 0), ir.i64(-1), ir.i64(1), ir.i64(1)])
    out = ir.op("Reshape", [add, target], (1, c, 1, 1), {"special_zero": "true"})
    if scale is None:
        return out
    return ir.binary("Multiply", out, ir.c(np.full((1, 1, 1, 1), scale)), (1, c, 1, 1))


def _conv_attrs(pad: int) -> dict[str, str]:
    return {"strides": "1, 1", "dilations": "1, 1", "pads_begin": f"{pad}, {pad}", "pads_end": f"{pad}, {pad}",
            "auto_pad": "explicit"}


def _styled_conv(ir: _Writer, style: int, x: int, module: StyledConv) -> int:
    cin = module.modulation.weight.shape[0]
    cout = module.weight.shape[0]
    k = module.weight_dw.shape[-1] if module.weight_dw is not None else module.weight.shape[-1]
    res = module.noise.shape[-1]
    mod = _affine(ir, style, module.modulation, 1 / math.sqrt(cin * k * k))
    x = ir.binary("Multiply", mod, x, (1, cin, res, res))
    if module.weight_dw is not None:
        dw = ir.c(module.weight_dw.detach().numpy()[:, :, None])  # (C, 1, 1, k, k): groups, out, in, k, k
        x = ir.op("GroupConvolution", [x, dw], (1, cin, res, res), _conv_attrs(k // 2))
        x = ir.op("Convolution", [x, ir.c(module.weight.detach().numpy())], (1, cout, res, res), _conv_attrs(0))
    else:
        x = ir.op("Convolution", [x, ir.c(module.weight.detach().numpy())], (1, cout, res, res), _conv_attrs(k // 2))
    x = ir.binary("Add", x, ir.c(module.noise.detach().numpy()), (1, cout, res, res))
    x = ir.binary("Add", x, ir.c(module.bias.detach().numpy()), (1, cout, res, res))
    return ir.op("PReLU", [x, ir.c([module.slope])], (1, cout, res, res))


def _haar(ir: _Writer, x: int, channels: int, name: str = "") -> int:
    """VariadicSplit low/high, Reshape high (B, C, 3, h, w), split the bands, six transposed convs, as exported."""
    _, c4, h, w = ir.dims(x)
    split = ir.op("VariadicSplit", [x, ir.c(1, np.int64), ir.i64(channels, c4 - channels)],
                  [(1, channels, h, w), (1, c4 - channels, h, w)])
    target = ir.concat([ir.dim_of(x, 0), ir.i64(channels), ir.i64(3), ir.dim_of(x, 2), ir.dim_of(x, 3)])
    high = ir.op("Reshape", [(split, 1), target], (1, channels, 3, h, w), {"special_zero": "true"})
    bands = ir.op("VariadicSplit", [high, ir.c(2, np.int64), ir.i64(1, 1, 1)], [(1, channels, 1, h, w)] * 3)
    parts = [ir.op("Squeeze", [(bands, i), ir.i64(2)], (1, channels, h, w)) for i in range(3)]
    g0, g1 = np.array([HAAR, HAAR], np.float32), np.array([HAAR, -HAAR], np.float32)

    def up(source, kernel: np.ndarray, rows: bool, out: tuple[int, ...]) -> int:
        shape = (channels, 1, 1, 2, 1) if rows else (channels, 1, 1, 1, 2)
        weight = ir.c(np.broadcast_to(kernel.reshape(1, 1, 1, *shape[3:]), shape).copy())
        attrs = {"strides": "2, 1" if rows else "1, 2", "pads_begin": "0, 0", "pads_end": "0, 0",
                 "dilations": "1, 1", "auto_pad": "explicit", "output_padding": "0, 0"}
        return ir.op("GroupConvolutionBackpropData", [source, weight], out, attrs)

    tall = (1, channels, 2 * h, w)
    low = ir.binary("Add", up((split, 0), g0, True, tall), up(parts[0], g1, True, tall), tall)
    hi = ir.binary("Add", up(parts[1], g0, True, tall), up(parts[2], g1, True, tall), tall)
    full = (1, channels, 2 * h, 2 * w)
    return ir.binary("Add", up(low, g0, False, full), up(hi, g1, False, full), full, name, names=name or None)


def write_mobilestylegan_ir(folder: Path, net: MobileStyleGAN) -> Path:
    """``MappingNetwork.xml/.bin`` and ``SynthesisNetwork.xml/.bin`` in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = net.config
    d = cfg.style_dim
    ir = _Writer("MappingNetwork")
    z = ir.parameter("var", (1, d))
    sq = ir.binary("Power", z, ir.c([[2.0]]), (1, d), "Pow_0")
    mean = ir.op("ReduceMean", [sq, ir.i64(1)], (1, 1), {"keep_dims": "true"})
    eps = ir.binary("Add", mean, ir.c([[cfg.eps]]), (1, 1))
    root = ir.binary("Power", eps, ir.c([[0.5]]), (1, 1))
    inv = ir.binary("Power", root, ir.c([[-1.0]]), (1, 1))
    inv = ir.binary("Multiply", ir.c([[1.0]]), inv, (1, 1))
    x = ir.binary("Multiply", z, inv, (1, d))
    for i, fc in enumerate(net.mapping.fc):
        mm = ir.op("MatMul", [x, ir.c(fc.weight.detach().numpy())], (1, d),
                   {"transpose_a": "false", "transpose_b": "true"})
        target = ir.concat([ir.i64(1), ir.dim_of(mm, 1)])
        bias = ir.op("Reshape", [ir.c(fc.bias.detach().numpy()), target], (1, d), {"special_zero": "true"})
        x = ir.binary("Add", mm, bias, (1, d))
        x = ir.op("PReLU", [x, ir.c([cfg.slope])], (1, d))
        last = i == len(net.mapping.fc) - 1
        x = ir.binary("Multiply", x, ir.c([[cfg.mapping_gain]]), (1, d), "style" if last else "",
                      names="style" if last else None)
    ir.result(x, "style/sink_port_0")
    ir.save(folder / "MappingNetwork.xml")

    syn = net.synthesis
    ir = _Writer("SynthesisNetwork")
    style = ir.parameter("style", (1, d))
    c0 = cfg.widths[0]
    repeats = ir.concat([ir.dim_of(style, 0), ir.i64(1), ir.i64(1), ir.i64(1)])
    ones = ir.op("Broadcast", [ir.i64(1), ir.op("ShapeOf", [repeats], (1,), {"output_type": "i64"}, precision=I64)],
                 (4,), {"mode": "numpy"}, precision=I64)  # ONNX ConstantOfShape
    x = ir.op("Broadcast", [ir.c(syn.input.detach().numpy()), ones], (1, c0, 4, 4), {"mode": "bidirectional"})
    x = ir.op("Tile", [x, ir.concat([ir.dim_of(style, 0), ir.i64(1), ir.i64(1), ir.i64(1)])], (1, c0, 4, 4))
    x = _styled_conv(ir, style, x, syn.b4.conv1)
    for i in range(len(cfg.widths) - 1):
        block = getattr(syn, f"b{8 << i}")
        _, c, h, w = ir.dims(x)
        mod = _affine(ir, style, block.up.modulation, None)
        x = _haar(ir, ir.binary("Multiply", mod, x, (1, c, h, w)), c // 4)
        x = _styled_conv(ir, style, x, block.conv1)
        x = _styled_conv(ir, style, x, block.conv2)
    _, c, h, w = ir.dims(x)
    mod = _affine(ir, style, syn.to_img.modulation, 1 / math.sqrt(c))
    x = ir.binary("Multiply", mod, x, (1, c, h, w))
    x = ir.op("Convolution", [x, ir.c(syn.to_img.weight.detach().numpy())], (1, 12, h, w), _conv_attrs(0))
    x = ir.binary("Add", x, ir.c(syn.to_img.bias.detach().numpy()), (1, 12, h, w))
    img = _haar(ir, x, 3, "img")
    ir.result(img, "img/sink_port_0")
    ir.save(folder / "SynthesisNetwork.xml")
    return folder
