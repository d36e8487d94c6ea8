"""The Rooms generator: a small conditional image generator trained on the procedural Rooms world.

The non-caption scene parameters (a latent vector: lamp slot positions, lit flags, geometry) drive a stack of
conv blocks; the caption enters ONLY through cross-attention whose keys and values read a bag of word
embeddings, so a closed-form concept edit of ``to_k``/``to_v`` can turn "red" walls into "blue" ones.

>>> cfg = RoomsConfig(latent_dim=24, vocab_size=40)
>>> net = RoomsGenerator(cfg).eval()
>>> z, tokens = torch.randn(2, 24), torch.randint(1, 40, (2, cfg.max_tokens))
>>> img = net(z, tokens)                                  # (2, 3, 128, 128) in [0, 1]
>>> cond = net.prepare(z, tokens)
>>> h = net.run_blocks(cond, stop=1)                      # output of blocks.1 (256 units at 16x16)
>>> torch.allclose(net.forward_from(1, h, cond=cond), img)
True
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from studio.core.errors import ModelOpenError


@dataclass
class RoomsConfig:
    """Everything needed to rebuild the network; round-trips through JSON.

    >>> RoomsConfig.from_json(RoomsConfig(widths=(8, 16)).to_json()).widths
    (8, 16)
    """

    latent_dim: int = 32
    vocab_size: int = 64
    max_tokens: int = 16
    text_dim: int = 64
    stem_res: int = 8
    #: Channels of each block; block i works at ``stem_res * 2**i`` pixels.
    widths: tuple[int, ...] = (128, 256, 64, 32, 16)
    #: Blocks that end with a cross-attention layer reading the caption.
    attn_blocks: tuple[int, ...] = (0, 1)
    attn_heads: int = 4
    attn_head_dim: int = 32
    stem_hidden: int = 256
    #: Latent entries the FiLM layers do not read (they still reach the stem). Tried with the lamps' lit flags, so
    #: a lamp's light could only come from the feature maps; it spread the light over more units (model card), so
    #: the shipped model leaves it empty.
    film_exclude: tuple[int, ...] = ()
    #: Extra residual 3x3 convs per block (index -> count; missing blocks have none): depth in the low-resolution
    #: trunk, where the scene is decided, costs little and leaves a thin decoder to the high resolutions.
    extra_convs: tuple[int, ...] = ()
    #: The RGB head predicts ``upscale**2`` sub-pixels per position (pixel shuffle): the image is this many times
    #: larger than the last block, so no block has to run at full resolution.
    upscale: int = 1
    #: Blocks whose output goes through a ReLU after the cross-attention: their units are exactly 0 where they are
    #: off, so switching one off changes the image only where it was on.
    relu_blocks: tuple[int, ...] = ()

    @property
    def image_size(self) -> int:
        return self.stem_res * 2 ** (len(self.widths) - 1) * self.upscale

    def resolution(self, block: int) -> int:
        return self.stem_res * 2**block

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> "RoomsConfig":
        data = json.loads(text) if isinstance(text, str) else dict(text)
        known = {f.name for f in fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**kwargs)


@dataclass
class Conditioning:
    """Per-call conditioning, computed once by ``prepare`` and reused by every partial re-render."""

    stem: Tensor  # (B, C0, r, r) map made from the latent
    film: list[tuple[Tensor, Tensor]]  # per block: (scale, shift), each (B, C, 1, 1), from the latent
    text: Tensor  # (B, T, text_dim) word embeddings
    pad: Tensor  # (B, T) True where the token is padding
    coords: dict[int, Tensor] = field(default_factory=dict)  # resolution -> (1, 2, r, r)


class TextEncoder(nn.Module):
    """A bag of word embeddings: no positions, so a word means the same in every paraphrase."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.embed(tokens), tokens == 0


