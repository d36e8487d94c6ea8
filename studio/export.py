"""Export the edited model, then reopen what was written and check it renders the same image.

>>> report = export(gen, unit_edits, editor_for(gen), "studio", "edited.safetensors", mask=mask,
...                 samples=[gen.sample(3)])
>>> print(report.text())
exported studio -> edited.safetensors
  baked into the weights: blocks.1:17 off
  kept as recipe, re-applied on load: blocks.1:4 x2 local (masked: it changes the unit only inside the mask)
  concept edits: 1, merged into the weights
  check: reopened and rendered 1 sample: max |diff| 2.4e-08 < 1e-04: same image

Unit edits that are exact in weights (a scale or switch-off everywhere, where the adapter's
``bake_unit_scale`` says folding it is exact) are baked; the rest stay an edit recipe that the studio
re-applies on load (inside a ``studio`` export, beside the file as ``NAME.recipe.json`` otherwise).
Formats: see :data:`FORMATS` and docs/export.md. Run it where renders run (the GUI's worker thread): the
model's weights are changed while it works and restored before it returns. Pass the edits in; another
editor's active edits on the model are refused (clear the live editor first, set it again after).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from safetensors.torch import save_file

from models.base import NativeFormat

from .concept import editor_for
from .core.atomic import atomic_path
from .core.errors import StudioError, UnsupportedOperation
from .core.hooks import UnitEdit
from .core.progress import ProgressCallback, Ticker
from .exported import FORMAT as STUDIO_FORMAT
from .exported import VERSION as STUDIO_VERSION
from .exported import open_model
from .lora import lora_targets, merge_lora, write_lora
from .recipe import Recipe, apply_recipe, load_recipe, save_recipe
from .reference import ModelReference
from .session import concept_state, json_default

if TYPE_CHECKING:
    from models.base import Generator, Sample

TOLERANCE = 1e-4  # max absolute pixel difference (images in [0, 1]) for fp32 models
HALF_TOLERANCE = 1e-2  # fp16/bf16 models: rounding alone reaches ~1e-3


class ExportError(StudioError):
    """An export that cannot be made as asked (unknown format, wrong family, nothing to export)."""


#: A format's name, description, suffix and the sample options it does not record (the contract's type).
ExportFormat = NativeFormat

#: The formats written here, the same for every family; each model adds its own (``Generator.native_formats``).
FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("studio", "safetensors with baked weights and the recipe; the studio reopens it", ".safetensors"),
    ExportFormat("recipe", "edit recipe (JSON) that re-applies every edit to the original model", ".json"),
    ExportFormat("lora", "concept edits as a kohya-layout LoRA (AUTOMATIC1111, ComfyUI)", ".safetensors"),
)}


def export_formats(generator: "Generator") -> dict[str, ExportFormat]:
    """Every format :func:`export` accepts for ``generator``: the studio's own, then the model's native ones."""
    return {**FORMATS, **{f.name: f for f in generator.native_formats()}}


def formats_for(generator: "Generator") -> list[str]:
    """The formats worth offering for ``generator`` (what the CLI accepts and the dialog lists): a LoRA only
    where there is cross-attention to hold concept edits.

        names = formats_for(gen)        # ['studio', 'recipe', 'lora', 'diffusers', 'sd-single-file']
    """
    return [name for name in export_formats(generator) if name != "lora" or generator.cross_attention()]


def describe_edit(e: UnitEdit) -> str:
    """``blocks.1:17 off``, ``blocks.1:4 x2 local``, ``blocks.2:3 =0.5 steps 0:10``."""
    value = {"off": "off", "scale": f"x{e.value:g}", "set": f"={e.value:g}"}[e.op]
    extra = (" local" if e.local else "") + (f" steps {e.steps[0]}:{e.steps[1]}" if e.steps else "")
    return f"{e.layer}:{e.unit} {value}{extra}"


def not_exact_reason(e: UnitEdit) -> str | None:
    """Why an edit cannot be folded into weights in general, or None if it might be (a plain scale or off)."""
    if e.local:
        return "masked: it changes the unit only inside the mask"
    if e.op == "set":
        return "sets a value: not a scaling of the weights"
    if e.steps is not None:
        return f"limited to denoising steps {e.steps[0]}:{e.steps[1]}"
    return None


@dataclass
class ExportReport:
    """What an export wrote, which edits are in the weights and which in the recipe, and the check."""

    format: str
    path: Path
    files: list[Path] = field(default_factory=list)
    baked: list[UnitEdit] = field(default_factory=list)
    kept: list[tuple[UnitEdit, str]] = field(default_factory=list)  # (edit, why it is a recipe edit)
    concept: str = "none"
    max_abs_diff: float | None = None
    tolerance: float = TOLERANCE
    samples: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.max_abs_diff is not None and self.max_abs_diff < self.tolerance

    def verdict(self) -> str:
        if self.max_abs_diff is None:
            return "not checked"
        plural = "s" if self.samples != 1 else ""
        relation = "<" if self.verified else ">="
        outcome = "same image" if self.verified else "DIFFERENT image: do not trust this export"
        return (f"reopened and rendered {self.samples} sample{plural}: max |diff| {self.max_abs_diff:.1e} "
                f"{relation} {self.tolerance:.0e}: {outcome}")

    def text(self) -> str:
        lines = [f"exported {self.format} -> {self.path}"]
        if self.baked:
            lines.append("  baked into the weights: " + ", ".join(describe_edit(e) for e in self.baked))
        if self.kept:
            lines.append("  kept as recipe, re-applied on load: "
                         + "; ".join(f"{describe_edit(e)} ({why})" for e, why in self.kept))
        if not self.baked and not self.kept:
            lines.append("  unit edits: none")
        lines.append(f"  concept edits: {self.concept}")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  check: {self.verdict()}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"format": self.format, "path": str(self.path), "files": [str(f) for f in self.files],
                "baked": [e.to_json() for e in self.baked],
                "kept": [{**e.to_json(), "why": why} for e, why in self.kept], "concept": self.concept,
                "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "verified": self.verified,
                "samples": self.samples, "notes": self.notes}


@dataclass
class _Job:
    """Everything one export needs, passed to the format's writer and reopener."""

    generator: "Generator"
    path: Path
    edits: list[UnitEdit]
    concept_editor: Any
    mask: torch.Tensor | None
    samples: list["Sample"]
    reference: ModelReference
    report: ExportReport
    knob_edits: list = field(default_factory=list)  # studio.knobs.KnobEdit: always recipe hooks

    @property
    def precision(self) -> str:
        return "fp32" if self.generator.dtype == torch.float32 else "fp16"

    def kept_recipe(self, *, concept: bool = False) -> Recipe:
        """The recipe of the edits that are not in the weights (and of the concept edits if asked)."""
        recipe = Recipe(self.reference, [e for e, _ in self.report.kept],
                        self.mask if any(e.local for e, _ in self.report.kept) else None,
                        None, list(self.samples), {describe_edit(e): why for e, why in self.report.kept},
                        list(self.knob_edits))
        if concept:
            recipe.concept = concept_state(self.concept_editor)
        return recipe

    def open_original(self) -> "Generator":
        return open_model(self.reference.source, device=self.generator.device, precision=self.precision)


