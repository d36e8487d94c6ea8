"""Subcommands of ``python -m studio``; each module has ``register(subparsers)``."""
