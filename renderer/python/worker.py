#!/usr/bin/python3
"""tcplat renderer worker: a long-lived Matplotlib (Agg) process fed over stdin/stdout.

Started once by the renderer's worker pool and reused for many renders: importing matplotlib costs far
more than drawing a chart, so no Python process is spawned per request.

Framing (all integers unsigned 32-bit big-endian):
  request  = u32 length, then that many bytes of UTF-8 JSON
  reply    = u32 header length, u32 body length, header (UTF-8 JSON), body (PNG bytes; empty on error)
The first reply, sent unasked, is {"ready": true, ...} once matplotlib is imported.
A failed render answers {"ok": false, "error": "..."} and the worker keeps serving.

Only matplotlib.figure.Figure with FigureCanvasAgg is used, never pyplot: no global figure registry, so
nothing accumulates between renders. Heatmap figures are kept for the next request of the same size and
theme (at most MAX_TEMPLATES, the least recently used dropped; all of them after a failed render), but
only up to KEEP_MAX_PIXELS each: a figure larger than a big dashboard panel is cleared after it is drawn,
like every other figure, and its memory handed back to the system (gc, then malloc_trim), so a few
maximum-size renders do not leave the worker hundreds of MB larger. The pool also replaces a worker whose
resident memory passes --worker-max-rss.
All data arrive prepared (bins, bucket edges, quantiles): this file only draws.
"""
import ctypes
import ctypes.util
import gc
import io
import json
import os
import struct
import sys
import time
import traceback
import zoneinfo

import matplotlib

matplotlib.use("Agg")
# Titles, legends and messages carry user text (service and destination names): never read "$...$" in
# them as mathtext, which would both reinterpret the text and raise on malformed input.
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.patheffects as patheffects  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

DPI = 100
MS_PER_DAY = 86_400_000.0

# Grafana's own colours, so an embedded image sits in a panel without a visible seam.
THEMES = {
    "dark": {
        "bg": "#181b1f",  # panel background
        "plot": "#111217",  # canvas: the plot area reads as a well, like Grafana's heatmap
        "text": "#ccccdc",
        "muted": "#8e8e9e",
        "grid": "#2c3235",
        "cmap": "plasma",
        "series": ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#96d98d"],
        "p50": "#ffffff",
        "p90": "#ffffff",
        "p99": "#ffffff",
        "max": "#ffffff",
        "halo": "#000000",
        "error": "#f2495c",
    },
    "light": {
        "bg": "#ffffff",
        "plot": "#f4f5f5",
        "text": "#24292e",
        "muted": "#6e6e7e",
        "grid": "#dcdee0",
        "cmap": "viridis",
        "series": ["#37872d", "#c4a000", "#1f60c4", "#fa6400", "#c4162a", "#8f3bb8", "#3274d9", "#56a64b"],
        "p50": "#111217",
        "p90": "#111217",
        "p99": "#111217",
        "max": "#111217",
        "halo": "#ffffff",
        "error": "#c4162a",
    },
}


def read_exact(stream, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def send(out, header, body=b""):
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    out.write(struct.pack(">II", len(h), len(body)) + h + body)
    out.flush()


def human_latency(ms):
    # Minutes and hours only on lifespan axes (connect and TLS latencies stop at 16 s).
    if ms >= 3600000:
        v, unit = ms / 3600000.0, "h"
    elif ms >= 60000:
        v, unit = ms / 60000.0, "min"
    elif ms >= 1000:
        v, unit = ms / 1000.0, "s"
    elif ms >= 1:
        v, unit = ms, "ms"
    else:
        v, unit = ms * 1000.0, "µs"
    return ("%g" % float("%.2g" % v)) + " " + unit


def human_count(x):
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return ("%g" % float("%.3g" % (x / div))) + suffix
    return "%g" % float("%.3g" % x)


def new_figure(req):
    theme = THEMES.get(req.get("theme"), THEMES["dark"])
    w, h = int(req["width"]), int(req["height"])
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI, facecolor=theme["bg"])
    FigureCanvasAgg(fig)
    return fig, theme, w, h


def style_axes(ax, theme):
    ax.set_facecolor(theme["plot"])
    for s in ax.spines.values():
        s.set_color(theme["grid"])
    ax.tick_params(colors=theme["text"], which="both", labelsize=8.5)
    ax.xaxis.label.set_color(theme["text"])
    ax.yaxis.label.set_color(theme["text"])


def fit(text, px, px_per_char):
    """Shorten text to about the pixels available (an estimate: no text measuring per request)."""
    n = max(4, int(px / px_per_char))
    return text if len(text) <= n else text[: n - 1] + "…"


