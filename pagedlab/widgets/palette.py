"""Colours and small HTML pieces shared by the widgets.

The Okabe-Ito palette stays distinguishable for the common kinds of colour blindness; every
coloured thing in a widget also carries a letter, a number or a label, so colour is never the
only cue. Text on a coloured cell picks black or white for contrast; other text inherits the
notebook's colour, so it stays readable in JupyterLab's dark theme.
"""
from __future__ import annotations

import html
import string

# Okabe & Ito (2008), "Color Universal Design", without black (kept for text).
OKABE_ITO = {
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}
SEQUENCE_COLOURS = list(OKABE_ITO.values())
GREY = "#999999"          # free / idle
LIGHT_GREY = "#DDDDDD"
BORDER = "rgba(128, 128, 128, 0.7)"  # visible on light and dark backgrounds

# What each part of a memory breakdown is drawn in (lessons 03 and 05).
PART_COLOURS = {
    "token states": OKABE_ITO["bluish green"],
    "reserved": OKABE_ITO["sky blue"],
    "internal fragmentation": OKABE_ITO["orange"],
    "external fragmentation": OKABE_ITO["vermillion"],
    "idle": LIGHT_GREY,
}


def colour_of(seq_id: int) -> str:
    """The colour of a sequence (cycles through the palette)."""
    return SEQUENCE_COLOURS[(seq_id - 1) % len(SEQUENCE_COLOURS)]


def letter_of(seq_id: int) -> str:
    """The letter that labels a sequence: 1 -> A, 2 -> B, ..."""
    return string.ascii_uppercase[(seq_id - 1) % 26]


def text_on(colour: str) -> str:
    """Black or white, whichever reads better on ``colour`` (a #RRGGBB string)."""
    red, green, blue = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
    return "#000000" if luminance > 0.179 else "#FFFFFF"


def escape(value) -> str:
    return html.escape(str(value))


def chip(label: str, colour: str, title: str = "") -> str:
    """A small coloured label (inline HTML) with readable text."""
    return (f'<span title="{escape(title)}" style="display:inline-block;padding:0 6px;'
            f'margin:1px;border-radius:4px;background:{colour};color:{text_on(colour)};'
            f'font-family:monospace;font-weight:bold">{escape(label)}</span>')


def cell(body: str, colour: str | None, *, title: str = "", width: str = "4.2em",
         border: str = f"1px solid {BORDER}", extra: str = "") -> str:
    """One box of a grid: coloured with contrasting text, or empty (dashed) if colour is None."""
    if colour is None:
        style = f"border:1px dashed {BORDER};opacity:0.8;"
    else:
        style = f"background:{colour};color:{text_on(colour)};border:{border};"
    return (f'<div title="{escape(title)}" style="display:inline-block;box-sizing:border-box;'
            f'width:{width};min-height:3.2em;margin:2px;padding:2px;border-radius:4px;'
            f'vertical-align:top;text-align:center;font-family:monospace;font-size:12px;'
            f'line-height:1.3;{style}{extra}">{body}</div>')


def table(header: list[str], rows: list[list[str]]) -> str:
    """A plain HTML table whose text inherits the notebook's colour; cells are raw HTML."""
    th = "".join(f'<th style="padding:2px 8px;text-align:left;border-bottom:1px solid {BORDER}">'
                 f"{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td style="padding:2px 8px;font-family:monospace">{c}</td>'
                                    for c in row) + "</tr>" for row in rows)
    return f'<table style="border-collapse:collapse;color:inherit">{"<tr>" + th + "</tr>"}{body}</table>'


def figure_png(figure) -> bytes:
    """Render a matplotlib Figure (made without pyplot) to PNG bytes for an ipywidgets Image."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, facecolor="white")
    return buffer.getvalue()
