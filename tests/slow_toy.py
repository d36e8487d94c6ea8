"""A toy generator that is slow on purpose (real matrix work, 256 px output): long enough rankings to cancel
and to probe the GUI's event loop while the model thread computes."""
from __future__ import annotations

import time
from typing import Sequence

import torch

from models.base import FileProbe, Generator, ModelEntry, Sample
from tests.toy import ToyGenerator

#: Seconds of matrix multiplication per rendered image.
COST_PER_IMAGE = 0.02
SIZE = 256


def burn(images: int) -> None:
    """Compute (not sleep: the worker holds the GIL between kernels, as a real model does) for a fixed time."""
    a = torch.randn(192, 192)
    deadline = time.perf_counter() + COST_PER_IMAGE * images
    while time.perf_counter() < deadline:
        a = torch.tanh(a @ a)


class SlowToyGenerator(ToyGenerator):
    def __init__(self, device: torch.device = torch.device("cpu")) -> None:
        super().__init__(device)
        self.name = self.source = "slow-toy"
        self.resolution = (SIZE, SIZE)

    def _finish(self, image: torch.Tensor) -> torch.Tensor:
        burn(image.shape[0])
        return torch.nn.functional.interpolate(image, size=self.resolution, mode="bilinear", align_corners=False)

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        return self._finish(super().render(samples))

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        return self._finish(super().forward_from(layer, activation, samples))


class SlowToyFamily:
    name = "slow-toy"

    def builtins(self) -> list[ModelEntry]:
        return [ModelEntry("slow-toy", "toy", "a toy that takes its time")]

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        return SlowToyGenerator(device)

    def sniff(self, probe: FileProbe) -> bool:
        return False

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        raise NotImplementedError  # sniff never claims a file


FAMILY = SlowToyFamily()