def _concept_editor(generator: "Generator") -> Any:
    """The model's concept-edit stack when it has one (None for models without cross-attention)."""
    if not generator.cross_attention():
        return None

    return editor_for(generator)


def _pinned(generator: "Generator", samples: list["Sample"]) -> list["Sample"]:
    """Samples with the options the model supplies spelled out (``Generator.pinned_options``: a diffusion model's
    size and scheduler): a file that records neither is then compared on its weights, not on defaults."""
    pins = generator.pinned_options()
    return [replace(s, options={**pins, **s.options}) for s in samples] if pins else samples


def _option_text(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[1]}x{value[0]}"  # an image size, (height, width)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}x{value}"  # a square image size
    return str(value)


def _unrecorded_note(spec: ExportFormat, samples: Sequence["Sample"], checked: bool) -> str:
    """What to render a file with that does not record some options: the values the check used (or, unchecked,
    the samples' values), never a claim about a check that did not run."""
    settings = []
    for name in spec.unrecorded:
        values = list(dict.fromkeys(_option_text(s.option(name)) for s in samples if s.option(name) is not None))
        settings.append(f"{name} {' or '.join(values) or 'as its family defaults'}")
    what = " nor ".join(spec.unrecorded) if len(spec.unrecorded) == 2 else ", ".join(spec.unrecorded)
    plural = "s" if len(samples) != 1 else ""
    where = (f"what the check rendered its {len(samples)} sample{plural} with" if checked
             else "the edited model's settings; no check ran")
    return f"the file records neither {what}: render it with {', '.join(settings)} ({where})"


