"""Read and write OpenVINO IR (an XML graph plus a .bin of weights) with the standard library and numpy.

No OpenVINO runtime is needed: the graph is data, and the weights are raw little-endian arrays at byte
offsets in the .bin (read through a memory map, so nothing is copied until used)::

    graph = read_ir("MappingNetwork.xml")                  # the .bin next to it
    layer = graph.by_name["var"]                            # IRLayer(id, name, type, data, inputs, outputs)
    w = graph.const(graph.producer(layer.id, 1))            # a Const's numpy array
    [l.type for l in graph.layers]                          # Parameter, Const, MatMul, ...

:class:`IRWriter` builds small IRs in the same layout (tests write tiny models through it).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from studio.errors import ModelOpenError

#: IR element types and their numpy equivalents (little-endian as OpenVINO writes them).
ELEMENT_TYPES: dict[str, str] = {
    "f32": "<f4", "f16": "<f2", "f64": "<f8", "bf16": "<u2",
    "i64": "<i8", "i32": "<i4", "i16": "<i2", "i8": "i1",
    "u64": "<u8", "u32": "<u4", "u16": "<u2", "u8": "u1", "boolean": "u1",
}
_NUMPY_TO_IR = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8"}
_PRECISION = {"f32": "FP32", "f16": "FP16", "i64": "I64", "i32": "I32", "u8": "U8"}


@dataclass
class IRPort:
    """One input or output port: its id, dims and (outputs) the tensor names it carries."""

    id: int
    dims: tuple[int, ...]
    names: tuple[str, ...] = ()


@dataclass
class IRLayer:
    """One node of the graph: ``data`` holds the op's attributes as strings, as in the XML."""

    id: int
    name: str
    type: str
    version: str
    data: dict[str, str]
    inputs: list[IRPort] = field(default_factory=list)
    outputs: list[IRPort] = field(default_factory=list)

    def ints(self, key: str) -> tuple[int, ...]:
        """An attribute like ``strides="2, 2"`` as integers."""
        text = self.data.get(key, "").strip()
        return tuple(int(v) for v in text.split(",") if v.strip()) if text else ()


class IRGraph:
    """A parsed IR: layers by id and name, edges both ways, and the constants' arrays."""

    def __init__(self, name: str, version: int, layers: list[IRLayer], edges: list[tuple[int, int, int, int]],
                 weights: np.ndarray | None, source: str) -> None:
        self.name, self.version, self.layers, self.source = name, version, layers, source
        self.by_id = {layer.id: layer for layer in layers}
        self.by_name = {layer.name: layer for layer in layers}
        self._weights = weights
        # (to_layer, to_port) -> (from_layer, from_port): each input has one producer
        self.into: dict[tuple[int, int], tuple[int, int]] = {}
        self.out_of: dict[int, list[tuple[int, int]]] = {}  # from_layer -> [(to_layer, to_port)]
        for src, sport, dst, dport in edges:
            self.into[(dst, dport)] = (src, sport)
            self.out_of.setdefault(src, []).append((dst, dport))

    def of_type(self, *types: str) -> list[IRLayer]:
        """Layers of these op types, in the file's (topological) order."""
        return [layer for layer in self.layers if layer.type in types]

    def producer(self, layer_id: int, index: int = 0) -> IRLayer:
        """The layer feeding input number ``index`` of ``layer_id``."""
        layer = self.by_id[layer_id]
        port = layer.inputs[index].id
        if (layer_id, port) not in self.into:
            raise ModelOpenError(f"{self.source}: input {index} of layer '{layer.name}' is not connected.")
        return self.by_id[self.into[(layer_id, port)][0]]

    def consumers(self, layer_id: int) -> list[IRLayer]:
        """Layers reading any output of ``layer_id``, in file order."""
        ids = {dst for dst, _ in self.out_of.get(layer_id, [])}
        return [layer for layer in self.layers if layer.id in ids]

    def const(self, layer: IRLayer) -> np.ndarray:
        """The array of a ``Const`` layer (a read-only view into the memory-mapped .bin)."""
        if layer.type != "Const":
            raise ModelOpenError(f"{self.source}: layer '{layer.name}' is a {layer.type}, not a constant.")
        kind = layer.data.get("element_type", "")
        if kind not in ELEMENT_TYPES:
            raise ModelOpenError(f"{self.source}: constant '{layer.name}' has element type '{kind}', which this "
                                 "reader does not know.")
        shape = layer.ints("shape")
        offset, size = int(layer.data.get("offset", 0)), int(layer.data.get("size", 0))
        dtype = np.dtype(ELEMENT_TYPES[kind])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if self._weights is None or offset < 0 or offset + size > self._weights.size or count * dtype.itemsize != size:
            raise ModelOpenError(f"{self.source}: constant '{layer.name}' points outside its weights file "
                                 f"(offset {offset}, {size} bytes): the .bin is truncated or belongs to another "
                                 "model.")
        array = self._weights[offset:offset + size].view(dtype).reshape(shape)
        if kind == "f16":
            return array.astype(np.float32)
        return array

    def input_const(self, layer: IRLayer, index: int) -> np.ndarray:
        """The constant array at input ``index`` of ``layer`` (raises if that input is computed)."""
        return self.const(self.producer(layer.id, index))


