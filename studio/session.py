"""Sessions: everything a user made on a model, saved to one ``.nstudio`` file and reopened bit for bit.

>>> session = Session.capture(gen, samples=[gen.sample(3)], masks={"lamp": mask}, active_mask="lamp",
...                           unit_edits=[UnitEdit("blocks.1", 17, "off")], concept_editor=concepts)
>>> save_session(session, "work.nstudio")            # atomic; refuses to replace a file it cannot read
>>> session = load_session("work.nstudio")           # SessionError for corrupt or newer files
>>> with session.apply(gen) as applied:              # unit edits as hooks, concept edits in the weights
...     image = gen.render(session.samples)          # the same pixels as before saving, on the same device

The format (a safetensors file whose metadata holds a JSON document) is documented in docs/session-format.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.base import Sample

from . import __version__
from .concept import concept_editor_of, editor_for
from .core.atomic import atomic_path
from .core.errors import StudioError
from .core.hooks import Editor, UnitEdit
from .knobs import Knob, KnobEdit
from .reference import ModelReference

if TYPE_CHECKING:
    from models.base import Generator

FORMAT = "neuron-studio-session"
#: The session format this version writes; it reads every version up to this one.
VERSION = 1
SUFFIX = ".nstudio"
_MASK = "mask/"
_CONCEPT = "concept/"
_KNOB = "knob/"
_INVERSION = "inversion/"


class SessionError(StudioError):
    """A session file that cannot be read (corrupt, newer, not a session) or must not be overwritten."""


@dataclass
class Session:
    """The document behind a ``.nstudio`` file; tensors (masks, concept factors) travel beside the JSON."""

    model: ModelReference
    samples: list["Sample"] = field(default_factory=list)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (H, W) float32 in [0, 1]
    active_mask: str | None = None  # the mask local unit edits and ranking use
    rankings: list[dict] = field(default_factory=list)  # Ranking.to_json() documents, kept as they are
    unit_edits: list[UnitEdit] = field(default_factory=list)
    concept: dict | None = None  # {"metadata": {str: str}, "tensors": {name: tensor}}: ConceptEditor.to_tensors()
    ui: dict[str, Any] = field(default_factory=dict)  # layer, local flag, ...: what the window shows
    device: str = "cpu"  # where the images were rendered: bit-exact reproduction holds on the same one
    version: int = VERSION
    knob_edits: list[KnobEdit] = field(default_factory=list)  # each: the knob's data, its mask and strength
    #: the user's own image, inverted: {"document": Inversion.to_json(), "tensors": Inversion.to_tensors()}; the
    #: sample it found is also in ``samples``, so reopening renders it without inverting again
    inversion: dict | None = None

    # -- making one -----------------------------------------------------------------------------
    @classmethod
    def capture(cls, generator: "Generator", *, samples: Sequence["Sample"] = (),
                masks: Mapping[str, torch.Tensor] | None = None, active_mask: str | None = None,
                unit_edits: Sequence[UnitEdit] = (), concept_editor: Any = None,
                rankings: Sequence[Any] = (), ui: Mapping[str, Any] | None = None,
                reference: ModelReference | None = None, knob_edits: Sequence[KnobEdit] = (),
                inversion: Any = None) -> "Session":
        """A session of ``generator``'s current work (pass ``reference`` to skip re-hashing the weights).

        ``concept_editor``: the model's :class:`studio.concept.ConceptEditor` (its applied stack is saved).
        ``inversion``: a :class:`studio.invert.Inversion` (its record and target image are saved).
        """
        masks = {name: m.detach().to("cpu", torch.float32).contiguous().clone() for name, m in (masks or {}).items()}
        if active_mask is not None and active_mask not in masks:
            raise SessionError(f"The active mask '{active_mask}' is not one of the session's masks.")
        ranked = [r if isinstance(r, dict) else r.to_json() for r in rankings]
        return cls(reference or ModelReference.of(generator), list(samples), masks, active_mask, ranked,
                   list(unit_edits), concept_state(concept_editor), dict(ui or {}), str(generator.device),
                   knob_edits=[KnobEdit(k.knob, k.mask.detach().to("cpu", torch.float32).clone(), float(k.strength),
                                        k.steps) for k in knob_edits],
                   inversion=None if inversion is None else {
                       "document": inversion.to_json(),
                       "tensors": {k: v.detach().to("cpu", torch.float32).contiguous().clone()
                                   for k, v in inversion.to_tensors().items()}})

    @property
    def mask(self) -> torch.Tensor | None:
        """The active mask (what local edits stay inside), or None."""
        return self.masks.get(self.active_mask) if self.active_mask else None

    # -- applying it ----------------------------------------------------------------------------
    def apply(self, generator: "Generator") -> "AppliedSession":
        """Put the session's edits on ``generator``: concept edits into the weights, unit edits as hooks.

        Use it as a context manager; leaving it removes the hooks and puts back the concept edits the model
        had before. The GUI, which keeps its own editor, uses :meth:`restore_concepts` and the fields instead.
        """
        editor = concept_editor_of(generator)
        before = list(editor.stack) if editor is not None else None
        concepts = self.restore_concepts(generator)
        applied = AppliedSession(generator.editor(), concepts, before or [])
        try:
            applied.editor.set(self.unit_edits, mask=self.mask.to(generator.device) if self.mask is not None else None)
            for k in self.knob_edits:
                k.knob.check(generator)
            applied.editor.set_knobs(self.knob_edits)
        except BaseException:
            applied.close()
            raise
        return applied

    def restore_concepts(self, generator: "Generator") -> Any:
        """Make ``generator``'s concept-edit stack the session's (none: revert it); returns the ConceptEditor."""
        if self.concept is None and not generator.cross_attention():
            return None

        editor = editor_for(generator)
        if self.concept is None:
            editor.revert()
        else:
            editor.from_tensors(self.concept["tensors"], self.concept["metadata"])
        return editor

    def render(self, generator: "Generator") -> torch.Tensor:
        """The session's samples rendered with its edits (then the model is left as it was)."""
        with torch.inference_mode(), self.apply(generator):
            return generator.render(self.samples)

    # -- the document ---------------------------------------------------------------------------
    def to_document(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """The JSON document and the tensors stored beside it."""
        tensors = {_MASK + name: m.to(torch.float32).contiguous() for name, m in self.masks.items()}
        concept = None
        if self.concept is not None:
            concept = self.concept["metadata"]
            tensors.update({_CONCEPT + k: v.detach().cpu().contiguous() for k, v in self.concept["tensors"].items()})
        doc = {"format": FORMAT, "version": VERSION, "saved_by": f"neuron-studio {__version__}",
               "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": self.model.to_json(),
               "device": self.device, "samples": [s.to_json() for s in self.samples],
               "masks": sorted(self.masks), "active_mask": self.active_mask, "rankings": self.rankings,
               "unit_edits": [e.to_json() for e in self.unit_edits], "concept_edits": concept, "ui": self.ui}
        if self.knob_edits:
            docs, knob_tensors = knob_edits_document(self.knob_edits)
            doc["knob_edits"] = docs
            tensors.update({_KNOB + k: v for k, v in knob_tensors.items()})
        if self.inversion is not None:
            doc["inversion"] = self.inversion["document"]
            tensors.update({_INVERSION + k: v for k, v in self.inversion["tensors"].items()})
        return doc, tensors

    @classmethod
    def from_document(cls, doc: Mapping, tensors: Mapping[str, torch.Tensor]) -> "Session":

        masks = {name: tensors[_MASK + name] for name in doc.get("masks", [])}
        concept = None
        if doc.get("concept_edits") is not None:
            concept = {"metadata": {str(k): str(v) for k, v in doc["concept_edits"].items()},
                       "tensors": {k[len(_CONCEPT):]: v for k, v in tensors.items() if k.startswith(_CONCEPT)}}
        inversion = None
        if doc.get("inversion") is not None:
            inversion = {"document": dict(doc["inversion"]),
                         "tensors": {k[len(_INVERSION):]: v for k, v in tensors.items() if k.startswith(_INVERSION)}}
        return cls(ModelReference.from_json(doc["model"]), [Sample.from_json(s) for s in doc.get("samples", [])],
                   masks, doc.get("active_mask"), list(doc.get("rankings", [])),
                   [UnitEdit.from_json(e) for e in doc.get("unit_edits", [])], concept, dict(doc.get("ui") or {}),
                   str(doc.get("device", "cpu")), int(doc["version"]),
                   knob_edits_from_document(doc.get("knob_edits") or [],
                                            {k[len(_KNOB):]: v for k, v in tensors.items() if k.startswith(_KNOB)}),
                   inversion)


class AppliedSession:
    """A session's edits on a model; ``close()`` (or leaving the ``with``) takes them off again."""

    def __init__(self, editor: Editor, concepts: Any, before: list | None = None) -> None:
        self.editor, self.concepts = editor, concepts
        self.before = before or []  # the concept edits the model had: put back on close

    def __enter__(self) -> "AppliedSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        self.editor.close()
        if self.concepts is not None:
            self.concepts.revert()
            if self.before:
                self.concepts.push(*self.before)  # original + the same factors in order: the same weights


def knob_edits_document(edits: Sequence[KnobEdit]) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Knob edits as JSON (the knob's document, strength) and tensors (the knob's, the mask) keyed ``<i>/...``."""
    docs, tensors = [], {}
    for i, edit in enumerate(edits):
        knob_tensors, knob_doc = edit.knob.to_tensors()
        # the same knob may sit in several edits: safetensors refuses entries that share memory
        tensors.update({f"{i}/{k}": v.clone() for k, v in knob_tensors.items()})
        tensors[f"{i}/mask"] = edit.mask.detach().to("cpu", torch.float32).contiguous().clone()  # never shared
        doc = {"strength": float(edit.strength), "knob": knob_doc}
        if edit.steps is not None:
            doc["steps"] = list(edit.steps)  # absent: every step (files written before windows existed read so)
        docs.append(doc)
    return docs, tensors


def knob_edits_from_document(docs: Sequence[Mapping], tensors: Mapping[str, torch.Tensor]) -> list[KnobEdit]:
    """The inverse of :func:`knob_edits_document`."""
    edits = []
    for i, d in enumerate(docs):
        prefix = f"{i}/"
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        steps = d.get("steps")
        edits.append(KnobEdit(Knob.from_tensors(own, d["knob"]), own["mask"], float(d["strength"]),
                              tuple(steps) if steps is not None else None))
    return edits


def concept_state(concept_editor: Any) -> dict | None:
    """A ConceptEditor's applied stack as ``{"metadata", "tensors"}`` (None when nothing is applied)."""
    if concept_editor is None or not concept_editor.stack:
        return None
    tensors, metadata = concept_editor.to_tensors()
    return {"metadata": dict(metadata), "tensors": dict(tensors)}


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: detects damage inside the tensor data too."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_session(session: Session, path: str | os.PathLike, *, replace_unreadable: bool = False) -> Path:
    """Write ``session`` atomically (temp file, fsync, rename).

    A file already at ``path`` that this version cannot read (corrupt, from a newer version, not a
    session) is never replaced unless ``replace_unreadable`` (the user confirmed Save As over it).
    """

    path = Path(path)
    if path.exists() and not replace_unreadable:
        try:
            load_session(path)  # all of it: damage inside the tensors counts too
        except SessionError as error:
            raise SessionError(f"{path.name} was not overwritten: {error} Save under another name.") from error
    doc, tensors = session.to_document()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        text = json.dumps(doc, default=json_default)  # NaN/inf kept as Python writes them: nothing is lost
    except TypeError as error:
        raise SessionError(f"The session holds a value that cannot be saved ({error}); nothing was written.") from error
    meta = {"format": FORMAT, "version": str(VERSION), "checksum": _checksum(tensors), "session": text}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def peek_session(path: str | os.PathLike) -> dict[str, str]:
    """The file's safetensors metadata after checking it is a session this version reads (no tensors loaded)."""

    path = Path(path)
    if not path.is_file():
        raise SessionError(f"No session file at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as error:  # noqa: BLE001 - any damage in the header becomes one sentence
        raise SessionError(f"{path.name} is damaged and cannot be read as a session ({_first_line(error)}); "
                           "it was left as it is, and a recovery copy may exist.") from error
    if meta.get("format") != FORMAT:
        what = "a model's weights" if meta else "no Neuron Studio metadata"
        raise SessionError(f"{path.name} is not a Neuron Studio session (it holds {what}); "
                           "open it as a model instead.")
    try:
        version = int(meta.get("version", ""))
    except ValueError as error:
        raise SessionError(f"{path.name} has an unreadable format version {meta.get('version')!r}.") from error
    if version > VERSION:
        raise SessionError(f"{path.name} was saved by a newer Neuron Studio (session format {version}; this one "
                           f"reads up to {VERSION}): update Neuron Studio to open it.")
    return meta


def load_session(path: str | os.PathLike) -> Session:
    """Read a ``.nstudio`` file; raises :class:`SessionError` (one sentence) for anything it cannot use."""

    path = Path(path)
    meta = peek_session(path)
    try:
        tensors = load_file(str(path))
        if meta.get("checksum") != _checksum(tensors):
            raise ValueError("the tensor data does not match its checksum")
        doc = json.loads(meta["session"])
        if doc.get("format") != FORMAT or int(doc.get("version", -1)) != int(meta["version"]):
            raise ValueError("the document's format or version disagrees with the file's")
        return Session.from_document(doc, tensors)
    except SessionError:
        raise
    except Exception as error:  # noqa: BLE001 - damage anywhere becomes one sentence
        raise SessionError(f"{path.name} is damaged and cannot be read as a session ({_first_line(error)}); "
                           "it was left as it is, and a recovery copy may exist.") from error


def json_default(value: Any) -> Any:
    """numpy/torch scalars and arrays in sample options become plain JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
