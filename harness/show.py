"""`show PRIMITIVE`: the three implementations of one primitive, side by side.

Python, CUDA and Mojo files share a stem (softmax.py, softmax.cu, softmax.mojo), so the
same variant ladder can be read across languages. Wide terminals get three columns;
narrow ones get the files one after another.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from . import catalogue
from .env import REPO

LANGUAGES = (("Python", "python_impl", "py", "python"),
             ("CUDA", "cuda_impl", "cu", "cuda"),
             ("Mojo", "mojo_impl", "mojo", "python"))   # Pygments has no Mojo lexer; its syntax is Python-like
MIN_COLUMN = 72


def source_panels(primitive: str) -> list[tuple[str, Path, object]]:
    catalogue.get(primitive)                    # unknown primitive -> UsageError
    panels = []
    for title, folder, ext, lexer in LANGUAGES:
        path = REPO / folder / f"{primitive}.{ext}"
        rel = f"{folder}/{primitive}.{ext}"
        if path.exists():
            body = Syntax(path.read_text(encoding="utf-8"), lexer, line_numbers=False, word_wrap=True,
                          theme="ansi_dark")
        else:
            body = Text(f"{rel} is not written yet.\n\nThis backend has no {primitive} so far; "
                        f"see the open issues.", style="italic dim")
        panels.append((f"{title} — {rel}", path, body))
    return panels


def show(primitive: str, console: Console | None = None) -> None:
    console = console or Console()
    panels = source_panels(primitive)
    if console.width >= MIN_COLUMN * len(panels):
        grid = Table.grid(expand=True, padding=(0, 1))
        for _ in panels:
            grid.add_column(ratio=1)
        grid.add_row(*(Panel(body, title=title, title_align="left") for title, _, body in panels))
        console.print(grid)
    else:
        console.print(Group(*(Panel(body, title=title, title_align="left") for title, _, body in panels)))
