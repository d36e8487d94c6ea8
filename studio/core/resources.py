"""Where the repository's resources (icons, default weights, model cards, configs) live."""
from __future__ import annotations

from pathlib import Path

#: Root of the repository's resources.
RESOURCES = Path(__file__).resolve().parents[2] / "resources"
