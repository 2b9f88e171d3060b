"""`python -m harness build -b cuda [--arch sm_90]`: compile every kernel of the compiled
backends without running anything - no GPU needed - and print one line per kernel
(for CUDA: registers, static shared memory and spills, from ptxas). Exit status 1 when any
kernel fails to compile, with the compiler's log; CI runs it for sm_90 and sm_80.

Any backend can take part: one with a `build_report(arch=None, primitives=None)` method
returning rows {"primitive", "variant", "ok", "detail", ...optional "kernel", "registers",
"smem_bytes", "spill_stores", "spill_loads", "compile_s"} is built; one without it has no
compile step and says so.
"""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from . import backends
from .errors import UsageError

RESOURCE_COLUMNS = (("kernel", "kernel"), ("registers", "regs"), ("smem_bytes", "smem B"),
                    ("spills", "spills B (st/ld)"), ("compile_s", "compile s"))


def _cell(row: dict, key: str) -> str:
    if key == "spills":
        if "spill_stores" not in row:
            return ""
        st, ld = row.get("spill_stores") or 0, row.get("spill_loads") or 0
        return "0" if not (st or ld) else f"[bold red]{st}/{ld}[/]"
    v = row.get(key)
    if v is None:
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _table(name: str, rows: list[dict]) -> Table:
    columns = [(k, title) for k, title in RESOURCE_COLUMNS
               if any(k in r or (k == "spills" and "spill_stores" in r) for r in rows)]
    t = Table(title=f"{name}: build", title_justify="left")
    t.add_column("primitive")
    t.add_column("variant")
    for _, title in columns:
        t.add_column(title, justify="right" if title != "kernel" else "left")
    t.add_column("status")
    last_compile = {}
    for r in rows:
        cells = []
        for k, _ in columns:
            c = _cell(r, k)
            if k == "compile_s" and c:                      # one file, one compile: show it once
                c = "" if last_compile.get(r["primitive"]) == c else c
                last_compile[r["primitive"]] = _cell(r, k)
            cells.append(c)
        status = "[green]ok[/]" if r.get("ok") else "[bold red]FAILED[/]"
        detail = str(r.get("detail") or "").splitlines()[0] if r.get("detail") else ""
        if not columns or not r.get("ok") or not r.get("kernel") or r.get("variant") == "":
            status += f" {detail}"
        t.add_row(r.get("primitive", ""), r.get("variant", ""), *cells, status)
    return t


def build(backend_names: list[str], arch: str | None = None, primitives: list[str] | None = None,
          console: Console | None = None) -> int:
    console = console or Console()
    status = 0
    for name in backend_names:
        b = backends.get(name)
        report = getattr(b, "build_report", None)
        if report is None:
            avail = b.availability()
            if avail.ok:
                console.print(f"{name}: nothing to build (no compile step)", highlight=False)
            else:
                console.print(f"[bold red]{name}: cannot build[/]: {avail.reason}", highlight=False)
                status = 1
            continue
        try:
            rows = report(arch=arch, primitives=primitives)
        except ValueError as e:                             # e.g. a malformed --arch
            raise UsageError(str(e)) from None
        except Exception as e:
            console.print(f"[bold red]{name}: build failed[/]: {type(e).__name__}: {e}", highlight=False)
            status = 1
            continue
        if not rows:
            console.print(f"{name}: nothing to build", highlight=False)
            continue
        target = next((r["arch"] for r in rows if r.get("arch")), None)
        console.print(_table(f"{name}{' for ' + target if target else ''}", rows))
        failed = [r for r in rows if not r.get("ok")]
        for r in failed:
            console.print(f"\n[bold red]{name} {r.get('primitive')}/{r.get('variant')}[/]:", highlight=False)
            console.print(str(r.get("detail", "")), highlight=False, markup=False)
        ok = sum(1 for r in rows if r.get("ok") and r.get("variant"))
        console.print(f"{name}: {ok} built, {len(failed)} failed (one row per kernel or variant above)", highlight=False)
        if failed:
            status = 1
    return status
