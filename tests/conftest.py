from __future__ import annotations

import os

# Qt must never need a display in tests (STYLE.md §5); set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores are shared by CI and everything else; small models run fastest single-threaded.
torch.set_num_threads(1)


@pytest.fixture
def toy_registry(monkeypatch):
    """The registry with the tiny test family registered first."""
    from models import registry

    monkeypatch.setattr(registry, "FAMILY_MODULES", ["tests.toy", *registry.FAMILY_MODULES])
    return registry


@pytest.fixture
def toy():
    from tests.toy import ToyGenerator

    return ToyGenerator()
