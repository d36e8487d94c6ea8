"""Errors are data: each carries one sentence a user can act on (what, why, what to do)."""
from __future__ import annotations


class StudioError(Exception):
    """Base class for every error shown to users as one clear sentence."""


class ModelOpenError(StudioError):
    """A model could not be opened (missing, corrupt or unknown file, missing optional package)."""


class LayerNotFound(StudioError, KeyError):
    """A layer name that the model does not have; the message lists the nearest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MaskError(StudioError):
    """An unusable mask: empty, wrong size with another aspect ratio, unreadable."""


class UnsupportedOperation(StudioError):
    """The model family cannot do this (e.g. no cross-attention, no partial re-render)."""


class Cancelled(StudioError):
    """Long work stopped because the user asked it to."""
