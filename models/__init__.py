"""Model families behind one contract (``models.base.Generator``); open them with ``open_model``."""
from __future__ import annotations

from .base import CrossAttention, Generator, LayerInfo, ModelEntry, PromptEncoding, Sample
from .registry import DEFAULT_MODEL, available_models, open_model

__all__ = ["CrossAttention", "Generator", "LayerInfo", "ModelEntry", "PromptEncoding", "Sample",
           "DEFAULT_MODEL", "available_models", "open_model"]
