"""Neuron Studio's application layer (ranking, live rendering, concept edits, sessions, export, CLI, benchmarks)
above ``models``, and, in ``studio.core``, the foundation beneath ``models`` (errors, hooks, device, progress, atomic
writes, images, resources, the Rooms world and network). See docs/architecture.md.

Qt-free by rule: nothing under ``studio`` imports PySide6 or ``widgets`` (import contracts in pyproject.toml, checked
by tests/test_layering.py).
"""
from __future__ import annotations

__version__ = "0.1.0"
