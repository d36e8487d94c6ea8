"""PySide6 views only: every computation goes through ``studio`` and ``models``."""
