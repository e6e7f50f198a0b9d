"""Small line charts drawn on the server as inline SVG: the dashboard's trends need no
JavaScript and no external CDN, and a chart is as safe to render as any escaped text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from backoffice.selectors import Trends
from core.money import format_amount

# Colour-blind-safe palette (Okabe–Ito), one colour per series in order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 100, 24, 14, 46  # margins: y labels left, x labels and legend below


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per label; None leaves a gap (nothing to measure)


def _nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least `value` (a readable top for the y axis)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


def line_chart(*, title: str, labels: Sequence[str], series: Sequence[Series],
               y_format: Callable[[float], str] = lambda v: (
                   f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"),
               y_max: float | None = None) -> SafeString:
    """An accessible SVG (role=img, a <title>, each point's value in a tooltip) with a y axis
    from 0, one x label per few days, and a legend."""
    points = [v for line in series for v in line.values if v is not None]
    top = y_max if y_max is not None else _nice_ceiling(max(points, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(labels), 1)

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    def at(value: float) -> str:  # coordinates as text: format_html escapes its arguments
        return f"{value:.1f}"

    grid = format_html_join("", (
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#e5e7eb"/>'
        '<text x="{}" y="{}" text-anchor="end">{}</text>'),
        ((LEFT, WIDTH - RIGHT, at(y(top * f)), at(y(top * f)), LEFT - 6, at(y(top * f) + 4),
          y_format(top * f)) for f in (0, 0.5, 1)))
    every = max(1, count // 7)
    xlabels = format_html_join("", '<text x="{}" y="{}" text-anchor="middle">{}</text>',
                               ((at(x(i)), HEIGHT - BOTTOM + 16, label)
                                for i, label in enumerate(labels)
                                if (count - 1 - i) % every == 0))  # today is always labelled
    lines, legend = [], []
    for n, line in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        runs: list[list[str]] = [[]]
        dots = []
        for i, value in enumerate(line.values):
            if value is None:
                runs.append([])
                continue
            runs[-1].append(f"{at(x(i))},{at(y(value))}")
            dots.append(format_html(
                '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{} {}: {}</title></circle>',
                at(x(i)), at(y(value)), colour, line.name, labels[i], y_format(value)))
        lines.extend(format_html('<polyline fill="none" stroke="{}" stroke-width="2" '
                                 'points="{}"/>', colour, " ".join(run))
                     for run in runs if len(run) > 1)
        lines.extend(dots)
        legend.append(format_html(
            '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>',
            LEFT + 130 * n, HEIGHT - 14, colour, LEFT + 130 * n + 14, HEIGHT - 5, line.name))
    return format_html(
        '<svg class="bo-chart" viewBox="0 0 {} {}" role="img" aria-label="{}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}{}{}{}</svg>',
        WIDTH, HEIGHT, title, title, grid, xlabels, mark_safe("".join(lines)),  # noqa: S308
        mark_safe("".join(legend)))  # noqa: S308 (each piece built by format_html above)


def dashboard_charts(trends: Trends) -> list[tuple[str, SafeString]]:
    """The dashboard's trends: captured volume per provider (one chart per busy currency),
    success rate per provider, and open reconciliation breaks."""
    labels = [f"{day:%m-%d}" for day in trends.days]
    charts = []
    for currency, providers in trends.volume.items():
        title = f"Captured volume per day, {currency.upper()}"
        charts.append((title, line_chart(
            title=title, labels=labels,
            series=[Series(name, values) for name, values in providers.items()],
            y_format=lambda v, cur=currency: format_amount(int(v), cur))))
    title = "Success rate per provider (succeeded ÷ decided)"
    charts.append((title, line_chart(
        title=title, labels=labels, y_max=100.0, y_format=lambda v: f"{v:.0f}%",
        series=[Series(name, values) for name, values in trends.success.items()])))
    title = "Open reconciliation breaks at the end of each day"
    charts.append((title, line_chart(title=title, labels=labels,
                                     series=[Series("open breaks", trends.open_breaks)])))
    return charts
