"""`python -m harness report [RESULTS_DIR ...] [--out DIR]`: a static site of the results.

For each results folder (default: every folder under results/ with a results.json), an
index of machines, primitives and training runs; a page per primitive with the three
languages' ladders side by side, step by step, each with its results from every machine;
a page per training run; and a comparison page when two or more machines share a schema
version. Plain files with relative links: open index.html with a double click.
"""
from __future__ import annotations

from pathlib import Path

from ..env import REPO
from ..errors import UsageError
from . import pages
from .data import load_machine, primitives_in
from .html import STYLE_FILE, code_css


def default_folders() -> list[Path]:
    return sorted(p.parent for p in (REPO / "results").glob("*/results.json"))


def build(folders: list[Path], out: Path, progress=None) -> list[Path]:
    """Write the site into `out`; returns the pages written (index first)."""
    if not folders:
        raise UsageError("no results to report: run `python -m harness run` first, or name a results folder")
    machines = []
    for f in folders:
        if not f.is_dir():
            raise UsageError(f"not a results folder: {f}")
        machines.append(load_machine(f))
    names = [m.name for m in machines]
    if len(set(names)) != len(names):
        raise UsageError(f"two results folders are the same machine ({', '.join(names)}): give one per machine")
    prims = primitives_in(machines)
    # the comparison takes the machines of the newest schema version among those given
    newest = max(m.schema_version for m in machines)
    comparable = [m for m in machines if m.schema_version == newest]
    older = [m.name for m in machines if m.schema_version != newest]
    if len(comparable) >= 2:
        note = f"{', '.join(m.name for m in comparable)}, case by case" + (
            f" ({', '.join(older)} left out: an older results schema)" if older else "")
    else:
        note = ("a comparison needs results from two machines of one results schema version; "
                + (f"{', '.join(older)} {'is' if len(older) == 1 else 'are'} an older schema (rerun there to compare)"
                   if older else "these results come from one machine"))
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def write(name: str, text: str) -> None:
        p = out / name
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
        written.append(p)
        if progress:
            progress(name)

    (out / "style.css").write_text(STYLE_FILE.read_text(encoding="utf-8") + "\n" + code_css(), encoding="utf-8")
    write("index.html", pages.index(machines, prims, comparable, note))
    for name in prims:
        write(pages.primitive_file(name), pages.primitive(name, machines))
    for model in sorted({t for m in machines for t in m.trainings}):
        write(pages.training_file(model), pages.training(model, machines))
    if len(comparable) >= 2:
        write("compare.html", pages.comparison(comparable))
    # Pages of primitives no longer in the results go; any other HTML in the folder is not
    # ours to delete, so only pages carrying the report's own footer are removed.
    for p in out.glob("*.html"):
        if p not in written and pages.FOOTER_MARK in p.read_text(encoding="utf-8", errors="ignore"):
            p.unlink()
    return written

