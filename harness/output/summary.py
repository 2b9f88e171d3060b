"""summary.md: a markdown digest of a run, written beside results.json. The README quotes
it verbatim, and a test checks that the quote matches the file.

Per primitive: every backend/variant's throughput at the largest few sizes NumPy was
timed at, with its speedup over NumPy at that size; every cell carries its marks (cache-
assisted, overhead-bound, a measurement error); the last columns give % of the measured
peak at the largest size, named for what it is (this machine's copy bandwidth, or its
BLAS, with the physical FMA peak beside it). Then the classic speedup over pure Python
where Python was timed, and the accuracy contrast on stress inputs where there are any.
"""
from __future__ import annotations

from .report import fmt_pct, fmt_time, fmt_x, peak_text, stress_accuracy

MARKS = {"cache-assisted": "ᶜ", "overhead-bound": "ᵒ"}
ERROR_MARK = "⚠"
LEGEND = (f"{MARKS['cache-assisted']} cache-assisted (the working set fits in a few x the last-level cache), "
          f"{MARKS['overhead-bound']} overhead-bound (within 2x of the empty-call floor), "
          f"{ERROR_MARK} above a physical or measured bound: a measurement error")


def pretty_shape(shape: str) -> str:
    """16777216 -> 16M (2^24); other shapes as they are."""
    if shape.isdigit() and int(shape) >= 1 << 20 and int(shape) % (1 << 20) == 0:
        n = int(shape)
        return f"{n >> 20}M" + (f" (2^{n.bit_length() - 1})" if n & (n - 1) == 0 else "")
    return shape


def marks(row: dict) -> str:
    out = ""
    for flag in row.get("flags") or []:
        if "measurement error" in flag:
            out += ERROR_MARK
        else:
            out += MARKS.get(flag, "")
    return out


def _bound(doc: dict, prim: str) -> str | None:
    info = (doc.get("primitives") or {}).get(prim)
    if info:
        return info.get("bound")
    from ..core import catalogue
    p = catalogue.PRIMITIVES.get(prim)
    return p.bound if p else None


def markdown_summary(doc: dict, sizes_per_primitive: int = 3) -> str:
    env, rows = doc["env"], doc["results"]
    peaks = doc.get("peaks") or {}
    lines = [f"Machine: **{env.get('machine')}** — {env.get('cpu_model')}, {env.get('cpu_cores')} cores"
             + (f", {env['gpu']} (driver {env.get('nvidia_driver')}, NVRTC {env.get('nvrtc')})" if env.get("gpu") else "")
             + f"; Python {env.get('python')}, NumPy {env.get('numpy')} ({env.get('blas')})"
             + (f", Mojo {env['packages']['mojo-compiler']}" if env.get("packages", {}).get("mojo-compiler") else "")
             + f"; {env.get('time_utc', '')[:10]}, commit {env.get('git_commit')}.", ""]
    for dev, pk in peaks.items():
        if pk:
            lines.append(f"Measured {dev} peaks: {peak_text(pk)}.")
            if pk.get("gflops_physical"):
                lines.append(f"Physical {dev} FP32 FMA peak (cores x clock x SIMD FLOP/cycle, an upper bound): "
                             f"{pk['gflops_physical']:,.0f} GFLOP/s.")
    floors = doc.get("floors") or {}
    if any(f.get("median_s") for f in floors.values()):
        lines.append("Empty-call floors (a no-op through each backend's call path): "
                     + ", ".join(f"{b} {fmt_time(f['median_s'])}" for b, f in floors.items() if f.get("median_s"))
                     + ".")
    lines += ["", f"Marks: {LEGEND}.", ""]
    for prim_name in dict.fromkeys(r["primitive"] for r in rows):
        bound = _bound(doc, prim_name)
        timed = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "timed"
                 and r["status"] == "pass" and r["median_s"]]
        if not bound or not timed:
            continue
        lines += _primitive_block(prim_name, bound, timed, peaks, sizes_per_primitive)
        lines += _accuracy_block(prim_name, rows)
    n = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "error", "skip")}
    baselines = set(doc.get("baselines") or ())
    excused = sum(1 for r in rows if r["status"] == "fail" and r.get("stress") and r["backend"] in baselines)
    fail_text = f"{n['fail']} fail" + (f" ({excused} of them baselines on stress inputs)" if excused else "")
    lines.append(f"All rows: {n['pass']} pass, {fail_text}, {n['error']} error, {n['skip']} skip "
                 f"(a skip is the time budget or an unavailable backend; each row has its reason in results.json).")
    return "\n".join(lines) + "\n"


