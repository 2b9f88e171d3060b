"""Terminal output: one table per primitive, rows grouped by size so that every
speedup is read against neighbours at the same size; then what was skipped and why,
the correctness checks (odd sizes x adversarial inputs) per variant, and for primitives
with stress inputs the accuracy contrast on them (our kernels vs the idioms)."""
from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..core import catalogue

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


def primitive_table(prim_name: str, rows: list[dict], machine: str = "",
                    baselines: set[str] = frozenset()) -> tuple[Table, list[str]]:
    prim = catalogue.PRIMITIVES[prim_name]
    timed = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "timed"]
    shown = [r for r in timed if r["status"] != "skip"]
    border = _order(timed, "backend")
    shown.sort(key=lambda r: (r["size"] or 0, border[r["backend"]]))
    has_e2e = any(r.get("e2e_median_s") for r in shown)
    has_compile = any(r.get("compile_s") is not None for r in shown)
    unit = "GFLOP/s" if prim.bound == "compute" else "GB/s"
    checks = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "check"]
    if not shown:
        return None, skip_notes([r for r in timed if r["status"] == "skip"]) + check_notes(checks, baselines)
    t = Table(title=f"{prim_name} — {prim.summary}", title_justify="left", caption_justify="left",
              caption=(f"{machine}  ·  median (IQR) after warm-up; {unit} of minimum traffic; % copy BW: of the "
                       f"measured all-core copy bandwidth" if prim.bound == "memory" else
                       f"{machine}  ·  median (IQR) after warm-up; % BLAS: of this machine's measured NumPy "
                       f"matmul"),
              show_lines=False, pad_edge=False)
    for col, just in (("size", "right"), ("backend", "left"), ("variant", "left"), ("median", "right"),
                      ("IQR", "right")):
        t.add_column(col, justify=just)
    if has_e2e:
        t.add_column("end-to-end", justify="right")
    if has_compile:
        t.add_column("compile", justify="right")
    pct_label = "% BLAS" if prim.bound == "compute" else "% copy BW"       # of this machine's, measured
    for col in (unit, pct_label, "vs python", "vs numpy", "max err", "% tol", "status"):
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
    notes += check_notes(checks, baselines)
    if any(r.get("flags") and "overhead-bound" in r["flags"] for r in shown):
        notes.append("[dim](overhead-bound): the median is within 2x of the backend's empty-call floor, "
                     "so it measures the call more than the kernel[/]")
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


def check_notes(checks: list[dict], baselines: set[str] = frozenset()) -> list[str]:
    """Per variant: how many checks passed. Stress checks a baseline fails are reported as
    what they are (the idiom's accuracy), not as a broken kernel."""
    by_variant = defaultdict(list)
    for r in checks:
        by_variant[(r["backend"], r["variant"])].append(r)
    notes = []
    for (backend, variant), rs in by_variant.items():
        excused = [r for r in rs if r["status"] == "fail" and r.get("stress") and backend in baselines]
        bad = [r for r in rs if r["status"] != "pass" and r not in excused]
        passed = [r for r in rs if r["status"] == "pass"]
        worst = max((r["tol_used_pct"] or 0) for r in passed) if passed else None
        dists = len({r["distribution"] for r in rs})
        if not bad:
            line = (f"[green]checks[/] {backend}/{variant}: {len(passed)}/{len(rs)} pass "
                    f"(odd sizes x {dists} distributions" + (f"; worst {worst:.2g}% of tolerance)" if worst is not None else ")"))
            if excused:
                stress = sorted({r["distribution"] for r in excused})
                line += (f"; [yellow]inaccurate on {len(excused)} stress cases[/] ({', '.join(stress)}): "
                         f"a baseline, measured but not held to them")
            notes.append(line)
        else:
            notes.append(f"[bold red]checks[/] {backend}/{variant}: {len(passed)}/{len(rs)} pass")
            for r in bad[:5]:
                notes.append(f"    [red]{r['status']}[/] {r['shape']} {r['distribution']}: {escape(r['reason'] or '')}")
            if len(bad) > 5:
                notes.append(f"    … and {len(bad) - 5} more")
    return notes


def stress_accuracy(prim_name: str, rows: list[dict]) -> tuple[list[str], list[tuple[str, dict]]]:
    """The stress distributions run, and per backend/variant the worst check row on each
    with whether all its checks there passed: {distribution: (worst_row, all_passed)}."""
    checks = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "check" and r.get("stress")
              and r["status"] in ("pass", "fail")]
    dists = list(dict.fromkeys(r["distribution"] for r in checks))
    table = []
    for b, v in dict.fromkeys((r["backend"], r["variant"]) for r in checks):
        cells = {}
        for d in dists:
            rs = [r for r in checks if (r["backend"], r["variant"], r["distribution"]) == (b, v, d)]
            if rs:
                worst = max(rs, key=lambda r: r["tol_used_pct"] if r["tol_used_pct"] is not None else float("inf"))
                cells[d] = (worst, all(r["status"] == "pass" for r in rs))
        table.append((b if v == b else f"{b}/{v}", cells))
    return dists, table


def accuracy_table(prim_name: str, rows: list[dict]) -> Table | None:
    """The worst error of every backend/variant on each stress distribution: the lesson of
    inputs where float32 idioms lose the answer."""
    dists, table = stress_accuracy(prim_name, rows)
    if not table:
        return None
    t = Table(title=f"{prim_name}: accuracy on stress inputs (worst max |error| over the check sizes; "
                    f"% of tolerance)", title_justify="left", pad_edge=False)
    t.add_column("backend / variant")
    for d in dists:
        t.add_column(d, justify="right")
    for name, cells in table:
        row = []
        for d in dists:
            if d not in cells:
                row.append("—")
                continue
            w, ok = cells[d]
            row.append(f"[{'green' if ok else 'red'}]{fmt_num(w['max_abs_err'], 2)} ({fmt_pct(w['tol_used_pct'])})[/]")
        t.add_row(escape(name), *row)
    return t


def fmt_pct(v) -> str:
    if v is None:
        return "—"
    if v == float("inf"):
        return "inf"
    return f"{v:,.0f}%" if v >= 100 else f"{v:.2g}%"


def print_report(rows: list[dict], env: dict, peaks: dict, console: Console | None = None,
                 floors: dict | None = None, baselines: set[str] = frozenset()) -> None:
    console = console or Console()
    machine = env.get("machine", "")
    for p in _order(rows, "primitive"):
        table, notes = primitive_table(p, rows, machine, baselines)
        console.print()
        if table is None:
            console.print(f"[bold]{p}[/]: nothing timed", highlight=False)
        else:
            console.print(table)
        for n in notes:
            console.print("  " + n, highlight=False)
        acc = accuracy_table(p, rows)
        if acc is not None:
            console.print(acc)
    console.print()
    for dev, pk in peaks.items():
        if pk:
            console.print(f"[bold]{dev} peaks[/]: {peak_text(pk)}", highlight=False)
            for note in pk.get("notes") or []:
                console.print(f"  [dim]{note}[/]", highlight=False)
    if floors:
        text = ", ".join(f"{b} {fmt_time(f.get('median_s'))}" for b, f in floors.items() if f.get("median_s"))
        if text:
            console.print(f"[bold]empty-call floors[/]: {text}", highlight=False)
    counts = defaultdict(int)
    for r in rows:
        counts[r["status"]] += 1
    summary = ", ".join(f"{counts[s]} {s}" for s in ("pass", "fail", "error", "skip") if counts[s])
    console.print(f"[bold]results[/]: {summary}", highlight=False)
