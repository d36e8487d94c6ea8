"""Concept edits: rewrite what a word means to a text-conditioned model, in closed form (the UCE family).

Every cross-attention key and value projection ``W0`` (out × in) that reads the text is replaced by the ``W``
minimising, over the token embeddings of the edited concepts ``c_i`` and of the preserved concepts ``c_j``::

    edit_scale · Σ_i |W c_i − v_i*|²  +  preserve_scale · Σ_j |W c_j − W0 c_j|²  +  λ' |W − W0|²

with ``v_i* = W0 t_i`` (``t_i`` the target's embedding for *replace*, the guide's for *erase*). The normal
equations give ``W = W0 + ΔW`` with, writing ``C`` (in × n) for the edit columns and ``T`` for their targets::

    M  = edit_scale · C Cᵀ + preserve_scale · P Pᵀ + λ' I              (in × in, shared by every projection)
    ΔW = U Dᵀ,   U = edit_scale · W0 (T − C)   (out × n),   D = M⁻¹ C   (in × n)

so the change has rank at most the number of edit vectors and is kept as those two factors: exact, small, and a
LoRA as it stands (``up = U``, ``down = Dᵀ``). ``λ' = lambda_ · mean |c_i|²`` over the non-zero edit rows, so one
``lambda_`` means the same on a 64-wide word table and on CLIP's 768-wide hidden states. Nothing is solved in half
precision: ``M`` in fp64 on the CPU, the factors in fp32.

Use::

    spec = ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["green", "yellow"])
    editor = editor_for(generator)          # one stack per loaded model
    applied = editor.apply(spec)            # writes the weights (call it on the model's worker thread)
    editor.undo(); editor.redo(); editor.revert()            # revert: bit-exact original weights
    save_edits("edit.safetensors", editor.stack, generator)  # and ``editor.push(*load_edits(path))``
    editor.lora()                           # {"blocks.0.attn.to_k": (up (out, r), down (r, in)), ...}

Which embedding rows stand for a concept (``tokens``): ``"concept"`` its own word rows (the default: best on the
Rooms benchmark, see ``python -m studio bench concept``), ``"last"`` its last word row, ``"all"`` every row of its
encoding (start/end/padding included, as UCE does for CLIP).
"""
from __future__ import annotations

import contextlib
import json
import re
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .core.atomic import atomic_path
from .core.errors import StudioError, UnsupportedOperation
from .core.progress import ProgressCallback, Ticker

if TYPE_CHECKING:
    from models.base import Generator, PromptEncoding

KINDS = ("erase", "replace")
TOKEN_MODES = ("concept", "last", "all")
DEFAULT_TOKENS = "concept"
DEFAULT_LAMBDA = 0.01
EDIT_FORMAT = "neuron-studio/concept-edit"
#: Token strings tokenizers use for words outside their vocabulary.
_UNKNOWN = {"<unk>", "[unk]", "<|unk|>"}


class ConceptError(StudioError):
    """A concept edit that cannot be made as asked (unknown words, nothing to edit, a contradiction)."""


@dataclass(frozen=True)
class ConceptEdit:
    """``replace`` a concept by ``target`` ("red" -> "blue"), or ``erase`` it towards a guide (``target``,
    default the empty prompt)."""

    kind: str
    concept: str
    target: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConceptError(f"Unknown concept edit '{self.kind}': use erase or replace.")
        if not self.concept.strip():
            raise ConceptError("A concept edit needs a concept: type the word or phrase to change.")
        if self.kind == "replace" and not self.target.strip():
            raise ConceptError(f"Replacing '{self.concept}' needs a target: write CONCEPT=TARGET, e.g. red=blue.")
        if self.target.strip().lower() == self.concept.strip().lower():
            raise ConceptError(f"'{self.concept}' would be mapped onto itself, which changes nothing.")

    def label(self) -> str:
        if self.kind == "replace":
            return f"{self.concept} → {self.target}"
        return f"erase {self.concept}" + (f" (guide: {self.target})" if self.target else "")

    def to_json(self) -> dict:
        return {"kind": self.kind, "concept": self.concept, "target": self.target}

    @classmethod
    def from_json(cls, data: Mapping) -> "ConceptEdit":
        return cls(str(data["kind"]), str(data["concept"]), str(data.get("target", "")))


