"""A message banner floating over the top of the canvas: it never moves the layout.

Errors stay until clicked; information (an export written, a seed restored) fades by itself after a few seconds.

    banner = MessageBanner(canvas)
    banner.show_message("The mask is empty: paint over something first.")   # an error: stays until clicked
    banner.show_message("Exported seed3.png.", error=False)                 # information: gone after INFO_MS
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QLabel, QWidget

INFO_MS = 4000
_ERROR_STYLE = "background:rgba(107,43,43,235);color:white;padding:6px;border-radius:3px;"
_INFO_STYLE = "background:rgba(40,80,50,235);color:white;padding:6px;border-radius:3px;"
_MARGIN = 6


class MessageBanner(QLabel):
    """A child of ``host`` laid over its top edge (not in any layout), kept as wide as the host."""

    def __init__(self, host: QWidget) -> None:
        super().__init__(host)
        self.host = host
        self.error = False
        self.setWordWrap(True)
        self.setToolTip("Click to dismiss")
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(INFO_MS)
        self.timer.timeout.connect(self.hide)
        host.installEventFilter(self)
        self.hide()

    def show_message(self, sentence: str, error: bool = True) -> None:
        self.error = error
        self.setStyleSheet(_ERROR_STYLE if error else _INFO_STYLE)
        self.setText(sentence)
        self._place()
        self.show()
        self.raise_()
        if error:
            self.timer.stop()
        else:
            self.timer.start()

    def _place(self) -> None:
        width = max(self.host.width() - 2 * _MARGIN, 50)
        self.setFixedWidth(width)
        self.move(_MARGIN, _MARGIN)
        self.adjustSize()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.host and event.type() == QEvent.Type.Resize and self.isVisible():
            self._place()
        return False

    def mousePressEvent(self, event) -> None:
        self.timer.stop()
        self.hide()