def read_ir(xml_path: str | Path, bin_path: str | Path | None = None) -> IRGraph:
    """Parse an IR's XML and memory-map its .bin (``foo.xml`` -> ``foo.bin`` unless given).

    Raises :class:`ModelOpenError` with one sentence for a missing, truncated or malformed pair.
    """
    xml_path = Path(xml_path)
    bin_path = Path(bin_path) if bin_path is not None else xml_path.with_suffix(".bin")
    label = xml_path.name
    if not xml_path.is_file():
        raise ModelOpenError(f"The OpenVINO graph {xml_path} does not exist.")
    try:
        # Parse with no entity expansion beyond XML's own: ElementTree does not fetch external entities.
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise ModelOpenError(f"{label} is not a readable OpenVINO IR ({error}): it may be truncated.") from error
    if root.tag != "net":
        raise ModelOpenError(f"{label} is XML but not an OpenVINO IR (its root is <{root.tag}>, not <net>).")
    layers = [_layer(node, label) for node in root.iterfind("./layers/layer")]
    edges = []
    for node in root.iterfind("./edges/edge"):
        try:
            edges.append(tuple(int(node.attrib[k]) for k in ("from-layer", "from-port", "to-layer", "to-port")))
        except (KeyError, ValueError) as error:
            raise ModelOpenError(f"{label} has a malformed edge ({error}).") from error
    weights = None
    if any(layer.type == "Const" for layer in layers):
        if not bin_path.is_file():
            raise ModelOpenError(f"The weights file {bin_path.name} of {label} is missing: an IR is an .xml and a "
                                 ".bin side by side.")
        weights = np.memmap(bin_path, dtype=np.uint8, mode="r") if bin_path.stat().st_size else np.zeros(0, np.uint8)
    return IRGraph(root.attrib.get("name", xml_path.stem), int(root.attrib.get("version", 0)), layers,
                   edges, weights, label)


def _layer(node: ET.Element, label: str) -> IRLayer:
    try:
        data = node.find("data")
        layer = IRLayer(int(node.attrib["id"]), node.attrib.get("name", ""), node.attrib["type"],
                        node.attrib.get("version", ""), dict(data.attrib) if data is not None else {})
    except (KeyError, ValueError) as error:
        raise ModelOpenError(f"{label} has a malformed layer ({error}).") from error
    for tag, ports in (("input", layer.inputs), ("output", layer.outputs)):
        for port in node.iterfind(f"./{tag}/port"):
            dims = tuple(int(d.text) for d in port.iterfind("dim") if d.text and d.text.strip().lstrip("-").isdigit())
            names = tuple(n.strip() for n in port.attrib.get("names", "").split(",") if n.strip())
            ports.append(IRPort(int(port.attrib["id"]), dims, names))
    return layer


