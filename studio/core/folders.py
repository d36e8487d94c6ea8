"""Atomic folder writes: build the folder beside the target, then swap it in with renames.

>>> with atomic_folder("exports/edited-sd", marker="model_index.json") as tmp:
...     pipe.save_pretrained(tmp)        # the target appears only when this succeeded

An existing target is replaced only when it holds ``marker`` (it is the same kind of folder); anything
else there is refused, so a user's unrelated folder is never deleted.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import StudioError


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, marker: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` (old one removed last)."""
    target = Path(target)
    if target.exists() and not (target.is_dir() and (target / marker).exists()):
        what = "a file" if target.is_file() else "a folder of something else"
        raise StudioError(f"{target} is {what} (no {marker} in it), so it was not replaced: choose a new name.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = None
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)  # a crash here leaves the old folder inside `old`, intact
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / target.name, target)
                raise
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
