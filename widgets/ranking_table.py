"""The ranking as a sortable table (score bars, inside/outside effect, switched-off thumbnails) and a score plot.

    model = RankingModel()
    model.set_ranking(ranking, thumbnails={17: pixmap, ...})
    view = RankingTable(model)               # sortable by any column; double-click asks for a slider
    plot = ScorePlot(); plot.set_scores([u.score for u in ranking.units])
"""
from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyledItemDelegate, QTableView, QWidget

COLUMNS = ("Unit", "Score", "Inside", "Outside", "Switched off")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
THUMB = 52  # switched-off thumbnail size, pixels
_POSITIVE, _NEGATIVE = QColor(70, 160, 110), QColor(200, 90, 80)


class RankingModel(QAbstractTableModel):
    """Rows are a ranking's :class:`UnitScore` entries, best first; it sorts itself (``sort``).

    Sorting here rather than in a QSortFilterProxyModel matters when a ranking arrives: a proxy sorts by asking
    ``data`` twice per comparison, thousands of Python calls on the GUI thread for a layer of 256 units, while
    here each row's sort keys are read once and Python sorts them. Thumbnails may come as QImages (made on the
    worker thread); they become pixmaps only when a row is drawn or selected.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[Any] = []
        self.keys: list[tuple] = []  # per row: (unit, score, inside, outside, rank), the sort keys
        self.thumbnails: dict[int, QPixmap | QImage] = {}
        self.small: dict[int, QPixmap | QImage] = {}
        self.max_abs = 1.0
        self.exact_note = ""
        self.sort_column, self.sort_order = 1, Qt.SortOrder.DescendingOrder

    def set_ranking(self, ranking: Any, thumbnails: dict[int, QPixmap | QImage] | None = None,
                    small: dict[int, QPixmap | QImage] | None = None) -> None:
        """``thumbnails``: unit -> full-size image (the panel's large view); ``small``: unit -> table-size image
        (default: scaled from ``thumbnails`` when first drawn)."""
        self.beginResetModel()
        self.rows = list(ranking.units) if ranking is not None else []
        self.keys = [(int(u.unit), float(u.score), float(u.inside), float(u.outside), i)
                     for i, u in enumerate(self.rows)]
        self.thumbnails = dict(thumbnails or {})
        self.small = dict(small or {})
        self.max_abs = max((abs(k[1]) for k in self.keys), default=1.0) or 1.0
        self._arrange(self.sort_column, self.sort_order)
        self.endResetModel()

    def thumbnail(self, unit: int) -> QPixmap | None:
        """The full-size switched-off image of ``unit`` as a pixmap (converted once, when first asked for)."""
        image = self.thumbnails.get(unit)
        if isinstance(image, QImage):
            image = self.thumbnails[unit] = QPixmap.fromImage(image)
        return image

    def small_thumbnail(self, unit: int) -> QPixmap | None:
        image = self.small.get(unit)
        if image is None and unit in self.thumbnails:
            full = self.thumbnails[unit]
            image = full.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                Qt.TransformationMode.SmoothTransformation)
        if isinstance(image, QImage):
            image = QPixmap.fromImage(image)
        if image is not None:
            self.small[unit] = image
        return image

    def _arrange(self, column: int, order: Qt.SortOrder) -> list[int]:
        """Reorder the rows by ``column``; the old row of each new one (Python's sort is stable, as Qt's is)."""
        self.sort_column, self.sort_order = column, order
        if not 0 <= column < len(COLUMNS):
            return list(range(len(self.rows)))
        moved = sorted(range(len(self.rows)), key=lambda i: self.keys[i][column],
                       reverse=order == Qt.SortOrder.DescendingOrder)
        self.rows = [self.rows[i] for i in moved]
        self.keys = [self.keys[i] for i in moved]
        return moved

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        before = self.persistentIndexList()
        moved = self._arrange(column, order)
        new_row = {old: new for new, old in enumerate(moved)}
        self.changePersistentIndexList(before, [self.index(new_row[i.row()], i.column()) for i in before])
        self.layoutChanged.emit()

    def unit_at(self, row: int) -> int:
        return int(self.rows[row].unit)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return ("The unit (channel) index", "Effect inside the mask relative to outside: higher explains the mask",
                    "Mean change inside the mask when the unit is switched off",
                    "Mean change outside the mask when the unit is switched off",
                    "The image with this unit switched off")[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        u, col = self.rows[index.row()], index.column()
        values = self.keys[index.row()]
        if role == SORT_ROLE:
            return values[col]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return f"{u.unit}" + ("" if getattr(u, "exact", True) else " ~")
            if col in (1, 2, 3):
                return f"{values[col]:.3g}"
            return None
        if role == Qt.ItemDataRole.DecorationRole and col == 4:
            return self.small_thumbnail(values[0])
        if role == Qt.ItemDataRole.ToolTipRole and col == 4:
            return "Select or hover the row for a larger view"
        if role == Qt.ItemDataRole.ToolTipRole and col == 0 and not getattr(u, "exact", True):
            return "Estimated by the fast method (not re-rendered exactly)"
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (1, 2, 3):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class ScoreBarDelegate(QStyledItemDelegate):
    """Draws the score as a bar (green helps explain the mask, red works against it) under its number."""

    def __init__(self, model: RankingModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model

    def paint(self, painter: QPainter, option, index: QModelIndex) -> None:
        score = index.data(SORT_ROLE)
        if isinstance(score, float):
            rect = option.rect.adjusted(3, 4, -3, -4)
            width = rect.width() * min(abs(score) / self.model.max_abs, 1.0)
            painter.save()
            painter.fillRect(QRectF(rect.x(), rect.y(), width, rect.height()),
                             (_POSITIVE if score >= 0 else _NEGATIVE).lighter(130))
            painter.restore()
        super().paint(painter, option, index)


class RankingTable(QTableView):
    """A sortable view of a :class:`RankingModel`; ``units_chosen`` on double-click or Enter."""

    units_chosen = Signal(list)  # [unit, ...]
    unit_selected = Signal(int)  # the current row's unit (-1: none)

    def __init__(self, model: RankingModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ranking_model = model
        self.setModel(model)  # the model sorts itself (see RankingModel: far fewer calls than a proxy's sort)
        self.setSortingEnabled(True)
        self.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setItemDelegateForColumn(1, ScoreBarDelegate(model, self))
        self.setIconSize(QSize(THUMB, THUMB))
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(THUMB + 4)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)  # the score bar takes the spare width
        for column, width in ((0, 56), (2, 70), (3, 70), (4, THUMB + 40)):
            self.setColumnWidth(column, width)
        self.doubleClicked.connect(lambda index: self.units_chosen.emit([self.unit_at(index.row())]))
        self.selectionModel().currentRowChanged.connect(
            lambda current, _: self.unit_selected.emit(self.unit_at(current.row()) if current.isValid() else -1))

    def unit_at(self, view_row: int) -> int:
        return self.ranking_model.unit_at(view_row)

    def selected_units(self) -> list[int]:
        return [self.unit_at(index.row()) for index in self.selectionModel().selectedRows()]

    def select_unit(self, unit: int) -> None:
        for row in range(self.ranking_model.rowCount()):
            if self.unit_at(row) == unit:
                self.selectRow(row)
                self.scrollTo(self.ranking_model.index(row, 0))
                return

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.selected_units():
            self.units_chosen.emit(self.selected_units())
        else:
            super().keyPressEvent(event)


class ScorePlot(QWidget):
    """Every unit's score as a bar, best first; units with sliders are marked. Click a bar to select its unit."""

    unit_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(70)
        self.units: list[int] = []
        self.scores: list[float] = []
        self.marked: set[int] = set()
        self.current = -1

    def sizeHint(self) -> QSize:
        return QSize(300, 90)

    def set_ranking(self, units: Sequence[int], scores: Sequence[float]) -> None:
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        self.units = [int(units[i]) for i in order]
        self.scores = [float(scores[i]) for i in order]
        self.update()

    def set_marked(self, units: Sequence[int], current: int = -1) -> None:
        self.marked, self.current = set(units), current
        self.update()

    def _bar_width(self) -> float:
        return (self.width() - 8) / max(len(self.scores), 1)

    def mousePressEvent(self, event) -> None:
        if self.scores:
            index = int((event.position().x() - 4) / self._bar_width())
            if 0 <= index < len(self.units):
                self.unit_clicked.emit(self.units[index])

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().base())
        if not self.scores:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Scores appear here after ranking")
            return
        top, bottom = max(max(self.scores), 0.0), min(min(self.scores), 0.0)
        span = (top - bottom) or 1.0
        height = self.height() - 16
        zero = 4 + height * top / span
        bar = self._bar_width()
        painter.setPen(self.palette().mid().color())
        painter.drawLine(4, int(zero), self.width() - 4, int(zero))
        for i, (unit, score) in enumerate(zip(self.units, self.scores)):
            h = height * abs(score) / span
            color = _POSITIVE if score >= 0 else _NEGATIVE
            if unit == self.current:
                color = QColor(240, 170, 40)
            elif unit in self.marked:
                color = QColor(60, 120, 220)
            painter.fillRect(QRectF(4 + i * bar, zero - h if score >= 0 else zero, max(bar - 0.5, 1.0), h), color)
        painter.setPen(self.palette().text().color())
        painter.drawText(QRectF(6, self.height() - 14, self.width() - 12, 12), Qt.AlignmentFlag.AlignLeft,
                         f"{len(self.scores)} units, best first · max {max(self.scores):.3g}")
