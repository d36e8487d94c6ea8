"""The registry: built-ins, format detection, and one clear sentence for every file it cannot open."""
from __future__ import annotations

import struct

import pytest
import torch

from studio.core.errors import ModelOpenError


def test_opens_builtins_and_files_of_a_registered_family(toy_registry, tmp_path):
    assert toy_registry.open_model("toy").family == "toy"
    path = tmp_path / "net.toy"
    path.write_bytes(b"TOY17")
    gen = toy_registry.open_model(str(path))
    assert gen.family == "toy"
    assert gen.render([gen.sample(0)]).shape == (1, 3, 32, 32)


def test_models_needing_a_package_say_what_to_install(toy_registry):
    entries = {e.name: e for e in toy_registry.available_models()}
    assert entries["toy"].available and not entries["toy-missing"].available
    with pytest.raises(ModelOpenError, match="not installed: pip install toy-extra"):
        toy_registry.open_model("toy-missing")


def test_missing_model(toy_registry, tmp_path):
    with pytest.raises(ModelOpenError, match=r"No model named .*not a built-in \(toy"):
        toy_registry.open_model(str(tmp_path / "nowhere.safetensors"))


def test_unknown_format(toy_registry, tmp_path):
    path = tmp_path / "notes.bin"
    path.write_bytes(b"hello, I am not a model")
    with pytest.raises(ModelOpenError, match="not a model format Neuron Studio knows"):
        toy_registry.open_model(str(path))


def test_empty_file(toy_registry, tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ModelOpenError, match="empty"):
        toy_registry.open_model(str(path))


@pytest.mark.parametrize("payload", [b"\x00" * 4, struct.pack("<Q", 10**12) + b"{}",
                                     struct.pack("<Q", 5) + b"{oops"])
def test_corrupt_safetensors(toy_registry, tmp_path, payload):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ModelOpenError, match="not a readable safetensors file"):
        toy_registry.open_model(str(path))


def test_truncated_zip_is_not_opened(toy_registry, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelOpenError):
        toy_registry.open_model(str(path))


def test_opener_failures_become_one_sentence(toy_registry, tmp_path):
    path = tmp_path / "bad.toy"
    path.write_bytes(b"TOY1not-a-number")
    with pytest.raises(ModelOpenError, match="Could not open bad.toy"):
        toy_registry.open_model(str(path))


def test_unknown_device_is_refused():
    from studio.core.device import resolve_device
    from studio.core.errors import StudioError

    with pytest.raises(StudioError, match="Unknown device"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
