"""The chart layer: server-rendered SVG histograms, scatter plots, lines and heatmaps.

Every chart is one self-contained ``<svg>`` element with a ``viewBox`` and its natural width and
height (CSS may shrink it with the page and it scales), with axes, ticks and labels, and no script.
Coordinates are computed with numpy for all marks at once and written through the HTML builder
(``backend/markup.py``), the one renderer of the markup written in
Python; every piece of text from data (labels, tooltips, series names) is escaped, so a concept label
cannot inject markup. The returned ``Markup`` can be placed in a template as is.

Mark classes are stable so pages and tests can find them: ``bar`` (histogram bars), ``point`` (scatter
points), ``line`` (series of a line chart), ``cell`` (heatmap cells).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from backend.markup import Markup, element, empty, escape, number, numbers, opening

# Sequential colour scale (viridis anchors): low values blue-purple, high values yellow, as the
# paper colours delta (seed 001, Fig. 5: suppressed on the blue end, exaggerated on the yellow end).
SEQUENTIAL = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
# Categorical colours for series (real first, then each generator).
PALETTE = ("#495057", "#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad", "#f08c00")

WIDTH, HEIGHT = 560, 300
# Above these sizes marks are drawn compactly (grouped paths, no per-mark tooltip) to keep pages small.
DETAIL_POINTS = 2000
DETAIL_CELLS = 900
LEVELS = 32  # colour levels of compact marks and of the colour bar
MISSING = "#dee2e6"  # heatmap cells without a value


def colour(values: np.ndarray, low: float, high: float) -> list[str]:
    """Hex colours of ``values`` on the sequential scale between ``low`` and ``high``."""
    span = high - low if high > low else 1.0
    position = np.clip((np.asarray(values, dtype=float) - low) / span, 0.0, 1.0) * (len(SEQUENTIAL) - 1)
    anchors = np.arange(len(SEQUENTIAL))
    rgb = np.stack([np.interp(position, anchors, SEQUENTIAL[:, c]) for c in range(3)], axis=-1).round().astype(int)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return [f"#{v:06x}" for v in np.atleast_1d(packed)]


@dataclass(frozen=True)
class Scale:
    """Maps data values in ``[low, high]`` to pixels in ``[start, end]``, linearly or by log10."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False
    tick_bounds: tuple[float, float] | None = None  # ticks only in here (from 1 on an axis of counts)

    @classmethod
    def fit(cls, values: np.ndarray, start: float, end: float, *, log: bool = False,
            domain: tuple[float, float] | None = None, pad: float = 0.0) -> Scale:
        if domain is not None:
            low, high = domain
        else:
            finite = np.asarray(values, dtype=float)
            finite = finite[np.isfinite(finite) & ((finite > 0) if log else True)]
            if finite.size:
                low, high = float(finite.min()), float(finite.max())
            else:
                low, high = (1.0, 10.0) if log else (0.0, 1.0)
        if log:
            low, high = max(low, 1e-300), max(high, 1e-300)
            if high <= low:
                low, high = low / 2, high * 2
            if pad:
                low, high = low / (1 + pad), high * (1 + pad)
        else:
            if high <= low:
                low, high = low - 0.5, high + 0.5
            if pad:
                margin = (high - low) * pad
                low, high = low - margin, high + margin
        return cls(low, high, start, end, log)

    def __call__(self, values: np.ndarray | float) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                fraction = (np.log10(values) - math.log10(self.low)) / (math.log10(self.high) - math.log10(self.low))
        else:
            fraction = (values - self.low) / (self.high - self.low)
        return self.start + fraction * (self.end - self.start)

    def at(self, values: Sequence[float]) -> list[float]:
        """``self(values)`` for a few values (ticks, bin edges) in Python floats, cheaper there than numpy's cost per
        call; NaN where a log axis cannot place a value."""
        if self.log:
            k = (self.end - self.start) / math.log10(self.high / self.low)
            return [self.start + math.log10(v / self.low) * k if v > 0 else math.nan for v in values]
        start, low, span, width = self.start, self.low, self.end - self.start, self.high - self.low
        return [start + (v - low) * span / width for v in values]

    def ticks(self, target: int = 5) -> list[float]:
        """Round tick values inside the domain (and ``tick_bounds``): 1-2-5 steps, or on a log scale 1, 2 and 5
        times each power of ten when few decades show, else the powers of ten (every k-th one when there are
        many)."""
        low, high = self.low, self.high
        if self.tick_bounds is not None:
            low, high = max(low, self.tick_bounds[0]), min(high, self.tick_bounds[1])
        if self.log:
            first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))

            def inside(values: list[float]) -> list[float]:
                return [t for t in values if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]

            powers = [10.0 ** e for e in range(first, last + 1)]
            steps = inside([m * d for d in powers for m in (1, 2, 5)])
            if 2 <= len(steps) <= target + 3:
                return steps
            decades = inside(powers)
            return decades[::max(1, math.ceil(len(decades) / (target + 3)))]
        raw = (high - low) / max(target, 1)
        magnitude = 10.0 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
        first = math.ceil(low / step - 1e-9) * step
        count = int(math.floor((high - first) / step + 1e-9)) + 1
        return [round(first + i * step, 12) for i in range(count)]