def add_titles(fig, req, theme, w, h):
    # Titles sit in fixed pixel rows so that small panels keep them readable.
    fig.text(10 / w, 1 - 8 / h, fit(req.get("title", ""), w - 20, 8.6), ha="left", va="top", color=theme["text"], fontsize=11, fontweight="bold")
    if req.get("subtitle"):
        fig.text(10 / w, 1 - 26 / h, fit(req["subtitle"], w - 20, 6.0), ha="left", va="top", color=theme["muted"], fontsize=8.5)


def time_axis(ax, req, theme):
    tz = zoneinfo.ZoneInfo(req.get("tz") or "UTC")
    locator = mdates.AutoDateLocator(tz=tz, minticks=3, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    fmt = mdates.ConciseDateFormatter(locator, tz=tz, show_offset=True)
    ax.xaxis.set_major_formatter(fmt)
    for a in [ax, *ax.get_shared_x_axes().get_siblings(ax)]:
        a.xaxis.get_offset_text().set_color(theme["muted"])
        a.xaxis.get_offset_text().set_fontsize(8)
    ax.set_xlim(req["from_ms"] / MS_PER_DAY, req["to_ms"] / MS_PER_DAY)


def latency_axis(ax, lo, hi):
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    decades = [10.0 ** e for e in range(-2, 5) if lo <= 10.0 ** e <= hi]
    ax.yaxis.set_major_locator(FixedLocator(decades))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: human_latency(v)))
    # Minor ticks would cost more draw time than they add (each Tick is a handful of artists): none.
    ax.yaxis.set_minor_locator(NullLocator())


def log_ms_axis(ax, ly):
    """A y axis drawn in log10(ms) on a linear scale: labels at the decades (or every other one for wide ranges, such as lifespans from 1 ms to a day)."""
    ax.set_ylim(ly[0], ly[-1])
    decades = [e for e in range(-3, 10) if ly[0] <= e <= ly[-1]]
    if len(decades) > 7:
        # Lifespans (1 ms .. a day): the units people think in, not decades of milliseconds.
        decades = [np.log10(t) for t in (1, 10, 100, 1000, 10000, 60000, 600000, 3600000, 86400000) if ly[0] <= np.log10(t) <= ly[-1]]
    ax.yaxis.set_major_locator(FixedLocator(decades))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: human_latency(10.0 ** v)))
    ax.yaxis.set_minor_locator(NullLocator())


def margins(fig, w, h, right_px):
    left, bottom, top = 84, 40, 44
    fig.subplots_adjust(left=left / w, right=1 - right_px / w, bottom=bottom / h, top=1 - top / h)


