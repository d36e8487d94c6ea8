"""Which model a session, recipe or export was made with: its source and a hash of its contents.

>>> ref = ModelReference.of(gen)                  # source "rooms" or a path, family, sha256 of the weights
>>> ref.to_json()
{'source': 'rooms', 'family': 'rooms', 'name': 'rooms', 'sha256': '9f2c...'}
>>> ref.mismatch(other_gen)                       # None, or one sentence saying what differs
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .core.progress import ProgressCallback, Ticker

if TYPE_CHECKING:
    from models.base import Generator

_CHUNK = 4 * 1024 * 1024


def _files(folder: Path) -> list[tuple[str, Path]]:
    """Every file under ``folder`` as (sorted POSIX relative path, path); hidden names (.git, .cache) skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                path = Path(root) / name
                found.append((path.relative_to(folder).as_posix(), path))
    return sorted(found)


#: (path, [(relative path, size, mtime_ns)]) -> digest: autosaves re-hash a multi-GB model only when it changed.
_DIGESTS: dict[tuple, str] = {}


def content_sha256(path: str | os.PathLike, progress: ProgressCallback | None = None) -> str:
    """SHA-256 of a file's bytes, or of a folder's sorted relative paths, sizes and contents; streamed.

    Remembered per file list, sizes and modification times, so asking again for an unchanged model is free::

        content_sha256("resources/rooms/rooms.safetensors")[:12]
    """
    path = Path(path)
    entries = _files(path) if path.is_dir() else [("", path)]
    stats = [(rel, file.stat()) for rel, file in entries]
    key = (str(path.resolve()), tuple((rel, st.st_size, st.st_mtime_ns) for rel, st in stats))
    if key in _DIGESTS:
        return _DIGESTS[key]
    total = sum(st.st_size for _, st in stats)
    ticker = Ticker(total, progress, unit="bytes", message=f"hashing {path.name}")
    digest = hashlib.sha256()
    for rel, file in entries:
        if rel:  # folders: names and sizes are part of the contents, so a rename changes the hash
            digest.update(rel.encode("utf-8") + b"\0" + file.stat().st_size.to_bytes(8, "little"))
        with open(file, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                ticker.advance(len(chunk))
    if len(_DIGESTS) > 64:
        _DIGESTS.clear()
    _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


@dataclass(frozen=True)
class ModelReference:
    """A model as sessions and exports name it: ``source`` is a built-in name or a path."""

    source: str
    family: str
    name: str = ""
    sha256: str | None = None  # None when the model has no weights file (e.g. a seeded test model)

    @classmethod
    def of(cls, generator: "Generator", *, hash_contents: bool = True,
           progress: ProgressCallback | None = None) -> "ModelReference":
        """The reference of an open generator, hashing its weights file or folder."""
        weights = generator.weights_file()
        digest = content_sha256(weights, progress) if (hash_contents and weights is not None) else None
        source = str(generator.source)
        if weights is not None and Path(source).expanduser() == weights:
            source = str(weights.resolve())  # absolute, so the reference resolves from another working directory
        return cls(source, generator.family, generator.name, digest)

    def to_json(self) -> dict:
        return {"source": self.source, "family": self.family, "name": self.name, "sha256": self.sha256}

    def shareable(self) -> dict:
        """The reference without the local folders: file (or built-in) name, family, name and hash, for files that
        leave this machine (a LoRA's metadata)."""
        return {"file": Path(self.source).name, "family": self.family, "name": self.name, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Mapping) -> "ModelReference":
        return cls(str(data["source"]), str(data.get("family", "?")), str(data.get("name", "")),
                   data.get("sha256"))

    def mismatch(self, generator: "Generator") -> str | None:
        """None when ``generator`` is this model; otherwise one sentence saying what differs."""
        if generator.family != self.family:
            return (f"This was made with a {self.family} model ({self.source}) but a {generator.family} model "
                    "is open; open the original model first.")
        if self.sha256 is None:
            return None
        weights = generator.weights_file()
        if weights is None:
            return None
        if content_sha256(weights) != self.sha256:
            return (f"The weights of {generator.name} differ from those this was made with ({self.source}): "
                    "images may not match; open the original weights to reproduce them exactly.")
        return None
