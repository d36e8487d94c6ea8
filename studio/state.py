"""The window's editable state as one plain, Qt-free object, so sessions can save it and scripts can build it.

    state = StudioState(model="rooms", sample=gen.sample(3))
    state.mask = torch.zeros(128, 128); state.mask[20:60, 30:90] = 1
    state.layer = "blocks.1"
    state.edits = [UnitEdit("blocks.1", 17, "off"), UnitEdit("blocks.1", 4, "scale", 2.5)]
    state.local = True                               # edits stay inside the mask (local relighting)
    state.render_edits()                             # the edits with local set, what the renderer gets
    state.events.mask.connect(lambda event: canvas.show_mask(event.value))   # a view follows the state
    with state.batch():                              # a restore: each field changes once, then one ``changed``
        state.sample, state.edits = sample, edits
    session = state.to_session(gen)                  # studio.session.Session (save_session writes it)
    state = StudioState.from_session(session)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Iterator

import torch

from .core.events import EventEmitter
from .core.hooks import UnitEdit
from .invert import Inversion
from .knobs import KnobEdit
from .session import Session

if TYPE_CHECKING:
    from models.base import Generator, Sample

MASK_NAME = "mask"


@dataclass
class RankOptions:
    """How the Rank button ranks: ``method`` exact|fast, ``ablation`` zero|mean, over ``seeds``."""

    method: str = "fast"
    ablation: str = "zero"
    seeds: str = ""  # "" = the current seed; else e.g. "0-3,7" (parse_seeds)

    def to_json(self) -> dict:
        return {"method": self.method, "ablation": self.ablation, "seeds": self.seeds}

    @classmethod
    def from_json(cls, data: dict | None) -> "RankOptions":
        data = data or {}
        return cls(str(data.get("method", "fast")), str(data.get("ablation", "zero")), str(data.get("seeds", "")))


class StateEvents:
    """One :class:`EventEmitter` per field of :class:`StudioState` (``events.mask``, ``events.edits``, ...), and
    ``changed``, emitted once per change or per batch with the set of field names that changed."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        for name in names:
            setattr(self, name, EventEmitter(name))
        self.changed = EventEmitter("changed")

    def emitter(self, name: str) -> EventEmitter:
        return getattr(self, name)


def same_value(old: Any, new: Any) -> bool:
    """Whether setting ``new`` over ``old`` changes nothing (tensors by content, the rest by ``==``)."""
    if old is new:
        return True
    if isinstance(old, torch.Tensor) or isinstance(new, torch.Tensor):
        return (isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and old.shape == new.shape
                and old.dtype == new.dtype and bool(torch.equal(old, new)))
    try:
        return bool(old == new)
    except (RuntimeError, TypeError, ValueError):  # e.g. a ranking holding tensors: treat as a change
        return False


@dataclass
class KnobExamples:
    """Seeds marked as examples for learning a knob, each with its painted region (plain data, no Qt).

        examples = KnobExamples()
        examples.mark(12, "present", mask)       # a lit lamp on seed 12, mask (H, W) in [0, 1]
        examples.mark(40, "wanted", mask2)       # an unlit one
        examples.side_of(12)                     # "present"
        examples.unmark(12)
    """

    present: dict[int, torch.Tensor] = field(default_factory=dict)  # seed -> mask
    wanted: dict[int, torch.Tensor] = field(default_factory=dict)

    def mark(self, seed: int, side: str, mask: torch.Tensor | None) -> None:
        if side not in ("present", "wanted"):
            raise ValueError(f"side is present or wanted, not {side!r}")
        self.unmark(seed)
        getattr(self, side)[seed] = mask

    def unmark(self, seed: int) -> None:
        self.present.pop(seed, None)
        self.wanted.pop(seed, None)

    def side_of(self, seed: int) -> str | None:
        return "present" if seed in self.present else "wanted" if seed in self.wanted else None

    def missing_masks(self) -> list[int]:
        """Seeds marked without a painted region (learning needs a region on each)."""
        return [s for side in (self.present, self.wanted) for s, m in side.items() if m is None or not (m > 0).any()]

    def clear(self) -> None:
        self.present.clear()
        self.wanted.clear()


