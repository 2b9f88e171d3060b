"""Charts from a results document (matplotlib; PNG for slides, SVG for the web).

  speedup_<primitive>   bars: every passing variant's speedup over pure Python (at the
                        largest size Python was timed) and over NumPy (at the largest
                        size NumPy was timed), log axis, same-size ratios only.
  throughput_<primitive> GFLOP/s or GB/s against size, one line per backend/variant,
                        the IQR as a band, the machine's measured peak as a dashed line.
  roofline              every primitive's best variant per backend at its largest size,
                        under the measured compute and bandwidth roofs.

Figures within 2x of their backend's empty-call floor ("overhead-bound": they measure the
call, not the kernel) are drawn hollow in the throughput charts and hatched in the bars.
Everything is read from the results document itself (its `primitives` block), so charts
can be redrawn from any results file, old or new.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .report import fmt_x  # noqa: E402

BACKEND_COLORS = {"python": "#d4a017", "numpy": "#4d77cf", "cuda": "#76b900", "mojo": "#ff6d00",
                  "mojo-gpu": "#c2185b", "cupy": "#1b5e20", "torch": "#8e24aa"}
FALLBACK = ["#6a1b9a", "#00838f", "#f9a825", "#5d4037"]


def color(backend: str, i: int = 0) -> str:
    return BACKEND_COLORS.get(backend, FALLBACK[i % len(FALLBACK)])


def shade(base: str, i: int, n: int) -> tuple:
    """Variant i of n of one backend: base colour mixed with white, 45 % ... 100 % strength."""
    from matplotlib.colors import to_rgb
    t = 1.0 if n <= 1 else 0.45 + 0.55 * i / (n - 1)
    return tuple(1 - t * (1 - c) for c in to_rgb(base))


def _subtitle(env: dict) -> str:
    bits = [env.get("machine", "")]
    if env.get("cpu_model"):
        bits.append(f"{env['cpu_model']} ({env.get('cpu_cores')} cores)")
    if env.get("gpu"):
        bits.append(env["gpu"])
    bits.append(f"float32 · {env.get('time_utc', '')[:10]}")
    return " · ".join(b for b in bits if b)


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{stem}.{ext}"
        fig.savefig(p, dpi=150 if ext == "png" else None, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def _overhead_bound(r) -> bool:
    return "overhead-bound" in (r.get("flags") or [])


def _info(doc, prim) -> dict:
    """The primitive's description from the document (v1 files: bound only)."""
    return (doc.get("primitives") or {}).get(prim) or {"bound": "memory", "dims": []}


def _passing_timed(rows, prim):
    return [r for r in rows if r["primitive"] == prim and r["phase"] == "timed"
            and r["status"] == "pass" and r["median_s"]]


def _label(r):
    return r["backend"] if r["variant"] in ("", r["backend"]) else f"{r['backend']}/{r['variant']}"


def _bars(ax, rows, key, title):
    rows = sorted(rows, key=lambda r: r[key])
    labels = [_label(r) for r in rows]
    vals = [r[key] for r in rows]
    cols = [color(r["backend"]) for r in rows]
    bars = ax.barh(range(len(rows)), vals, color=cols)
    for bar, r in zip(bars, rows):
        if _overhead_bound(r):
            bar.set_hatch("///")
            bar.set_edgecolor("white")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("speedup (×, log scale; >1 is faster)")
    for i, v in enumerate(vals):
        ax.text(v, i, " " + fmt_x(v), va="center", fontsize=7)
    ax.margins(x=0.25)


def speedup_chart(doc, prim, out_dir) -> list[Path]:
    rows = _passing_timed(doc["results"], prim)
    panels = []
    py = [r for r in rows if r["backend"] == "python"]
    if py:
        shape = max(py, key=lambda r: r["size"])["shape"]
        sel = [r for r in rows if r["shape"] == shape and r.get("speedup_vs_python")]
        if sel:
            panels.append((sel, "speedup_vs_python", f"vs fastest pure Python at {shape}"))
    npy = [r for r in rows if r["backend"] == "numpy"]
    if npy:
        shape = max(npy, key=lambda r: r["size"])["shape"]
        sel = [r for r in rows if r["shape"] == shape and r.get("speedup_vs_numpy")]
        if sel:
            panels.append((sel, "speedup_vs_numpy", f"vs NumPy at {shape}"))
    if not panels:
        return []
    height = max(2.5, 0.28 * max(len(p[0]) for p in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), height), squeeze=False)
    for ax, (sel, key, title) in zip(axes[0], panels):
        _bars(ax, sel, key, title)
    note = "  (hatched: overhead-bound)" if any(_overhead_bound(r) for sel, _, _ in panels for r in sel) else ""
    fig.suptitle(f"{prim}: speedup (median time ratio, same size, same run){note}\n{_subtitle(doc['env'])}",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, out_dir, f"speedup_{prim}")


