"""The first HTML table of a page: its header cells and rows, as text (html.parser).

A module of its own so that the ZFPS service (whose status listing is such a page)
imports html.parser only when it reads a listing, not when ``stdq query ztf-fps
--help`` imports the service for its options.
"""

from __future__ import annotations

from html.parser import HTMLParser


class TableParser(HTMLParser):
    """The first HTML table's header cells and rows, as text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self._depth = 0
        self._done = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._cell_is_header = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._done:
            return
        if tag == "table":
            self._depth += 1
        elif self._depth and tag == "tr":
            self._row = []
        elif self._depth and tag in ("td", "th"):
            self._cell, self._cell_is_header = [], tag == "th"

    def handle_endtag(self, tag: str) -> None:
        if self._done or not self._depth:
            return
        if tag in ("td", "th") and self._cell is not None:
            text = " ".join("".join(self._cell).split())
            if self._cell_is_header:
                self.headers.append(text)
            elif self._row is not None:
                self._row.append(text)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.rows.append(self._row)
            self._row = None
        elif tag == "table":
            self._depth -= 1
            self._done = self._depth == 0

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