def tick_label(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.0e}".replace("e+0", "e").replace("e-0", "e-")
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Frame:
    """The plotting area inside a chart of ``width`` x ``height`` user units."""

    width: int = WIDTH
    height: int = HEIGHT
    left: int = 62
    right: int = 16
    top: int = 30
    bottom: int = 44

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


@lru_cache(maxsize=512)
def _frame_parts(frame: Frame, title: str, kind: str, x_label: str, y_label: str) -> tuple[str, str, str]:
    """What a chart's frame, title and axis labels alone decide (its opening with the titles, the axes' start with
    their two lines, their end with the labels), written once per kind of chart, not on every request."""
    axis_ends = ((frame.x1, frame.y0), (frame.x0, frame.y1))
    head = (opening("svg", xmlns="http://www.w3.org/2000/svg", class_=f"chart chart-{kind}", width=frame.width,
                    height=frame.height, viewBox=f"0 0 {frame.width} {frame.height}", role="img", aria_label=title)
            + element("title", escape(title))
            + (element("text", escape(title), class_="chart-title", x=8 if kind == "heatmap" else frame.x0, y=16)
               if title else ""))
    start = ('<g class="axes" font-size="10">' + "".join(empty("line", x1=frame.x0, y1=frame.y0, x2=x2, y2=y2,
                                                              stroke="#868e96") for x2, y2 in axis_ends))
    end = (element("text", escape(x_label), class_="axis-label", x=number((frame.x0 + frame.x1) / 2),
                   y=frame.height - 8, text_anchor="middle")
           + element("text", escape(y_label), class_="axis-label", text_anchor="middle",
                     transform=f"translate(14 {number((frame.y0 + frame.y1) / 2)}) rotate(-90)") + "</g>")
    return head, start, end


def _axes(frame: Frame, x: Scale, y: Scale, x_label: str, y_label: str, kind: str, title: str) -> list[str]:
    """The chart's opening and its axes with their ticks (``x`` and ``y`` decide the ticks, the rest is cached)."""
    head, start, end = _frame_parts(frame, title, kind, x_label, y_label)
    x_ticks, y_ticks = x.ticks(), y.ticks()
    x0, x1, y0 = frame.x0, frame.x1, frame.y0
    return [head, start, *[f'<line class="tick" x1="{px}" y1="{y0}" x2="{px}" y2="{y0 + 4}" stroke="#868e96"/>'
                           f'<text x="{px}" y="{y0 + 15}" text-anchor="middle">{tick_label(v)}</text>'
                           for v, px in zip(x_ticks, numbers(x.at(x_ticks)))],
            *[f'<line class="grid" x1="{x0}" y1="{py}" x2="{x1}" y2="{py}" stroke="#f1f3f5"/>'
              f'<text x="{x0 - 6}" y="{py}" dy="3" text-anchor="end">{tick_label(v)}</text>'
              for v, py in zip(y_ticks, numbers(y.at(y_ticks)))], end]


