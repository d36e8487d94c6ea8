"""PNG text chunks that make an exported image reopenable: the model, seed, prompt and edits that made it.

    meta = ImageMeta.of(generator, sample, edits, local=True, mask=mask, concept_editor=editor)  # model thread
    save_png_with_meta(image, "out.png", meta)   # full resolution; chunks "parameters" and "neuron-studio"
    meta = read_png_meta("out.png")              # ImageMetaError (one sentence) when the PNG holds neither
    session = meta.as_session()                  # what the window restores when the PNG is dropped on it

``parameters`` is the plain-text chunk Stable Diffusion front ends write (prompt on the first lines, then
``Seed: 3, Model: rooms, ...``); a PNG from such a tool gives back at least its seed and prompt. The
``neuron-studio`` chunk is JSON: an edit recipe (studio.recipe: model reference, unit edits, mask, concept
edits) plus the window's local switch and layer.
"""
from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from models.base import Sample

from .core.atomic import atomic_write_bytes
from .core.errors import StudioError
from .core.hooks import UnitEdit
from .core.images import to_pil
from .recipe import Recipe, RecipeError
from .reference import ModelReference
from .session import Session, concept_state, json_default

if TYPE_CHECKING:
    from models.base import Generator

PARAMETERS_KEY = "parameters"
STUDIO_KEY = "neuron-studio"
FORMAT = "neuron-studio-image"
VERSION = 1
_SEED = re.compile(r"(?:^|,\s*)Seed:\s*(-?\d+)")


#: Sample options longer than this (as text) stay out of the "parameters" line (they are in the recipe).
LONG_TEXT = 120


class ImageMetaError(StudioError):
    """A dropped or opened PNG that holds no settings this app can restore."""


@dataclass
class ImageMeta:
    """What made an image: the model (None for another tool's PNG), sample, unit edits, mask and concept edits."""

    model: ModelReference | None
    sample: Sample
    edits: list[UnitEdit] = field(default_factory=list)
    local: bool = False
    mask: torch.Tensor | None = None
    concept: dict | None = None  # {"metadata", "tensors"} as concept_state() gives
    layer: str | None = None

    @classmethod
    def of(cls, generator: "Generator", sample: Sample, edits: Sequence[UnitEdit] = (), *, local: bool = False,
           mask: torch.Tensor | None = None, concept_editor: Any = None, layer: str | None = None) -> "ImageMeta":
        """The settings of the image ``generator`` renders now (hashes the weights: run it on the model thread)."""
        mask = mask.detach().to("cpu", torch.float32).clone() if mask is not None else None
        return cls(ModelReference.of(generator), sample, list(edits), local, mask, concept_state(concept_editor),
                   layer)

    # -- text ---------------------------------------------------------------------------------------------------
    def parameters(self) -> str:
        """The "parameters" text as Stable Diffusion front ends write it: prompt, then ``Key: value`` pairs."""
        pairs = [f"Seed: {self.sample.seed}"]
        if self.model is not None:
            pairs += [f"Model: {self.model.name or self.model.source}", f"Family: {self.model.family}"]
            if self.model.sha256:
                pairs.append(f"Model hash: {self.model.sha256[:10]}")
        # a long option (a Rooms latent, an inverted image's latent) would bury the line front ends read; the
        # neuron-studio chunk keeps it exactly
        pairs += [f"{k.capitalize()}: {v}" for k, v in sorted(self.sample.options.items()) if len(str(v)) <= LONG_TEXT]
        if self.edits:
            pairs.append("Unit edits: " + " ".join(_edit_text(e) for e in self.edits))
            pairs.append(f"Only inside mask: {'yes' if self.local and self.mask is not None else 'no'}")
        if self.concept is not None:
            pairs.append(f"Concept edits: {len(self.concept['tensors'])} tensors")
        head = f"{self.sample.prompt}\n" if self.sample.prompt else ""
        return head + ", ".join(pairs)

    def to_json(self) -> dict:
        recipe = Recipe(self.model or ModelReference("?", "?"), list(self.edits), self.mask, self.concept,
                        [self.sample])
        return {"format": FORMAT, "version": VERSION, "recipe": recipe.to_json(), "local": self.local,
                "layer": self.layer}

    @classmethod
    def from_json(cls, data: Any) -> "ImageMeta":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ImageMetaError("The image's neuron-studio text is not from this app (its 'format' field differs).")
        if not isinstance(data.get("version"), int) or data["version"] > VERSION:
            raise ImageMetaError(f"The image was saved by a newer Neuron Studio (image format {data.get('version')!r};"
                                 f" this one reads up to {VERSION}): update Neuron Studio to restore it.")
        try:
            recipe = Recipe.from_json(data["recipe"])
        except (KeyError, TypeError) as error:
            raise ImageMetaError("The image's neuron-studio text is damaged (no recipe in it).") from error
        except RecipeError as error:
            raise ImageMetaError(f"The image's settings cannot be read: {error}") from error
        if not recipe.samples:
            raise ImageMetaError("The image's neuron-studio text names no seed; it is damaged.")
        return cls(recipe.model, recipe.samples[0], recipe.unit_edits, bool(data.get("local", False)), recipe.mask,
                   recipe.concept, data.get("layer"))

    def as_session(self) -> Session:
        """A session to open: the window reloads the model when it differs and restores everything else."""
        masks = {"mask": self.mask} if self.mask is not None else {}
        ui = {"local": self.local, **({"layer": self.layer} if self.layer else {})}
        return Session(self.model or ModelReference("", "?"), [self.sample], masks, "mask" if masks else None, [],
                       list(self.edits), self.concept, ui)