@dataclass(frozen=True)
class ConceptEditSpec:
    """Several edits solved together, the concepts that must keep their outputs, and the strengths.

    ``lambda_``: pull towards the original weights, relative to the edit embeddings' squared norm (larger: gentler
    edit, less spill onto unlisted words). ``edit_scale``: weight of the edit terms. ``preserve_scale``: weight of
    the preserved concepts. ``tokens``: which embedding rows stand for a concept (see the module docstring).
    """

    edits: tuple[ConceptEdit, ...]
    preserve: tuple[str, ...] = ()
    lambda_: float = DEFAULT_LAMBDA
    edit_scale: float = 1.0
    preserve_scale: float = 1.0
    tokens: str = DEFAULT_TOKENS

    def __init__(self, edits: Iterable[ConceptEdit], preserve: Iterable[str] = (), lambda_: float = DEFAULT_LAMBDA,
                 edit_scale: float = 1.0, preserve_scale: float = 1.0, tokens: str = DEFAULT_TOKENS) -> None:
        object.__setattr__(self, "edits", tuple(edits))
        object.__setattr__(self, "preserve", tuple(p.strip() for p in preserve if p.strip()))
        object.__setattr__(self, "lambda_", float(lambda_))
        object.__setattr__(self, "edit_scale", float(edit_scale))
        object.__setattr__(self, "preserve_scale", float(preserve_scale))
        object.__setattr__(self, "tokens", tokens)
        self._check()

    def _check(self) -> None:
        if not self.edits:
            raise ConceptError("Nothing to edit: add at least one erase or replace (a preserve list alone "
                               "changes nothing).")
        if self.tokens not in TOKEN_MODES:
            raise ConceptError(f"Unknown token choice '{self.tokens}': use one of {', '.join(TOKEN_MODES)}.")
        if not self.lambda_ > 0:
            raise ConceptError(f"lambda must be above 0 (it keeps the solve well posed), not {self.lambda_}.")
        if not self.edit_scale > 0 or self.preserve_scale < 0:
            raise ConceptError("The edit scale must be above 0 and the preserve scale at least 0.")
        seen: set[str] = set()
        for e in self.edits:
            key = e.concept.strip().lower()
            if key in seen:
                raise ConceptError(f"'{e.concept}' is edited twice in one solve; keep one of its edits.")
            seen.add(key)
        clash = [p for p in self.preserve if p.lower() in seen]
        if clash:
            raise ConceptError(f"'{clash[0]}' is both edited and preserved; remove it from the preserve list.")

    def label(self) -> str:
        text = ", ".join(e.label() for e in self.edits)
        return text + (f"; keeping {', '.join(self.preserve)}" if self.preserve else "")

    def to_json(self) -> dict:
        return {"edits": [e.to_json() for e in self.edits], "preserve": list(self.preserve), "lambda": self.lambda_,
                "edit_scale": self.edit_scale, "preserve_scale": self.preserve_scale, "tokens": self.tokens}

    @classmethod
    def from_json(cls, data: Mapping) -> "ConceptEditSpec":
        return cls([ConceptEdit.from_json(e) for e in data["edits"]], list(data.get("preserve", [])),
                   float(data.get("lambda", DEFAULT_LAMBDA)), float(data.get("edit_scale", 1.0)),
                   float(data.get("preserve_scale", 1.0)), str(data.get("tokens", DEFAULT_TOKENS)))


@dataclass
class LowRank:
    """ΔW = up @ down for one projection: up (out, r), down (r, in), fp32 (the LoRA layout)."""

    up: torch.Tensor
    down: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.up.shape[1])

    def delta(self) -> torch.Tensor:
        return self.up @ self.down

    @staticmethod
    def concat(parts: Sequence["LowRank"]) -> "LowRank":
        return LowRank(torch.cat([p.up for p in parts], 1), torch.cat([p.down for p in parts], 0))


@dataclass
class AppliedEdit:
    """One solve: its request and the weight change of every projection (``"{attention}.to_k"`` -> factors)."""

    spec: ConceptEditSpec
    factors: dict[str, LowRank]
    seconds: float = 0.0

    @property
    def rank(self) -> int:
        return max((f.rank for f in self.factors.values()), default=0)


