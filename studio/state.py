"""The window's editable state as one plain, Qt-free object, so sessions can save it and scripts can build it.

    state = StudioState(model="rooms", sample=gen.sample(3))
    state.mask = torch.zeros(128, 128); state.mask[20:60, 30:90] = 1
    state.layer = "blocks.1"
    state.edits = [UnitEdit("blocks.1", 17, "off"), UnitEdit("blocks.1", 4, "scale", 2.5)]
    state.local = True                               # edits stay inside the mask (local relighting)
    state.render_edits()                             # the edits with local set, what the renderer gets
    session = state.to_session(gen)                  # studio.session.Session (save_session writes it)
    state = StudioState.from_session(session)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from .core.hooks import UnitEdit
from .knobs import KnobEdit
from .session import Session

if TYPE_CHECKING:
    from models.base import Generator, Sample

    from .session import Session

MASK_NAME = "mask"


@dataclass
class RankOptions:
    """How the Rank button ranks: ``method`` exact|fast, ``ablation`` zero|mean, over ``seeds``."""

    method: str = "fast"
    ablation: str = "zero"
    seeds: str = ""  # "" = the current seed; else e.g. "0-3,7" (studio.commands.common.parse_seeds)

    def to_json(self) -> dict:
        return {"method": self.method, "ablation": self.ablation, "seeds": self.seeds}

    @classmethod
    def from_json(cls, data: dict | None) -> "RankOptions":
        data = data or {}
        return cls(str(data.get("method", "fast")), str(data.get("ablation", "zero")), str(data.get("seeds", "")))


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
    """What the user made: which model, which sample, the mask, the layer, the ranking, the unit edits."""

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

    def has_mask(self) -> bool:
        return self.mask is not None and bool((self.mask > 0).any())

    def render_edits(self) -> tuple[UnitEdit, ...]:
        """The edits as the renderer applies them: ``local`` only when there is a mask to stay inside."""
        local = self.local and self.has_mask()
        return tuple(replace(e, local=local) for e in self.edits)

    def edit_for(self, unit: int, layer: str | None = None) -> UnitEdit | None:
        layer = layer or self.layer
        return next((e for e in self.edits if e.unit == unit and e.layer == layer), None)

    def set_edit(self, edit: UnitEdit) -> None:
        """Replace the edit of the same (layer, unit), or append it."""
        for i, e in enumerate(self.edits):
            if (e.layer, e.unit) == (edit.layer, edit.unit):
                self.edits[i] = edit
                return
        self.edits.append(edit)

    def remove_edit(self, layer: str, unit: int) -> None:
        self.edits = [e for e in self.edits if (e.layer, e.unit) != (layer, unit)]

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
                               ui=self.ui(), reference=reference, knob_edits=self.knobs)

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
                   knobs=list(session.knob_edits))


def _ranking_from_json(data: dict) -> Any:
    try:
        from .ranking import Ranking
    except ImportError:
        return None
    reader = getattr(Ranking, "from_json", None)
    return reader(data) if reader is not None else None
