"""Terminal output: one table per primitive, rows grouped by size so that every
speedup is read against neighbours at the same size; then what was skipped and why,
and the correctness checks (odd sizes x adversarial inputs) per variant."""
from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import catalogue

STATUS_STYLE = {"pass": "green", "fail": "bold red", "error": "bold red", "skip": "yellow"}


def fmt_time(s) -> str:
    if s is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"


def fmt_x(v) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}×" if v >= 100 else f"{v:.3g}×"


def fmt_num(v, digits=3) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def _order(rows, key):
    seen = []
    for r in rows:
        if r[key] not in seen:
            seen.append(r[key])
    return {k: i for i, k in enumerate(seen)}


def peak_text(pk: dict) -> str:
    parts = []
    for key, unit in (("gflops", "GFLOP/s"), ("gbps", "GB/s")):
        val = pk.get(key)
        parts.append(f"{val:,.1f} {unit} ({pk.get(key + '_source')})" if val else f"no {unit} peak measured")
    return "; ".join(parts)


def primitive_table(prim_name: str, rows: list[dict], machine: str = "") -> tuple[Table, list[str]]:
    prim = catalogue.PRIMITIVES[prim_name]
    timed = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "timed"]
    shown = [r for r in timed if r["status"] != "skip"]
    border = _order(timed, "backend")
    shown.sort(key=lambda r: (r["size"] or 0, border[r["backend"]]))
    has_e2e = any(r.get("e2e_median_s") for r in shown)
    has_compile = any(r.get("compile_s") is not None for r in shown)
    unit = "GFLOP/s" if prim.bound == "compute" else "GB/s"
    if not shown:
        return None, skip_notes([r for r in timed if r["status"] == "skip"]) + check_notes(
            [r for r in rows if r["primitive"] == prim_name and r["phase"] == "check"])
    t = Table(title=f"{prim_name} — {prim.summary}", title_justify="left", caption_justify="left",
              caption=(f"{machine}  ·  median (IQR) after warm-up; throughput in {unit} of minimum traffic"
                       if prim.bound == "memory" else f"{machine}  ·  median (IQR) after warm-up"),
              show_lines=False, pad_edge=False)
    for col, just in (("size", "right"), ("backend", "left"), ("variant", "left"), ("median", "right"),
                      ("IQR", "right")):
        t.add_column(col, justify=just)
    if has_e2e:
        t.add_column("end-to-end", justify="right")
    if has_compile:
        t.add_column("compile", justify="right")
    for col in (unit, "% peak", "vs python", "vs numpy", "max err", "% tol", "status"):
        t.add_column(col, justify="right" if col != "status" else "left")
    last_size = None
    for r in shown:
        if last_size is not None and r["size"] != last_size:
            t.add_section()
        last_size = r["size"]
        thr = r["gflops"] if prim.bound == "compute" else r["gbps"]
        iqr = (r["p75_s"] - r["p25_s"]) if r["median_s"] is not None else None
        status = Text(r["status"], style=STATUS_STYLE[r["status"]])
        if r["status"] != "pass" and r.get("reason"):
            status.append(f" {r['reason'][:60]}", style="dim")
        for flag in r.get("flags") or []:
            status.append(f" ⚠ {flag}" if "error" in flag else f" ({flag})",
                          style="bold red" if "error" in flag else "dim")
        cells = [r["shape"], r["backend"], r["variant"], fmt_time(r["median_s"]),
                 fmt_time(iqr) if iqr is not None else "—"]
        if has_e2e:
            cells.append(fmt_time(r.get("e2e_median_s")))
        if has_compile:
            cells.append(fmt_time(r.get("compile_s")) + (" (cache)" if r.get("compile_cached") else "")
                         if r.get("compile_s") is not None else "—")
        cells += [fmt_num(thr, 4), fmt_num(r.get("pct_of_peak"), 3) + ("%" if r.get("pct_of_peak") is not None else ""),
                  fmt_x(r.get("speedup_vs_python")), fmt_x(r.get("speedup_vs_numpy")),
                  fmt_num(r.get("max_abs_err"), 2), fmt_num(r.get("tol_used_pct"), 2), status]
        t.add_row(*cells)
    notes = skip_notes([r for r in timed if r["status"] == "skip"])
    notes += check_notes([r for r in rows if r["primitive"] == prim_name and r["phase"] == "check"])
    return t, notes


