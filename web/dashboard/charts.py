"""Charts as pictures the server draws: small SVG bar charts, inline in the page.

No charting library: a bar chart is a few rectangles, and drawn here it needs no script,
prints, and shows the same figures as the table beside it. Every label is escaped; the
picture carries a title and a description for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

BAR = "#3b6fb6"
GRID = "#d9dee5"
TEXT = "#39424e"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def column_chart(bars: Sequence[tuple[str, float]], *, title: str, width: int = 400,
                 height: int = 220, label_every: int = 1) -> Markup:
    """Vertical bars, one per (label, value), left to right; every `label_every`-th
    label is written under its bar (24 hours do not all fit)."""
    left, bottom, top = 36, 24, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max((value for _, value in bars), default=0) or 1
    step = plot_w / max(len(bars), 1)
    parts = _axis(left, top, plot_w, plot_h, peak)
    for i, (label, value) in enumerate(bars):
        h = plot_h * value / peak
        x = left + i * step
        parts.append(
            f'<rect class="bar" x="{x + step * 0.15:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{step * 0.7:.1f}" height="{h:.1f}" fill="{BAR}" '
            f'data-label="{escape(label)}" data-value="{value:g}">'
            f'<title>{escape(label)}: {value:g}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - 6}" text-anchor="middle" '
                         f'fill="{TEXT}" {FONT}>{escape(label)}</text>')
    return _svg(parts, title=title, width=width, height=height)


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, width: int = 400,
              row: int = 26) -> Markup:
    """Horizontal bars, one row per (label, value), top to bottom, the value at the
    end of its bar: for labels too long to stand under a column (reasons)."""
    label_w, value_w = 170, 40
    height = max(len(bars), 1) * row + 8
    plot_w = width - label_w - value_w
    peak = max((value for _, value in bars), default=0) or 1
    parts: list[str] = []
    for i, (label, value) in enumerate(bars):
        y = 4 + i * row
        w = plot_w * value / peak
        parts.append(f'<text x="{label_w - 8}" y="{y + row / 2 + 4:.1f}" text-anchor="end" '
                     f'fill="{TEXT}" {FONT}>{escape(label)}</text>')
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{w:.1f}" '
            f'height="{row - 8}" fill="{BAR}" data-label="{escape(label)}" '
            f'data-value="{value:g}"><title>{escape(label)}: {value:g}</title></rect>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + row / 2 + 4:.1f}" '
                     f'fill="{TEXT}" {FONT}>{value:g}</text>')
    return _svg(parts, title=title, width=width, height=height)


def _axis(left: int, top: int, plot_w: float, plot_h: float, peak: float) -> list[str]:
    """The value axis: a line at zero, the peak and half of it, labelled."""
    parts = []
    for share in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - share)
        parts.append(f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" '
                     f'y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="{TEXT}" {FONT}>{peak * share:g}</text>')
    return parts


def _svg(parts: list[str], *, title: str, width: int, height: int) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f'<title>{escape(title)}</title>{body}</svg>')
