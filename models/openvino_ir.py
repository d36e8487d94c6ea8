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

from studio.core.atomic import atomic_write_bytes
from studio.core.errors import ModelOpenError

#: IR element types and their numpy equivalents (little-endian as OpenVINO writes them).
ELEMENT_TYPES: dict[str, str] = {
    "f32": "<f4", "f16": "<f2", "f64": "<f8", "bf16": "<u2",
    "i64": "<i8", "i32": "<i4", "i16": "<i2", "i8": "i1",
    "u64": "<u8", "u32": "<u4", "u16": "<u2", "u8": "u1", "boolean": "u1",
}
_NUMPY_TO_IR = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8"}
_PRECISION = {"f32": "FP32", "f16": "FP16", "i64": "I64", "i32": "I32", "u8": "U8"}
#: Op versions the writer declares where opset1 is not the one meant (as the 2021 Model Optimizer wrote them).
OP_VERSIONS = {"Gather": "opset7", "Broadcast": "opset3", "ShapeOf": "opset3"}


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


@dataclass
class _Node:
    id: int
    name: str
    type: str
    data: dict[str, str]
    inputs: list[tuple[tuple[int, ...], str]]  # (dims, precision) per input port
    outputs: list[tuple[tuple[int, ...], str]]  # (dims, precision) per output port
    names: str | None


class IRWriter:
    """Build an IR (version 10 layout, as the Model Optimizer writes it) and save it as .xml + .bin.

    Inputs are layer ids (their first output) or ``(layer id, output index)`` for multi-output ops::

        ir = IRWriter("Tiny")
        x = ir.parameter("var", (1, 8))
        y = ir.op("MatMul", [x, ir.const(np.ones((4, 8), np.float32))], (1, 4),
                  {"transpose_a": "false", "transpose_b": "true"})
        ir.result(y); ir.save(tmp / "tiny.xml")        # tiny.xml + tiny.bin
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[_Node] = []
        self._edges: list[tuple[int, int, int, int]] = []
        self._blob = bytearray()

    def _ref(self, source) -> tuple[int, int]:
        return (source, 0) if isinstance(source, int) else (int(source[0]), int(source[1]))

    def _add(self, kind: str, name: str, data: dict[str, str], inputs: Sequence, outputs: Sequence,
             names: str | None = None) -> int:
        lid = len(self._nodes)
        ins = []
        for port, source in enumerate(inputs):
            src, index = self._ref(source)
            node = self._nodes[src]
            ins.append(node.outputs[index])
            self._edges.append((src, len(node.inputs) + index, lid, port))  # ports: inputs first, then outputs
        self._nodes.append(_Node(lid, name or f"{kind}_{lid}", kind, data, ins, list(outputs), names))
        return lid

    def parameter(self, name: str, shape: tuple[int, ...]) -> int:
        return self._add("Parameter", name, {"shape": ", ".join(map(str, shape)), "element_type": "f32"}, [],
                         [(tuple(shape), "FP32")], names=name)

    def const(self, array: np.ndarray, name: str = "") -> int:
        array = np.array(array, order="C")  # not ascontiguousarray: it turns scalars into (1,) arrays
        kind = _NUMPY_TO_IR[str(array.dtype)]
        while len(self._blob) % 4:  # keep arrays aligned, as the Model Optimizer does
            self._blob.append(0)
        offset = len(self._blob)
        self._blob.extend(array.astype(ELEMENT_TYPES[kind]).tobytes())
        data = {"element_type": kind, "shape": ", ".join(map(str, array.shape)), "offset": str(offset),
                "size": str(array.nbytes)}
        return self._add("Const", name, data, [], [(tuple(array.shape), _PRECISION[kind])])

    def op(self, kind: str, inputs: Iterable, out: tuple[int, ...] | Sequence[tuple[int, ...]],
           data: dict[str, str] | None = None, name: str = "", *, precision: str = "FP32",
           names: str | None = None) -> int:
        """A layer of op ``kind`` reading ``inputs``; ``out`` is its output's dims, or a list of them."""
        outs = list(out) if out and isinstance(out[0], (tuple, list)) else [tuple(out)]
        return self._add(kind, name, dict(data or {}), list(inputs), [(tuple(o), precision) for o in outs], names)

    def dims(self, source) -> tuple[int, ...]:
        """The dims of an output written so far."""
        src, index = self._ref(source)
        return self._nodes[src].outputs[index][0]

    def result(self, source, name: str = "") -> int:
        return self._add("Result", name, {}, [source], [])

    def save(self, xml_path: str | Path) -> Path:
        """Write ``xml_path`` and the .bin next to it (atomically); returns the XML path."""

        xml_path = Path(xml_path)
        net = ET.Element("net", name=self.name, version="10")
        layers = ET.SubElement(net, "layers")
        for n in self._nodes:
            node = ET.SubElement(layers, "layer", id=str(n.id), name=n.name, type=n.type,
                                 version=OP_VERSIONS.get(n.type, "opset1"))
            if n.data:
                ET.SubElement(node, "data", {k: str(v) for k, v in n.data.items()})
            for tag, ports, first in (("input", n.inputs, 0), ("output", n.outputs, len(n.inputs))):
                if ports:
                    parent = ET.SubElement(node, tag)
                    for i, (dims, precision) in enumerate(ports):
                        attrs = {"names": n.names} if tag == "output" and n.names and i == 0 else {}
                        _port(parent, first + i, dims, precision, attrs)
        edges = ET.SubElement(net, "edges")
        for src, sport, dst, dport in self._edges:
            ET.SubElement(edges, "edge", {"from-layer": str(src), "from-port": str(sport), "to-layer": str(dst),
                                          "to-port": str(dport)})
        ET.indent(net, "\t")
        atomic_write_bytes(xml_path.with_suffix(".bin"), bytes(self._blob))
        atomic_write_bytes(xml_path, b'<?xml version="1.0" ?>\n' + ET.tostring(net))
        return xml_path


def _port(parent: ET.Element, port: int, dims: tuple[int, ...], precision: str, attrs: dict | None = None) -> None:
    node = ET.SubElement(parent, "port", id=str(port), precision=precision, **(attrs or {}))
    for d in dims:
        ET.SubElement(node, "dim").text = str(d)