def _primitive_block(prim_name, bound, timed, peaks, sizes_per_primitive) -> list[str]:
    unit = "GFLOP/s" if bound == "compute" else "GB/s"
    baseline = [r for r in timed if r["backend"] == "numpy"] or [r for r in timed if r["backend"] != "python"] or timed
    sizes = sorted({r["size"] for r in baseline})[-sizes_per_primitive:]
    shapes = {r["size"]: pretty_shape(r["shape"]) for r in timed}
    variants = list(dict.fromkeys((r["backend"], r["variant"]) for r in timed if r["size"] in sizes))
    largest = sizes[-1]
    by = {(r["backend"], r["variant"], r["size"]): r for r in timed}

    def cell(r):
        thr = r["gflops"] if bound == "compute" else r["gbps"]
        x = r.get("speedup_vs_numpy")
        return f"{thr:,.3g}{marks(r)}" + (f" ({fmt_x(x)})" if x is not None and r["backend"] != "numpy" else "")

    devices = {r["device"] for r in timed}
    if bound == "compute":
        pct_cols = ["% of BLAS"]
        physical = any((peaks.get(d) or {}).get("gflops_physical") for d in devices)
        if physical:
            pct_cols.append("% of FMA peak")
        what = "% of this machine's measured BLAS matmul (and of its physical FMA peak)"
    else:
        pct_cols, physical = ["% of copy BW"], False
        what = "% of this machine's measured copy bandwidth"
    lines = [f"**{prim_name}** — {unit} (× NumPy at the same size); {what} at {shapes[largest]}:", ""]
    lines.append("| backend / variant | " + " | ".join(shapes[s] for s in sizes) + " | " + " | ".join(pct_cols) + " |")
    lines.append("|---|" + "---:|" * (len(sizes) + len(pct_cols)))
    variants.sort(key=lambda bv: -(by[(*bv, largest)]["median_s"] ** -1) if (*bv, largest) in by else 0)
    for b, v in variants:
        cells = [cell(by[(b, v, s)]) if (b, v, s) in by else "—" for s in sizes]
        last = by.get((b, v, largest))
        pct = [f"{last['pct_of_peak']:.0f} %" if last and last.get("pct_of_peak") is not None else "—"]
        if physical:
            phys = (peaks.get(last["device"]) or {}).get("gflops_physical") if last else None
            pct.append(f"{100 * last['gflops'] / phys:.0f} %" if phys else "—")
        name = b if v == b else f"{b} / {v}"
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(pct) + " |")
    py = [r for r in timed if r["backend"] == "python"]
    if py:
        py_size = max(r["size"] for r in py)
        here = [r for r in timed if r["size"] == py_size and r.get("speedup_vs_python")]
        best = max(here, key=lambda r: r["speedup_vs_python"])
        best_name = best["backend"] if best["variant"] == best["backend"] else f"{best['backend']} / {best['variant']}"
        lines += ["", f"Pure Python was timed up to {shapes[py_size]}; there {best_name} "
                      f"is {fmt_x(best['speedup_vs_python'])} faster than the fastest Python variant."]
    lines.append("")
    return lines


def _accuracy_block(prim_name, rows) -> list[str]:
    dists, table = stress_accuracy(prim_name, rows)
    if not table:
        return []
    lines = [f"Accuracy of {prim_name} on stress inputs (worst max \\|error\\| over the check sizes, "
             f"and % of tolerance; ✗ = fails):", "",
             "| backend / variant | " + " | ".join(dists) + " |", "|---|" + "---:|" * len(dists)]
    for name, cells in table:
        row = []
        for d in dists:
            if d not in cells or cells[d][0]["max_abs_err"] is None:
                row.append("—")
                continue
            w, ok = cells[d]
            row.append(f"{w['max_abs_err']:.2g} ({fmt_pct(w['tol_used_pct'])})" + ("" if ok else " ✗"))
        lines.append(f"| {name.replace('/', ' / ')} | " + " | ".join(row) + " |")
    lines.append("")
    return lines
