"""A sequence's tokens as coloured HTML spans (Outliers page): per-token loss or difference as colour,
control characters made visible.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any


def display_token(text: str) -> str:
    """What a token shows as in the coloured view: printable text as is; a newline as '⏎' and a line
    break; tabs and other control or invisible characters as their unicode_escape form ('\\x0c')."""
    if text == "":
        return "∅"
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == "\n":
            out.append("⏎\n")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _rgba_loss(value: float | None, vmax: float) -> str:
    if value is None or not math.isfinite(value):
        return "transparent"
    a = min(1.0, math.log1p(max(0.0, value)) / math.log1p(vmax)) if vmax > 0 else 0.0
    return f"rgba(220, 38, 38, {0.06 + 0.84 * a:.3f})"


def _rgba_diff(value: float | None, vmax: float) -> str:
    if value is None or not math.isfinite(value):
        return "transparent"
    a = min(1.0, abs(value) / vmax) if vmax > 0 else 0.0
    rgb = "220, 38, 38" if value > 0 else "37, 99, 235"
    return f"rgba({rgb}, {0.04 + 0.86 * a:.3f})"


def token_spans_html(rows: Sequence[Any], values: Sequence[float | None], *, vmax: float = 10.0,
                     diverging: bool = False, value_name: str = "loss", highlight: int | None = None,
                     context: Iterable[int] = ()) -> str:
    """A sequence's tokens as coloured HTML spans (text escaped), one per row (TokenLoss/TokenDiff),
    coloured by `values` (None: uncoloured): red by log(1 + loss) up to `vmax`, or, when `diverging`,
    blue (< 0) / red (> 0) by |value| / vmax. Hovering shows position, id, escaped text and value.
    The token at position `highlight` is outlined, the `context` positions underlined."""
    ctx = {int(p) for p in context}
    spans = []
    for r, v in zip(rows, values):
        color = _rgba_diff(v, vmax) if diverging else _rgba_loss(v, vmax)
        val = "N/A" if v is None else (f"{v:+.4f}" if diverging else f"{v:.4f}")
        title = f"position {r.position} | id {r.token_id} | '{r.escaped}' | {value_name} {val}"
        style = f"background:{color};border-radius:3px;"
        if highlight is not None and r.position == highlight:
            style += "outline:2px solid #111;outline-offset:1px;font-weight:700;"
        elif r.position in ctx:
            style += "text-decoration:underline;text-decoration-style:dotted;text-underline-offset:3px;"
        spans.append(f'<span title="{html.escape(title, quote=True)}" style="{style}">'
                     f"{html.escape(display_token(r.text))}</span>")
    return ('<div style="font-family:ui-monospace,monospace;font-size:0.85rem;white-space:pre-wrap;'
            'word-break:break-all;line-height:1.9">' + "".join(spans) + "</div>")
