"""Seeds as typed: one seed, lists and ranges, and one clear sentence for anything else."""
from __future__ import annotations

import pytest

from studio.seeds import SEED_MAX, SeedError, parse_seed, parse_seeds


def test_the_whole_seed_range_is_accepted():
    assert parse_seed("0") == 0 and parse_seed(" 42 ") == 42 and parse_seed(str(SEED_MAX)) == SEED_MAX == 2**32 - 1


@pytest.mark.parametrize("text, says", [("abc", "is not a seed"), ("-5", "is not a seed"), ("3.7", "is not a seed"),
                                        ("", "is not a seed"), ("99999999999999", "too large")])
def test_what_is_not_a_seed_is_named(text, says):
    with pytest.raises(SeedError, match=says):
        parse_seed(text)


def test_lists_and_ranges():
    assert parse_seeds("0-3,7", 5) == [0, 1, 2, 3, 7] and parse_seeds("", 5) == [5] and parse_seeds(" 9 ", 5) == [9]


def test_a_reversed_range_says_so_and_shows_the_right_order():
    with pytest.raises(SeedError, match=r"'5-2' is a reversed range.*\(2-5\)"):
        parse_seeds("5-2", 0)


@pytest.mark.parametrize("text", ["0-999", "1,2,x", "-3", ",,"])
def test_other_bad_lists_are_one_sentence(text):
    with pytest.raises(SeedError):
        parse_seeds(text, 0)
