"""Edit recipes: a JSON file that re-applies unit edits and concept edits to the original model.

>>> recipe = Recipe.of(gen, unit_edits=[UnitEdit("blocks.1", 17, "off")], mask=mask, concept_editor=concepts)
>>> save_recipe(recipe, "edits.json")                # atomic
>>> recipe = load_recipe("edits.json")               # RecipeError for anything it cannot use
>>> applied = apply_recipe(open_model(recipe.model.source), recipe)   # hooks stay until applied.close()

Tensors (the mask, concept-edit factors) are inline, as base64 little-endian bytes with their dtype and
shape, so a recipe is one self-contained text file; see docs/export.md.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from models.base import Sample

from .core.atomic import atomic_write_text
from .core.errors import StudioError
from .core.hooks import UnitEdit
from .reference import ModelReference
from .knobs import KnobEdit
from .session import (AppliedSession, Session, concept_state, json_default, knob_edits_document,
                      knob_edits_from_document)

if TYPE_CHECKING:
    from models.base import Generator, Sample

FORMAT = "neuron-studio-recipe"
VERSION = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "bool": torch.bool,
           "int64": torch.int64}


class RecipeError(StudioError):
    """A recipe that cannot be read or does not fit the model it is applied to."""


def encode_tensor(t: torch.Tensor) -> dict:
    """A tensor as JSON: dtype, shape and base64 of its little-endian bytes (exact, unlike decimal lists)."""
    t = t.detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise RecipeError(f"Cannot store a {name} tensor in a recipe.")
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    if np.little_endian is False:  # pragma: no cover - every supported platform is little-endian
        raise RecipeError("Recipes are written on little-endian machines only.")
    return {"dtype": name, "shape": list(t.shape), "base64": base64.b64encode(raw).decode("ascii")}


def decode_tensor(data: Mapping) -> torch.Tensor:
    dtype = _DTYPES[str(data["dtype"])]
    raw = bytearray(base64.b64decode(data["base64"], validate=True))
    shape = [int(n) for n in data["shape"]]
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    return flat.view(dtype).reshape(shape).clone()


@dataclass
class Recipe:
    """Unit edits (with the mask local ones stay inside) and concept edits, for one original model."""

    model: ModelReference
    unit_edits: list[UnitEdit] = field(default_factory=list)
    mask: torch.Tensor | None = None  # (H, W) in [0, 1] at image resolution
    concept: dict | None = None  # {"metadata", "tensors"}: ConceptEditor.to_tensors()
    samples: list["Sample"] = field(default_factory=list)  # what the export was checked on
    notes: dict[str, str] = field(default_factory=dict)  # per edit key: why it is a recipe edit, not a weight
    knob_edits: list[KnobEdit] = field(default_factory=list)  # stay hooks: a knob's targets are not a weight

    @classmethod
    def of(cls, generator: "Generator", *, unit_edits: Sequence[UnitEdit] = (), mask: torch.Tensor | None = None,
           concept_editor: Any = None, samples: Sequence["Sample"] = (),
           reference: ModelReference | None = None, knob_edits: Sequence[KnobEdit] = ()) -> "Recipe":
        mask = mask.detach().to("cpu", torch.float32).clone() if mask is not None else None
        return cls(reference or ModelReference.of(generator), list(unit_edits), mask,
                   concept_state(concept_editor), list(samples), knob_edits=list(knob_edits))

    @classmethod
    def from_session(cls, session: Session) -> "Recipe":
        return cls(session.model, list(session.unit_edits), session.mask, session.concept, list(session.samples),
                   knob_edits=list(session.knob_edits))

    @property
    def empty(self) -> bool:
        return not self.unit_edits and self.concept is None and not self.knob_edits

    def to_json(self) -> dict:
        concept = None
        if self.concept is not None:
            concept = {"metadata": self.concept["metadata"],
                       "tensors": {k: encode_tensor(v) for k, v in sorted(self.concept["tensors"].items())}}
        data = {"format": FORMAT, "version": VERSION, "model": self.model.to_json(),
                "unit_edits": [e.to_json() for e in self.unit_edits],
                "mask": encode_tensor(self.mask) if self.mask is not None else None,
                "concept_edits": concept, "samples": [s.to_json() for s in self.samples], "notes": self.notes}
        if self.knob_edits:
            docs, tensors = knob_edits_document(self.knob_edits)
            data["knob_edits"] = {"edits": docs, "tensors": {k: encode_tensor(v) for k, v in sorted(tensors.items())}}
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> "Recipe":

        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise RecipeError("This is not a Neuron Studio edit recipe (its 'format' field is missing or other).")
        version = data.get("version")
        if not isinstance(version, int):
            raise RecipeError(f"The recipe's format version {version!r} is not a number; the file is damaged.")
        if version > VERSION:
            raise RecipeError(f"The recipe was written by a newer Neuron Studio (recipe format {version}; this one "
                              f"reads up to {VERSION}): update Neuron Studio to apply it.")
        try:
            concept = data.get("concept_edits")
            if concept is not None:
                concept = {"metadata": {str(k): str(v) for k, v in concept["metadata"].items()},
                           "tensors": {k: decode_tensor(v) for k, v in concept["tensors"].items()}}
            mask = decode_tensor(data["mask"]) if data.get("mask") is not None else None
            knobs = data.get("knob_edits")
            knob_edits = knob_edits_from_document(knobs["edits"], {k: decode_tensor(v) for k, v in
                                                                   knobs["tensors"].items()}) if knobs else []
            return cls(ModelReference.from_json(data["model"]), [UnitEdit.from_json(e) for e in data["unit_edits"]],
                       mask, concept, [Sample.from_json(s) for s in data.get("samples", [])],
                       {str(k): str(v) for k, v in (data.get("notes") or {}).items()}, knob_edits)
        except StudioError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise RecipeError(f"The recipe is damaged ({type(error).__name__}: {str(error)[:160]}); "
                              "export it again.") from error

    def as_session(self) -> Session:
        masks = {"recipe": self.mask} if self.mask is not None else {}
        return Session(self.model, list(self.samples), masks, "recipe" if masks else None, [],
                       list(self.unit_edits), self.concept, knob_edits=list(self.knob_edits))


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Write the recipe as indented JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(recipe.to_json(), indent=1, default=json_default) + "\n")
    return path


def load_recipe(path: str | os.PathLike) -> Recipe:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RecipeError(f"No recipe file at {path}.") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RecipeError(f"{path.name} is not readable JSON ({str(error)[:160]}); it may be truncated.") from error
    return Recipe.from_json(data)


def apply_recipe(generator: "Generator", recipe: Recipe, *, check_family: bool = True) -> AppliedSession:
    """Re-apply ``recipe`` on ``generator``: concept edits into the weights, unit edits as hooks kept open.

    The edits stay until ``close()`` on the result (a reopened export keeps it for the model's lifetime).
    Every unit is checked against the model first, so a recipe for another model fails in one sentence.
    """
    check_recipe(generator, recipe, check_family=check_family)
    return recipe.as_session().apply(generator)


def check_recipe(generator: "Generator", recipe: Recipe, *, check_family: bool = True) -> None:
    """Raise :class:`RecipeError` (one sentence) when ``recipe`` does not fit ``generator``."""
    if check_family and recipe.model.family not in ("?", generator.family):
        raise RecipeError(f"The recipe was made for a {recipe.model.family} model ({recipe.model.source}), not "
                          f"a {generator.family} one; open {recipe.model.source} to apply it.")
    for e in recipe.unit_edits:
        units = generator.layer(e.layer).units
        if not 0 <= e.unit < units:
            raise RecipeError(f"The recipe edits unit {e.unit} of {e.layer}, which has units 0..{units - 1}: "
                              "it was made for another model.")
    for k in recipe.knob_edits:
        k.knob.check(generator)
    if recipe.mask is not None and tuple(recipe.mask.shape[-2:]) != tuple(generator.resolution):
        raise RecipeError(f"The recipe's mask is {recipe.mask.shape[-1]}x{recipe.mask.shape[-2]} but the model renders "
                          f"{generator.resolution[1]}x{generator.resolution[0]}: it was made for another model.")
