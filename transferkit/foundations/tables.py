"""Tables for people: rows of text as an HTML table a notebook shows.

Several things in the course show themselves as a table in a notebook (a `Trainable
report <transferkit.surgery.freezing.trainable_report>`, the tokens a tokenizer made, a study's
summary, a leaderboard of candidates). They all draw it here, one way:

* every cell is escaped (a method called ``"<b>"`` shows as ``<b>``, it does not turn
  the rest of the table bold);
* cells are separated by newlines, so the table's text reads as separate words when it
  is copied, searched or read by a screen reader (``"full\\n0.927"``, not ``"full0.927"``);
* a header row, an optional caption under the table, an optional CSS class.

A notebook shows any object with a ``_repr_html_`` method as HTML, so a class returns
``html_table(...)`` from it; a function's HTML goes through ``IPython.display.HTML``.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, caption: str = "",
               css_class: str = "", muted: Collection[str] = (),
               bold_last_row: bool = False) -> str:
    """An HTML table: ``header`` (column names), then one ``<tr>`` per row of cell texts.

    ``caption``: text under the table. ``css_class``: the table's class. ``muted``: cell
    texts shown in grey (padding, say). ``bold_last_row``: a totals row.
    """
    def cell(text: str, tag: str = "td") -> str:
        style = " style='color:#999'" if tag == "td" and text in muted else ""
        return f"<{tag}{style}>{html.escape(str(text))}</{tag}>"

    head = "<thead><tr>" + "\n".join(cell(h, "th") for h in header) + "</tr></thead>"
    lines = []
    for i, row in enumerate(rows):
        bold = " style='font-weight:bold'" if bold_last_row and i == len(rows) - 1 else ""
        lines.append(f"<tr{bold}>" + "\n".join(cell(text) for text in row) + "</tr>")
    body = "<tbody>" + "".join(f"\n{line}" for line in lines) + "</tbody>"
    class_ = f" class='{html.escape(css_class)}'" if css_class else ""
    under = (f"<caption style='caption-side:bottom'>{html.escape(caption)}</caption>"
             if caption else "")
    return f"<table{class_}>{under}\n{head}{body}</table>"
