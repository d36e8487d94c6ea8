"""The Rooms world: procedural bedrooms with exact truth, the default generator's training data and benchmark.

Use::

    from studio.core.rooms import sample_scene, truth, with_lamp
    t = truth(sample_scene(np.random.default_rng(0)))
"""
from __future__ import annotations

from .world import *  # noqa: F401,F403  (the world's public API, listed in world.__all__)
from .world import __all__  # noqa: F401
