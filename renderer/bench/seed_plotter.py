#!/usr/bin/python3
"""The seed's design, as the benchmark baseline: one fresh Python process per request that imports pandas
and pyplot, draws the heatmap from the bins it is given on stdin (JSON) and writes the PNG to stdout.
Same data and same picture size as the renderer; only the process model differs.
"""
import io
import json
import sys

try:
    import pandas as pd  # the seed imported pandas for every request
except ImportError:  # python3-pandas missing: run without it and say so on stderr
    pd = None
    print("seed_plotter: pandas is not installed, baseline runs without it", file=sys.stderr)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

req = json.load(sys.stdin)
bins = req["bins"]
edges = np.asarray(req["y_edges_ms"], dtype=float)
counts = np.asarray(req["counts"], dtype=float).reshape(bins, len(edges) - 1)
times = req["from_ms"] + np.arange(bins) * req["window_ms"]
if pd is not None:
    frame = pd.DataFrame(counts, index=pd.to_datetime(times, unit="ms"))
    counts = frame.to_numpy()
fig, ax = plt.subplots(figsize=(req["width"] / 100, req["height"] / 100), dpi=100)
x = np.append(times, times[-1] + req["window_ms"]) / 86_400_000.0
mesh = ax.pcolormesh(x, edges, np.ma.masked_less_equal(counts.T, 0), norm=LogNorm(vmin=1, vmax=max(2, counts.max())), shading="flat")
ax.set_yscale("log")
ax.xaxis_date()
ax.set_ylabel("connect latency (ms)")
fig.colorbar(mesh, ax=ax, label="connects")
ax.set_title(req.get("title", ""))
buf = io.BytesIO()
fig.savefig(buf, format="png")
plt.close(fig)
sys.stdout.buffer.write(buf.getvalue())
