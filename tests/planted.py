"""Tiny generators with a planted unit: switching unit ``PLANTED`` off changes only the left half of the image.

``PlantedGenerator`` re-renders from its layer (``forward_from``); ``SteppedGenerator`` has no partial re-render
and runs its layer once per "denoising step" with the step clock set, optionally on a classifier-free-guidance
batch ``[uncond, cond]``, like a diffusion adapter.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.base import Generator, LayerInfo, Sample

Z = 8
UNITS = 8
SIZE = 8  # the layer's resolution; images are twice that
PLANTED = 5


class Gated(nn.Module):
    """A 3x3 conv whose unit PLANTED is gated to the left half of the map (and made strong)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(UNITS, UNITS, 3, padding=1)
        gate = torch.ones(UNITS, SIZE, SIZE)
        gate[PLANTED, :, SIZE // 2:] = 0.0
        gate[PLANTED, :, : SIZE // 2] = 5.0
        self.register_buffer("gate", gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * self.gate


class PlantedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(Z, UNITS * SIZE * SIZE)
        self.features = Gated()
        self.mix = nn.Conv2d(UNITS, 8, 1)  # pointwise after the layer: a unit's change stays where it is active
        self.to_rgb = nn.Conv2d(8, 3, 1)

    def start(self, z: torch.Tensor) -> torch.Tensor:
        return self.stem(z).view(-1, UNITS, SIZE, SIZE)

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return torch.sigmoid(self.to_rgb(F.silu(self.mix(h))))


def _latents(samples: Sequence[Sample], device: torch.device) -> torch.Tensor:
    return torch.stack([torch.randn(Z, generator=torch.Generator().manual_seed(s.seed)) for s in samples]).to(device)


class PlantedGenerator(Generator):
    family = "planted"
    supports_half = False

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        super().__init__(PlantedNet().eval(), name="planted", device=torch.device("cpu"), dtype=torch.float32,
                         resolution=(2 * SIZE, 2 * SIZE))

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo("features", UNITS, (SIZE, SIZE), "conv", True)]

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        net = self.module
        return net.finish(net.features(net.start(_latents(samples, self.device))))

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        self.layer(layer)
        return self.module.finish(activation)


class SteppedGenerator(Generator):
    """No ``forward_from``: the layer runs at every one of ``steps`` steps, with ``clock.step`` set."""

    family = "stepped"
    supports_half = False

    def __init__(self, seed: int = 0, steps: int = 3, guidance: bool = False) -> None:
        torch.manual_seed(seed)
        super().__init__(PlantedNet().eval(), name="stepped", device=torch.device("cpu"), dtype=torch.float32,
                         resolution=(2 * SIZE, 2 * SIZE))
        self.steps, self.guidance = steps, guidance

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo("features", UNITS, (SIZE, SIZE), "resnet", False)]

    def render(self, samples: Sequence[Sample], start: tuple | None = None) -> torch.Tensor:
        net = self.module
        h, first = net.start(_latents(samples, self.device)), 0
        if start is not None:  # continue copies of the prefix's samples from its step
            prefix_samples, first, states = start
            h = torch.stack([states[prefix_samples.index(s)] for s in samples])
        return net.finish(self._steps(h, first, self.steps))

    def _steps(self, h: torch.Tensor, first: int, stop: int) -> torch.Tensor:
        net = self.module
        try:
            for step in range(first, stop):
                self.clock.step = step
                if self.guidance:  # [uncond, cond] in one batch, combined after the layer
                    uncond, cond = net.features(torch.cat([0.5 * h, h])).chunk(2)
                    h = h + 0.5 * (uncond + 2.0 * (cond - uncond))
                else:
                    h = h + 0.5 * net.features(h)
        finally:
            self.clock.step = None
        return h


class PrefixSteppedGenerator(SteppedGenerator):
    """Also runs the steps before a window once and continues copies from there, like the diffusion adapter."""

    prefix_calls: list[int]
    shares_denoising_prefix = True

    def prefix_step(self, window_start: int, sample: Sample) -> int:
        return window_start

    def denoise_prefix(self, samples: Sequence[Sample], step: int) -> tuple:
        self.prefix_calls = [*getattr(self, "prefix_calls", []), step]
        h = self._steps(self.module.start(_latents(samples, self.device)), 0, step)
        return list(samples), step, list(h)