class CrossAttention(nn.Module):
    """Image features (queries) read the caption's words (keys/values); residual, pre-normed.

    ``to_k``/``to_v`` are bias-free linear maps of the word embeddings: the weights a concept edit rewrites.
    """

    def __init__(self, dim: int, text_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.GroupNorm(min(8, dim), dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(text_dim, inner, bias=False)
        self.to_v = nn.Linear(text_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, h: Tensor, text: Tensor, pad: Tensor) -> Tensor:
        b, c, hh, ww = h.shape
        q = self.to_q(self.norm(h).flatten(2).transpose(1, 2))  # (B, N, inner)
        k, v = self.to_k(text), self.to_v(text)  # (B, T, inner)
        q = q.view(b, -1, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, -1, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(b, -1, self.heads, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, heads, N, T)
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        attn = scores.softmax(-1).nan_to_num(0.0)  # an all-padding caption reads nothing
        out = (attn @ v).transpose(1, 2).reshape(b, -1, self.heads * self.head_dim)
        return h + self.to_out(out).transpose(1, 2).view(b, c, hh, ww)


class RoomsBlock(nn.Module):
    """(1x1 channel reduction,) upsample (except the first), CoordConv 3x3, latent FiLM, SiLU, optional cross-attention.

    The reduction runs before upsampling, at a quarter of the pixels: most of the speed of a narrowing block.
    """

    def __init__(self, cin: int, cout: int, upsample: bool, attn: CrossAttention | None, extra: int = 0,
                 relu: bool = False) -> None:
        super().__init__()
        self.upsample, self.relu = upsample, relu
        self.reduce = nn.Conv2d(cin, cout, 1) if upsample and cin > cout else None
        self.conv = nn.Conv2d((cout if self.reduce is not None else cin) + 2, cout, 3, padding=1)
        self.extra = nn.ModuleList(nn.Conv2d(cout + 2, cout, 3, padding=1) for _ in range(extra))
        self.attn = attn

    def forward(self, h: Tensor, coords: Tensor, film: tuple[Tensor, Tensor], text: Tensor, pad: Tensor) -> Tensor:
        if self.reduce is not None:
            h = self.reduce(h)
        if self.upsample:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        x = torch.cat([h, coords.expand(h.shape[0], -1, -1, -1)], dim=1)
        scale, shift = film
        h = F.silu(self.conv(x) * (1.0 + scale) + shift)
        for conv in self.extra:
            h = h + F.silu(conv(torch.cat([h, x[:, -2:]], dim=1)))
        if self.attn is not None:
            h = self.attn(h, text, pad)
        return F.relu(h) if self.relu else h


def coordinate_map(res: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """(1, 2, res, res) pixel-centre coordinates in [-1, 1]: channel 0 is x, channel 1 is y."""
    axis = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res * 2.0 - 1.0
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y])[None].to(dtype or torch.float32)


class RoomsGenerator(nn.Module):
    """latent (B, latent_dim) + tokens (B, max_tokens) -> image (B, 3, S, S) in [0, 1].

    Layers users inspect are ``blocks.0`` ... ``blocks.N`` (units = channels); ``head`` maps the last block to RGB.
    """

    def __init__(self, config: RoomsConfig) -> None:
        super().__init__()
        self.config = cfg = config
        w = cfg.widths
        self.text = TextEncoder(cfg.vocab_size, cfg.text_dim)
        self.stem = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.stem_hidden),
            nn.SiLU(),
            nn.Linear(cfg.stem_hidden, w[0] * cfg.stem_res**2),
        )
        self.film = nn.ModuleList(nn.Linear(cfg.latent_dim, 2 * c) for c in w)
        blocks = []
        for i, c in enumerate(w):
            attn = (
                CrossAttention(c, cfg.text_dim, cfg.attn_heads, cfg.attn_head_dim) if i in cfg.attn_blocks else None
            )
            extra = cfg.extra_convs[i] if i < len(cfg.extra_convs) else 0
            blocks.append(RoomsBlock(w[i - 1] if i else w[0], c, upsample=i > 0, attn=attn, extra=extra,
                                     relu=i in cfg.relu_blocks))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(w[-1], 3 * cfg.upscale**2, 1)
        for i in range(len(w)):  # CoordConv inputs, made once (not saved: they are a function of the config)
            res = cfg.resolution(i)
            self.register_buffer(f"coords_{res}", coordinate_map(res), persistent=False)
        keep = torch.ones(cfg.latent_dim)
        keep[list(cfg.film_exclude)] = 0.0
        self.register_buffer("film_keep", keep, persistent=False)
        for lin in self.film:  # start as the identity FiLM
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # -- conditioning ---------------------------------------------------------------------------------------
    def prepare(self, latent: Tensor, tokens: Tensor) -> Conditioning:
        """Everything the blocks need besides the running feature map; cheap, computed once per render."""
        cfg = self.config
        stem = self.stem(latent).view(latent.shape[0], cfg.widths[0], cfg.stem_res, cfg.stem_res)
        film, film_latent = [], latent * self.film_keep  # exact: kept entries are multiplied by 1.0
        for lin in self.film:
            scale, shift = lin(film_latent).chunk(2, dim=1)
            film.append((scale[:, :, None, None], shift[:, :, None, None]))
        text, pad = self.text(tokens)
        coords = {cfg.resolution(i): getattr(self, f"coords_{cfg.resolution(i)}") for i in range(len(cfg.widths))}
        return Conditioning(stem, film, text, pad, coords)

    def run_block(self, index: int, h: Tensor, cond: Conditioning) -> Tensor:
        res = self.config.resolution(index)
        return self.blocks[index](h, cond.coords[res], cond.film[index], cond.text, cond.pad)

    def run_blocks(self, cond: Conditioning, stop: int | None = None) -> Tensor:
        """Output of block ``stop`` (default: the last block)."""
        stop = len(self.blocks) - 1 if stop is None else stop
        h = cond.stem
        for i in range(stop + 1):
            h = self.run_block(i, h, cond)
        return h

    def to_image(self, h: Tensor) -> Tensor:
        rgb = self.head(h)
        if self.config.upscale > 1:
            rgb = F.pixel_shuffle(rgb, self.config.upscale)
        return torch.sigmoid(rgb).contiguous()  # callers get a plain NCHW tensor whatever the net's layout

    # -- public entry points --------------------------------------------------------------------------------
    def forward(self, latent: Tensor, tokens: Tensor) -> Tensor:
        return self.to_image(self.run_blocks(self.prepare(latent, tokens)))

    def forward_from(
        self,
        block_index: int,
        h: Tensor,
        latent: Tensor | None = None,
        tokens: Tensor | None = None,
        cond: Conditioning | None = None,
    ) -> Tensor:
        """Run only the blocks after ``block_index`` on ``h`` (that block's output); -1 starts from the stem.

        Equals ``forward`` exactly when ``h`` is the traced output of that block. Pass ``cond`` (from ``prepare``)
        to skip recomputing the conditioning on every slider frame.
        """
        if cond is None:
            if latent is None or tokens is None:
                raise ValueError("forward_from needs either cond= or both latent and tokens")
            cond = self.prepare(latent, tokens)
        for i in range(block_index + 1, len(self.blocks)):
            h = self.run_block(i, h, cond)
        return self.to_image(h)

    def layer_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def cross_attentions(self) -> dict[str, CrossAttention]:
        """Module name -> cross-attention module, for concept edits of ``to_k``/``to_v``."""
        return {f"blocks.{i}.attn": b.attn for i, b in enumerate(self.blocks) if b.attn is not None}


