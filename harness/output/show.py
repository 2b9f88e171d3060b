"""`show PRIMITIVE [--results FILE]`: the three implementations of one primitive, side by side.

Python, CUDA and Mojo files share a stem (softmax.py, softmax.cu, softmax.mojo), so the
same variant ladder can be read across languages. Wide terminals get three columns;
narrow ones get the files one after another. With --results (any results.json, schema
version 1 or 2), each variant's verdict and its figure at the largest size it was timed
at follow the code.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..core import catalogue
from ..env import REPO
from .report import fmt_time, fmt_x

LANGUAGES = (("Python", "python_impl", "py", "python"),
             ("CUDA", "cuda_impl", "cu", "cuda"),
             ("Mojo", "mojo_impl", "mojo", "python"))   # Pygments has no Mojo lexer; its syntax is Python-like
MIN_COLUMN = 72


def source_panels(primitive: str) -> list[tuple[str, Path, object]]:
    stem = catalogue.get(primitive).file_stem        # unknown primitive -> UsageError
    panels = []
    for title, folder, ext, lexer in LANGUAGES:
        path = REPO / folder / f"{stem}.{ext}"
        rel = f"{folder}/{stem}.{ext}"
        if path.exists():
            body = Syntax(path.read_text(encoding="utf-8"), lexer, line_numbers=False, word_wrap=True,
                          theme="ansi_dark")
        else:
            body = Text(f"{rel} is not written yet.\n\nThis backend has no {primitive} so far; "
                        f"see the open issues.", style="italic dim")
        panels.append((f"{title} — {rel}", path, body))
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


def show(primitive: str, console: Console | None = None, results_path: str | None = None) -> None:
    console = console or Console()
    doc = None
    if results_path:
        from ..core import results
        doc = results.load(results_path)                 # UsageError on a bad file, v1 upgraded
    panels = source_panels(primitive)
    if console.width >= MIN_COLUMN * len(panels):
        grid = Table.grid(expand=True, padding=(0, 1))
        for _ in panels:
            grid.add_column(ratio=1)
        grid.add_row(*(Panel(body, title=title, title_align="left") for title, _, body in panels))
        console.print(grid)
    else:
        console.print(Group(*(Panel(body, title=title, title_align="left") for title, _, body in panels)))
    if doc is not None:
        table = results_table(primitive, doc)
        console.print(table if table is not None else f"{results_path} has no results for {primitive}")
