"""A tiny real generator implementing the model contract, for fast family-agnostic tests."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from models.base import FileProbe, Generator, LayerInfo, ModelEntry, Sample

Z = 16


class Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")))


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(Z, 32 * 4 * 4)
        self.blocks = nn.Sequential(Up(32, 32), Up(32, 16), Up(16, 8))
        self.to_rgb = nn.Conv2d(8, 3, 1)

    def start(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z).view(-1, 32, 4, 4)

    def finish(self, h: torch.Tensor, first_block: int) -> torch.Tensor:
        for block in list(self.blocks)[first_block:]:
            h = block(h)
        return torch.sigmoid(self.to_rgb(h))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.finish(self.start(z), 0)


class ToyGenerator(Generator):
    family = "toy"
    supports_half = False

    def __init__(self, device: torch.device = torch.device("cpu"), seed: int = 0) -> None:
        torch.manual_seed(seed)
        net = ToyNet().to(device).eval()
        super().__init__(net, name="toy", device=device, dtype=torch.float32, resolution=(32, 32))

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo("fc", 512, None, "mapping"),
                LayerInfo("blocks.0", 32, (8, 8), "conv", True),
                LayerInfo("blocks.1", 16, (16, 16), "conv", True),
                LayerInfo("blocks.2", 8, (32, 32), "conv", True)]

    def latents(self, samples: Sequence[Sample]) -> torch.Tensor:
        return torch.stack([torch.randn(Z, generator=torch.Generator().manual_seed(s.seed)) for s in samples]
                           ).to(self.device)

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        return self.module(self.latents(samples))

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        index = int(self.layer(layer).name.split(".")[1])
        return self.module.finish(activation, index + 1)

    @torch.no_grad()
    def bake_unit_scale(self, layer: str, unit: int, gain: float) -> bool:
        """Exact where the producer is linear (fc, any gain) or conv + LeakyReLU (gain >= 0: homogeneous)."""
        self.layer(layer)
        if layer == "fc":
            producer = self.module.fc
        elif gain >= 0:
            producer = self.module.blocks[int(layer.split(".")[1])].conv
        else:
            return False
        producer.weight[unit] *= gain
        producer.bias[unit] *= gain
        return True


class ToyFamily:
    """Registry family for tests: built-in 'toy', and files whose first bytes are b'TOY1'."""

    name = "toy"

    def builtins(self) -> list[ModelEntry]:
        return [ModelEntry("toy", "toy", "tiny random test generator"),
                ModelEntry("toy-missing", "toy", "needs a package", False, "pip install toy-extra")]

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        return ToyGenerator(device)

    def sniff(self, probe: FileProbe) -> bool:
        return probe.head.startswith(b"TOY1")

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        seed = int(Path(probe.path).read_bytes()[4:].decode() or 0)
        gen = ToyGenerator(device, seed)
        gen.source = str(probe.path)
        return gen


FAMILY = ToyFamily()
