"""Neuron Studio core: hooks, ranking, edits, concept edits, sessions, export, CLI and benchmarks.

Qt-free by rule: nothing under ``studio`` imports PySide6 or ``widgets`` (checked by tests/test_layering.py).
"""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: Root of the repository's resources (icons, default weights, model cards, configs).
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