def skip_notes(skips: list[dict]) -> list[str]:
    grouped = defaultdict(list)
    for r in skips:
        reason = r["reason"] or ""
        if reason.startswith("time budget: predicted"):
            reason = reason.split(":")[0] + ": predicted over the per-call budget"
        grouped[(r["backend"], r["variant"], reason)].append(r["shape"])
    notes = []
    for (backend, variant, reason), shapes in grouped.items():
        name = f"{backend}/{variant}" if variant else backend
        sizes = [s for s in shapes if s]
        where = f" at {', '.join(sizes)}" if sizes else ""
        notes.append(f"[yellow]skipped[/] {escape(name)}{escape(where)}: {escape(reason)}")
    return notes


def check_notes(checks: list[dict]) -> list[str]:
    by_variant = defaultdict(list)
    for r in checks:
        by_variant[(r["backend"], r["variant"])].append(r)
    notes = []
    for (backend, variant), rs in by_variant.items():
        bad = [r for r in rs if r["status"] != "pass"]
        worst = max((r["tol_used_pct"] or 0) for r in rs if r["status"] == "pass") if len(bad) < len(rs) else None
        if not bad:
            notes.append(f"[green]checks[/] {backend}/{variant}: {len(rs)}/{len(rs)} pass "
                         f"(odd sizes x {len({r['distribution'] for r in rs})} distributions; "
                         f"worst {worst:.2g}% of tolerance)")
        else:
            notes.append(f"[bold red]checks[/] {backend}/{variant}: {len(rs) - len(bad)}/{len(rs)} pass")
            for r in bad[:5]:
                notes.append(f"    [red]{r['status']}[/] {r['shape']} {r['distribution']}: {escape(r['reason'] or '')}")
            if len(bad) > 5:
                notes.append(f"    … and {len(bad) - 5} more")
    return notes


def print_report(rows: list[dict], env: dict, peaks: dict, console: Console | None = None) -> None:
    console = console or Console()
    machine = env.get("machine", "")
    for p in _order(rows, "primitive"):
        table, notes = primitive_table(p, rows, machine)
        console.print()
        if table is None:
            console.print(f"[bold]{p}[/]: nothing timed", highlight=False)
        else:
            console.print(table)
        for n in notes:
            console.print("  " + n, highlight=False)
    console.print()
    for dev, pk in peaks.items():
        if pk:
            console.print(f"[bold]{dev} peaks[/]: {peak_text(pk)}", highlight=False)
            for note in pk.get("notes") or []:
                console.print(f"  [dim]{note}[/]", highlight=False)
    counts = defaultdict(int)
    for r in rows:
        counts[r["status"]] += 1
    summary = ", ".join(f"{counts[s]} {s}" for s in ("pass", "fail", "error", "skip") if counts[s])
    console.print(f"[bold]results[/]: {summary}", highlight=False)


# ----------------------------------------------------------------------------- markdown

def _md_time(s):
    return fmt_time(s).replace("µs", "µs")


def pretty_shape(shape: str) -> str:
    """16777216 -> 16M (2^24); other shapes as they are."""
    if shape.isdigit() and int(shape) >= 1 << 20 and int(shape) % (1 << 20) == 0:
        n = int(shape)
        return f"{n >> 20}M" + (f" (2^{n.bit_length() - 1})" if n & (n - 1) == 0 else "")
    return shape