def _edit_text(edit: UnitEdit) -> str:
    """The command line's spelling (``blocks.2:17=off``, ``=x2``, ``=set0.5``)."""
    value = "off" if edit.op == "off" else (f"x{edit.value:g}" if edit.op == "scale" else f"set{edit.value:g}")
    return f"{edit.layer}:{edit.unit}={value}"


def png_with_meta(image: torch.Tensor | np.ndarray | Image.Image, meta: ImageMeta) -> bytes:
    """PNG bytes of ``image`` at its own resolution, with both text chunks."""
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, meta.parameters())
    info.add_text(STUDIO_KEY, json.dumps(meta.to_json(), default=json_default, separators=(",", ":")), zip=True)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png_with_meta(image: torch.Tensor | np.ndarray | Image.Image, path: str | os.PathLike,
                       meta: ImageMeta) -> Path:
    """Write the PNG atomically (a ``.png`` suffix is added when missing)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")
    atomic_write_bytes(path, png_with_meta(image, meta))
    return path


def has_settings(path: str | os.PathLike) -> bool:
    """Whether the PNG at ``path`` carries settings :func:`read_png_meta` restores (our recipe or a "parameters"
    chunk); False for a plain picture and for a file that cannot be read (then the caller says why)."""
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})  # PIL reads the text chunks before the pixels
    except (OSError, ValueError, UnidentifiedImageError):
        return False
    return STUDIO_KEY in text or PARAMETERS_KEY in text


def read_png_meta(path: str | os.PathLike) -> ImageMeta:
    """The settings stored in a PNG: ours in full, or the seed and prompt of another tool's "parameters"."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            text = dict(getattr(image, "text", {}) or {})
    except FileNotFoundError as error:
        raise ImageMetaError(f"No image at {path}.") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageMetaError(f"{path.name} is not a readable image ({str(error)[:120]}).") from error
    if STUDIO_KEY in text:
        try:
            data = json.loads(text[STUDIO_KEY])
        except ValueError as error:
            raise ImageMetaError(f"{path.name}'s neuron-studio text is not JSON; the file is damaged.") from error
        return ImageMeta.from_json(data)
    if PARAMETERS_KEY in text:
        return parse_parameters(text[PARAMETERS_KEY], path.name)
    raise ImageMetaError(f"{path.name} holds no seed or edits: only PNGs saved with Export image (or by a tool "
                         "that writes a 'parameters' text chunk) can be restored.")


def parse_parameters(text: str, name: str = "The image") -> ImageMeta:
    """Seed and prompt from a "parameters" text (ours or a Stable Diffusion front end's)."""
    lines = text.strip().splitlines()
    settings = next((i for i in range(len(lines) - 1, -1, -1) if _SEED.search(lines[i])), None)
    if settings is None:
        raise ImageMetaError(f"{name}'s parameters text names no seed (no 'Seed: N'), so there is nothing to restore.")
    seed = int(_SEED.search(lines[settings]).group(1))
    prompt_lines = [line for line in lines[:settings] if not line.startswith("Negative prompt:")]
    prompt = "\n".join(prompt_lines).strip() or None
    return ImageMeta(None, Sample(seed, prompt))