# -- writing ---------------------------------------------------------------------------------------------------------
class IRWriter:
    """Build an IR (version 10 layout, as the Model Optimizer writes it) and save it as .xml + .bin.

    >>> ir = IRWriter("Tiny")
    >>> x = ir.parameter("var", (1, 8))
    >>> w = ir.const(np.ones((4, 8), np.float32))
    >>> y = ir.op("MatMul", [x, w], (1, 4), {"transpose_a": "false", "transpose_b": "true"})
    >>> ir.result(y); ir.save("tiny.xml")
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._layers: list[tuple[int, str, str, dict[str, str], list[tuple[int, ...]], list[tuple[int, ...]],
                                 str | None, str]] = []
        self._edges: list[tuple[int, int, int, int]] = []
        self._blob = bytearray()
        self._shapes: dict[int, tuple[tuple[int, ...], str]] = {}  # layer id -> (output dims, precision)

    def _add(self, kind: str, name: str, data: dict[str, str], inputs: Sequence[int], out: tuple[int, ...] | None,
             precision: str = "FP32", names: str | None = None) -> int:
        lid = len(self._layers)
        in_dims = [self._shapes[i][0] for i in inputs]
        for port, src in enumerate(inputs):
            self._edges.append((src, self._out_port(src), lid, port))
        outs = [out] if out is not None else []
        self._layers.append((lid, name or f"{kind}_{lid}", kind, data, in_dims, outs, names, precision))
        if out is not None:
            self._shapes[lid] = (out, precision)
        return lid

    def _out_port(self, lid: int) -> int:
        return len(self._layers[lid][4])  # ports number inputs first, then outputs

    def parameter(self, name: str, shape: tuple[int, ...]) -> int:
        return self._add("Parameter", name, {"shape": ", ".join(map(str, shape)), "element_type": "f32"}, [],
                         tuple(shape), names=name)

    def const(self, array: np.ndarray, name: str = "") -> int:
        array = np.ascontiguousarray(array)
        kind = _NUMPY_TO_IR[str(array.dtype)]
        while len(self._blob) % 4:  # keep arrays aligned, as the Model Optimizer does
            self._blob.append(0)
        offset = len(self._blob)
        self._blob.extend(array.astype(ELEMENT_TYPES[kind]).tobytes())
        data = {"element_type": kind, "shape": ", ".join(map(str, array.shape)), "offset": str(offset),
                "size": str(array.nbytes)}
        return self._add("Const", name, data, [], tuple(array.shape), _PRECISION[kind])

    def op(self, kind: str, inputs: Iterable[int], out: tuple[int, ...], data: dict[str, str] | None = None,
           name: str = "") -> int:
        return self._add(kind, name, dict(data or {}), list(inputs), tuple(out))

    def result(self, source: int, name: str = "") -> int:
        return self._add("Result", name, {}, [source], None)

    def save(self, xml_path: str | Path) -> Path:
        """Write ``xml_path`` and the .bin next to it; returns the XML path."""
        xml_path = Path(xml_path)
        net = ET.Element("net", name=self.name, version="10")
        layers = ET.SubElement(net, "layers")
        for lid, name, kind, data, in_dims, outs, names, precision in self._layers:
            node = ET.SubElement(layers, "layer", id=str(lid), name=name, type=kind, version="opset1")
            if data:
                ET.SubElement(node, "data", {k: str(v) for k, v in data.items()})
            if in_dims:
                inp = ET.SubElement(node, "input")
                for port, dims in enumerate(in_dims):
                    _port(inp, port, dims, "FP32")
            if outs:
                out = ET.SubElement(node, "output")
                attrs = {"names": names} if names else {}
                _port(out, len(in_dims), outs[0], precision, attrs)
        edges = ET.SubElement(net, "edges")
        for src, sport, dst, dport in self._edges:
            ET.SubElement(edges, "edge", {"from-layer": str(src), "from-port": str(sport), "to-layer": str(dst),
                                          "to-port": str(dport)})
        ET.indent(net, "\t")
        from studio.atomic import atomic_write_bytes

        atomic_write_bytes(xml_path.with_suffix(".bin"), bytes(self._blob))
        atomic_write_bytes(xml_path, b'<?xml version="1.0" ?>\n' + ET.tostring(net))
        return xml_path


def _port(parent: ET.Element, port: int, dims: tuple[int, ...], precision: str, attrs: dict | None = None) -> None:
    node = ET.SubElement(parent, "port", id=str(port), precision=precision, **(attrs or {}))
    for d in dims:
        ET.SubElement(node, "dim").text = str(d)
