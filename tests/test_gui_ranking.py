"""The Rank panel as a user meets it: what a ranking will use, stale rankings, the scroll position, All layers and
the large switched-off view."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import QEvent, QPoint, QSettings, Qt

from studio.ranking import rank_layers
from tests.gui_support import mouse, open_window, paint_square, pick_layer
from tests.test_gui_sliders import wheel


def open_units_tab(w, qtbot) -> None:
    """Click the Units tab, as a user does before ranking (the app opens on the knobs tab)."""
    qtbot.mouseClick(w.tabs.tabBar(), Qt.MouseButton.LeftButton,
                     pos=w.tabs.tabBar().tabRect(w.tabs.indexOf(w.ranking.parentWidget())).center())


@pytest.fixture
def window(toy_registry, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path)
    open_units_tab(w, qtbot)
    yield w
    w.close()


def rank(window, qtbot, timeout=60_000):
    with qtbot.waitSignal(window.ranking.ranked, timeout=timeout) as blocker:
        qtbot.mouseClick(window.ranking.rank_button, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def test_a_ranking_of_another_seed_or_mask_is_marked_out_of_date(window, qtbot):
    paint_square(window, 2, 2, 14, 14)
    rank(window, qtbot)
    panel = window.ranking
    assert not panel.stale.isVisible()
    with qtbot.waitSignal(window.frame_shown, timeout=20_000):
        qtbot.keyClick(window, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)  # next seed
    assert panel.stale.isVisible() and "seed 0" in panel.stale.text()
    rank(window, qtbot)
    assert not panel.stale.isVisible()
    paint_square(window, 20, 20, 26, 26)
    assert panel.stale.isVisible() and "earlier mask" in panel.stale.text()


def test_a_new_ranking_starts_at_its_best_row(window, qtbot):
    window.resize(1200, 600)  # fewer rows in view than the layer has units
    paint_square(window, 2, 2, 14, 14)
    pick_layer(window, qtbot, "blocks.1")
    rank(window, qtbot)
    table = window.ranking.table
    bar = table.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=5_000)
    wheel(table.viewport(), -20)  # the user scrolls down to the last rows
    assert bar.value() > 0
    rank(window, qtbot)
    assert bar.value() == 0 and table.rowAt(0) == 0  # the best row, which the summary names, is in view
    assert f"blocks.1:{table.unit_at(0)}" in window.ranking.summary.text()


def test_remembered_options_are_shown_before_ranking(toy_registry, qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("rank/seeds", "0-7")
    settings.sync()
    window = open_window(qtbot, tmp_path)
    open_units_tab(window, qtbot)
    try:
        plan = window.ranking.plan
        assert plan.isVisible() and "seeds 0-7 (8 images)" in plan.text() and "no mask yet" in plan.text()
        paint_square(window, 2, 2, 10, 10)
        assert "the painted mask" in plan.text()
        field = window.ranking.seeds
        field.selectAll()
        qtbot.keyClicks(field, "3")
        assert "the current seed" not in plan.text() and "seeds 3 (1 image)" in plan.text()
    finally:
        window.close()


def test_all_layers_ranks_every_layer_and_lands_on_the_best(window, qtbot):
    paint_square(window, 2, 2, 14, 14)
    picker = window.ranking.layers
    picker.setFocus()
    qtbot.keyClick(picker, Qt.Key.Key_End)  # "All layers" is the last entry
    assert picker.all_layers() and "every layer" in window.ranking.plan.text()
    window.ranking.method.setCurrentIndex(window.ranking.method.findData("fast"))
    ranking = rank(window, qtbot)
    with torch.inference_mode():
        expected = rank_layers(window.generator, [window.state.sample], window.state.mask, method="fast")
    assert ranking.layer == expected[0].layer == picker.current_layer()
    assert [u.unit for u in ranking.units] == [u.unit for u in expected[0].ranking.units]
    assert f"Best layer: {expected[0].layer}" in window.ranking.summary.text()
    table = window.ranking.table
    rect = table.visualRect(table.model().index(0, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a user's double-click
    qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # is press, then double
    assert [(r.layer, r.unit) for r in window.sliders.rows] == [(expected[0].layer, ranking.units[0].unit)]


def test_the_selected_or_hovered_row_shows_its_switched_off_image_large(window, qtbot):
    paint_square(window, 2, 2, 14, 14)
    rank(window, qtbot)
    table, preview = window.ranking.table, window.ranking.preview
    assert preview.pixmap().isNull()
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(table.model().index(0, 4)).center())
    big = preview.pixmap()
    assert not big.isNull() and big.width() >= 150  # about 4x the table's thumbnail
    small = table.model().index(0, 4).data(Qt.ItemDataRole.DecorationRole)
    assert small.width() <= 52
    first = big.toImage()
    mouse(table.viewport(), QEvent.Type.MouseMove, table.visualRect(table.model().index(1, 2)).center(),
          Qt.MouseButton.NoButton)
    assert preview.pixmap().toImage() != first  # hovering another row shows its unit instead


def test_the_table_shows_every_ranked_unit_best_first_and_sorts_by_a_clicked_header(window, qtbot):
    paint_square(window, 2, 2, 14, 14)
    pick_layer(window, qtbot, "blocks.1")
    ranking = rank(window, qtbot)
    table, model = window.ranking.table, window.ranking.model
    by_score = [int(u.unit) for u in sorted(ranking.units, key=lambda u: -float(u.score))]
    assert [table.unit_at(r) for r in range(model.rowCount())] == by_score
    shown = [float(model.index(r, 1).data(Qt.ItemDataRole.DisplayRole)) for r in range(model.rowCount())]
    assert shown == sorted(shown, reverse=True)
    assert model.index(0, 4).data(Qt.ItemDataRole.DecorationRole) is not None  # the best rows have thumbnails
    best = table.unit_at(0)
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(model.index(0, 0)).center())
    header = table.horizontalHeader()
    unit_header = header.sectionViewportPosition(0) + header.sectionSize(0) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(unit_header, header.height() // 2))
    units = [table.unit_at(r) for r in range(model.rowCount())]
    assert sorted(units) == sorted(by_score) and units in (sorted(units), sorted(units, reverse=True))
    assert table.selected_units() == [best]  # the selection follows its row through the sort
    rank(window, qtbot)  # a new ranking starts best first again
    assert [table.unit_at(r) for r in range(model.rowCount())][:5] == by_score[:5]
