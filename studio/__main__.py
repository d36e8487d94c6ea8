"""``python -m studio``: the command-line interface (see studio/cli.py)."""
from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
