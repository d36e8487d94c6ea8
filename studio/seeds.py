"""Seeds as users type them: one seed, or a list of seeds and ranges, each checked with one clear sentence.

    >>> parse_seed("42")
    42
    >>> parse_seeds("0-3,7", current=5)
    [0, 1, 2, 3, 7]
    >>> parse_seeds("", current=5)          # nothing typed: the current seed
    [5]
"""
from __future__ import annotations

import re

from studio.core.errors import StudioError

#: The largest seed: every family draws distinct pictures for 0..2**32-1 (StyleGAN's latent comes from numpy's
#: RandomState, which takes 32-bit seeds; torch and the Rooms world take at least as many).
SEED_MAX = 2**32 - 1
#: The most seeds one ranking or test grid takes.
MAX_SEEDS = 64

_WHOLE = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")


class SeedError(StudioError):
    """Text that is not a seed (or a list of seeds)."""


def parse_seed(text: str) -> int:
    """A seed from ``text`` (a whole number from 0 to :data:`SEED_MAX`), or :class:`SeedError` saying why not."""
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise SeedError(f"'{text}' is not a seed: seeds are whole numbers from 0 to {SEED_MAX}.")
    seed = int(stripped)
    if seed > SEED_MAX:
        raise SeedError(f"{seed} is too large for a seed: seeds go from 0 to {SEED_MAX}.")
    return seed


def parse_seeds(text: str | None, current: int, limit: int = MAX_SEEDS) -> list[int]:
    """``"1,2,5-7"`` -> [1, 2, 5, 6, 7]; empty text -> ``[current]``; at most ``limit`` seeds."""
    if not text or not text.strip():
        return [current]
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = _RANGE.fullmatch(part)
        if match:
            low, high = parse_seed(match.group(1)), parse_seed(match.group(2))
            if low > high:
                raise SeedError(f"'{part}' is a reversed range: write the smaller seed first ({high}-{low}).")
            if high - low + 1 > limit:
                raise SeedError(f"'{part}' is {high - low + 1} seeds; use at most {limit}.")
            seeds.extend(range(low, high + 1))
        else:
            try:
                seeds.append(parse_seed(part))
            except SeedError:
                raise SeedError(f"Cannot read seeds '{text.strip()}': '{part}' is not a seed or a range; "
                                "write numbers and ranges, e.g. 0-3,7.") from None
    if not seeds:
        raise SeedError(f"Cannot read seeds '{text.strip()}': write numbers and ranges, e.g. 0-3,7.")
    if len(seeds) > limit:
        raise SeedError(f"{len(seeds)} seeds is too many; use at most {limit}.")
    return seeds
