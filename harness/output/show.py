"""`show PRIMITIVE [--variant NAME | --step IDEA] [--results FILE]`: the three
implementations of one primitive, side by side.

Python, CUDA and Mojo files share a stem (softmax.py, softmax.cu, softmax.mojo), so the
same variant ladder can be read across languages. Whole files by default; with --variant,
that variant's step of each file that has it; with --step, the variant each language
takes for one shared idea of the ladder (the declaration's steps: online, tiled, ...).
Wide terminals get three columns; narrow ones get the panels one after another. With
--results (any results.json, schema version 1 or 2), each variant's verdict and its figure
at the largest size it was timed at follow the code.
"""
from __future__ import annotations


from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..core import catalogue
from ..errors import UsageError
from . import sources
from .report import fmt_time, fmt_x

MIN_COLUMN = 72


def source_panels(primitive: str) -> list[tuple[str, object]]:
    catalogue.get(primitive)                          # unknown primitive -> UsageError
    panels = []
    for backend, folder, _, title, lexer in sources.LANGUAGES:
        path = sources.source_path(backend, primitive)
        rel = f"{folder}/{path.name}"
        if path.exists():
            body = Syntax(path.read_text(encoding="utf-8"), lexer, line_numbers=False, word_wrap=True,
                          theme="ansi_dark")
        else:
            body = Text(f"{rel} is not written yet.\n\nThis backend has no {primitive} so far; "
                        f"see the open issues.", style="italic dim")
        panels.append((f"{title} — {rel}", body))
    return panels


def _variants(backend: str, primitive: str) -> list[str]:
    from .. import backends
    return backends.get(backend).variants(primitive) if sources.source_path(backend, primitive).exists() else []


def step_panels(primitive: str, variant: str | None = None, step: str | None = None) -> list[tuple[str, object]]:
    """One variant's step of each file: the named variant where a language has it, or the
    variant each language takes for a declared step. A name no language has is a
    UsageError that lists the valid ones."""
    prim = catalogue.get(primitive)
    if step is not None:
        chosen = {st.idea: st for st in prim.steps}.get(step)
        if chosen is None:
            valid = ", ".join(st.idea for st in prim.steps) or "none: it declares no shared steps"
            raise UsageError(f"{primitive} has no step {step!r}; valid: {valid}")
        wanted, what = chosen.variants(), f"step {step}: {chosen.what}"
    else:
        wanted = {b: variant for b, *_ in sources.LANGUAGES if variant in _variants(b, primitive)}
        if not wanted:
            valid = "; ".join(f"{b}: {', '.join(_variants(b, primitive)) or '(none)'}" for b, *_ in sources.LANGUAGES)
            raise UsageError(f"{primitive} has no variant {variant!r} in any language; valid: {valid}")
        what = f"variant {variant}"
    panels = []
    for backend, folder, _, title, lexer in sources.LANGUAGES:
        v = wanted.get(backend)
        piece = next((p for p in sources.pieces(backend, primitive, _variants(backend, primitive))
                      if p.variant == v), None) if v else None
        if piece is None:
            panels.append((title, Text(f"No {title} variant for {what}.", style="italic dim")))
            continue
        path = sources.source_path(backend, primitive)
        body = Group(Text(piece.note, style="italic"), Syntax(piece.code, lexer, word_wrap=True, theme="ansi_dark",
                                                              line_numbers=True, start_line=piece.line))
        panels.append((f"{title} · {v} — {folder}/{path.name}:{piece.line}", body))
    return panels


def results_table(primitive: str, doc: dict) -> Table | None:
    """Each variant's checks and its figure at the largest size it passed at, from one run."""
    rows = [r for r in doc["results"] if r["primitive"] == primitive and r.get("variant")]
    if not rows:
        return None
    bound = ((doc.get("primitives") or {}).get(primitive) or {}).get("bound", "memory")
    unit = "GFLOP/s" if bound == "compute" else "GB/s"
    t = Table(title=f"{primitive} on {doc['env'].get('machine', '?')} "
                    f"({doc['env'].get('time_utc', '')[:10]}, schema v{doc.get('upgraded_from') or doc['schema_version']})",
              title_justify="left")
    for c in ("backend / variant", "checks", "largest timed", "median", unit, "× NumPy"):
        t.add_column(c, justify="left" if c in ("backend / variant", "checks") else "right")
    for b, v in dict.fromkeys((r["backend"], r["variant"]) for r in rows):
        mine = [r for r in rows if (r["backend"], r["variant"]) == (b, v)]
        checks = [r for r in mine if r["phase"] == "check"]
        passed = sum(r["status"] == "pass" for r in checks)
        timed = [r for r in mine if r["phase"] == "timed" and r["status"] == "pass" and r.get("median_s")]
        last = max(timed, key=lambda r: r["size"] or 0) if timed else None
        rate = (last["gflops"] if bound == "compute" else last["gbps"]) if last else None
        t.add_row(f"{b}/{v}", f"{passed}/{len(checks)} pass" if checks else "—",
                  last["shape"] if last else "—", fmt_time(last["median_s"]) if last else "—",
                  f"{rate:,.4g}" if rate else "—", fmt_x(last.get("speedup_vs_numpy")) if last else "—")
    return t


def show(primitive: str, console: Console | None = None, results_path: str | None = None,
         variant: str | None = None, step: str | None = None) -> None:
    console = console or Console()
    doc = None
    if results_path:
        from ..core import results
        doc = results.load(results_path)                 # UsageError on a bad file, v1 upgraded
    panels = step_panels(primitive, variant, step) if (variant or step) else source_panels(primitive)
    boxes = [Panel(body, title=title, title_align="left") for title, body in panels]
    if console.width >= MIN_COLUMN * len(panels):
        grid = Table.grid(expand=True, padding=(0, 1))
        for _ in panels:
            grid.add_column(ratio=1)
        grid.add_row(*boxes)
        console.print(grid)
    else:
        console.print(Group(*boxes))
    if doc is not None:
        table = results_table(primitive, doc)
        console.print(table if table is not None else f"{results_path} has no results for {primitive}")
