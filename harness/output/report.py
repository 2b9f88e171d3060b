"""Terminal output: one table per primitive, rows grouped by size so that every
speedup is read against neighbours at the same size; then what was skipped and why,
the correctness checks (odd sizes x adversarial inputs) per variant, and for primitives
with stress inputs the accuracy contrast on them (our kernels vs the idioms)."""
from __future__ import annotations

from collections import defaultdict

from rich import box
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


# Marks and statuses as one symbol each, explained once under every table.
STATUS_MARK = {"pass": ("✓", "green"), "fail": ("✗", "bold red"), "error": ("!", "bold red"), "skip": ("–", "yellow")}
FLAG_MARK = {"cache-assisted": "ᶜ", "overhead-bound": "ᵒ"}
WIDE_AT = 120          # columns from which the table shows IQR, end-to-end time, errors and % of tolerance


def _marks(r: dict) -> str:
    return "".join("⚠" if "error" in f else FLAG_MARK.get(f, "") for f in r.get("flags") or [])


def legend(rows: list[dict]) -> str:
    seen = {f for r in rows for f in r.get("flags") or []}
    parts = ["✓ verified", "✗ wrong", "! crashed"]
    if "cache-assisted" in seen:
        parts.append("ᶜ cache-assisted (the working set fits in a few x the last-level cache)")
    if "overhead-bound" in seen:
        parts.append("ᵒ overhead-bound (within 2x of the empty-call floor: it measures the call more than the kernel)")
    if any("error" in f for f in seen):
        parts.append("⚠ above a physical or measured bound: a measurement error")
    return "[dim]" + escape("; ".join(parts)) + "[/]"


def primitive_table(prim_name: str, rows: list[dict], machine: str = "",
                    baselines: set[str] = frozenset(), width: int = 80,
                    wide: bool | None = None) -> tuple[Table, list[str]]:
    """The timed rows of one primitive, grouped by size. The first columns are what a reader
    needs first (variant, median, throughput, % of peak, x Python, x NumPy, status) and fit
    80 columns; from WIDE_AT columns (or with wide=True) IQR, end-to-end time, max error and
    % of tolerance join them. Compile times and reasons are notes under the table, once per
    variant, not repeated in every row."""
    prim = catalogue.PRIMITIVES[prim_name]
    wide = width >= WIDE_AT if wide is None else wide
    timed = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "timed"]
    shown = [r for r in timed if r["status"] != "skip"]
    border = _order(timed, "backend")
    shown.sort(key=lambda r: (r["size"] or 0, border[r["backend"]]))
    has_e2e = wide and any(r.get("e2e_median_s") for r in shown)
    unit = "GFLOP/s" if prim.bound == "compute" else "GB/s"
    checks = [r for r in rows if r["primitive"] == prim_name and r["phase"] == "check"]
    if not shown:
        return None, skip_notes([r for r in timed if r["status"] == "skip"]) + check_notes(checks, baselines)
    pct_label = "% BLAS" if prim.bound == "compute" else "% BW"       # of this machine's, measured
    t = Table(title=f"{prim_name} — {prim.summary}", title_justify="left", caption_justify="left",
              caption=(f"{machine} · median after warm-up · {unit} of minimum traffic · {pct_label}: of this "
                       + ("machine's measured NumPy matmul" if prim.bound == "compute" else
                          "machine's measured all-core copy bandwidth")),
              box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    t.add_column("size / variant", no_wrap=True)
    t.add_column("median", justify="right", no_wrap=True)
    if wide:
        t.add_column("IQR", justify="right", no_wrap=True)
    if has_e2e:
        t.add_column("end-to-end", justify="right", no_wrap=True)
    for col in (unit, pct_label, "×py", "×np"):
        t.add_column(col, justify="right", no_wrap=True)
    if wide:
        t.add_column("max err", justify="right", no_wrap=True)
        t.add_column("% tol", justify="right", no_wrap=True)
    t.add_column("", no_wrap=True)
    last_size = None
    for r in shown:
        if r["size"] != last_size:
            if last_size is not None:
                t.add_section()
            # the size heads its group of rows, so no column is spent on it
            t.add_row(Text(_short_shape(r["shape"]), style="bold"), *([""] * (len(t.columns) - 1)))
        last_size = r["size"]
        thr = r["gflops"] if prim.bound == "compute" else r["gbps"]
        mark, style = STATUS_MARK[r["status"]]
        name = r["backend"] if r["variant"] in ("", r["backend"]) else f"{r['backend']}/{r['variant']}"
        cells = ["  " + escape(name), fmt_time(r["median_s"])]
        if wide:
            iqr = (r["p75_s"] - r["p25_s"]) if r["median_s"] is not None else None
            cells.append(fmt_time(iqr) if iqr is not None else "—")
        if has_e2e:
            cells.append(fmt_time(r.get("e2e_median_s")))
        cells += [fmt_num(thr, 3) + _marks(r),
                  fmt_pct(r.get("pct_of_peak")),
                  fmt_x(r.get("speedup_vs_python")), fmt_x(r.get("speedup_vs_numpy"))]
        if wide:
            cells += [fmt_num(r.get("max_abs_err"), 2), fmt_num(r.get("tol_used_pct"), 2)]
        cells.append(Text(mark, style=style))
        t.add_row(*cells)
    notes = [legend(shown)]
    notes += [f"[bold red]{r['status']}[/] {escape(r['backend'])}/{escape(r['variant'])} at {escape(r['shape'] or '')}: "
              f"{escape(r.get('reason') or '')}" for r in shown if r["status"] in ("fail", "error")]
    notes += compile_notes(shown)
    notes += skip_notes([r for r in timed if r["status"] == "skip"])
    notes += check_notes(checks, baselines)
    return t, notes


def _short_shape(shape: str | None) -> str:
    """A size label that fits the column: 16777216 -> 16M, 2048x2048x2048 -> 2048³."""
    if shape and shape.isdigit() and int(shape) >= 1 << 20 and int(shape) % (1 << 20) == 0:
        return f"{int(shape) >> 20}M"
    parts = (shape or "").split("x")
    if len(parts) == 3 and len(set(parts)) == 1:
        return f"{parts[0]}³"
    return shape or ""


def compile_notes(shown: list[dict]) -> list[str]:
    """Compile time once per backend: each variant's first figure, or one figure when every
    variant came out of the same build (a Mojo module, say)."""
    by_backend: dict[str, dict[str, str]] = defaultdict(dict)
    for r in shown:
        if r.get("compile_s") is None or r["variant"] in by_backend[r["backend"]]:
            continue
        by_backend[r["backend"]][r["variant"]] = fmt_time(r["compile_s"]) + (" (cached)" if r.get("compile_cached") else "")
    notes = []
    for b, per in by_backend.items():
        if len(set(per.values())) == 1:
            notes.append(f"[dim]compile[/] {escape(b)}: {escape(next(iter(per.values())))}, one build for every variant")
        else:
            notes.append(f"[dim]compile[/] {escape(b)}: " + escape(", ".join(f"{v} {t}" for v, t in per.items())))
    return notes


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
                 floors: dict | None = None, baselines: set[str] = frozenset(), wide: bool | None = None) -> None:
    console = console or Console()
    machine = env.get("machine", "")
    for p in _order(rows, "primitive"):
        table, notes = primitive_table(p, rows, machine, baselines, width=console.width, wide=wide)
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