def series_colours(names: Sequence[str]) -> list[str]:
    """One colour per series: grey for the real images, the palette's colours for the others in order."""
    others = iter(PALETTE[1:] * (len(names) // (len(PALETTE) - 1) + 1))
    return [PALETTE[0] if name == "real" else next(others) for name in names]


def _legend(frame: Frame, names: Sequence[str]) -> list[str]:
    if len(names) < 2:
        return []
    parts = ['<g class="legend" font-size="10">']
    for i, (name, fill) in enumerate(zip(names, series_colours(names))):
        y = frame.y1 + 4 + 13 * i
        parts.append(f'<rect x="{frame.x1 - 96}" y="{y}" width="9" height="9" fill="{fill}"/>'
                     f'<text x="{frame.x1 - 83}" y="{y + 8}">{escape(name)}</text>')
    parts.append("</g>")
    return parts


def histogram(edges: Sequence[float], counts: Mapping[str, Sequence[float]], *, log_y: bool = False,
              x_label: str = "", y_label: str = "count", title: str = "", frame: Frame = Frame()) -> Markup:
    """Bars of one or more series over shared bin ``edges`` (overlaid, translucent when several).

    Empty bins draw no bar, so the number of ``bar`` elements is the number of non-empty bins. With ``log_y`` the
    count axis is logarithmic (the paper's Fig. 4) and starts below one so a single concept still shows.
    A few dozen to a few hundred bars (the card's, drawn on every click, about fifty): Python floats, cheaper
    here than numpy's cost per call, and each bin's place and range written once for all its series.
    """
    bounds, values = list(map(float, edges)), [list(map(float, row)) for row in counts.values()]
    if any(len(row) != max(len(bounds) - 1, 0) for row in values):
        raise ValueError(f"histogram: {len(bounds)} edges need {len(bounds) - 1} counts per series, "
                         f"got {' and '.join(str(len(row)) for row in values)}")
    top = max((max(row) for row in values if row), default=1.0)
    x = Scale.fit(bounds, frame.x0, frame.x1, domain=(bounds[0], bounds[-1]) if bounds else None)
    y = Scale.fit(None, frame.y0, frame.y1, log=log_y, domain=(0.5, max(top, 1.0) * 1.3) if log_y
                  else (0.0, max(top, 1.0) * 1.05))
    if log_y:  # counts: ticks from one up (the axis starts at 0.5 so a bin of one shows)
        y = replace(y, tick_bounds=(1.0, math.inf))
    parts = _axes(frame, x, y, x_label, y_label, "histogram", title)
    opacity = "0.55" if len(counts) > 1 else "0.9"
    at, written, base, n = x.at(bounds), [f"{b:.3g}" for b in bounds], frame.y0, len(bounds) - 1
    shown = [[j for j, count in enumerate(row) if count > 0] for row in values]
    tops = y.at([row[j] for row, bins in zip(values, shown) for j in bins])
    # every coordinate of the chart's bars in one lookup: each bin's place and width (a hairline gap between bars),
    # then each bar's top and height, series after series
    coordinates = numbers(at[:-1] + [max(b - a - 0.5, 0.5) for a, b in zip(at, at[1:])] + tops
                          + [base - t for t in tops])
    starts = [f'<rect class="bar" x="{a}" width="{w}" y="' for a, w in zip(coordinates[:n], coordinates[n:2 * n])]
    ranges = [f"[{a}, {b}) " for a, b in zip(written, written[1:])]
    top_at, height_at = 2 * n, 2 * n + len(tops)
    for name, row, fill, bins in zip(counts, values, series_colours(list(counts)), shown):
        label = escape(name)
        parts.append(f'<g class="series" data-series="{label}" fill="{fill}" fill-opacity="{opacity}">')
        parts += [f'{starts[j]}{top}" height="{height}"><title>{label}: {ranges[j]}{row[j]:g}</title></rect>'
                  for j, top, height in zip(bins, coordinates[top_at:top_at + len(bins)],
                                            coordinates[height_at:height_at + len(bins)])]
        parts.append("</g>")
        top_at, height_at = top_at + len(bins), height_at + len(bins)
    return Markup("".join([*parts, *_legend(frame, list(counts)), "</svg>"]))


def scatter(x_values: Sequence[float], y_values: Sequence[float], *, colour_values: Sequence[float] | None = None,
            colour_domain: tuple[float, float] = (0.0, 1.0), sizes: Sequence[float] | None = None,
            titles: Sequence[str] | None = None, x_log: bool = False, y_log: bool = False,
            x_domain: tuple[float, float] | None = None, y_domain: tuple[float, float] | None = None,
            guides_y: Sequence[float] = (), diagonal: bool = False, x_label: str = "", y_label: str = "",
            title: str = "", frame: Frame = Frame(), margin: float = 0.0,
            links: Sequence[str] | None = None, pick_url: str | None = None) -> Markup:
    """One ``point`` per (x, y); points that a log axis cannot place (<= 0) or non-finite are left out.

    ``colour_values`` colour points on the sequential scale over ``colour_domain``; ``sizes`` are
    radii in user units; ``guides_y`` draws dashed horizontal reference lines (the blindspot
    thresholds); ``diagonal`` draws y = x. ``margin`` widens given linear domains by that share on
    each side (ticks stay inside the given domain), so points at its ends are not drawn over the axes.
    ``links``: one URL per point, each point then a link (``<a>``) to it (detailed charts only). A compact
    chart (more than ``DETAIL_POINTS``) has no element per point; with ``pick_url`` it says in ``data-pick-*``
    where its frame and domains are, and ``frontend/static/charts.js`` sends a click there as data coordinates
    (``&at_x=&at_y=``) to ``pick_url``, which answers with the nearest point's page.
    """
    given = {"x": x_domain, "y": y_domain}
    if margin:
        x_domain, y_domain = _widened(x_domain, margin, x_log), _widened(y_domain, margin, y_log)
    xs, ys = np.asarray(x_values, dtype=float), np.asarray(y_values, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if x_log:
        keep &= xs > 0
    if y_log:
        keep &= ys > 0
    index = np.flatnonzero(keep)
    x = Scale.fit(xs[index], frame.x0, frame.x1, log=x_log, domain=x_domain, pad=0.03 if x_domain is None else 0.0)
    y = Scale.fit(ys[index], frame.y0, frame.y1, log=y_log, domain=y_domain, pad=0.03 if y_domain is None else 0.0)
    if margin:  # ticks only inside the domains the caller gave
        x = replace(x, tick_bounds=given["x"]) if given["x"] is not None and not x_log else x
        y = replace(y, tick_bounds=given["y"]) if given["y"] is not None and not y_log else y
    parts = _axes(frame, x, y, x_label, y_label, "scatter", title)
    for guide in guides_y:
        py = number(float(y(guide)))
        parts.append(f'<line class="guide" x1="{frame.x0}" y1="{py}" x2="{frame.x1}" y2="{py}" '
                     f'stroke="#adb5bd" stroke-dasharray="4 3"/>')
    if diagonal:
        low, high = max(x.low, y.low), min(x.high, y.high)
        if high > low:
            parts.append(f'<line class="guide" x1="{number(float(x(low)))}" y1="{number(float(y(low)))}" '
                         f'x2="{number(float(x(high)))}" y2="{number(float(y(high)))}" stroke="#adb5bd" '
                         f'stroke-dasharray="4 3"/>')
    px, py = x(xs[index]), y(ys[index])
    default_radius = 2.5 if index.size <= DETAIL_POINTS else 1.2  # dense clouds need small dots
    radii = np.asarray(sizes, dtype=float)[index] if sizes is not None else np.full(index.size, default_radius)
    shades = np.asarray(colour_values, dtype=float)[index] if colour_values is not None else None
    if index.size <= DETAIL_POINTS:
        fills = colour(shades, *colour_domain) if shades is not None else [PALETTE[1]] * index.size
        labels = [f"<title>{escape(titles[i])}</title>" for i in index] if titles is not None else [""] * index.size
        parts.append('<g class="points" fill-opacity="0.75">')
        circles = [f'<circle class="point" cx="{a}" cy="{b}" r="{r}" fill="{f}">{t}</circle>'
                   for a, b, r, f, t in zip(numbers(px), numbers(py), numbers(radii), fills, labels)]
        if links is not None:
            circles = [f'<a href="{escape(links[i])}">{c}</a>' for i, c in zip(index, circles)]
        parts += circles
        parts.append("</g>")
    else:
        parts += _dense_points(px, py, radii, shades, colour_domain)
        if pick_url is not None:
            pick = (f' data-pick-url="{escape(pick_url)}" data-pick-frame="{frame.x0} {frame.x1} {frame.y0} {frame.y1}"'
                    f' data-pick-domain="{x.low:.9g} {x.high:.9g} {y.low:.9g} {y.high:.9g}"'
                    f' data-pick-log="{"x" if x_log else ""}{"y" if y_log else ""}"')
            parts[0] = parts[0].replace("<svg ", f"<svg{pick} ", 1)
    parts.append("</svg>")
    return Markup("".join(parts))


def _widened(domain: tuple[float, float] | None, margin: float, log: bool) -> tuple[float, float] | None:
    if domain is None or log:
        return domain
    low, high = domain
    return low - margin * (high - low), high + margin * (high - low)


def _levels(values: np.ndarray, low: float, high: float, count: int = LEVELS) -> np.ndarray:
    span = high - low if high > low else 1.0
    return np.clip(np.floor((values - low) / span * count), 0, count - 1).astype(np.int64)


def _level_colour(level: int, low: float, high: float, count: int = LEVELS) -> str:
    return colour(np.array([low + (level + 0.5) / count * (high - low)]), low, high)[0]


def _dense_points(px: np.ndarray, py: np.ndarray, radii: np.ndarray, shades: np.ndarray | None,
                  colour_domain: tuple[float, float]) -> list[str]:
    """Many points as one path per (colour level, size): each point a zero-length segment with a round cap.

    A few hundred kilobytes for tens of thousands of concepts instead of megabytes of circles;
    each path says in ``data-points`` how many points it draws. No per-point tooltips.
    """
    colours = _levels(shades, *colour_domain) if shades is not None else np.zeros(px.size, dtype=np.int64)
    diameters = np.maximum(np.round(radii * 2), 1).astype(np.int64)
    key = colours * (int(diameters.max()) + 1) + diameters
    order = np.argsort(key, kind="stable")
    keys, starts = np.unique(key[order], return_index=True)
    parts = ['<g class="points" fill="none" stroke-linecap="round" stroke-opacity="0.75">']
    for group, members in zip(keys, np.split(order, starts[1:])):
        level, diameter = divmod(int(group), int(diameters.max()) + 1)
        stroke = _level_colour(level, *colour_domain) if shades is not None else PALETTE[1]
        path = "".join([f"M{a} {b}h0" for a, b in zip(numbers(px[members]), numbers(py[members]))])
        parts.append(f'<path class="point-group" data-points="{members.size}" stroke="{stroke}" '
                     f'stroke-width="{diameter}" d="{path}"/>')
    parts.append("</g>")
    return parts


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, x_log: bool = False, y_log: bool = False,
          emphasise: str | None = None, x_label: str = "", y_label: str = "", title: str = "",
          frame: Frame = Frame()) -> Markup:
    """One ``line`` (polyline) per named series; points a log axis cannot place are dropped."""
    cleaned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (xv, yv) in series.items():
        xs, ys = np.asarray(xv, dtype=float), np.asarray(yv, dtype=float)
        keep = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if x_log else True) & ((ys > 0) if y_log else True)
        cleaned[name] = (xs[keep], ys[keep])
    all_x = np.concatenate([c[0] for c in cleaned.values()]) if cleaned else np.zeros(0)
    all_y = np.concatenate([c[1] for c in cleaned.values()]) if cleaned else np.zeros(0)
    x = Scale.fit(all_x, frame.x0, frame.x1, log=x_log)
    y = Scale.fit(all_y, frame.y0, frame.y1, log=y_log, pad=0.04)
    parts = _axes(frame, x, y, x_label, y_label, "lines", title)
    for (name, (xs, ys)), stroke in zip(cleaned.items(), series_colours(list(cleaned))):
        points = " ".join(map("{},{}".format, numbers(x(xs)), numbers(y(ys))))
        width = "2.6" if name == emphasise else "1.5"
        parts.append(f'<polyline class="line" data-series="{escape(name)}" data-points="{xs.size}" fill="none" '
                     f'stroke="{stroke}" stroke-width="{width}" points="{points}">'
                     f"<title>{escape(name)}</title></polyline>")
    return Markup("".join([*parts, *_legend(frame, list(cleaned)), "</svg>"]))


def heatmap(matrix: np.ndarray, *, low: float, high: float, row_labels: Sequence[str] | None = None,
            col_labels: Sequence[str] | None = None, annotate: bool = False, x_label: str = "", y_label: str = "",
            title: str = "", size: int = 360) -> Markup:
    """One ``cell`` per matrix entry coloured on the sequential scale over [low, high], with a colour bar.

    ``annotate`` writes each value in its cell (for small matrices such as the cross-model Pearson
    matrix); otherwise the value is in the cell's tooltip. NaN cells are grey.
    """
    matrix = np.atleast_2d(np.asarray(matrix, dtype=float))
    n_rows, n_cols = matrix.shape
    labelled = row_labels is not None or col_labels is not None
    left = 100 if labelled else 44
    bottom = 70 if labelled else 34
    frame = Frame(width=left + size + 70, height=30 + size + bottom, left=left, right=70, top=30, bottom=bottom)
    cell_w, cell_h = size / max(n_cols, 1), size / max(n_rows, 1)
    parts = [_frame_parts(frame, title, "heatmap", "", "")[0]]
    r, c = np.indices(matrix.shape)
    flat = matrix.ravel()
    xs, ys = frame.x0 + c.ravel() * cell_w, frame.y1 + r.ravel() * cell_h
    names_r = [escape(name) for name in row_labels] if row_labels is not None else [str(i) for i in range(n_rows)]
    names_c = [escape(name) for name in col_labels] if col_labels is not None else [str(j) for j in range(n_cols)]
    if flat.size <= DETAIL_CELLS:
        fills = np.array(colour(np.nan_to_num(flat, nan=low), low, high), dtype=object)
        fills[np.isnan(flat)] = MISSING
        w, h = number(cell_w + 0.05), number(cell_h + 0.05)
        parts.append('<g class="cells">')
        parts += [f'<rect class="cell" x="{a}" y="{b}" width="{w}" height="{h}" fill="{f}">'
                  f"<title>{names_r[i]} / {names_c[j]}: {v:.3f}</title></rect>"
                  for a, b, f, i, j, v in zip(numbers(xs), numbers(ys), fills, r.ravel(), c.ravel(), flat.tolist())]
        parts.append("</g>")
    else:
        parts += _dense_cells(matrix, low, high, frame.x0, frame.y1, cell_w, cell_h)
    if annotate:
        dark = (np.nan_to_num(flat, nan=high) - low) / ((high - low) or 1.0) < 0.55
        parts.append('<g class="values" font-size="11" text-anchor="middle">')
        parts += [f'<text x="{number(a + cell_w / 2)}" y="{number(b + cell_h / 2 + 4)}" fill="{"#fff" if d else "#000"}">'
                  f'{"" if math.isnan(v) else f"{v:.2f}"}</text>' for a, b, v, d in zip(xs, ys, flat, dark)]
        parts.append("</g>")
    parts.append('<g class="axes" font-size="10">')
    if labelled:
        parts += [f'<text x="{frame.x0 - 6}" y="{number(frame.y1 + (i + 0.5) * cell_h + 3)}" text-anchor="end">'
                  f"{name}</text>" for i, name in enumerate(names_r)]
        parts += [f'<text transform="translate({number(frame.x0 + (j + 0.5) * cell_w)} {frame.y1 + size + 8}) '
                  f'rotate(35)">{name}</text>' for j, name in enumerate(names_c)]
    else:
        ticks = Scale(0, max(n_rows, n_cols), 0, 1).ticks()
        parts += [f'<text x="{frame.x0 - 6}" y="{number(frame.y1 + t * cell_h + 3)}" text-anchor="end">{int(t)}</text>'
                  for t in ticks if t < n_rows]
        parts += [f'<text x="{number(frame.x0 + t * cell_w)}" y="{frame.y1 + size + 13}" text-anchor="middle">'
                  f"{int(t)}</text>" for t in ticks if t < n_cols]
    parts.append(f'<text class="axis-label" x="{number(frame.x0 + size / 2)}" y="{frame.height - 6}" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text class="axis-label" transform="translate(12 {number(frame.y1 + size / 2)}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text></g>')
    parts += _colour_bar(frame.x1 + 18, frame.y1, size, low, high)
    parts.append("</svg>")
    return Markup("".join(parts))


def _dense_cells(matrix: np.ndarray, low: float, high: float, x0: float, y0: float, cell_w: float,
                 cell_h: float) -> list[str]:
    """A large heatmap as one path per colour level, in a group scaled so each cell is a unit square.

    Neighbouring cells of one row and level merge into one run; each path says in
    ``data-cells`` how many cells it covers.
    """
    n_rows, n_cols = matrix.shape
    levels = _levels(np.nan_to_num(matrix, nan=low), low, high).ravel()
    levels[np.isnan(matrix).ravel()] = LEVELS  # its own level, drawn grey
    column = np.tile(np.arange(n_cols), n_rows)
    starts = np.flatnonzero((column == 0) | np.concatenate([[True], levels[1:] != levels[:-1]]))
    lengths = np.diff(np.append(starts, levels.size))
    run_level, run_row, run_col = levels[starts], starts // n_cols, starts % n_cols
    parts = [f'<g class="cells" transform="translate({number(x0)} {number(y0)}) scale({cell_w:.4f} {cell_h:.4f})" '
             'shape-rendering="crispEdges">']
    for level in np.unique(run_level):
        members = np.flatnonzero(run_level == level)
        fill = MISSING if level == LEVELS else _level_colour(int(level), low, high)
        path = "".join([f"M{c} {r}h{n}v1h-{n}z" for r, c, n in zip(run_row[members].tolist(),
                                                                  run_col[members].tolist(), lengths[members].tolist())])
        parts.append(f'<path class="cell-group" data-cells="{int(lengths[members].sum())}" fill="{fill}" d="{path}"/>')
    parts.append("</g>")
    return parts


def _colour_bar(x: float, y: float, height: float, low: float, high: float, steps: int = LEVELS) -> list[str]:
    """A vertical colour bar from ``low`` (bottom) to ``high`` (top) with its end values."""
    fractions = np.linspace(0, 1, steps, endpoint=False)
    fills = colour(low + (fractions + 0.5 / steps) * (high - low), low, high)
    step = height / steps
    parts = ['<g class="colour-bar" font-size="10">']
    parts += [f'<rect x="{number(x)}" y="{number(y + height - (i + 1) * step)}" width="12" height="{number(step + 0.3)}" '
              f'fill="{f}"/>' for i, f in enumerate(fills)]
    parts.append(f'<text x="{number(x + 16)}" y="{number(y + 8)}">{escape(tick_label(high))}</text>'
                 f'<text x="{number(x + 16)}" y="{number(y + height)}">{escape(tick_label(low))}</text></g>')
    return parts
