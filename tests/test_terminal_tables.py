"""The run's tables in a terminal, rendered from the committed results: the first columns a
reader needs fit 80 columns; from 120 the rest join them; no cell is ever cut."""
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from harness.core import catalogue
from harness.output import report

RESULTS = Path(__file__).resolve().parents[1] / "results" / "intel-xeon-2core" / "results.json"


@pytest.fixture(scope="module")
def doc():
    return json.loads(RESULTS.read_text())


def _render(doc, prim, width, wide=None):
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    table, notes = report.primitive_table(prim, doc["results"], doc["env"]["machine"], set(doc["baselines"]),
                                          width=width, wide=wide)
    console.print(table)
    return console.export_text(), notes


@pytest.mark.parametrize("width", [80, 120, 160])
def test_no_cell_is_cut(doc, width):
    prims = [p for p in catalogue.PRIMITIVES if any(r["primitive"] == p for r in doc["results"])]
    assert prims
    for prim in prims:
        text, _ = _render(doc, prim, width)
        body = text.split("\n", 1)[1]                       # below the title, which may wrap
        assert "…" not in body, f"{prim} at {width} columns:\n{text}"
        assert max(len(line) for line in text.splitlines()) <= width
        rows = [line for line in body.splitlines() if "/" in line and "GB/s" not in line and "GFLOP/s" not in line]
        assert rows, prim


def test_80_columns_show_what_a_reader_needs_first_and_120_the_rest(doc):
    narrow, notes = _render(doc, "softmax", 80)
    for col in ("size / variant", "median", "GB/s", "% BW", "×py", "×np"):
        assert col in narrow
    assert "IQR" not in narrow and "% tol" not in narrow
    wide, _ = _render(doc, "softmax", 120)
    for col in ("IQR", "max err", "% tol"):
        assert col in wide
    forced, _ = _render(doc, "softmax", 80, wide=True)
    assert "IQR" in forced
    legend = notes[0]
    assert "✓ verified" in legend and "cache-assisted" in legend


def test_marks_are_symbols_and_compile_time_is_said_once_per_variant(doc):
    text, notes = _render(doc, "softmax", 120)
    assert "(cache-assisted)" not in text and "ᶜ" in text and "✓" in text
    compile_lines = [n for n in notes if n.startswith("[dim]compile")]
    assert compile_lines and all(n.count("fused ") <= 1 and n.count("(cached)") <= 1 for n in compile_lines)
