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

from models.sd_convert import save_single_file
from models.sd_sampling import SCHEDULERS
from models.stylegan_formats import rosinality_args, to_rosinality_checkpoint

from .concept import editor_for
from .core.atomic import atomic_path
from .core.errors import StudioError, UnsupportedOperation
from .core.folders import atomic_folder
from .core.hooks import LayerEdit, UnitEdit
from .core.progress import ProgressCallback, Ticker
from .exported import FORMAT as STUDIO_FORMAT
from .exported import VERSION as STUDIO_VERSION
from .exported import open_model
from .lora import lora_targets, merge_lora, write_lora
from .recipe import Recipe, apply_recipe, load_recipe, save_recipe
from .reference import ModelReference
from .session import json_default

if TYPE_CHECKING:
    from models.base import Generator, Sample

TOLERANCE = 1e-4  # max absolute pixel difference (images in [0, 1]) for fp32 models
HALF_TOLERANCE = 1e-2  # fp16/bf16 models: rounding alone reaches ~1e-3


class ExportError(StudioError):
    """An export that cannot be made as asked (unknown format, wrong family, nothing to export)."""


@dataclass(frozen=True)
class ExportFormat:
    name: str
    description: str
    suffix: str  # what the output path must end with ("" for a folder)
    families: tuple[str, ...] | None = None  # None: every family


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("studio", "safetensors with baked weights and the recipe; the studio reopens it", ".safetensors"),
    ExportFormat("recipe", "edit recipe (JSON) that re-applies every edit to the original model", ".json"),
    ExportFormat("lora", "concept edits as a kohya-layout LoRA (AUTOMATIC1111, ComfyUI)", ".safetensors"),
    ExportFormat("diffusers", "a diffusers pipeline folder (save_pretrained, safetensors)", "", ("diffusion",)),
    ExportFormat("sd-single-file", "one .safetensors in the original SD key layout (AUTOMATIC1111, ComfyUI)",
                 ".safetensors", ("diffusion",)),
    ExportFormat("stylegan-pt", "StyleGAN2 checkpoint in rosinality/stylegan2-pytorch's layout", ".pt",
                 ("stylegan",)),
)}


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
            from .session import concept_state

            recipe.concept = concept_state(self.concept_editor)
        return recipe

    def open_original(self) -> "Generator":

        return open_model(self.reference.source, device=self.generator.device, precision=self.precision)


def _concept_editor(generator: "Generator") -> Any:
    """The model's concept-edit stack when it has one (None for models without cross-attention)."""
    if not generator.cross_attention():
        return None

    return editor_for(generator)


def _active_edits(generator: "Generator") -> list[str]:
    """Layers where an editor other than the export's has edits on: they would leak into the reference."""
    own = getattr(generator, "export_recipe", None)  # a reopened export's recipe hooks are part of the model
    ours = set(map(id, own.editor.layers.values())) if own is not None else set()
    names = []
    for name, module in generator.module.named_modules():
        for hook in module._forward_hooks.values():
            owner = getattr(hook, "__self__", None)
            if isinstance(owner, LayerEdit) and owner.edited and id(owner) not in ours:
                names.append(name)
    return names


def _pinned(generator: "Generator", samples: list["Sample"]) -> list["Sample"]:
    """Diffusion samples with the image size and scheduler spelled out: an original-layout single file records
    neither, so the check (and whoever renders the export) must name them to compare weights, not defaults."""
    if generator.family != "diffusion":
        return samples

    own = type(generator.pipe.scheduler).__name__
    pins: dict[str, Any] = {"size": list(generator.resolution)}
    pins.update({"scheduler": key for key, name in SCHEDULERS.items() if name == own})
    return [replace(s, options={**pins, **s.options}) for s in samples]


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
    files = [write_lora(job.concept_editor.lora(), job.path,
                        metadata={"neuron_studio": json.dumps({"kind": "concept-edit", "edits": labels,
                                                               "model": job.reference.to_json()})})]
    return files + _recipe_files(job)


def _reopen_lora(job: _Job) -> torch.Tensor:

    fresh = job.open_original()
    merged = merge_lora(fresh, job.path)
    ours, theirs = lora_targets(fresh), lora_targets(job.generator)
    gap = max(float((ours[n].weight.detach() - theirs[n].weight.detach()).float().abs().max()) for n in merged)
    job.report.notes.append(f"LoRA merged onto the original model: {len(merged)} projections match the edited "
                            f"weights to max |diff| {gap:.1e}")
    return _render_with(fresh, job.kept_recipe())