# -- weights on disk --------------------------------------------------------------------------------------------
FORMAT = "neuron-studio/rooms"


def save_weights(model: RoomsGenerator, path: str | Path, vocab: list[str], extra: dict[str, str] | None = None) -> None:
    """Write fp32 safetensors with the config and vocabulary in the metadata; atomic (temp file, then replace).

    >>> save_weights(net, "rooms.safetensors", vocab=list(text.VOCAB), extra={"steps": "4000"})
    """

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.config.to_json(), "vocab": json.dumps(list(vocab))}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)  # an ordinary, shareable file like any other resource
    os.replace(tmp, path)


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[RoomsGenerator, dict[str, str]]:
    """The generator stored at ``path`` (eval mode) and the file's metadata; one clear sentence on failure.

    >>> net, meta = load_weights("resources/rooms/rooms.safetensors")
    >>> json.loads(meta["vocab"])[:3]
    """


    path = Path(path)
    if not path.is_file():
        raise ModelOpenError(
            f"Rooms weights not found at {path}: train them with "
            "'python -m studio.rooms.train --config resources/rooms/train.json --out resources/rooms/rooms.safetensors'."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        model = RoomsGenerator(RoomsConfig.from_json(meta["config"]))
        model.load_state_dict(load_file(str(path), device=str(map_location)))
    except Exception as error:  # noqa: BLE001 - any damage becomes one sentence
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelOpenError(
            f"{path.name} is not usable Rooms weights ({detail[:200]}); it may be truncated or from another "
            "version: retrain or restore it from git."
        ) from error
    # channels_last: oneDNN convolutions on the CPU run about 1.5x faster in this layout (block outputs keep it)
    return model.to(map_location).to(memory_format=torch.channels_last).eval(), meta