@dataclass
class StudioState:
    """What the user made: which model, which sample, the mask, the layer, the ranking, the unit edits.

    Assigning a field announces it on ``events.<field>`` (only when the value really changes); inside
    :meth:`batch` the announcements wait until the batch ends, and each field is announced once. Assign new
    values (``state.edits = [...]``), never mutate them in place: an in-place change is not announced.
    """

    model: str | None = None  # built-in name or path (Generator.source)
    device: str = "auto"
    sample: "Sample | None" = None
    mask: torch.Tensor | None = None  # (H, W) float32 in [0, 1] at the image's resolution
    layer: str | None = None
    ranking: Any = None  # studio.ranking.Ranking of ``layer``, or None
    rank_options: RankOptions = field(default_factory=RankOptions)
    edits: list[UnitEdit] = field(default_factory=list)  # one per slider, in slider order
    local: bool = False  # apply the edits only inside the mask
    knobs: list[KnobEdit] = field(default_factory=list)  # one per row of the Knobs panel, each with its mask
    examples: "KnobExamples" = field(default_factory=lambda: KnobExamples())  # gathered to learn a knob
    inversion: "Inversion | None" = None  # the user's own image, inverted (studio.invert); its sample is ``sample``

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", StateEvents(tuple(f.name for f in fields(self))))
        object.__setattr__(self, "_depth", 0)
        object.__setattr__(self, "_pending", {})  # field -> its value before the batch began

    def __setattr__(self, name: str, value: Any) -> None:
        events: StateEvents | None = self.__dict__.get("events")
        if events is None or name not in events.names:
            object.__setattr__(self, name, value)  # dataclass __init__ and private bookkeeping
            return
        old = getattr(self, name)
        object.__setattr__(self, name, value)
        if self._depth:
            self._pending.setdefault(name, old)
        elif not same_value(old, value):
            events.emitter(name).emit(value, old)
            events.changed.emit(frozenset((name,)))

    @contextmanager
    def batch(self) -> Iterator["StudioState"]:
        """Change several fields as one: on leaving, each changed field is announced once, then ``changed``."""
        object.__setattr__(self, "_depth", self._depth + 1)
        try:
            yield self
        finally:
            object.__setattr__(self, "_depth", self._depth - 1)
            if self._depth == 0:
                pending = self._pending
                object.__setattr__(self, "_pending", {})
                changed = [name for name in self.events.names
                           if name in pending and not same_value(pending[name], getattr(self, name))]
                for name in changed:
                    self.events.emitter(name).emit(getattr(self, name), pending[name])
                if changed:
                    self.events.changed.emit(frozenset(changed))

    def update(self, **values: Any) -> None:
        """Set several fields in one :meth:`batch` (``state.update(mask=m, local=True)``)."""
        with self.batch():
            for name, value in values.items():
                if name not in self.events.names:
                    raise AttributeError(f"StudioState has no field {name!r}")
                setattr(self, name, value)

    def has_mask(self) -> bool:
        return self.mask is not None and bool((self.mask > 0).any())

    def render_edits(self) -> tuple[UnitEdit, ...]:
        """The edits as the renderer applies them: ``local`` only when there is a mask to stay inside."""
        local = self.local and self.has_mask()
        return tuple(replace(e, local=local) for e in self.edits)

    def carried_over(self) -> list[str]:
        """What a change of seed keeps (shown to the user rather than carried silently)."""
        kept = []
        if self.edits:
            kept.append(f"{len(self.edits)} unit edit{'s' if len(self.edits) != 1 else ''}")
        if self.knobs:
            kept.append(f"{len(self.knobs)} knob{'s' if len(self.knobs) != 1 else ''}")
        if self.has_mask():
            kept.append("the mask")
        return kept

    # -- sessions ---------------------------------------------------------------------------------------------
    def ui(self) -> dict:
        return {"layer": self.layer, "local": self.local, "rank": self.rank_options.to_json(), "device": self.device}

    def to_session(self, generator: "Generator", *, concept_editor: Any = None, reference: Any = None) -> "Session":
        """A :class:`studio.session.Session` of this state on ``generator`` (run it where the model lives)."""

        masks = {MASK_NAME: self.mask} if self.mask is not None else {}
        return Session.capture(generator, samples=[self.sample] if self.sample is not None else [], masks=masks,
                               active_mask=MASK_NAME if masks else None, unit_edits=self.edits,
                               concept_editor=concept_editor, rankings=[self.ranking] if self.ranking else [],
                               ui=self.ui(), reference=reference, knob_edits=self.knobs,
                               inversion=self.inversion)

    @classmethod
    def from_session(cls, session: "Session") -> "StudioState":
        """The state a saved session describes (the ranking comes back when the ranking module can read it)."""
        ui = session.ui or {}
        ranking = session.rankings[0] if session.rankings else None
        if isinstance(ranking, dict):
            ranking = _ranking_from_json(ranking)
        return cls(model=session.model.source, device=str(ui.get("device", "auto")),
                   sample=session.samples[0] if session.samples else None, mask=session.mask,
                   layer=ui.get("layer"), ranking=ranking, rank_options=RankOptions.from_json(ui.get("rank")),
                   edits=list(session.unit_edits), local=bool(ui.get("local", False)),
                   knobs=list(session.knob_edits), inversion=inversion_of(session))


def inversion_of(session: "Session") -> "Inversion | None":
    """The session's inverted image (its record and target) as an :class:`studio.invert.Inversion`, or None."""
    if session.inversion is None:
        return None
    return Inversion.from_json(session.inversion["document"], session.inversion["tensors"])


def _ranking_from_json(data: dict) -> Any:
    try:
        from .ranking import Ranking
    except ImportError:
        return None
    reader = getattr(Ranking, "from_json", None)
    return reader(data) if reader is not None else None
