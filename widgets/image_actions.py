"""File → Export image (Ctrl+Shift+S): the current result at full resolution, its settings in PNG text chunks;
and the way back: a PNG dropped on the window restores its model, seed, prompt, mask and edits.

    images = ImageActions(window)
    images.export("out.png")      # on the model's thread (the weights' hash names the model); a dialog when None
    images.restore("out.png")     # reloads the model when it differs; a PNG of another tool gives seed and prompt
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog

from studio.core.errors import StudioError
from studio.image_meta import ImageMeta, read_png_meta, save_png_with_meta

from .session_actions import concept_editor_of

if TYPE_CHECKING:
    from .main_window import MainWindow


class ImageActions(QObject):
    exported = Signal(str)  # the path written

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        self.export_action = QAction("Export image…", self)
        self.export_action.setShortcut(QKeySequence("Ctrl+Shift+S"))
        self.export_action.setToolTip("Save the shown result as PNG at full resolution, with its seed, prompt, "
                                      "model and edits inside (drop it on the window to get them back)")
        self.export_action.triggered.connect(lambda: self.export(None))

    def export(self, path: str | Path | None) -> None:
        window = self.window
        frame = window.last_frame
        if frame is None or window.generator is None:
            window.show_error("No image yet: wait for the model to render, then export it.")
            return
        if frame.preview or frame.stamp != window._posted:
            window.show_error("The image is still rendering: export it once it has finished.")
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(window, "Export image", f"seed{frame.sample.seed}.png",
                                                  "PNG images (*.png)")
            if not path:
                return
        state = window.state
        image, sample, edits, local = frame.image, frame.sample, list(state.edits), state.local
        mask = state.mask if state.has_mask() else None
        layer = state.layer

        def work(generator):
            meta = ImageMeta.of(generator, sample, edits, local=local, mask=mask,
                                concept_editor=concept_editor_of(generator), layer=layer)
            return str(save_png_with_meta(image, path, meta))

        def done(written: str) -> None:
            window.show_info(f"Exported {Path(written).name} ({image.shape[-1]}x{image.shape[-2]}) with its settings.")
            self.exported.emit(written)

        window.jobs.submit(work, done, lambda sentence: window.show_error(f"Could not export the image: {sentence}"))

    def restore(self, path: str | Path) -> bool:
        """Restore what ``path`` holds; False (and one sentence) when it holds nothing to restore."""
        window = self.window
        try:
            meta = read_png_meta(path)
        except StudioError as error:
            window.show_error(str(error))
            return False
        if meta.model is None:  # another tool's PNG: its seed and prompt, on this model, edits untouched
            if meta.sample.prompt and window.prompt.isEnabled():
                window.prompt.setText(meta.sample.prompt)
            window.seed.setValue(meta.sample.seed)
            window.generate()
            window.show_info(f"Seed {meta.sample.seed}{' and prompt' if meta.sample.prompt else ''} from "
                             f"{Path(path).name}.")
            return True
        window.sessions.show_session(meta.as_session(), None, recovered=True)
        return True