def _write_stylegan_pt(job: _Job) -> list[Path]:


    try:
        checkpoint = to_rosinality_checkpoint(job.generator.net)
    except UnsupportedOperation as error:
        raise ExportError(f"{str(error).rstrip('.')}; export it as studio (the studio reopens it) or as a "
                          "recipe instead.") from error
    args = rosinality_args(job.generator.net)
    if args is None:
        job.report.notes.append("its channel widths follow no rosinality channel multiplier: the studio reopens "
                                "the checkpoint, rosinality's Generator(...) needs its widths edited")
    else:
        job.report.notes.append("rosinality: Generator(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")")
    with atomic_path(job.path, suffix=".pt") as tmp:
        torch.save(checkpoint, tmp)
    return [job.path] + _recipe_files(job)


def _recipe_files(job: _Job) -> list[Path]:
    """The kept edits beside a file in another tool's format (nothing when every edit was baked)."""
    return [save_recipe(job.kept_recipe(), _recipe_beside(job.path))] if job.report.kept or job.knob_edits else []


def _reopen_own_format(job: _Job) -> torch.Tensor:
    """Open the written file through the registry (its family reads it), re-apply the kept edits, render."""

    reopened = open_model(job.path, device=job.generator.device, precision=job.precision)
    return _render_with(reopened, job.kept_recipe())


def _write_diffusers(job: _Job) -> list[Path]:

    with atomic_folder(job.path, marker="model_index.json") as tmp:
        job.generator.pipe.save_pretrained(str(tmp), safe_serialization=True)
    return [job.path] + _recipe_files(job)


def _write_sd_single_file(job: _Job) -> list[Path]:


    save_single_file(job.generator.pipe, job.path)
    h, w = job.generator.resolution
    scheduler = job.samples[0].option("scheduler") if job.samples else None
    job.report.notes.append(f"an original-layout file records neither image size nor scheduler: render it at "
                            f"{w}x{h} with {scheduler or 'the model family default'} (as the check did)")
    # its tokenizer beside it ("NAME.tokenizer/"), where the studio looks, so it reopens offline as it was
    tokenizers = job.path.with_name(job.path.stem + ".tokenizer")
    with atomic_folder(tokenizers, marker="vocab.json") as tmp:
        _write_clip_files(job.generator.pipe.tokenizer, tmp)
    return [job.path, tokenizers] + _recipe_files(job)


def _write_clip_files(tokenizer: Any, folder: Path) -> None:
    """CLIP's ``vocab.json`` + ``merges.txt`` (what single-file loaders read) for a slow or fast tokenizer."""
    tokenizer.save_pretrained(str(folder))
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(tokenizer.get_vocab(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


_WRITERS: dict[str, tuple[Callable[[_Job], list[Path]], Callable[[_Job], torch.Tensor]]] = {
    "studio": (_write_studio, _reopen_studio),
    "recipe": (_write_recipe, _reopen_recipe),
    "lora": (_write_lora, _reopen_lora),
    "stylegan-pt": (_write_stylegan_pt, _reopen_own_format),
    "diffusers": (_write_diffusers, _reopen_own_format),
    "sd-single-file": (_write_sd_single_file, _reopen_own_format),
}


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
    spec = FORMATS.get(format)
    if spec is None:
        raise ExportError(f"Unknown export format '{format}': choose one of {', '.join(FORMATS)}.")
    if spec.families is not None and generator.family not in spec.families:
        raise ExportError(f"The {format} format is for {' or '.join(spec.families)} models, and "
                          f"{generator.name} is a {generator.family} model; choose studio or recipe.")
    path = Path(path).expanduser()
    if spec.suffix and path.suffix.lower() != spec.suffix:
        raise ExportError(f"A {format} export is a {spec.suffix} file: name it {path.stem}{spec.suffix}.")
    busy = _active_edits(generator)
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
    write, reopen = _WRITERS[format]
    bakes = format not in ("recipe", "lora") and any(not_exact_reason(e) is None for e in job.edits)
    # only a bake changes weights: then copy them (to the CPU) first, and put them back whatever happens
    snapshot = {k: v.detach().to("cpu", copy=True) for k, v in generator.module.state_dict().items()} \
        if bakes else None
    try:
        _bake(job)
        ticker.advance(1, f"writing {path.name}")
        report.files = write(job)
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