def markdown_summary(doc: dict, sizes_per_primitive: int = 3) -> str:
    """A markdown digest of a run (written as summary.md beside results.json; the README
    quotes it verbatim, and a test checks that the quote matches the file).

    Per primitive: every backend/variant's throughput at the largest few sizes NumPy was
    timed at, with its speedup over NumPy at that size, and its % of the measured peak at
    the largest size; then the classic speedup over pure Python where Python was timed."""
    env, rows = doc["env"], doc["results"]
    lines = [f"Machine: **{env.get('machine')}** — {env.get('cpu_model')}, {env.get('cpu_cores')} cores"
             + (f", {env['gpu']} (driver {env.get('nvidia_driver')}, NVRTC {env.get('nvrtc')})" if env.get("gpu") else "")
             + f"; Python {env.get('python')}, NumPy {env.get('numpy')} ({env.get('blas')})"
             + (f", Mojo {env['packages']['mojo-compiler']}" if env.get("packages", {}).get("mojo-compiler") else "")
             + f"; {env.get('time_utc', '')[:10]}, commit {env.get('git_commit')}.", ""]
    for dev, pk in (doc.get("peaks") or {}).items():
        if pk:
            lines.append(f"Measured {dev} peaks: {peak_text(pk)}.")
    lines.append("")
    for prim_name in dict.fromkeys(r["primitive"] for r in rows):
        prim = catalogue.PRIMITIVES.get(prim_name)
        timed = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "timed"
                 and r["status"] == "pass" and r["median_s"]]
        if not prim or not timed:
            continue
        unit = "GFLOP/s" if prim.bound == "compute" else "GB/s"
        baseline = [r for r in timed if r["backend"] == "numpy"] or [r for r in timed if r["backend"] != "python"] or timed
        sizes = sorted({r["size"] for r in baseline})[-sizes_per_primitive:]
        shapes = {r["size"]: pretty_shape(r["shape"]) for r in timed}
        variants = list(dict.fromkeys((r["backend"], r["variant"]) for r in timed if r["size"] in sizes))
        largest = sizes[-1]
        by = {(r["backend"], r["variant"], r["size"]): r for r in timed}

        def cell(r):
            thr = r["gflops"] if prim.bound == "compute" else r["gbps"]
            x = r.get("speedup_vs_numpy")
            return f"{thr:,.3g}" + (f" ({fmt_x(x)})" if x is not None and r["backend"] != "numpy" else "")

        lines.append(f"**{prim_name}** — {unit} (× NumPy at the same size); % of peak at {shapes[largest]}:")
        lines.append("")
        lines.append("| backend / variant | " + " | ".join(shapes[s] for s in sizes) + " | % of peak |")
        lines.append("|---|" + "---:|" * (len(sizes) + 1))
        variants.sort(key=lambda bv: -(by[(*bv, largest)]["median_s"] ** -1) if (*bv, largest) in by else 0)
        for b, v in variants:
            cells = [cell(by[(b, v, s)]) if (b, v, s) in by else "—" for s in sizes]
            last = by.get((b, v, largest))
            pct = f"{last['pct_of_peak']:.0f} %" if last and last.get("pct_of_peak") is not None else "—"
            if last and "cache-assisted" in (last.get("flags") or []):
                pct += " (cache-assisted)"
            name = b if v == b else f"{b} / {v}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {pct} |")
        py = [r for r in timed if r["backend"] == "python"]
        if py:
            py_size = max(r["size"] for r in py)
            here = [r for r in timed if r["size"] == py_size and r.get("speedup_vs_python")]
            best = max(here, key=lambda r: r["speedup_vs_python"])
            lines.append("")
            best_name = best["backend"] if best["variant"] == best["backend"] else f"{best['backend']} / {best['variant']}"
            lines.append(f"Pure Python was timed up to {shapes[py_size]}; there {best_name} "
                         f"is {fmt_x(best['speedup_vs_python'])} faster than the fastest Python variant.")
        lines.append("")
    n = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "error", "skip")}
    lines.append(f"All rows: {n['pass']} pass, {n['fail']} fail, {n['error']} error, {n['skip']} skip "
                 f"(a skip is the time budget or an unavailable backend; each row has its reason in results.json).")
    return "\n".join(lines) + "\n"