# -- which embedding rows stand for a concept ---------------------------------------------------------------------
def unknown_words(generator: "Generator", text: str, encoding: "PromptEncoding | None" = None) -> list[str]:
    """Words of ``text`` the model's tokenizer does not know (they would all share one ``<unk>`` embedding)."""
    encoding = encoding if encoding is not None else generator.encode_prompt(text)
    if _content(encoding) and not any(encoding.tokens[i].lower() in _UNKNOWN for i in _content(encoding)):
        return []
    unknown = []
    for word in re.findall(r"[\w'-]+", text):
        rows = generator.encode_prompt(word)
        content = _content(rows)
        if not content or all(rows.tokens[i].lower() in _UNKNOWN for i in content):
            unknown.append(word)
    return unknown


def _content(encoding: "PromptEncoding") -> list[int]:
    return [int(i) for i in torch.nonzero(encoding.content.reshape(-1)).reshape(-1)]


def _known(generator: "Generator", text: str, role: str) -> "PromptEncoding":
    encoding = generator.encode_prompt(text)
    unknown = unknown_words(generator, text, encoding)
    if unknown:
        raise ConceptError(f"The {role} '{text}' has words {generator.name} does not know ({', '.join(unknown)}); "
                           "use words from the model's vocabulary.")
    if not _content(encoding):
        raise ConceptError(f"The {role} '{text}' holds no word {generator.name} reads; type a word or phrase.")
    return encoding


def _rows(encoding: "PromptEncoding", mode: str) -> list[int]:
    content = _content(encoding)
    if mode == "all":
        return list(range(encoding.embeddings.shape[0]))
    return content[-1:] if mode == "last" else content


def concept_rows(generator: "Generator", text: str, mode: str = DEFAULT_TOKENS) -> torch.Tensor:
    """(n, D) fp32 embedding rows that stand for ``text`` under token ``mode``; unknown words raise."""
    encoding = _known(generator, text, "concept")
    return encoding.embeddings.detach().float().cpu()[_rows(encoding, mode)]


