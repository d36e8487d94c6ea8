"""Edit files given on the command line, combined into one recipe for a model: what ``export --edits`` and
``apply --edits`` read, so a researcher exports without making a session first.

    recipe = read_edit_files(["red2blue.safetensors", "lamp-off.json"], generator)
    applied = apply_recipe(generator, recipe)           # or export(generator, recipe.unit_edits, ...)

Kinds (:data:`KINDS`, asked in order): a concept edit (``concept --save-edit``, safetensors with metadata format
``neuron-studio/concept-edit``), a knob (safetensors, ``neuron-studio-knob``: applied at strength 1 over the
whole image) and an edit recipe (``export --format recipe``, JSON ``neuron-studio-recipe``: unit and knob edits,
their mask and samples, concept edits). Another kind is one more :class:`EditFileKind` whose ``read`` returns the
file's edits as a :class:`Recipe`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from models.registry import read_safetensors_header

from .concept import EDIT_FORMAT, edits_from_tensors, edits_to_tensors, load_edits
from .core.errors import StudioError
from .knobs import FORMAT as KNOB_FORMAT
from .knobs import KnobEdit, load_knob
from .recipe import FORMAT as RECIPE_FORMAT
from .recipe import Recipe, check_recipe, load_recipe
from .reference import ModelReference

if TYPE_CHECKING:
    from models.base import Generator


class EditFileError(StudioError):
    """An edit file that is of no known kind, or edit files that do not combine."""


@dataclass(frozen=True)
class EditFileKind:
    """One kind of edit file: how to tell it (from the path) and how to read it into a recipe."""

    name: str
    claims: Callable[[Path], bool]
    read: Callable[[Path, "Generator"], Recipe]


def _safetensors_format(path: Path) -> str | None:
    try:
        metadata, _ = read_safetensors_header(path)
    except (OSError, ValueError):
        return None
    return metadata.get("format")


def _json_format(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def _read_concept(path: Path, generator: "Generator") -> Recipe:
    tensors, metadata = edits_to_tensors(load_edits(path), generator)
    return Recipe(ModelReference.of(generator, hash_contents=False), concept={"metadata": metadata,
                                                                                "tensors": tensors})


def _read_knob(path: Path, generator: "Generator") -> Recipe:
    knob = load_knob(path)
    knob.check(generator)
    everywhere = torch.ones(tuple(generator.resolution))  # a file alone names no region: the whole image
    return Recipe(ModelReference.of(generator, hash_contents=False), knob_edits=[KnobEdit(knob, everywhere, 1.0)])


def _read_recipe(path: Path, generator: "Generator") -> Recipe:
    recipe = load_recipe(path)
    check_recipe(generator, recipe)
    return recipe


#: The kinds of edit file, asked in order (a new kind of edit file adds its EditFileKind here).
KINDS: list[EditFileKind] = [
    EditFileKind("concept edit", lambda p: p.suffix.lower() == ".safetensors" and _safetensors_format(p) == EDIT_FORMAT,
                 _read_concept),
    EditFileKind("knob", lambda p: p.suffix.lower() == ".safetensors" and _safetensors_format(p) == KNOB_FORMAT,
                 _read_knob),
    EditFileKind("edit recipe", lambda p: p.suffix.lower() == ".json" and _json_format(p) == RECIPE_FORMAT,
                 _read_recipe),
]


def read_edit_files(paths: Sequence[str | os.PathLike], generator: "Generator") -> Recipe:
    """One recipe for ``generator`` holding every file's edits, in order (concept edits stacked, unit edits
    joined); refuses a file of no known kind, edits for units the model lacks, and two different masks."""
    combined = Recipe(ModelReference.of(generator, hash_contents=False))
    concept_edits = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise EditFileError(f"No edit file at {path}.")
        kind = next((k for k in KINDS if k.claims(path)), None)
        if kind is None:
            raise EditFileError(f"{path.name} is not an edit file Neuron Studio reads: expected "
                                f"{' or '.join(k.name for k in KINDS)} (from concept --save-edit, a knob "
                                "file, or export --format recipe).")
        part = kind.read(path, generator)
        combined.unit_edits += part.unit_edits
        combined.knob_edits += part.knob_edits
        if part.mask is not None:
            if combined.mask is not None and not torch.equal(combined.mask, part.mask):
                raise EditFileError(f"{path.name} has another mask than an earlier edit file: local edits of one "
                                    "export share one mask; combine them in the app.")
            combined.mask = part.mask
        combined.samples = combined.samples or list(part.samples)
        combined.notes.update(part.notes)
        if part.concept is not None:
            concept_edits += edits_from_tensors(part.concept["tensors"], part.concept["metadata"])
    if concept_edits:
        tensors, metadata = edits_to_tensors(concept_edits, generator)
        combined.concept = {"metadata": metadata, "tensors": tensors}
    return combined
