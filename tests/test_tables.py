"""tables.html_table: the one HTML table every report, summary and leaderboard draws."""

from html.parser import HTMLParser

from transferkit.foundations.tables import html_table


class _Cells(HTMLParser):
    """The text of each th/td cell, row by row, and the table's caption."""

    def __init__(self):
        super().__init__()
        self.rows, self.caption, self._in = [], "", None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("th", "td", "caption"):
            self._in = tag
            if tag != "caption":
                self.rows[-1].append("")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "caption":
            self.caption += data
        elif self._in:
            self.rows[-1][-1] += data


def cells(page: str) -> _Cells:
    parser = _Cells()
    parser.feed(page)
    return parser


def test_header_rows_and_caption_come_back_cell_by_cell():
    page = html_table(["method", "accuracy"], [["full", "0.927"], ["scratch", "0.815"]],
                      caption="test accuracy over 5 seeds", css_class="transferkit-table")
    parsed = cells(page)
    assert parsed.rows == [["method", "accuracy"], ["full", "0.927"], ["scratch", "0.815"]]
    assert parsed.caption == "test accuracy over 5 seeds"
    assert page.startswith("<table class='transferkit-table'>")


def test_cells_are_escaped_and_read_as_separate_words():
    page = html_table(["name"], [["<b>bold</b>", "x"]])
    assert "<b>bold" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "</td>\n<td>" in page  # copied or read aloud: "bold x", not "boldx"


def test_muted_cells_and_a_bold_totals_row():
    page = html_table(["token", "id"], [["cinema", "4"], ["[PAD]", "0"]], muted=("[PAD]",),
                      bold_last_row=True)
    assert "<td style='color:#999'>[PAD]</td>" in page
    assert page.count("color:#999") == 1  # "cinema", "4" and "0" are not muted
    assert page.count("font-weight:bold") == 1 and "<tr style='font-weight:bold'><td style" in page
