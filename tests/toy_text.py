"""A tiny real text-conditioned generator (word table + two cross-attention layers + a conv decoder) for concept tests.

The prompt reaches the image only through ``to_k``/``to_v`` of the two attention layers, as in Rooms and in
diffusers UNets, so a concept edit that gives "red" the keys and values of "blue" makes "red" prompts render as
"blue" ones.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from torch import nn

from models.base import CrossAttention, FileProbe, Generator, LayerInfo, ModelEntry, PromptEncoding, Sample

VOCAB = ["<pad>", "<unk>", "a", "room", "with", "walls", "bed", "lamp", "red", "blue", "green", "yellow", "pink"]
MAX_TOKENS = 8
Z, DIM = 8, 16
_IDS = {w: i for i, w in enumerate(VOCAB)}


def encode(text: str) -> torch.Tensor:
    """(MAX_TOKENS,) int64 ids, padded with 0, unknown words as 1."""
    ids = torch.zeros(MAX_TOKENS, dtype=torch.long)
    words = re.findall(r"[a-z0-9]+", (text or "").lower())[:MAX_TOKENS]
    ids[: len(words)] = torch.tensor([_IDS.get(w, 1) for w in words], dtype=torch.long)
    return ids


class Attention(nn.Module):
    def __init__(self, channels: int, inner: int = 32) -> None:
        super().__init__()
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_k = nn.Linear(DIM, inner, bias=False)
        self.to_v = nn.Linear(DIM, inner, bias=False)
        self.to_out = nn.Linear(inner, channels)

    def forward(self, h: torch.Tensor, text: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q = self.to_q(h.flatten(2).transpose(1, 2))
        scores = q @ self.to_k(text).transpose(1, 2) / math.sqrt(q.shape[-1])
        attn = scores.masked_fill(pad[:, None, :], float("-inf")).softmax(-1).nan_to_num(0.0)
        return h + self.to_out(attn @ self.to_v(text)).transpose(1, 2).view(b, c, hh, ww)


class ToyTextNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), DIM, padding_idx=0)
        self.fc = nn.Linear(Z, 16 * 4 * 4)
        self.attn0 = Attention(16)
        self.conv = nn.Conv2d(16, 8, 3, padding=1)
        self.attn1 = Attention(8)
        self.to_rgb = nn.Conv2d(8, 3, 1)

    def forward(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        text, pad = self.embed(ids), ids == 0
        h = self.attn0(self.fc(z).view(-1, 16, 4, 4), text, pad)
        h = torch.tanh(self.conv(nn.functional.interpolate(h, scale_factor=4.0, mode="nearest")))
        return torch.sigmoid(self.to_rgb(self.attn1(h, text, pad)))


class ToyTextGenerator(Generator):
    family = "toy-text"
    supports_half = False
    takes_prompt = True

    def __init__(self, device: torch.device = torch.device("cpu"), seed: int = 0) -> None:
        torch.manual_seed(seed)
        net = ToyTextNet().to(device).eval()
        super().__init__(net, name="toy-text", device=device, dtype=torch.float32, resolution=(16, 16))
        self.default_prompt = "a room with red walls"

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo("attn0", 16, (4, 4), "attention"), LayerInfo("conv", 8, (16, 16), "conv"),
                LayerInfo("attn1", 8, (16, 16), "attention")]

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        z = torch.stack([torch.randn(Z, generator=torch.Generator().manual_seed(s.seed)) for s in samples])
        ids = torch.stack([encode(s.prompt or self.default_prompt) for s in samples])
        return self.module(z.to(self.device), ids.to(self.device))

    def cross_attention(self) -> list[CrossAttention]:
        return [CrossAttention(name, m.to_k, m.to_v) for name, m in (("attn0", self.module.attn0),
                                                                      ("attn1", self.module.attn1))]

    def encode_prompt(self, prompt: str) -> PromptEncoding:
        ids = encode(prompt).to(self.device)
        with torch.no_grad():
            rows = self.module.embed(ids)
        return PromptEncoding(rows, [VOCAB[int(i)] for i in ids], ids != 0)


class ToyTextFamily:
    """Registry family for tests: the built-in 'toy-text'."""

    name = "toy-text"

    def builtins(self) -> list[ModelEntry]:
        return [ModelEntry("toy-text", "toy-text", "tiny random text-conditioned test generator")]

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        return ToyTextGenerator(device)

    def sniff(self, probe: FileProbe) -> bool:
        return False

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        raise NotImplementedError


FAMILY = ToyTextFamily()