def nan_array(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


class HeatmapFigure:
    """A heatmap figure kept for the next request of the same size, theme and colour scale.

    Building a figure and drawing it the first time (axes, colour bar, every tick's artists) costs more
    than drawing the chart itself, so a worker keeps a few (see TEMPLATES) and each request only sets
    what depends on it: the cells, the colour range, the time axis, the overlays and the texts. Every
    such artist is set on every request, never left from the one before: the same request draws the
    same PNG on a kept figure as on a new one (tests/renderer-pool.test.ts checks it byte for byte).
    """

    def __init__(self, req):
        self.fig, self.theme, w, h = new_figure(req)
        self.w, self.h = w, h
        theme = self.theme
        fig = self.fig
        margins(fig, w, h, 92)
        self.ax = ax = fig.add_subplot(1, 1, 1)
        style_axes(ax, theme)
        # Drawn in log10(ms) on a linear axis: pcolorfast then draws the rectilinear grid as one image,
        # several times faster than a QuadMesh on a log axis, and the picture is the same log scale.
        self.ly = ly = np.log10(np.asarray(req["y_edges_ms"], dtype=float))
        # Log colours by default: one burst cell would otherwise wash out every other cell.
        norm = Normalize(vmin=0, vmax=2.0) if req.get("scale") == "linear" else LogNorm(vmin=1, vmax=2.0)
        # The cells are set by draw(); these are placeholders of the right shape.
        x = np.array([0.0, 1.0])
        self.mesh = ax.pcolorfast(x, ly, np.ma.masked_all((len(ly) - 1, 1)), cmap=theme["cmap"], norm=norm)
        log_ms_axis(ax, ly)
        ax.xaxis.get_offset_text().set_color(theme["muted"])
        ax.xaxis.get_offset_text().set_fontsize(8)
        ax.grid(True, which="major", axis="y", color=theme["grid"], linewidth=0.6, alpha=0.6)
        ax.set_ylabel(req.get("y_label", "connect latency"), fontsize=9)
        cax = fig.add_axes((1 - 80 / w, 40 / h, 12 / w, 1 - 84 / h))
        self.cb = cb = fig.colorbar(self.mesh, cax=cax)
        cb.outline.set_edgecolor(theme["grid"])
        cb.ax.tick_params(colors=theme["text"], labelsize=8)
        # Through the colour bar, not its axis: it sets its own ticks again whenever the range changes.
        cb.formatter = FuncFormatter(lambda v, _p: human_count(v))
        cb.minorlocator = NullLocator()
        self.title = fig.text(10 / w, 1 - 8 / h, "", ha="left", va="top", color=theme["text"], fontsize=11, fontweight="bold")
        self.subtitle = fig.text(10 / w, 1 - 26 / h, "", ha="left", va="top", color=theme["muted"], fontsize=8.5)
        self.lines = []
        self.legend = None

    def draw(self, req):
        ax, theme, w, h = self.ax, self.theme, self.w, self.h
        nbins = int(req["bins"])
        counts = np.asarray(req["counts"], dtype=float).reshape(nbins, len(self.ly) - 1)
        x = (req["from_ms"] + np.arange(nbins + 1, dtype=float) * req["window_ms"]) / MS_PER_DAY
        self.mesh.set_data(x, self.ly, np.ma.masked_less_equal(counts.T, 0))
        # Through the norm's callbacks this also redraws the colour bar for the new range.
        self.mesh.norm.vmax = max(2.0, float(counts.max()) if counts.size else 2.0)
        time_axis(ax, req, theme)
        for line in self.lines:
            line.remove()
        self.lines = []
        if self.legend is not None:
            self.legend.remove()
            self.legend = None
        centres = x[:-1] + (x[1:] - x[:-1]) / 2
        for name in ("p50", "p90", "p99", "max"):
            line = req.get("overlays", {}).get(name)
            if line is None:
                continue
            colour = theme.get(name, theme["text"])
            with np.errstate(divide="ignore", invalid="ignore"):
                ly_line = np.log10(nan_array(line))
            style = {"p50": "-", "p90": "-.", "p99": "--", "max": ":"}[name]
            # A halo keeps the line readable over any cell colour.
            self.lines += ax.plot(centres, ly_line, color=colour, linewidth=1.3, linestyle=style, label=name, path_effects=[patheffects.withStroke(linewidth=3, foreground=theme["halo"], alpha=0.6)])
        if req.get("overlays"):
            self.legend = ax.legend(loc="upper left", fontsize=8, frameon=True, facecolor=theme["bg"], edgecolor=theme["grid"], labelcolor=theme["text"])
            self.legend.get_frame().set_alpha(0.8)
        label = req.get("colour_label", "connects per cell")
        self.cb.set_label(label if h >= 360 else req.get("colour_unit", "connects"), color=theme["text"], fontsize=8.5)
        # Titles sit in fixed pixel rows so that small panels keep them readable.
        self.title.set_text(fit(req.get("title", ""), w - 20, 8.6))
        self.subtitle.set_text(fit(req.get("subtitle") or "", w - 20, 6.0))
        return self.fig


# Kept heatmap figures, most recently used last: a worker mostly draws the same few panel sizes.
TEMPLATES = {}
MAX_TEMPLATES = 4


def forget_templates():
    while TEMPLATES:
        TEMPLATES.popitem()[1].fig.clear()


# Largest figure kept between renders (pixels): a 1920x1080 panel. Larger ones are drawn on a new figure.
KEEP_MAX_PIXELS = 1920 * 1080


def render_heatmap(req):
    w, h = int(req["width"]), int(req["height"])
    if w * h > KEEP_MAX_PIXELS:
        return HeatmapFigure(req).draw(req)
    key = (w, h, req.get("theme"), req.get("scale") == "linear", tuple(req["y_edges_ms"]), req.get("y_label"))
    template = TEMPLATES.pop(key, None)
    if template is None:
        template = HeatmapFigure(req)
        while len(TEMPLATES) >= MAX_TEMPLATES:
            old = TEMPLATES.pop(next(iter(TEMPLATES)))
            old.fig.clear()
    TEMPLATES[key] = template
    return template.draw(req)


def _malloc_trim():
    """glibc keeps freed heap pages for reuse; hand them back after a large figure is gone (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


release_memory = _malloc_trim()


def render_percentiles(req):
    fig, theme, w, h = new_figure(req)
    margins(fig, w, h, 16 if w < 500 else 150)
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(gs[0])
    axe = fig.add_subplot(gs[1], sharex=ax)
    for a in (ax, axe):
        style_axes(a, theme)
        a.grid(True, which="major", color=theme["grid"], linewidth=0.6, alpha=0.6)
    x = (np.asarray(req["times_ms"], dtype=float) + req["window_ms"] / 2) / MS_PER_DAY
    styles = {"p50": ("-", 1.6), "p90": ("--", 1.1), "p99": (":", 1.4), "max": ((0, (1, 3)), 0.8)}
    lo, hi = req["y_edges_ms"][0], req["y_edges_ms"][-1]
    seen_hi = 0.0
    seen_lo = hi
    handles = []
    for i, s in enumerate(req["series"]):
        colour = theme["series"][i % len(theme["series"])]
        for q in req.get("quantiles", ["p50", "p90", "p99", "max"]):
            y = nan_array(s[q])
            if np.isfinite(y).any():
                seen_hi = max(seen_hi, float(np.nanmax(y)))
                seen_lo = min(seen_lo, float(np.nanmin(y[y > 0])) if (y > 0).any() else seen_lo)
            ls, lw = styles[q]
            (line,) = ax.plot(x, y, color=colour, linestyle=ls, linewidth=lw, marker="o" if len(x) < 3 else None, markersize=3)
            if q == "p50":
                line.set_label(s["name"])
                handles.append(line)
        err = nan_array(s["error_pct"])
        axe.plot(x, err, color=colour, linewidth=1.2, marker="o" if len(x) < 3 else None, markersize=3)
    # y range: the data's own decades, inside the shared bucket range.
    if seen_hi > 0:
        lo = max(lo, 10 ** np.floor(np.log10(max(seen_lo, 1e-3)) - 0.0))
        hi = min(hi, 10 ** np.ceil(np.log10(seen_hi) + 1e-9))
        if hi <= lo:
            hi = lo * 10
    latency_axis(ax, lo, hi)
    ax.set_ylabel(req.get("y_label", "connect latency"), fontsize=9)
    ax.tick_params(labelbottom=False)
    axe.set_ylabel("errors %", fontsize=9)
    axe.set_ylim(bottom=0)
    top = axe.get_ylim()[1]
    axe.set_ylim(0, max(1.0, top))
    time_axis(ax, req, theme)
    axe.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    if w >= 500:
        leg = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, labelcolor=theme["text"], title="destination")
        leg.get_title().set_color(theme["muted"])
        leg.get_title().set_fontsize(8)
        keys = [ax.plot([], [], color=theme["muted"], linestyle=styles[q][0], linewidth=styles[q][1], label=q)[0] for q in req.get("quantiles", [])]
        ax.add_artist(leg)
        leg2 = ax.legend(handles=keys, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8, frameon=False, labelcolor=theme["text"])
        leg2.set_in_layout(False)
    add_titles(fig, req, theme, w, h)
    return fig


def render_lifespan(req):
    """Lifespans of the connections that closed per bin (heatmap, p50/p99 over it) above new connections/s."""
    fig, theme, w, h = new_figure(req)
    margins(fig, w, h, 92)
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(gs[0])
    axr = fig.add_subplot(gs[1], sharex=ax)
    for a in (ax, axr):
        style_axes(a, theme)
    ly = np.log10(np.asarray(req["y_edges_ms"], dtype=float))
    nbins = int(req["bins"])
    counts = np.asarray(req["counts"], dtype=float).reshape(nbins, len(ly) - 1)
    x = (req["from_ms"] + np.arange(nbins + 1, dtype=float) * req["window_ms"]) / MS_PER_DAY
    vmax = max(2.0, float(counts.max()) if counts.size else 2.0)
    norm = Normalize(vmin=0, vmax=vmax) if req.get("scale") == "linear" else LogNorm(vmin=1, vmax=vmax)
    mesh = ax.pcolorfast(x, ly, np.ma.masked_less_equal(counts.T, 0), cmap=theme["cmap"], norm=norm)
    log_ms_axis(ax, ly)
    ax.grid(True, which="major", axis="y", color=theme["grid"], linewidth=0.6, alpha=0.6)
    ax.set_ylabel(req.get("y_label", "lifespan"), fontsize=9)
    ax.tick_params(labelbottom=False)
    centres = x[:-1] + (x[1:] - x[:-1]) / 2
    for name in ("p50", "p99"):
        line = req.get("overlays", {}).get(name)
        if line is None:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            ly_line = np.log10(nan_array(line))
        ax.plot(centres, ly_line, color=theme.get(name, theme["text"]), linewidth=1.3, linestyle="-" if name == "p50" else "--", label="lifespan " + name, marker="o" if nbins < 3 else None, markersize=3, path_effects=[patheffects.withStroke(linewidth=3, foreground=theme["halo"], alpha=0.6)])
    leg = ax.legend(loc="upper left", fontsize=8, frameon=True, facecolor=theme["bg"], edgecolor=theme["grid"], labelcolor=theme["text"])
    leg.get_frame().set_alpha(0.8)
    rate = nan_array(req.get("rate", []))
    colour = theme["series"][2]
    axr.fill_between(centres, rate, step="mid", color=colour, alpha=0.35, linewidth=0)
    axr.step(centres, rate, where="mid", color=colour, linewidth=1.2)
    axr.set_ylim(0, max(1.0, float(np.nanmax(rate)) * 1.15 if rate.size and np.isfinite(rate).any() else 1.0))
    axr.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    axr.grid(True, which="major", axis="y", color=theme["grid"], linewidth=0.6, alpha=0.6)
    axr.set_ylabel(req.get("rate_label", "new conns/s"), fontsize=9)
    time_axis(axr, req, theme)
    cax = fig.add_axes((1 - 80 / w, 40 / h, 12 / w, 1 - 84 / h))
    cb = fig.colorbar(mesh, cax=cax)
    cb.outline.set_edgecolor(theme["grid"])
    cb.ax.tick_params(colors=theme["text"], labelsize=8)
    cb.formatter = FuncFormatter(lambda v, _p: human_count(v))
    cb.minorlocator = NullLocator()
    cb.update_ticks()
    label = req.get("colour_label", "connections per cell")
    cb.set_label(label if h >= 360 else req.get("colour_unit", "connections"), color=theme["text"], fontsize=8.5)
    add_titles(fig, req, theme, w, h)
    return fig


def render_message(req):
    """An image that says why there is nothing to plot (no data in range): panels and alerts embed it."""
    fig, theme, w, h = new_figure(req)
    add_titles(fig, req, theme, w, h)
    fig.text(0.5, 0.5, req.get("message", "No data"), ha="center", va="center", color=theme["text"], fontsize=16 if w >= 300 else 11)
    if req.get("detail"):
        fig.text(0.5, 0.5 - 28 / h, req["detail"], ha="center", va="top", color=theme["muted"], fontsize=9, wrap=True)
    return fig


RENDERERS = {"heatmap": render_heatmap, "percentiles": render_percentiles, "lifespan": render_lifespan, "message": render_message}


def _pixels(req):
    try:
        return int(req.get("width", 0)) * int(req.get("height", 0))
    except (TypeError, ValueError):
        return 0


def png(fig):
    buf = io.BytesIO()
    fig.canvas.print_png(buf)
    return buf.getvalue()


def main():
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    # Anything printed by a library must not corrupt the frames on stdout.
    sys.stdout = sys.stderr
    send(out, {"ready": True, "pid": os.getpid(), "matplotlib": matplotlib.__version__, "numpy": np.__version__})
    served = 0
    while True:
        raw = read_exact(inp, 4)
        if raw is None:
            return 0
        (n,) = struct.unpack(">I", raw)
        payload = read_exact(inp, n)
        if payload is None:
            return 0
        started = time.perf_counter()
        fig = None
        req = None
        try:
            req = json.loads(payload)
            rid = req.get("id")
            if req.get("delay_ms"):  # test hook: lets tests kill a worker in the middle of a request
                time.sleep(float(req["delay_ms"]) / 1000.0)
            fig = RENDERERS[req["kind"]](req)
            body = png(fig)
            if _pixels(req) > KEEP_MAX_PIXELS:
                # Give a large figure's memory back before answering, so the pool's look at this worker's
                # resident memory (--worker-max-rss) sees what stays, not what is about to be freed.
                fig.clear()
                fig = None
                gc.collect()
                release_memory()
            send(out, {"id": rid, "ok": True, "render_ms": round((time.perf_counter() - started) * 1000, 2)}, body)
        except Exception as e:  # noqa: BLE001 - report any failure and keep serving
            traceback.print_exc(file=sys.stderr)
            send(out, {"id": req.get("id") if isinstance(req, dict) else None, "ok": False, "error": "%s: %s" % (type(e).__name__, e)})
            # A figure that failed half-way is in no known state: keep none.
            forget_templates()
        finally:
            large = isinstance(req, dict) and _pixels(req) > KEEP_MAX_PIXELS
            if fig is not None and not any(t.fig is fig for t in TEMPLATES.values()):
                fig.clear()
            del fig
            served += 1
            if large:
                gc.collect()
                release_memory()
            elif served % 50 == 0:
                gc.collect()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
