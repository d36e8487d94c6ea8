"""The seed box and the ranking's seeds field, typed into as a user does."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from studio.seeds import SEED_MAX
from tests.gui_support import open_window, paint_square


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    yield w
    w.close()


def type_seed(qtbot, window, text: str) -> None:
    box = window.seed
    box.setFocus()
    box.lineEdit().selectAll()
    qtbot.keyClicks(box.lineEdit(), text)
    qtbot.keyClick(box.lineEdit(), Qt.Key.Key_Return)


@pytest.mark.parametrize("text, says", [("abc", "is not a seed"), ("-5", "is not a seed"), ("3.7", "is not a seed"),
                                        ("99999999999999", "too large")])
def test_text_that_is_not_a_seed_says_so_and_keeps_the_seed(window, qtbot, text, says):
    window.seed.setValue(3)
    qtbot.waitUntil(lambda: window.state.sample.seed == 3, timeout=10_000)
    type_seed(qtbot, window, text)
    assert window.seed.value() == 3 and window.state.sample.seed == 3  # nothing coerced into another seed
    assert window.banner.isVisible() and says in window.banner.text()
    assert window.seed.lineEdit().text() == "3"


def test_the_largest_seed_renders_and_the_arrows_step(window, qtbot):
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        type_seed(qtbot, window, str(SEED_MAX))
    assert window.state.sample.seed == SEED_MAX == 4294967295 and not window.banner.isVisible()
    qtbot.keyClick(window.seed.lineEdit(), Qt.Key.Key_Down)
    assert window.seed.value() == SEED_MAX - 1 and window.state.sample.seed == SEED_MAX - 1


def test_a_reversed_seed_range_for_ranking_is_named(window, qtbot):
    paint_square(window, 2, 2, 10, 10)
    window.ranking.seeds.setText("")
    qtbot.keyClicks(window.ranking.seeds, "5-2")
    qtbot.mouseClick(window.ranking.rank_button, Qt.MouseButton.LeftButton)
    assert "'5-2' is a reversed range" in window.banner.text() and not window.ranking.running