def _render(generator: "Generator", samples: Sequence["Sample"]) -> torch.Tensor:
    with torch.inference_mode():
        return generator.render(samples).detach().float().cpu()


def _render_with(generator: "Generator", recipe: Recipe) -> torch.Tensor:
    applied = apply_recipe(generator, recipe)
    try:
        return _render(generator, recipe.samples)
    finally:
        applied.close()


def _recipe_beside(path: Path) -> Path:
    return path.with_name(path.name + ".recipe.json")


# -- formats ----------------------------------------------------------------------------------------------------
def _write_studio(job: _Job) -> list[Path]:


    state = job.generator.module.state_dict()
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}  # clone: no shared storage
    recipe = job.kept_recipe()
    meta = {"format": STUDIO_FORMAT, "version": str(STUDIO_VERSION), "family": job.generator.family,
            "base": json.dumps(job.reference.to_json()),
            "recipe": json.dumps(recipe.to_json(), default=json_default),
            "baked": json.dumps([e.to_json() for e in job.report.baked])}
    with atomic_path(job.path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return [job.path]


def _reopen_studio(job: _Job) -> torch.Tensor:

    reopened = open_model(job.path, device=job.generator.device, precision=job.precision)
    return _render(reopened, job.samples)  # the export carries its recipe: nothing to add


def _write_recipe(job: _Job) -> list[Path]:
    return [save_recipe(job.kept_recipe(concept=True), job.path)]


def _reopen_recipe(job: _Job) -> torch.Tensor:

    return _render_with(job.open_original(), load_recipe(job.path))


def _write_lora(job: _Job) -> list[Path]:

    if not job.generator.cross_attention():
        raise ExportError(f"{job.generator.name} has no text conditioning, so it has no concept edits to write as "
                          "a LoRA; choose the studio or recipe format.")
    if job.concept_editor is None or not job.concept_editor.stack:
        raise ExportError("There is no concept edit to export as a LoRA: apply one first (a LoRA holds concept "
                          "edits only; unit edits go to a recipe).")
    labels = [a.spec.label() for a in job.concept_editor.stack]
    base = job.reference.shareable()  # name and hash: a shared LoRA does not carry the user's folders
    meta = {**job.generator.lora_metadata(), "ss_sd_model_name": base["file"],
            "neuron_studio": json.dumps({"kind": "concept-edit", "edits": labels, "model": base})}
    if base["sha256"] and Path(job.reference.source).is_file():
        meta["ss_new_sd_model_hash"] = base["sha256"]  # kohya's name for the sha256 of the checkpoint file
    files = [write_lora(job.concept_editor.lora(), job.path, metadata=meta)]
    return files + _recipe_files(job)


def _reopen_lora(job: _Job) -> torch.Tensor:

    fresh = job.open_original()
    merged = merge_lora(fresh, job.path)
    ours, theirs = lora_targets(fresh), lora_targets(job.generator)
    gap = max(float((ours[n].weight.detach() - theirs[n].weight.detach()).float().abs().max()) for n in merged)
    job.report.notes.append(f"LoRA merged onto the original model: {len(merged)} projections match the edited "
                            f"weights to max |diff| {gap:.1e}")
    return _render_with(fresh, job.kept_recipe())


def _recipe_files(job: _Job) -> list[Path]:
    """The kept edits beside a file in another tool's format (nothing when every edit was baked)."""
    return [save_recipe(job.kept_recipe(), _recipe_beside(job.path))] if job.report.kept or job.knob_edits else []


def _write_native(job: _Job) -> list[Path]:
    """The model writes its own format (``Generator.write_native``); the kept edits go beside it."""
    try:
        written = job.generator.write_native(job.report.format, job.path)
    except UnsupportedOperation as error:
        raise ExportError(f"{str(error).rstrip('.')}; export it as studio (the studio reopens it) or as a "
                          "recipe instead.") from error
    job.report.notes.extend(written.notes)
    return list(written.files) + _recipe_files(job)


def _reopen_own_format(job: _Job) -> torch.Tensor:
    """Open the written file through the registry (its family reads it), re-apply the kept edits, render."""
    reopened = open_model(job.path, device=job.generator.device, precision=job.precision)
    return _render_with(reopened, job.kept_recipe())


_WRITERS: dict[str, tuple[Callable[[_Job], list[Path]], Callable[[_Job], torch.Tensor]]] = {
    "studio": (_write_studio, _reopen_studio),
    "recipe": (_write_recipe, _reopen_recipe),
    "lora": (_write_lora, _reopen_lora),
}
_NATIVE = (_write_native, _reopen_own_format)


# -- the export -------------------------------------------------------------------------------------------------
def _bake(job: _Job) -> None:
    """Fold exact edits into the weights (in place: the caller restores them) and list the rest as kept."""
    bakes = job.report.format != "recipe" and job.report.format != "lora"
    for e in job.edits:
        if not bakes:
            why = "a recipe re-applies every edit" if job.report.format == "recipe" else \
                "a LoRA holds concept edits only"
            job.report.kept.append((e, why))
            continue
        why = not_exact_reason(e)
        if why is None:
            gain = 0.0 if e.op == "off" else float(e.value)
            with torch.no_grad():
                if job.generator.bake_unit_scale(e.layer, e.unit, gain):
                    job.report.baked.append(e)
                    continue
            why = f"the {job.generator.family} model cannot fold this layer's scaling exactly into its weights"
        job.report.kept.append((e, why))


def export(generator: "Generator", edits: Sequence[UnitEdit] = (), concept_editor: Any = None,
           format: str = "studio", path: str | os.PathLike = "edited.safetensors", *,
           mask: torch.Tensor | None = None, samples: Sequence["Sample"] | None = None,
           reference: ModelReference | None = None, verify: bool = True,
           progress: ProgressCallback | None = None, knob_edits: Sequence[Any] = ()) -> ExportReport:
    """Write ``generator`` with ``edits`` (and its concept edits) as ``format`` at ``path``; check it; report.

    ``concept_editor``: the model's ConceptEditor (default: its stack, if it has cross-attention).
    ``samples``: what the check renders (default: seed 0 with the default prompt).
    ``knob_edits``: :class:`studio.knobs.KnobEdit` s; they stay hooks, kept in the export's recipe.
    """
    spec = export_formats(generator).get(format)
    if spec is None:
        raise ExportError(f"Unknown export format '{format}' for {generator.name} (a {generator.family} model): "
                          f"choose one of {', '.join(formats_for(generator))}.")
    path = Path(path).expanduser()
    if spec.suffix and path.suffix.lower() != spec.suffix:
        raise ExportError(f"A {format} export is a {spec.suffix} file: name it {path.stem}{spec.suffix}.")
    busy = generator.edited_layers()  # a reopened export's own recipe hooks are part of the model
    if busy:
        raise ExportError(f"Another editor has edits on {', '.join(busy[:3])}; clear them (or let the export "
                          "apply them) so the check compares against the right image.")
    for e in edits:
        units = generator.layer(e.layer).units
        if not 0 <= e.unit < units:
            raise ExportError(f"Unit {e.unit} does not exist: {e.layer} has units 0..{units - 1}.")
    if mask is not None and tuple(mask.shape[-2:]) != tuple(generator.resolution):
        raise ExportError(f"The mask is {mask.shape[-1]}x{mask.shape[-2]} but the model renders "
                          f"{generator.resolution[1]}x{generator.resolution[0]}; paint it on this model's image.")
    knob_edits = list(knob_edits)
    for k in knob_edits:
        k.knob.check(generator)
    concept_editor = concept_editor if concept_editor is not None else _concept_editor(generator)
    ticker = Ticker(4, progress, unit="steps", message="rendering the edited model")
    report = ExportReport(format, path)
    if generator.dtype != torch.float32:
        report.tolerance = HALF_TOLERANCE
        report.notes.append(f"the model runs in {str(generator.dtype).removeprefix('torch.')}: checked to "
                            f"{HALF_TOLERANCE:g} instead of {TOLERANCE:g}")
    samples = _pinned(generator, list(samples) if samples else [generator.sample(0)])
    mask = mask.detach().to("cpu", torch.float32) if mask is not None else None
    stack = len(concept_editor.stack) if concept_editor is not None else 0
    report.concept = "none" if not stack else {
        "recipe": f"{stack}, in the recipe", "lora": f"{stack}, as the LoRA"}.get(format, f"{stack}, merged into "
                                                                                         "the weights")
    job = _Job(generator, path, list(edits), concept_editor, mask, samples,
               reference or ModelReference.of(generator), report, knob_edits)
    if knob_edits:
        report.notes.append(f"{len(knob_edits)} knob edit(s) kept as recipe hooks: a knob's targets are no weight")
    expected = None
    if verify:
        with torch.inference_mode(), generator.editor() as editor:
            editor.set(job.edits, mask=mask.to(generator.device) if mask is not None else None)
            editor.set_knobs(knob_edits)
            expected = generator.render(samples).detach().float().cpu()
    ticker.advance(1, "baking exact edits")
    write, reopen = _WRITERS.get(format, _NATIVE)
    bakes = format not in ("recipe", "lora") and any(not_exact_reason(e) is None for e in job.edits)
    # only a bake changes weights: then copy them (to the CPU) first, and put them back whatever happens
    snapshot = {k: v.detach().to("cpu", copy=True) for k, v in generator.module.state_dict().items()} \
        if bakes else None
    try:
        _bake(job)
        ticker.advance(1, f"writing {path.name}")
        report.files = write(job)
        if spec.unrecorded:
            report.notes.append(_unrecorded_note(spec, samples, verify))
    finally:
        if snapshot is not None:
            generator.module.load_state_dict(snapshot)  # the app's model is as it was, bit for bit
    ticker.advance(1, "reopening and checking")
    if expected is not None:
        try:
            got = reopen(job)
        except StudioError as error:
            raise ExportError(f"{path.name} was written but could not be reopened to check it ({error}); "
                              "do not use it.") from error
        report.samples = len(samples)
        report.max_abs_diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    ticker.advance(1, "done")
    return report


def export_session(session: Any, format: str, path: str | os.PathLike, *, device: str = "auto",
                   precision: str = "auto", progress: ProgressCallback | None = None) -> ExportReport:
    """Open a session's model, put its edits on, and :func:`export` it (what ``python -m studio export`` does)."""

    generator = open_model(session.model.source, device=device, precision=precision)
    mismatch = session.model.mismatch(generator)
    concepts = session.restore_concepts(generator)
    report = export(generator, session.unit_edits, concepts, format, path, mask=session.mask,
                    samples=session.samples or None, reference=session.model, progress=progress,
                    knob_edits=session.knob_edits)
    if mismatch:
        report.notes.insert(0, mismatch)
    return report
