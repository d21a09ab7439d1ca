"""Small HTML readers for the report tests (stdlib only)."""

from __future__ import annotations

from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class TableCells(HTMLParser):
    """Every <td> of every table with the data-* attributes that describe it, wherever the page
    states them: on the <table> (e.g. result, basis), on the column's header cell in <thead>
    (e.g. the metric key of a headline column, the column label of a metric table), on the
    <tr> (e.g. the column label of a headline row, the key of a metric row) and on the cell
    itself, the nearer winning; plus the cell's text and style. The page states each once
    (per table, column or row) instead of on every cell, which keeps a 1,000-column page light."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict] = []
        self._table: dict = {}
        self._heads: list[dict] = []
        self._row: dict = {}
        self._index = -1
        self._in_head = False
        self._cur: dict | None = None

    @staticmethod
    def _data(attrs) -> dict:
        return {k[5:]: v for k, v in attrs if k.startswith("data-")}

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table, self._heads = self._data(attrs), []
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row, self._index = ({} if self._in_head else self._data(attrs)), -1
        elif tag in ("td", "th"):
            span = int(dict(attrs).get("colspan") or 1)
            self._index += span
            if self._in_head:
                self._heads.extend([self._data(attrs)] * span)
            elif tag == "td":
                head = self._heads[self._index] if self._index < len(self._heads) else {}
                self._cur = {**self._table, **head, **self._row, **self._data(attrs), "text": "",
                             "style": dict(attrs).get("style") or ""}

    def handle_data(self, data):
        if self._cur is not None:
            self._cur["text"] += data

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag == "td" and self._cur is not None:
            self._cur["text"] = self._cur["text"].strip()
            self.cells.append(self._cur)
            self._cur = None


def table_cells(html: str) -> list[dict]:
    p = TableCells()
    p.feed(html)
    return p.cells


def metric_cells(html: str) -> list[dict]:
    """Every metric cell (a <td> whose table, column header, row or self states a data-key)."""
    return [c for c in table_cells(html) if "key" in c]


def cells_with(html: str, attr: str) -> list[dict]:
    """Every <td> described by ``data-<attr>`` (e.g. ``freq`` for the period cells)."""
    return [c for c in table_cells(html) if attr in c]


class PlotDivs(HTMLParser):
    """Plot containers (<div class="plot ...">): their classes and whether a descendant has the
    class 'main-svg' (plotly's rendered SVG). Also reads <body data-plots-rendered>."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[dict] = []
        self.body: dict = {}
        self._stack: list[tuple[str, dict | None]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "body":
            self.body = a
        owner = None
        if tag == "div" and "plot" in classes:
            owner = {"id": a.get("id"), "classes": classes, "main_svg": False}
            self.plots.append(owner)
        if "main-svg" in classes:
            for _, o in self._stack:
                if o is not None:
                    o["main_svg"] = True
        if tag not in VOID:
            self._stack.append((tag, owner))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self._stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return


def plot_divs(html: str) -> PlotDivs:
    p = PlotDivs()
    p.feed(html)
    return p


def section(html: str, section_id: str) -> str:
    """The text of ``<section id="section_id">`` up to its closing tag (sections do not nest)."""
    start = html.index(f'<section id="{section_id}"')
    return html[start:html.index("</section>", start)]
