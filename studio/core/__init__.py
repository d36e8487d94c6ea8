"""The foundation every other layer stands on: errors, hooks, device choice, progress, atomic writes, images and
masks, resource paths, and the Rooms world with its network.

It imports nothing of ``models``, the application (the rest of ``studio``) or ``widgets``; the import contract in
``pyproject.toml`` (run by tests/test_layering.py) enforces it.
"""
