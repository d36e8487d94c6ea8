"""The model picker: built-in and installed models, recent files, and Open file/folder.

    picker = ModelPicker(settings)
    picker.open_requested.connect(window.open_model)   # a built-in name or a path
    picker.remember(path)                              # after a successful load: into the recent list
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QWidget

from models.registry import available_models

RECENT_KEY = "models/recent"
RECENT_LIMIT = 8
_OPEN_FILE, _OPEN_FOLDER = "\0open-file", "\0open-folder"
MODEL_FILTER = "Models (*.safetensors *.pkl *.pt *.pth *.ckpt *.bin *.tar *.xml);;All files (*)"


class ModelPicker(QComboBox):
    open_requested = Signal(str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.current = ""
        self.setMinimumContentsLength(18)
        self.setPlaceholderText("no model loaded")
        self.setToolTip("Choose a model: built-in, recent, or open a file or folder (or drop one on the window)")
        self.activated.connect(self._on_activated)
        self.refresh()

    def recent(self) -> list[str]:
        value = self.settings.value(RECENT_KEY, [])
        items = [value] if isinstance(value, str) else list(value or [])
        return [p for p in items if p and Path(p).exists()]

    def remember(self, source: str) -> None:
        """Show ``source`` as current; paths also go to the front of the recent list."""
        self.current = source
        if source and (Path(source).exists() and ("/" in source or "\\" in source or Path(source).suffix)):
            recent = [str(Path(source).resolve())] + [p for p in self.recent() if p != str(Path(source).resolve())]
            self.settings.setValue(RECENT_KEY, recent[:RECENT_LIMIT])
        self.refresh()

    def refresh(self) -> None:

        self.blockSignals(True)
        self.clear()
        try:
            entries = available_models()
        except Exception as error:  # a broken family module must not take the picker down
            entries = []
            self.setToolTip(f"Some model families failed to load: {error}")
        for entry in entries:
            label = entry.name if entry.available else f"{entry.name} (not installed)"
            self.addItem(label, entry.name)
            index = self.count() - 1
            self.setItemData(index, entry.description if entry.available else entry.reason, Qt.ItemDataRole.ToolTipRole)
            if not entry.available:
                self.model().item(index).setEnabled(False)
        recent = self.recent()
        if self.current and self.findData(self.current) < 0:
            recent = [self.current] + [p for p in recent if p != self.current]
        if recent:
            self.insertSeparator(self.count())
            for path in recent:
                self.addItem(Path(path).name, path)
                self.setItemData(self.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        self.insertSeparator(self.count())
        self.addItem("Open file…", _OPEN_FILE)
        self.addItem("Open folder…", _OPEN_FOLDER)
        index = self.findData(self.current) if self.current else -1
        self.setCurrentIndex(index)  # -1 while nothing is loaded: the box says so instead of naming a model
        self.blockSignals(False)

    def open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model file", "", MODEL_FILTER)
        self._request(path)

    def open_folder(self) -> None:
        self._request(QFileDialog.getExistingDirectory(self, "Open a model folder (e.g. a diffusers folder)"))

    def _on_activated(self, index: int) -> None:
        data = self.itemData(index)
        self.setCurrentIndex(self.findData(self.current) if self.current else -1)  # stays on the loaded model
        if data == _OPEN_FILE:
            self.open_file()
        elif data == _OPEN_FOLDER:
            self.open_folder()
        else:
            self._request(data)

    def _request(self, path: str | None) -> None:
        if path and path != self.current:
            self.open_requested.emit(str(path))
