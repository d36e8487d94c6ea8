"""The "rooms" built-in: the embedded default generator, trained by this project on the procedural Rooms world.

    gen = open_model("rooms")                                  # models.registry
    sample = gen.sample(3, "a bedroom with red walls, a bed and one lamp")
    image = gen.render([sample])                               # (1, 3, 128, 128) in [0, 1]
    gen.layer("blocks.1")                                      # 256 units at 16x16
    acts = gen.trace([sample], ["blocks.1"])
    same = gen.forward_from("blocks.1", acts["blocks.1"], [sample])
    [ca.name for ca in gen.cross_attention()]                  # blocks.0.attn (8x8), blocks.1.attn (16x16)

The seed picks the non-caption scene parameters (``world.sample_latent(seed)``: lamp positions, which lamps are lit,
bed and window geometry); the prompt says wall colour, bed, window and lamp count. ``Sample.options["latent"]``
(a list of ``LATENT_DIM`` floats, e.g. ``world.encode_latent(scene)``) overrides the seed's latent.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from studio.core.errors import LayerNotFound, ModelOpenError, StudioError
from studio.core.resources import RESOURCES
from studio.core.rooms import text as rtext
from studio.core.rooms import world
from studio.core.rooms.model import FORMAT, Conditioning, RoomsGenerator, load_weights

from .base import (CrossAttention, FileProbe, Generator, InversionSpace, LayerInfo, ModelEntry, PromptEncoding,
                   Sample)

#: The committed weights of the built-in.
WEIGHTS = RESOURCES / "rooms" / "rooms.safetensors"
#: What the app shows before the user types a prompt.
DEFAULT_PROMPT = world.caption(world.CaptionFields("blue", True, True, 2))
#: Every caption the vocabulary allows, in the canonical style: what an inversion tries for a user's image.
CAPTIONS = tuple(world.caption(world.CaptionFields(wall, bed, window, lamps)) for wall in world.WALL_COLOURS
                 for bed in (True, False) for window in (True, False) for lamps in range(1, world.MAX_LAMPS + 1))
#: Scene draws (seeds of the prior) each caption is screened with when an inversion starts: two layouts of the
#: lamp slots, so a room whose lamps stand left or right both find a start near them.
INVERSION_DRAWS = (0, 1)


class RoomsModel(Generator):
    """The Rooms generator behind the model contract; layers are ``blocks.0`` ... ``blocks.N``."""

    family = "rooms"
    supports_half = False  # 3 M parameters on the CPU: fp32 is both faster and exact
    takes_prompt = True

    def __init__(self, net: RoomsGenerator, meta: dict[str, str], device: torch.device, *, name: str = "rooms",
                 source: str | None = None) -> None:
        size = net.config.image_size
        super().__init__(net.to(device).eval(), name=name, device=device, dtype=torch.float32,
                         resolution=(size, size), source=source)
        self.meta = meta
        self.default_prompt = DEFAULT_PROMPT
        self._cond_params = [*net.stem.parameters(), *net.film.parameters(), *net.text.parameters()]
        self._cond_key: tuple | None = None
        self._cond: Conditioning | None = None

    @property
    def net(self) -> RoomsGenerator:
        return self.module  # type: ignore[return-value]

    # -- layers -------------------------------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        cfg = self.net.config
        return [LayerInfo(f"blocks.{i}", c, (cfg.resolution(i), cfg.resolution(i)), "conv", True)
                for i, c in enumerate(cfg.widths)]

    def _block_index(self, layer: str) -> int:
        info = self.layer(layer)  # raises LayerNotFound with the nearest names
        try:
            return int(info.name.split(".")[1])
        except (IndexError, ValueError) as error:  # pragma: no cover - layers() only lists blocks
            raise LayerNotFound(f"{self.name} cannot re-render from '{layer}'.") from error

    # -- export -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def bake_unit_scale(self, layer: str, unit: int, gain: float) -> bool:
        """Exact for every gain: a block's output is read only by the next block's first conv (1x1 reduce, or the
        3x3 conv after per-channel nearest upsampling) or by the RGB head, each linear in every input channel,
        so scaling that conv's input weights for ``unit`` equals scaling the unit (its own trace is unscaled)."""
        index = self._block_index(layer)
        blocks = self.net.blocks
        if index + 1 < len(blocks):
            after = blocks[index + 1]
            consumer = after.reduce if after.reduce is not None else after.conv
        else:
            consumer = self.net.head
        consumer.weight[:, unit] *= gain
        return True

    def weights_file(self) -> Path | None:
        return WEIGHTS if self.source == "rooms" else super().weights_file()

    # -- inputs -------------------------------------------------------------------------------------------------
    def latents(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, LATENT_DIM) non-caption scene parameters: the seed's prior draw unless ``options['latent']``."""
        rows = []
        for s in samples:
            given = s.option("latent")
            z = np.asarray(given, np.float32) if given is not None else world.sample_latent(s.seed)
            if z.shape != (world.LATENT_DIM,):
                raise StudioError(f"A Rooms latent has {world.LATENT_DIM} entries, this one {z.size}.")
            rows.append(torch.from_numpy(np.ascontiguousarray(z, np.float32)))
        return torch.stack(rows).to(self.device)

    def tokens(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, MAX_TOKENS) caption token ids; an empty prompt means the default one."""
        ids = [torch.from_numpy(rtext.encode(s.prompt or self.default_prompt)) for s in samples]
        return torch.stack(ids).to(self.device)

    # -- rendering ----------------------------------------------------------------------------------------------
    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        return self.net(self.latents(samples), self.tokens(samples))

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        index = self._block_index(layer)
        if activation.shape[0] != len(samples):
            raise ValueError(f"{activation.shape[0]} activations for {len(samples)} samples")
        return self.net.forward_from(index, activation.to(self.device, torch.float32), cond=self._conditioning(samples))

    def _conditioning(self, samples: Sequence[Sample]) -> Conditioning:
        """``prepare`` for these samples, cached: a slider frame re-runs only the blocks, not the 8 MB stem matmul.

        The key holds each parameter's in-place version counter, so edited stem/FiLM/text weights are never stale.
        """
        key = (
            tuple((s.seed, s.prompt or self.default_prompt, _latent_key(s)) for s in samples),
            tuple(p._version for p in self._cond_params),
            torch.is_inference_mode_enabled(), torch.is_grad_enabled(), self.device,
        )
        if self._cond_key != key:
            self._cond = self.net.prepare(self.latents(samples), self.tokens(samples))
            self._cond_key = key
        return self._cond

    # -- inversion ----------------------------------------------------------------------------------------------
    def inversion_space(self) -> InversionSpace:
        """The scene latent (continuous, kept in [-1, 1]) and the caption (discrete: each caption of
        :data:`CAPTIONS` is screened with a few scene draws; after optimising, the captions one fact away are
        tried with the latent found). The inverted sample keeps both: ``prompt`` and ``options['latent']``."""
        starts = [Sample(seed, text, {"latent": [float(v) for v in world.sample_latent(seed)]})
                  for text in CAPTIONS for seed in INVERSION_DRAWS]

        def init(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
            return {"latent": self.latents(samples).clone()}

        def render(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> torch.Tensor:
            return self.net(tensors["latent"], self.tokens(samples))

        def to_samples(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> list[Sample]:
            rows = tensors["latent"].detach().to("cpu", torch.float32).numpy()
            return [Sample(s.seed, s.prompt, {**s.options, "latent": [float(v) for v in row]})
                    for s, row in zip(samples, rows)]

        def project(tensors: dict[str, torch.Tensor]) -> None:
            with torch.no_grad():
                tensors["latent"].clamp_(-1.0, 1.0)

        return InversionSpace(starts, init, render, to_samples, alternatives=_caption_neighbours,
                              project=project, learning_rate=0.04, keep=2,
                              coordinates=(-0.9, -0.5, -0.1, 0.3, 0.7), sweeps=3,
                              description="the scene latent and the caption")

    # -- text conditioning --------------------------------------------------------------------------------------
    def cross_attention(self) -> list[CrossAttention]:
        return [CrossAttention(name, attn.to_k, attn.to_v) for name, attn in self.net.cross_attentions().items()]

    def encode_prompt(self, prompt: str) -> PromptEncoding:
        """The word embeddings ``to_k``/``to_v`` read: one row per token slot, padding marked as not content."""
        ids = torch.from_numpy(rtext.encode(prompt)).to(self.device)
        with torch.no_grad():
            embeddings = self.net.text.embed(ids).detach()
        words = [rtext.VOCAB[int(i)] for i in ids]
        return PromptEncoding(embeddings, words, ids != 0)

    def info(self) -> dict:
        data = super().info()
        data.update({"layers": len(self.net.blocks), "trained_steps": self.meta.get("steps"),
                     "default_prompt": self.default_prompt})
        return data


_GRID = (-0.6, 0.0, 0.6)


def _caption_neighbours(sample: Sample) -> list[Sample]:
    """The sample with each caption one fact away (another wall colour, bed or window toggled, another lamp count).

    A fact that brings something new into the room (a bed, a window, one more lamp) comes with a few placements of
    it in the latent: the latent found so far never had a reason to place what the caption lacked.
    """
    try:
        f = world.parse_caption(sample.prompt or DEFAULT_PROMPT)
    except ValueError:
        return []
    z = np.asarray(sample.option("latent", world.sample_latent(sample.seed)), np.float32)
    index = {name: i for i, name in enumerate(world.LATENT_NAMES)}

    def placed(changes: list[dict[str, float]]) -> list[np.ndarray]:
        out = []
        for change in changes:
            row = z.copy()
            for name, value in change.items():
                row[index[name]] = value
            out.append(row)
        return out

    near: list[tuple[world.CaptionFields, list[np.ndarray]]] = [
        (replace(f, wall=w), [z]) for w in world.WALL_COLOURS if w != f.wall]
    grid = [(a, b) for a in _GRID for b in _GRID]
    near.append((replace(f, bed=not f.bed), placed([{"bed_x": a, "bed_width": b} for a, b in grid])
                 if not f.bed else [z]))
    near.append((replace(f, window=not f.window), placed([{"window_x": a, "window_width": b} for a, b in grid])
                 if not f.window else [z]))
    for n in range(1, world.MAX_LAMPS + 1):
        if n == f.lamps:
            continue
        rows = [z]
        if n == f.lamps - 1:  # one lamp fewer: any of the shown lamps may be the one that is not there
            rows = [_slot_to_spare(z, k, f.lamps) for k in range(f.lamps)]
        elif n > f.lamps:  # the new lamps' slots: a few positions, lit and unlit, low and high
            rows = placed([{f"lamp{k}_{key}": value for k in range(f.lamps, n)
                            for key, value in (("x", x), ("lit", lit), ("height", height))}
                           for x in (-0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8)
                           for lit in (-1.0, 1.0) for height in (-0.6, 0.0, 0.6)])
        near.append((replace(f, lamps=n), rows))
    return [Sample(sample.seed, world.caption(fields), {**sample.options, "latent": [float(v) for v in row]})
            for fields, rows in near for row in rows]


def _slot_to_spare(z: np.ndarray, slot: int, shown: int) -> np.ndarray:
    """The latent with lamp slot ``slot`` moved behind the ``shown`` lamps (the others keep their order), so a
    caption with one lamp fewer hides that lamp rather than the last one."""
    width = 5  # a slot's entries in world.LATENT_NAMES: x, height, size, tone, lit
    order = [k for k in range(shown) if k != slot] + [slot] + list(range(shown, world.MAX_LAMPS))
    out = z.copy()
    for new, old in enumerate(order):
        out[new * width:(new + 1) * width] = z[old * width:(old + 1) * width]
    return out


def _latent_key(sample: Sample) -> tuple[float, ...] | None:
    given = sample.option("latent")
    return None if given is None else tuple(float(v) for v in np.asarray(given).reshape(-1))


class RoomsFamily:
    """Registry entry: the built-in ``rooms`` and any safetensors file whose metadata says ``neuron-studio/rooms``."""

    name = "rooms"

    def builtins(self) -> list[ModelEntry]:
        reason = "" if WEIGHTS.exists() else (
            f"its weights file {WEIGHTS} is missing; restore it from git or train it with "
            "'python -m studio.rooms.train --config resources/rooms/train.json --out resources/rooms/rooms.safetensors'."
        )
        return [ModelEntry("rooms", "rooms", "embedded default: procedural bedrooms, 128 px, captions via "
                           "cross-attention", WEIGHTS.exists(), reason)]

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        return self._open(WEIGHTS, device, precision, name="rooms", source="rooms")

    def sniff(self, probe: FileProbe) -> bool:
        return bool(probe.safetensors_metadata) and probe.safetensors_metadata.get("format") == FORMAT

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        return self._open(Path(probe.path), device, precision, name=Path(probe.path).stem, source=str(probe.path))

    @staticmethod
    def _open(path: Path, device: torch.device, precision: str, *, name: str, source: str) -> RoomsModel:
        # fp32 whatever the precision asked for: the model is tiny and fp16 buys nothing (see the model card)
        net, meta = load_weights(path, map_location="cpu")
        vocab = meta.get("vocab")
        if vocab is not None and json.loads(vocab) != list(rtext.VOCAB):
            raise ModelOpenError(f"{path.name} was trained with another Rooms vocabulary than this version's; "
                                 "retrain it or use the matching Neuron Studio version.")
        return RoomsModel(net, meta, device, name=name, source=source)


FAMILY = RoomsFamily()
