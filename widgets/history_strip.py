"""The images made this session, newest on the right, each with the seed, prompt and edits that made it.

A result joins the strip once it has been on screen for a moment (a dragged slider adds one entry where it
rests, not one per frame); clicking an entry brings its seed, prompt, mask and unit edits back.

    strip = HistoryStrip()
    strip.record(frame, state)          # after a full frame of ``state`` has rested (the window does this)
    strip.chosen.connect(sessions.restore)   # a StudioState to show again
"""
from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem

from studio.live import Frame
from studio.state import StudioState

from .qt_images import pixmap_from

THUMB = 48
LIMIT = 60  # the oldest go first; a session can make hundreds


def _describe(state: StudioState) -> str:
    sample = state.sample
    inverted = state.inversion is not None and state.inversion.sample == sample
    first = f"your image, inverted ({state.inversion.psnr:.1f} dB)" if inverted else f"seed {sample.seed}"
    lines = [first] + ([f"prompt: {sample.prompt}"] if sample.prompt else [])
    if state.edits:
        lines += [f"{e.layer} unit {e.unit}: " + ("off" if e.op == "off" else
                                                   (f"x{e.value:g}" if e.op == "scale" else f"set {e.value:g}"))
                  for e in state.edits]
        if state.local and state.has_mask():
            lines.append("only inside the mask")
    else:
        lines.append("no unit edits")
    return "\n".join(lines)


class HistoryStrip(QListWidget):
    chosen = Signal(object)  # StudioState

    def __init__(self) -> None:
        super().__init__()
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setFixedHeight(THUMB + 28)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setToolTip("History: the images made this session; click one to go back to it")
        self.states: list[StudioState] = []
        self.itemClicked.connect(lambda item: self.chosen.emit(self.states[self.row(item)]))

    @staticmethod
    def _key(state: StudioState) -> tuple:
        mask = state.mask if (state.local and state.has_mask()) else None
        return (state.sample, tuple(state.edits), mask is not None and float(mask.sum()))

    def record(self, frame: Frame, state: StudioState) -> bool:
        """Add ``frame`` as made by ``state`` unless it is what the newest entry already shows."""
        if frame.sample is None or (self.states and self._key(self.states[-1]) == self._key(state)):
            return False
        snapshot = replace(state, edits=list(state.edits), ranking=None,
                           mask=state.mask.clone() if state.mask is not None else None)
        item = QListWidgetItem(QIcon(pixmap_from(frame.image)), f"{frame.sample.seed}")
        item.setToolTip(_describe(snapshot))
        self.states.append(snapshot)
        self.addItem(item)
        if len(self.states) > LIMIT:
            self.states.pop(0)
            self.takeItem(0)
        self.scrollToItem(item)
        return True
