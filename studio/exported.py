"""Open any model the application knows: every family of ``models/`` plus Neuron Studio's own ``studio`` export.

A ``studio`` export is the original family's model with the exported weights and its recipe on::

    gen = open_model("edited.safetensors")       # sniffed by the metadata format "neuron-studio/export"
    gen.edited_layers(kept=True)                 # the recipe's hooks, kept for the model's lifetime
    gen.export_base                              # ModelReference of the model it was exported from

The file holds the full ``state_dict`` of the edited model (exact edits baked, concept edits merged); its
metadata holds the base model reference and the recipe of the edits that could not be baked. The base is
opened through the registry only to build the architecture: every weight then comes from the file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from models import registry
from models.base import FileProbe, Generator, ModelEntry
from studio.core.errors import ModelOpenError, StudioError
from studio.recipe import Recipe, apply_recipe
from studio.reference import ModelReference

#: safetensors metadata ``format`` of a ``studio`` export.
FORMAT = "neuron-studio/export"
VERSION = 1


class ExportedFamily:
    """Registry entry for ``studio`` exports; delegates to the family they were exported from."""

    name = "exported"

    def builtins(self) -> list[ModelEntry]:
        return []

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        raise ModelOpenError(f"'{name}' is not a built-in model.")

    def sniff(self, probe: FileProbe) -> bool:
        return bool(probe.safetensors_metadata) and probe.safetensors_metadata.get("format") == FORMAT

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        path = Path(probe.path)
        meta = probe.safetensors_metadata or {}
        version = int(meta.get("version", "0") or 0)
        if version > VERSION:
            raise ModelOpenError(f"{path.name} was exported by a newer Neuron Studio (export format {version}; this "
                                 f"one reads up to {VERSION}): update Neuron Studio to open it.")
        try:
            base = ModelReference.from_json(json.loads(meta["base"]))
            recipe = Recipe.from_json(json.loads(meta["recipe"]))
        except (KeyError, ValueError, TypeError) as error:
            raise ModelOpenError(f"{path.name} has damaged export metadata ({error}); export it again.") from error
        try:
            generator = open_model(base.source, device=device, precision=precision)
        except ModelOpenError as error:
            raise ModelOpenError(f"{path.name} was exported from {base.source}, which cannot be opened here "
                                 f"({error}); put that model back, or export to the family's own format.") from error
        state = load_file(str(path), device="cpu")
        try:
            generator.module.load_state_dict(state, strict=True)
        except RuntimeError as error:
            detail = str(error).splitlines()[0]
            raise ModelOpenError(f"{path.name} does not fit {base.source} any more ({detail[:200]}): the original "
                                 "model changed since the export; export again from the current one.") from error
        try:
            applied = apply_recipe(generator, recipe)
        except StudioError as error:
            raise ModelOpenError(f"{path.name}: its recipe does not apply ({error}).") from error
        generator.keep_edits(applied.editor)  # hooks live as long as the model, and are not "another editor's"
        generator.export_base = base
        generator.name, generator.source = path.stem, str(path)
        return generator


FAMILY = ExportedFamily()


def open_model(spec: str | Path | None = None, device: str | torch.device = "auto",
               precision: str = "auto") -> Generator:
    """A generator from a built-in name or a path, as :func:`models.registry.open_model`, studio exports included."""
    return registry.open_model(spec, device=device, precision=precision, extra_families=(FAMILY,))
