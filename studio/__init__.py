"""Neuron Studio core: hooks, ranking, edits, concept edits, sessions, export, CLI and benchmarks.

Qt-free by rule: nothing under ``studio`` imports PySide6 or ``widgets`` (checked by tests/test_layering.py).
"""
from __future__ import annotations


__version__ = "0.1.0"

