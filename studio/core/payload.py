"""Tensors that ride with a sample: too big for its JSON options, found by a content key the options hold.

An inverted image's sample carries tensors its render needs (a StyleGAN's optimised noise maps, the fine-tuned
correction of a layer's activation). ``Sample.options["payload"]`` holds only their content key; the tensors sit in
this process-wide store, put there by whoever made or loaded them (``studio.invert`` after inverting,
``Inversion.from_json`` when a session is reopened), and a family's render looks them up::

    key = payload.put({"noise/synthesis.b8.conv0": maps})    # "sha256:..." of names, shapes and bytes
    sample = Sample(0, None, {"psi": 1.0, payload.OPTION: key})
    payload.get(key)["noise/synthesis.b8.conv0"]             # the same tensors (CPU, float32)
    payload.of(sample.options)                               # {} for a sample without a payload

The key is the content's hash, so the same tensors give the same key in every process (a session's reopened samples
find theirs) and two different payloads never share one. Entries are kept for the life of the process: they are
small (noise maps and one layer's activation of one image) and a sample may outlive the inversion that made it.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import torch

from .errors import StudioError

#: The sample option holding the payload's content key.
OPTION = "payload"
_STORE: dict[str, dict[str, torch.Tensor]] = {}


def _clean(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {str(k): v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sorted(tensors.items())}


def key_of(tensors: Mapping[str, torch.Tensor]) -> str:
    """The content key of ``tensors``: a hash of each name, shape and float32 bytes, in name order."""
    digest = hashlib.sha256()
    for name, value in _clean(tensors).items():
        digest.update(name.encode() + b"\0" + repr(tuple(value.shape)).encode() + b"\0")
        digest.update(value.numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:40]


def put(tensors: Mapping[str, torch.Tensor]) -> str:
    """Keep ``tensors`` (copied to the CPU as float32) and return their content key."""
    clean = _clean(tensors)
    key = key_of(clean)
    _STORE.setdefault(key, clean)
    return key


def get(key: str) -> dict[str, torch.Tensor]:
    """The tensors under ``key``; a :class:`StudioError` sentence when this process has not loaded them."""
    try:
        return _STORE[str(key)]
    except KeyError:
        raise StudioError("This sample needs tensors that are not loaded (an inverted image's noise maps or "
                          "activation correction): open the session or inversion that holds them.") from None


def of(options: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The payload of a sample's options, or {} when it has none."""
    key = options.get(OPTION)
    return {} if key is None else get(key)


def named(options: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The payload's tensors whose names start with ``prefix`` (``"noise/"``), keyed by the rest of the name."""
    return {k[len(prefix):]: v for k, v in of(options).items() if k.startswith(prefix)}
