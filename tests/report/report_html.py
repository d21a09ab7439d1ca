"""Small HTML readers for the report tests (stdlib only)."""

from __future__ import annotations

from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class MetricCells(HTMLParser):
    """Collects every <td data-key=...> cell: its data-* attributes and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict] = []
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-key" in a:
            self._cur = {**{k[5:]: v for k, v in a.items() if k.startswith("data-")}, "text": ""}

    def handle_data(self, data):
        if self._cur is not None:
            self._cur["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cur is not None:
            self._cur["text"] = self._cur["text"].strip()
            self.cells.append(self._cur)
            self._cur = None


def metric_cells(html: str) -> list[dict]:
    p = MetricCells()
    p.feed(html)
    return p.cells


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


class AttrCells(HTMLParser):
    """Every <td> carrying the attribute ``data-<attr>``: its data-* attributes and its text."""

    def __init__(self, attr: str) -> None:
        super().__init__()
        self.attr = f"data-{attr}"
        self.cells: list[dict] = []
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and self.attr in a:
            self._cur = {**{k[5:]: v for k, v in a.items() if k.startswith("data-")}, "text": "",
                         "style": a.get("style") or ""}

    def handle_data(self, data):
        if self._cur is not None:
            self._cur["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cur is not None:
            self._cur["text"] = self._cur["text"].strip()
            self.cells.append(self._cur)
            self._cur = None


def cells_with(html: str, attr: str) -> list[dict]:
    """Every <td data-<attr>=...> cell of ``html`` (e.g. ``freq`` for the period cells)."""
    p = AttrCells(attr)
    p.feed(html)
    return p.cells


def section(html: str, section_id: str) -> str:
    """The text of ``<section id="section_id">`` up to its closing tag (sections do not nest)."""
    start = html.index(f'<section id="{section_id}"')
    return html[start:html.index("</section>", start)]