def _compact(v: float) -> str:
    """Axis labels that fit: 1024 -> 1K, 16777216 -> 16M (binary units, as the sizes are powers of 2)."""
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if v >= scale and v % scale == 0:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def throughput_chart(doc, prim, out_dir) -> list[Path]:
    info = _info(doc, prim)
    rows = _passing_timed(doc["results"], prim)
    if not rows:
        return []
    key = "gflops" if info["bound"] == "compute" else "gbps"
    unit = "GFLOP/s" if info["bound"] == "compute" else "GB/s (minimum traffic)"
    lines = defaultdict(list)
    for r in rows:
        lines[(r["backend"], r["variant"])].append(r)
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    per_backend = defaultdict(int)
    n_variants = defaultdict(int)
    for backend, _ in lines:
        n_variants[backend] += 1
    for (backend, variant), rs in lines.items():
        rs.sort(key=lambda r: r["size"])
        x = [r["size"] for r in rs]
        work = [r["flops"] if key == "gflops" else r["bytes"] for r in rs]
        y = [w / r["median_s"] / 1e9 for w, r in zip(work, rs)]
        lo = [w / r["p75_s"] / 1e9 for w, r in zip(work, rs)]
        hi = [w / r["p25_s"] / 1e9 for w, r in zip(work, rs)]
        i = per_backend[backend]
        per_backend[backend] += 1
        # A backend's variants share its colour, from light (naive) to full (last step of
        # the ladder), so the lesson order reads off the chart.
        c = shade(color(backend), i, n_variants[backend])
        ax.plot(x, y, styles[i % len(styles)], marker=markers[i % len(markers)], ms=3.5, color=c,
                label=_label(rs[0]))
        hollow = [(xi, yi) for xi, yi, r in zip(x, y, rs) if _overhead_bound(r)]
        if hollow:                                   # overhead-bound points: white-filled markers
            ax.plot(*zip(*hollow), ls="", marker=markers[i % len(markers)], ms=3.5, mfc="white", mec=c)
        ax.fill_between(x, lo, hi, color=c, alpha=0.18, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    devices = {r["device"] for r in rows}
    for dev, pk in (doc.get("peaks") or {}).items():
        val = pk.get("gflops" if key == "gflops" else "gbps") if pk else None
        if val and dev in devices:
            ax.axhline(val, color="gray", ls="--", lw=0.8)
            # x in axes fraction, y in data: the label sits at the left end of its line.
            ax.text(0.01, val, f"{dev} measured peak {val:,.0f}", transform=ax.get_yaxis_transform(),
                    fontsize=7, va="bottom", color="gray")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    ndims = len(info.get("dims") or ())
    dim = {1: "n (elements)", 2: "n (rows = cols = n)", 3: "n (M = N = K = n)"}.get(ndims, "n (ladder size)")
    ax.set_xlabel(dim)
    ax.set_ylabel(unit)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, ncol=2)
    note = "; hollow: overhead-bound" if any(_overhead_bound(r) for r in rows) else ""
    ax.set_title(f"{prim}: throughput vs size (median, IQR band{note})\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, f"throughput_{prim}")


def roofline_chart(doc, out_dir) -> list[Path]:
    # A primitive with no arithmetic (add_backward: two copies) has no place on a roofline.
    rows = [r for r in doc["results"] if r["phase"] == "timed" and r["status"] == "pass" and r["median_s"]
            and r.get("flops")]
    if not rows:
        return []
    best = {}
    for r in rows:
        largest = max(x["size"] for x in rows if x["primitive"] == r["primitive"] and x["backend"] == r["backend"])
        if r["size"] != largest:
            continue
        k = (r["primitive"], r["backend"])
        if k not in best or r["gflops"] > best[k]["gflops"]:
            best[k] = r
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ais = [r["flops"] / r["bytes"] for r in best.values()]
    lo, hi = min(ais + [0.1]) / 2, max(ais + [100]) * 2
    for dev, pk in (doc.get("peaks") or {}).items():
        if pk and pk.get("gflops") and pk.get("gbps"):
            ridge = pk["gflops"] / pk["gbps"]
            xs = [lo, ridge, hi]
            ax.plot(xs, [min(pk["gflops"], x * pk["gbps"]) for x in xs], color="black" if dev == "cpu" else "#76b900",
                    lw=1.2, label=f"{dev} roof: {pk['gbps']:,.0f} GB/s, {pk['gflops']:,.0f} GFLOP/s (measured)")
    # Shape says which primitive, colour which backend: two small legends instead of a
    # cloud of overlapping labels.
    prims_in_doc = list(dict.fromkeys(r["primitive"] for r in rows))
    shapes = "osD^vP*Xhd<>p8H"
    markers = {p: shapes[i % len(shapes)] for i, p in enumerate(prims_in_doc)}
    for (prim, backend), r in best.items():
        ax.scatter(r["flops"] / r["bytes"], r["gflops"], color=color(backend), marker=markers.get(prim, "o"),
                   s=55, edgecolor="black", lw=0.4, zorder=3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    prims = list(dict.fromkeys(p for p, _ in best))
    backends_seen = list(dict.fromkeys(b for _, b in best))
    if ax.get_legend_handles_labels()[0]:
        ax.add_artist(ax.legend(fontsize=7, loc="lower right"))
    ax.legend(handles=[Line2D([], [], ls="", marker=markers.get(p, "o"), color="gray", label=p) for p in prims]
              + [Patch(color=color(b), label=b) for b in backends_seen],
              fontsize=7, loc="upper left", ncol=2, title="primitive (shape) · backend (colour)", title_fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP per byte of minimum traffic)")
    ax.set_ylabel("GFLOP/s")
    ax.grid(True, which="both", alpha=0.25)
    ax.set_title(f"Roofline: best variant per backend, largest size\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "roofline")


def all_charts(doc: dict, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for prim in dict.fromkeys(r["primitive"] for r in doc["results"]):
        paths += speedup_chart(doc, prim, out_dir)
        paths += throughput_chart(doc, prim, out_dir)
    paths += roofline_chart(doc, out_dir)
    return paths
