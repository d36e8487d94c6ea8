"""Read NVIDIA's StyleGAN network pickles without running any code they carry.

NVIDIA's ``torch_utils.persistence`` pickles each network object as a call to
``_reconstruct_persistent_obj(meta)`` where ``meta`` holds the *source code* of its module (executed on a normal
unpickle!), the class name and the object's ``__dict__`` (constructor arguments, parameters, buffers, children).
Our unpickler allows only tensor/storage rebuilding, a few containers and numpy scalars, and replaces that call
by a harmless stand-in that records the class name, constructor arguments and tensors::

    data = load_network_pickle(Path("network-snapshot.pkl"))     # {"G_ema": PersistentRecord, ...}
    g = data["G_ema"]
    g.class_name, g.init_kwargs["img_resolution"]                 # 'Generator', 1024
    tensors = g.state_dict()                                      # {"mapping.fc0.weight": tensor, ...}

Anything else a pickle asks to import is refused with one sentence naming it.
"""
from __future__ import annotations

import collections
import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import ModelOpenError


class UnsafePickle(ModelOpenError):
    """The pickle asks for a Python object we will not import (it could run code)."""


class PersistentRecord:
    """A persistent NVIDIA object as data: class name, constructor arguments, tensors and children.

    Never constructed from the pickled source code, which is kept only as its length.
    """

    def __init__(self, class_name: str, state: dict[str, Any], source_chars: int) -> None:
        self.class_name = class_name
        self.source_chars = source_chars
        self.init_args: tuple = tuple(state.get("_init_args") or ())
        self.init_kwargs: dict[str, Any] = dict(state.get("_init_kwargs") or {})
        self.parameters: dict[str, torch.Tensor | None] = dict(state.get("_parameters") or {})
        self.buffers: dict[str, torch.Tensor | None] = dict(state.get("_buffers") or {})
        self.modules: dict[str, Any] = dict(state.get("_modules") or {})

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name}, {len(self.modules)} children)"

    def child(self, name: str) -> "PersistentRecord | None":
        found = self.modules.get(name)
        return found if isinstance(found, PersistentRecord) else None

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer under this object by dotted name (like ``nn.Module.state_dict``)."""
        out: dict[str, torch.Tensor] = {}
        for name, tensor in {**self.parameters, **self.buffers}.items():
            if isinstance(tensor, torch.Tensor):
                out[prefix + name] = tensor.detach()
        for name, module in self.modules.items():
            if isinstance(module, PersistentRecord):
                out.update(module.state_dict(f"{prefix}{name}."))
        return out


class RecordDict(dict):
    """Stands in for ``dnnlib.EasyDict`` (a dict with attribute access): a plain dict here."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """The stand-in for NVIDIA's reconstruct function: records, never executes ``meta['module_src']``."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("a persistent object without the expected class record")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent object {meta['class_name']} has no state")
    return PersistentRecord(meta["class_name"], state, len(meta.get("module_src") or ""))


class StorageWithCode(ModelOpenError):
    """A tensor-storage blob that asks for more than tensors; its text says what it asks for."""


def refused_by_torch(error: Exception) -> str | None:
    """What torch's weights-only loader refused in ``error`` ("asks for posix.system"), or None for other errors."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"asks for {found.group(1)}"
    if "Unsupported operand" in text or "Unsupported class" in text:
        return "uses pickle instructions torch's weights-only loader refuses"
    return None


def clipped(text: str, limit: int = 160) -> str:
    """The first line of ``text``, cut at a word boundary to at most ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    return line[: line.rfind(" ", 0, limit)].rstrip(" ,;:(") + " ..."


def _load_storage_from_bytes(data: bytes) -> Any:
    """Tensor storages are nested ``torch.save`` blobs: load them with torch's own weights-only unpickler."""
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        what = refused_by_torch(error)
        if what is None:
            raise
        raise StorageWithCode(what) from None


class _TensorFlowPickle(Exception):
    pass


def _allowed() -> dict[tuple[str, str], Any]:

    table: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): RecordDict,
        ("dnnlib", "EasyDict"): RecordDict,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, name):
            table[("torch._utils", name)] = getattr(torch._utils, name)
    core = getattr(np, "_core", None) or np.core
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "scalar")] = core.multiarray.scalar
        table[(module, "_reconstruct")] = core.multiarray._reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = core.numeric._frombuffer
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only hands out the allow-listed functions and types."""

    _table: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._table is None:
            RestrictedUnpickler._table = _allowed()
        found = RestrictedUnpickler._table.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "dnnlib.tflib.network" and name == "Network":
            raise _TensorFlowPickle
        raise UnsafePickle(f"{module}.{name}")


def load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; every failure becomes one sentence."""
    name = path.name
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except UnsafePickle as error:
        raise UnsafePickle(f"{name} tries to import {error}: refused, this file may be malicious (Neuron Studio "
                           "only reads tensors and NVIDIA's network records from pickles).") from None
    except StorageWithCode as error:
        raise ModelOpenError(f"{name} holds more than tensors: a tensor storage in it {error} (code, not data); it "
                             "was refused and nothing in it ran, but the file may be malicious.") from None
    except _TensorFlowPickle:
        raise ModelOpenError(f"{name} is a TensorFlow StyleGAN pickle; convert it to the PyTorch format with "
                             "NVIDIA's stylegan2-ada-pytorch legacy.py first, then open the converted file.") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, MemoryError, UnicodeDecodeError) as error:
        detail = clipped(str(error)) or type(error).__name__
        raise ModelOpenError(f"{name} is not a readable pickle ({detail}): it may be truncated or corrupt; "
                             "copy or download it again.") from None


def load_network_pickle(path: Path) -> dict[str, Any]:
    """The dictionary of an NVIDIA training snapshot, whose ``G_ema`` is a :class:`PersistentRecord`."""
    data = load_pickle(path)
    if isinstance(data, PersistentRecord):  # a bare pickled generator
        data = {"G_ema": data}
    if not isinstance(data, dict):
        raise ModelOpenError(f"{path.name} holds a pickled {type(data).__name__}, not a StyleGAN network pickle "
                             "(a dictionary with the generator under 'G_ema').")
    generator = data.get("G_ema", data.get("G"))
    if not isinstance(generator, PersistentRecord):
        keys = ", ".join(sorted(str(k) for k in data)[:8]) or "nothing"
        raise ModelOpenError(f"{path.name} is a pickled dictionary without a StyleGAN generator: it has {keys}, "
                             "but no 'G_ema' network.")
    data["G_ema"] = generator
    return data
