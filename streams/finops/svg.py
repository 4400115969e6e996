"""Inline SVG charts (no library, no network): line, vertical and stacked bars, horizontal
bars, timeline. Values are Decimal; floats are used only for pixel positions. Every chart's
root carries ``data-chart`` (its name) and ``data-points`` (how many values it draws), which
the report's self-check and the tests read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from html import escape

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 720, 260, 70, 20, 30, 40


def naive_utc(t: datetime) -> datetime:
    """A datetime as naive UTC (ClickHouse returns aware or naive ones depending on the column)."""
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def usd(value: Decimal) -> str:
    """Money for reading: cents from a dollar up, else four decimals.

    >>> usd(Decimal("1234.5")), usd(Decimal("0.0035"))
    ('$1,234.50', '$0.0035')
    """
    q = Decimal("0.01") if abs(value) >= 1 else Decimal("0.0001")
    return f"${value.quantize(q):,}"


def _open(name: str, title: str, points: int, height: int = H) -> str:
    return (f'<svg class="chart" data-chart="{escape(name)}" data-points="{points}" role="img" '
            f'viewBox="0 0 {W} {height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
            f'<text x="{PAD_L}" y="18" class="ct">{escape(title)}</text>')


def _empty(name: str, title: str) -> str:
    return _open(name, title, 0, 60) + f'<text x="{PAD_L}" y="45" class="muted">no data in this window</text></svg>'


def _label(x: date | datetime | str) -> str:
    if isinstance(x, datetime):
        return x.strftime("%m-%d %H:%M") if (x.hour or x.minute) else x.strftime("%m-%d")
    if isinstance(x, date):
        return x.strftime("%m-%d")
    return str(x)


def _y_axis(top: Decimal) -> str:
    out = []
    for i in range(5):
        value = top * i / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * i / 4
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="ax" text-anchor="end">{usd(value)}</text>')
    return "".join(out)


def _y(value: Decimal, top: Decimal) -> float:
    return H - PAD_B - float((H - PAD_B - PAD_T) * (value / top)) if top else float(H - PAD_B)


def line_chart(name: str, title: str, series: Sequence[tuple[str, Sequence[tuple[datetime, Decimal]]]],
               x_range: tuple[datetime, datetime], limits: Sequence[tuple[str, Decimal]] = ()) -> str:
    """Lines over time; ``limits`` are horizontal reference lines (a budget limit)."""
    n = sum(len(points) for _, points in series)
    if n == 0:
        return _empty(name, title)
    top = max([v for _, pts in series for _, v in pts] + [v for _, v in limits]) or Decimal(1)
    lo, hi = map(naive_utc, x_range)
    span = (hi - lo).total_seconds() or 1.0

    def x(t: datetime) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * (naive_utc(t) - lo).total_seconds() / span

    parts = [_open(name, title, n), _y_axis(top)]
    for label, value in limits:
        y = _y(value, top)
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="limit"/>'
                     f'<text x="{W - PAD_R}" y="{y - 4:.1f}" class="ax" text-anchor="end">{escape(label)} '
                     f'{usd(value)}</text>')
    for i, (label, points) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x(t):.1f},{_y(v, top):.1f}" for t, v in points)
        dash = ' stroke-dasharray="6 4"' if "forecast" in label else ""
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        parts.extend(f'<circle cx="{x(t):.1f}" cy="{_y(v, top):.1f}" r="2.5" fill="{color}">'
                     f'<title>{escape(label)} {_label(t)}: {usd(v)}</title></circle>' for t, v in points)
        parts.append(f'<text x="{PAD_L + 10 + 170 * i}" y="{H - 8}" fill="{color}" class="lg">{escape(label)}</text>')
    parts.append(f'<text x="{PAD_L}" y="{H - PAD_B + 16}" class="ax">{_label(lo)}</text>'
                 f'<text x="{W - PAD_R}" y="{H - PAD_B + 16}" class="ax" text-anchor="end">{_label(hi)}</text></svg>')
    return "".join(parts)


def bar_chart(name: str, title: str, names: Sequence[str], rows: Sequence[tuple[date, Sequence[Decimal]]]) -> str:
    """Vertical bars per day, stacked when several series are named."""
    if not rows:
        return _empty(name, title)
    top = max(sum(values, Decimal(0)) for _, values in rows) or Decimal(1)
    width = (W - PAD_L - PAD_R) / len(rows)
    parts = [_open(name, title, sum(len(v) for _, v in rows)), _y_axis(top)]
    for i, (day, values) in enumerate(rows):
        base = Decimal(0)
        for j, value in enumerate(values):
            y0, y1 = _y(base, top), _y(base + value, top)
            parts.append(f'<rect x="{PAD_L + i * width + 1:.1f}" y="{y1:.1f}" width="{max(width - 2, 1):.1f}" '
                         f'height="{max(y0 - y1, 0):.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                         f'<title>{_label(day)} {escape(names[j])}: {usd(value)}</title></rect>')
            base += value
        if len(rows) <= 16 or i % max(len(rows) // 8, 1) == 0:
            parts.append(f'<text x="{PAD_L + (i + 0.5) * width:.1f}" y="{H - PAD_B + 16}" class="ax" '
                         f'text-anchor="middle">{_label(day)}</text>')
    if len(names) > 1:
        parts.extend(f'<text x="{PAD_L + 10 + 200 * j}" y="{H - 8}" fill="{PALETTE[j % len(PALETTE)]}" class="lg">'
                     f'{escape(n)}</text>' for j, n in enumerate(names))
    parts.append("</svg>")
    return "".join(parts)


def hbar_chart(name: str, title: str, items: Sequence[tuple[str, Decimal]]) -> str:
    """Horizontal bars, largest first (the top N of something)."""
    if not items:
        return _empty(name, title)
    row_h, left = 24, 190
    height = PAD_T + row_h * len(items) + 10
    top = max(v for _, v in items) or Decimal(1)
    parts = [_open(name, title, len(items), height)]
    for i, (label, value) in enumerate(items):
        y = PAD_T + i * row_h
        width = float((W - left - 110) * (value / top))
        parts.append(f'<text x="{left - 8}" y="{y + 16}" class="ax" text-anchor="end">{escape(label[:28])}</text>'
                     f'<rect x="{left}" y="{y + 4}" width="{max(width, 1):.1f}" height="{row_h - 8}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: {usd(value)}</title></rect>'
                     f'<text x="{left + width + 6:.1f}" y="{y + 16}" class="ax">{usd(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline(name: str, title: str, events: Sequence[tuple[datetime, str, str]],
             x_range: tuple[datetime, datetime]) -> str:
    """One lane per kind of event (control, alert firing, alert resolved), a mark per event."""
    if not events:
        return _empty(name, title)
    lanes = sorted({kind for _, kind, _ in events})
    lane_h, left = 34, 130
    height = PAD_T + lane_h * len(lanes) + 30
    lo, hi = map(naive_utc, x_range)
    span = (hi - lo).total_seconds() or 1.0
    parts = [_open(name, title, len(events), height)]
    for i, lane in enumerate(lanes):
        y = PAD_T + i * lane_h + lane_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" class="ax" text-anchor="end">{escape(lane)}</text>'
                     f'<line x1="{left}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
    for ts, kind, what in events:
        x = left + (W - left - PAD_R) * (naive_utc(ts) - lo).total_seconds() / span
        y = PAD_T + lanes.index(kind) * lane_h + lane_h / 2
        color = PALETTE[lanes.index(kind) % len(PALETTE)]
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}" fill-opacity="0.8">'
                     f'<title>{ts:%Y-%m-%d %H:%M} {escape(what)}</title></circle>')
    parts.append(f'<text x="{left}" y="{height - 8}" class="ax">{_label(lo)}</text>'
                 f'<text x="{W - PAD_R}" y="{height - 8}" class="ax" text-anchor="end">{_label(hi)}</text></svg>')
    return "".join(parts)
