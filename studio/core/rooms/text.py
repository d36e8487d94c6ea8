"""The caption tokenizer of the Rooms world: a fixed word list, lowercase words, punctuation dropped.

Use::

    ids = encode("a bedroom with blue walls, a bed and two lamps")   # int64 (MAX_TOKENS,), padded with 0
    [VOCAB[i] for i in ids if i]                                       # the words back
"""
from __future__ import annotations

import re

import numpy as np

from .world import NUMBER_WORDS, WALL_COLOURS

PAD, UNK = "<pad>", "<unk>"
#: Every word a caption of any style can hold (all colour names included); id 0 pads, id 1 is an unknown word.
VOCAB: list[str] = [PAD, UNK, "a", "bedroom", "with", "walls", "bed", "window", "and", "in", "lamp", "lamps",
                    *NUMBER_WORDS, *WALL_COLOURS]
MAX_TOKENS = 16
_IDS = {w: i for i, w in enumerate(VOCAB)}


def tokenize(text: str) -> list[str]:
    """Lowercase words, punctuation stripped: ``tokenize("Bedroom, BLUE walls") == ["bedroom", "blue", "walls"]``."""
    return re.findall(r"[a-z0-9]+", text.lower())


def encode(text: str) -> np.ndarray:
    """Token ids, int64 (MAX_TOKENS,): cut to MAX_TOKENS words, padded with 0, unknown words as the ``<unk>`` id."""
    ids = np.zeros(MAX_TOKENS, np.int64)
    words = tokenize(text)[:MAX_TOKENS]
    ids[: len(words)] = [_IDS.get(w, _IDS[UNK]) for w in words]
    return ids
