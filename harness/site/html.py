"""Small HTML pieces for the report: escaping, tables, highlighted code (Pygments), charts
inlined as SVG, and the page shell. Pages are plain files with relative links, so the
site opens with a double click and needs no server, no network and no JavaScript."""
from __future__ import annotations

import html
import re
from pathlib import Path

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name

STYLE_FILE = Path(__file__).with_name("style.css")


def esc(s) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def anchor(*parts: str) -> str:
    """An id that is valid in HTML and stable across runs: softmax, online -> softmax-online."""
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") for p in parts if p)


def table(headers: list[str], rows: list[list[str]], cls: str = "", numeric_from: int = 1) -> str:
    """Cells are HTML already (escape text with esc). Columns from `numeric_from` on are
    right-aligned. Wrapped so that a wide table scrolls inside itself, never the page."""
    head = "".join(f'<th{" class=num" if i >= numeric_from else ""}>{h}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def code(text: str, lexer: str) -> str:
    return highlight(text, get_lexer_by_name(lexer), HtmlFormatter(cssclass="hl", nowrap=False))


def code_css() -> str:
    """Pygments' light theme, and its dark one under prefers-color-scheme: dark."""
    light = HtmlFormatter(style="default").get_style_defs(".hl")
    dark = HtmlFormatter(style="github-dark").get_style_defs(".hl")
    return f"{light}\n@media (prefers-color-scheme: dark) {{\n{dark}\n}}\n"


_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^")]+)')


def inline_svg(path: Path, prefix: str, title: str) -> str:
    """A chart the harness wrote, inlined: the XML prolog dropped, its ids prefixed so that two
    charts on one page cannot capture each other's clip paths and glyphs, and scalable."""
    svg = path.read_text(encoding="utf-8")
    svg = svg[svg.index("<svg"):]
    svg = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{esc(title)}" class="chart" ', 1)
    return f'<figure class="chart">{svg}<figcaption>{esc(title)}</figcaption></figure>'


def page(title: str, body: str, nav: list[tuple[str, str]] = ()) -> str:
    links = " · ".join(f'<a href="{esc(href)}">{esc(text)}</a>' for text, href in nav)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{esc(title)} — Kernel Rosetta</title>
<link rel="stylesheet" href="style.css">
</head>
<body>
<header><a class="home" href="index.html">Kernel Rosetta</a>{' · ' + links if links else ''}</header>
<main>
{body}
</main>
<footer>Written by <code>python -m harness report</code> from the committed results; every figure is
from a run, with its machine named.</footer>
</body>
</html>
"""