def edit_vectors(generator: "Generator", edit: ConceptEdit, mode: str = DEFAULT_TOKENS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, T): the concept's rows and, row for row, the embeddings whose outputs they must take.

    Same row count: paired in order. A target with no words (the empty guide of *erase*): the guide's rows at the
    same positions (padding / end-of-text). Otherwise every concept row takes the mean of the target's rows.
    """
    source = _known(generator, edit.concept, "concept")
    rows = _rows(source, mode)
    c = source.embeddings.detach().float().cpu()[rows]
    if edit.target.strip():
        target = _known(generator, edit.target, "target" if edit.kind == "replace" else "guide")
    else:
        target = generator.encode_prompt(edit.target)
    t_all = target.embeddings.detach().float().cpu()
    if mode == "all" or not _content(target):
        if t_all.shape[0] != source.embeddings.shape[0]:
            raise ConceptError(f"'{edit.concept}' and '{edit.target}' encode to different lengths; "
                               "choose the 'concept' token mode.")
        return c, t_all[rows]
    t = t_all[_rows(target, mode)]
    if t.shape[0] != c.shape[0]:
        t = t.mean(0, keepdim=True).expand_as(c)
    return c, t.contiguous()


def preserve_rows(generator: "Generator", concepts: Sequence[str], mode: str = DEFAULT_TOKENS) -> torch.Tensor:
    """(m, D) rows of every preserved concept (empty (0, D) when none)."""
    parts = [concept_rows(generator, text, mode) for text in concepts]
    if not parts:
        dim = generator.encode_prompt("").embeddings.shape[-1]
        return torch.zeros(0, dim)
    return torch.cat(parts)


# -- the solve ------------------------------------------------------------------------------------------------
def input_factor(c: torch.Tensor, p: torch.Tensor, lambda_: float, edit_scale: float = 1.0,
                 preserve_scale: float = 1.0) -> torch.Tensor:
    """D = M⁻¹ C (in × n) for edit rows ``c`` (n, in) and preserve rows ``p`` (m, in); shared by all projections.

    With fewer rows k = n + m than inputs, Woodbury's identity solves a k × k system instead of in × in:
    ``M⁻¹ Cᵀ = (Cᵀ − Aᵀ (λ'I + A Aᵀ)⁻¹ A Cᵀ) / λ'`` with ``A`` the scaled rows.
    """
    c, p = c.double(), p.double()  # M is often ill-conditioned (λ' small): fp64 on the CPU costs milliseconds
    dim = c.shape[1]
    norms = (c * c).sum(1)
    norms = norms[norms > 0]  # padding rows (zero in Rooms) must not dilute the scale of lambda
    lam = max(lambda_ * float(norms.mean()) if norms.numel() else lambda_, 1e-12)
    a = torch.cat([edit_scale ** 0.5 * c, preserve_scale ** 0.5 * p])  # (k, in)
    if a.shape[0] < dim:
        small = a @ a.T + lam * torch.eye(a.shape[0], dtype=a.dtype)
        inner = torch.cholesky_solve(a @ c.T, torch.linalg.cholesky(small))
        return ((c.T - a.T @ inner) / lam).float()
    m = a.T @ a + lam * torch.eye(dim, dtype=a.dtype)
    return torch.cholesky_solve(c.T.contiguous(), torch.linalg.cholesky(m)).float()


def solve(generator: "Generator", spec: ConceptEditSpec, progress: ProgressCallback | None = None
          ) -> dict[str, LowRank]:
    """Per-projection factors of the edit ``spec`` against the model's current weights (nothing is written)."""
    projections = projection_map(generator)
    pairs = [edit_vectors(generator, e, spec.tokens) for e in spec.edits]
    c = torch.cat([cp[0] for cp in pairs])
    t = torch.cat([cp[1] for cp in pairs])
    p = preserve_rows(generator, spec.preserve, spec.tokens)
    moving = ((t - c).abs().amax(1) > 0) & (c.abs().amax(1) > 0)  # still rows act as preserves, through M
    if not bool(moving.any()):
        raise ConceptError(f"The edit {spec.label()} changes no embedding row under the '{spec.tokens}' token "
                           "choice; try the 'concept' token choice.")
    d = input_factor(c, p, spec.lambda_, spec.edit_scale, spec.preserve_scale)[:, moving]
    shift = (t - c)[moving].T.contiguous()  # (in, r)
    ticker = Ticker(len(projections), progress, unit="projections", message="solving")
    downs: dict[torch.device, torch.Tensor] = {}  # one (r, in) factor per device, shared by every projection
    factors: dict[str, LowRank] = {}
    for name, linear in projections.items():
        weight = linear.weight.detach()
        if weight.shape[1] != c.shape[1]:
            raise UnsupportedOperation(f"{name} reads {weight.shape[1]}-wide inputs but the prompt encoding is "
                                       f"{c.shape[1]} wide: this model's text path is not supported.")
        if weight.device not in downs:
            downs[weight.device] = d.T.contiguous().to(weight.device)
        up = spec.edit_scale * (weight.float() @ shift.to(weight.device))
        factors[name] = LowRank(up, downs[weight.device])
        ticker.advance(1, name)
    return factors


def projection_map(generator: "Generator") -> dict[str, torch.nn.Linear]:
    """``{"{attention}.to_k": Linear, "{attention}.to_v": Linear, ...}``; a model without any raises."""
    found = generator.cross_attention()
    if not found:
        raise UnsupportedOperation(f"{generator.name} has no cross-attention, so it has no words to rewrite; "
                                   "concept edits need a text-conditioned model such as rooms or Stable Diffusion.")
    return {f"{ca.name}.{kind}": getattr(ca, kind) for ca in found for kind in ("to_k", "to_v")}


# -- the stack ------------------------------------------------------------------------------------------------
class ConceptEditor:
    """The applied concept edits of one model, with undo/redo and a bit-exact revert.

    The weights are always ``original + Σ up @ down`` over the stack, recomputed from a copy of the original
    weights, so undo returns exactly to the previous state and :meth:`revert` to the loaded weights. Each new edit
    is solved against the weights as they are (edits compose). Writes happen in place: call :meth:`apply`,
    :meth:`undo`, :meth:`redo`, :meth:`revert` where renders run (the GUI submits them as jobs on the model's
    worker thread), so no frame sees half-written weights.
    """

    def __init__(self, generator: "Generator") -> None:
        self.generator = generator
        self.projections = projection_map(generator)
        self.stack: list[AppliedEdit] = []
        self.undone: list[AppliedEdit] = []
        self._original: dict[str, torch.Tensor] = {}

    @property
    def can_undo(self) -> bool:
        return bool(self.stack)

    @property
    def can_redo(self) -> bool:
        return bool(self.undone)

    def apply(self, spec: ConceptEditSpec, progress: ProgressCallback | None = None) -> AppliedEdit:
        """Solve ``spec`` against the current weights, write the result and push it on the stack."""
        start = time.perf_counter()
        with _one_cpu_thread(self.generator.device):
            factors = solve(self.generator, spec, progress)
            applied = AppliedEdit(spec, factors, 0.0)
            self.push(applied)
        applied.seconds = time.perf_counter() - start
        return applied

    def push(self, *edits: AppliedEdit) -> None:
        """Apply already-solved edits (from a file or a session) without solving again."""
        for applied in edits:
            self._check_shapes(applied)
        self.stack.extend(self._to_device(a) for a in edits)
        self.undone.clear()
        self._write()

    def undo(self) -> AppliedEdit | None:
        """Take the last edit off; the weights are those before it, exactly."""
        if not self.stack:
            return None
        self.undone.append(self.stack.pop())
        self._write()
        return self.undone[-1]

    def redo(self) -> AppliedEdit | None:
        if not self.undone:
            return None
        self.stack.append(self.undone.pop())
        self._write()
        return self.stack[-1]

    def revert(self) -> None:
        """Back to the loaded weights, bit for bit; the stack and the redo list are emptied."""
        self.stack.clear()
        self.undone.clear()
        self._write()

    @contextlib.contextmanager
    def as_loaded(self):
        """The loaded weights inside the block ("before" renders), the stack's weights again after it.

        >>> with editor.as_loaded():
        ...     before = generator.render([sample])
        """
        if not self.stack:
            yield
            return
        stack, self.stack = self.stack, []
        self._write()
        try:
            yield
        finally:
            self.stack = stack
            self._write()

    def lora(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The whole stack's change per projection, ``{layer}.to_k`` -> (up (out, r), down (r, in)), fp32 on CPU."""
        out: dict[str, list[LowRank]] = {}
        for applied in self.stack:
            for name, f in applied.factors.items():
                out.setdefault(name, []).append(f)
        total = {name: LowRank.concat(parts) for name, parts in out.items()}
        return {name: (f.up.cpu(), f.down.cpu()) for name, f in total.items()}

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The stack as safetensors-ready tensors and string metadata (sessions store these)."""
        return edits_to_tensors(self.stack, self.generator)

    def from_tensors(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
        """Replace the stack by the one stored with :meth:`to_tensors` (the weights are rewritten)."""
        edits = edits_from_tensors(tensors, metadata)
        for applied in edits:
            self._check_shapes(applied)
        self.stack = [self._to_device(a) for a in edits]
        self.undone.clear()
        self._write()

    # -- internals ------------------------------------------------------------------------------------------------
    def _check_shapes(self, applied: AppliedEdit) -> None:
        for name, f in applied.factors.items():
            linear = self.projections.get(name)
            if linear is None:
                raise ConceptError(f"The edit '{applied.spec.label()}' changes {name}, which {self.generator.name} "
                                   "does not have: it was made for another model.")
            if (f.up.shape[0], f.down.shape[1]) != tuple(linear.weight.shape) or f.up.shape[1] != f.down.shape[0]:
                raise ConceptError(f"The edit '{applied.spec.label()}' does not fit {name} of "
                                   f"{self.generator.name} (shape {tuple(linear.weight.shape)}): it was made for "
                                   "another model.")

    def _to_device(self, applied: AppliedEdit) -> AppliedEdit:
        """Factors in fp32 on their projection's device (a no-op for freshly solved edits)."""
        for name, f in applied.factors.items():
            device = self.projections[name].weight.device
            applied.factors[name] = LowRank(f.up.to(device, torch.float32), f.down.to(device, torch.float32))
        return applied

    @torch.no_grad()
    def _write(self) -> None:
        with _one_cpu_thread(self.generator.device):
            self._write_weights()

    def _write_weights(self) -> None:
        touched = {name for applied in self.stack for name in applied.factors}
        for name in touched - set(self._original):
            self._original[name] = self.projections[name].weight.detach().clone()
        for name, original in self._original.items():
            weight = self.projections[name].weight
            parts = [a.factors[name] for a in self.stack if name in a.factors]
            if not parts:
                weight.copy_(original)
                continue
            total = LowRank.concat(parts) if len(parts) > 1 else parts[0]
            if weight.dtype == torch.float32:
                torch.addmm(original, total.up, total.down, out=weight)  # no 100 MB temporaries on SD-sized models
            else:
                weight.copy_(torch.addmm(original.float(), total.up, total.down).to(weight.dtype))


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run on one CPU thread: the solve and the writes are memory-bound (matrix × a few vectors, rank-r updates), so
    more threads gain little, and on a busy machine they wait on each other (measured: 0.5 s vs 7.8 s for SD 1.5)."""
    if torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_EDITORS: "weakref.WeakKeyDictionary[object, ConceptEditor]" = weakref.WeakKeyDictionary()


def editor_for(generator: "Generator") -> ConceptEditor:
    """The one :class:`ConceptEditor` of a loaded model (panels, sessions and export share its stack)."""
    editor = _EDITORS.get(generator)
    if editor is None:
        editor = _EDITORS[generator] = ConceptEditor(generator)
    return editor


def loaded_weights(generator: "Generator"):
    """A context with ``generator``'s concept edits lifted (a no-op when it has none): the model as loaded."""
    editor = _EDITORS.get(generator)
    return editor.as_loaded() if editor is not None else contextlib.nullcontext()


def applied_labels(generator: "Generator") -> list[str]:
    """The labels of the concept edits on ``generator``'s weights, oldest first (none: an empty list)."""
    editor = _EDITORS.get(generator)
    return [a.spec.label() for a in editor.stack] if editor is not None else []


# -- files ----------------------------------------------------------------------------------------------------
def edits_to_tensors(edits: Sequence[AppliedEdit], generator: "Generator | None" = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``edits.{i}.{projection}.up|down`` tensors (fp32, CPU) and metadata holding each edit's request as JSON."""
    tensors: dict[str, torch.Tensor] = {}
    for i, applied in enumerate(edits):
        for name, f in applied.factors.items():
            tensors[f"edits.{i}.{name}.up"] = f.up.detach().float().cpu().clone()
            tensors[f"edits.{i}.{name}.down"] = f.down.detach().float().cpu().clone()  # projections share one down
    meta = {"format": EDIT_FORMAT, "version": "1",
            "edits": json.dumps([{"spec": a.spec.to_json(), "projections": sorted(a.factors),
                                  "seconds": a.seconds} for a in edits])}
    if generator is not None:
        meta.update({"model": str(generator.source), "family": str(generator.family)})
    return tensors, meta


def edits_from_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> list[AppliedEdit]:
    """The inverse of :func:`edits_to_tensors`; a foreign or damaged record raises :class:`ConceptError`."""
    if metadata.get("format") != EDIT_FORMAT:
        raise ConceptError(f"This is not a Neuron Studio concept edit (format {metadata.get('format')!r}).")
    try:
        records = json.loads(metadata["edits"])
        edits = []
        for i, record in enumerate(records):
            factors = {name: LowRank(tensors[f"edits.{i}.{name}.up"].float(), tensors[f"edits.{i}.{name}.down"].float())
                       for name in record["projections"]}
            edits.append(AppliedEdit(ConceptEditSpec.from_json(record["spec"]), factors,
                                     float(record.get("seconds", 0.0))))
    except (KeyError, TypeError, ValueError) as error:
        raise ConceptError(f"The concept edit record is damaged ({error}); save it again.") from error
    return edits


def save_edits(path: str | Path, edits: Sequence[AppliedEdit], generator: "Generator | None" = None) -> Path:
    """Write edits to a safetensors file atomically (JSON requests in its metadata)."""

    tensors, meta = edits_to_tensors(edits, generator)
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_edits(path: str | Path) -> list[AppliedEdit]:
    """Edits saved by :func:`save_edits` (safetensors: no code is ever unpickled)."""

    path = Path(path)
    if not path.is_file():
        raise ConceptError(f"No concept edit file at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ConceptError(f"{path.name} is not a readable concept edit file ({error}); save it again.") from error
    return edits_from_tensors(tensors, meta)


@dataclass
class EditSummary:
    """What one apply did, for the CLI and the panel's status line."""

    label: str
    projections: int
    rank: int
    seconds: float
    parameters: int = field(default=0)

    @classmethod
    def of(cls, applied: AppliedEdit) -> "EditSummary":
        params = sum(f.up.numel() + f.down.numel() for f in applied.factors.values())
        return cls(applied.spec.label(), len(applied.factors), applied.rank, applied.seconds, params)

    def sentence(self) -> str:
        return (f"{self.label}: {self.projections} projections, rank {self.rank}, {self.parameters:,} factor "
                f"values, {self.seconds * 1000:.0f} ms")
