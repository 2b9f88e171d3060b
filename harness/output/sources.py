"""The implementation files of a primitive, cut into the pieces a reader compares: each
file's header (the lesson's text), and each variant's code.

A variant's code is what its step adds to the file: everything after the previous
variant's definition up to the end of its own (helpers it introduces included), so that
reading the variants in file order reads the whole file once. Python is cut with `ast`;
CUDA at the closing brace of each `__global__` kernel; Mojo at the end of each top-level
`def`/`fn`. Nothing here is keyed by primitive: names follow `<primitive>_<variant>`
(CUDA multi-kernel variants `<primitive>_<variant>__<step>`).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from ..core import catalogue
from ..env import REPO

# (backend, folder, extension, language title, Pygments lexer). Pygments has no Mojo lexer;
# its syntax is close enough to Python's for highlighting.
LANGUAGES = (("python", "python_impl", "py", "Python", "python"),
             ("cuda", "cuda_impl", "cu", "CUDA", "cuda"),
             ("mojo", "mojo_impl", "mojo", "Mojo", "python"))


@dataclass(frozen=True)
class Piece:
    variant: str
    code: str            # the variant's step: its definitions and the helpers it introduced
    line: int            # 1-based first line in the file
    note: str            # its entry in the file header ("" if the header has none)


def source_path(backend: str, primitive: str) -> Path:
    stem = catalogue.get(primitive).file_stem
    folder, ext = next((f, e) for b, f, e, _, _ in LANGUAGES if b == backend)
    return REPO / folder / f"{stem}.{ext}"


def header(backend: str, text: str) -> str:
    """The file's opening text, without comment markers: the module docstring in Python,
    the leading comment block in CUDA and Mojo."""
    if backend == "python":
        doc = ast.get_docstring(ast.parse(text), clean=True)
        return doc or ""
    mark = "//" if backend == "cuda" else "#"
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith(mark) and s:
            break
        lines.append(s[len(mark):][1:] if s.startswith(mark + " ") else s[len(mark):])
    return "\n".join(lines).strip("\n")


def _spans_python(text: str) -> dict[str, tuple[int, int]]:
    spans = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            spans[node.name] = (start, node.end_lineno)
    return spans


_CUDA_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(")


def _spans_cuda(text: str) -> dict[str, tuple[int, int]]:
    spans = {}
    for m in _CUDA_KERNEL.finditer(text):
        brace = text.index("{", m.end())
        depth, i = 0, brace
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        spans[m.group(1)] = (text.count("\n", 0, m.start()) + 1, text.count("\n", 0, i) + 1)
    return spans


_MOJO_DEF = re.compile(r"^(?:def|fn)\s+(\w+)")


def _spans_mojo(text: str) -> dict[str, tuple[int, int]]:
    lines = text.splitlines()
    spans, i = {}, 0
    while i < len(lines):
        m = _MOJO_DEF.match(lines[i])
        if not m:
            i += 1
            continue
        end = i
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j][0] in " \t"):
            if lines[j].strip():
                end = j
            j += 1
        spans[m.group(1)] = (i + 1, end + 1)
        i = j
    return spans


SPANS = {"python": _spans_python, "cuda": _spans_cuda, "mojo": _spans_mojo}


def _owner(name: str, primitive: str, variants: list[str]) -> str | None:
    """The variant a definition implements: `<primitive>_<variant>` or, for a step of a
    multi-kernel CUDA variant, `<primitive>_<variant>__<step>`."""
    for v in variants:
        full = f"{primitive}_{v}"
        if name == full or name.startswith(full + "__"):
            return v
    return None


def _first_code_line(backend: str, lines: list[str]) -> int:
    """0-based index of the first line after the header and the imports."""
    mark = "//" if backend == "cuda" else "#"
    i = 0
    if backend == "python":
        tree = ast.parse("\n".join(lines))
        body = tree.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            i = body[0].end_lineno
    else:
        while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith(mark)):
            i += 1
    while i < len(lines) and (not lines[i].strip() or re.match(r"(import|from)\s", lines[i])):
        i += 1
    return i


def header_note(head: str, variant: str, backward: bool) -> str:
    """The variant's entry in the header's ladder: the line that starts with its name and
    the lines indented under it. Forward and backward ladders may reuse a name, so a
    backward variant is looked for after the first line that mentions "backward"."""
    lines = head.splitlines()
    start = 0
    if backward:
        for pat in (r"\s*backward.*variants", r"\s*backward", r".*backward"):
            start = next((i for i, l in enumerate(lines) if re.match(pat, l, re.I)), None)
            if start is not None:
                break
        start = start or 0
    else:
        stop = next((i for i, l in enumerate(lines) if re.match(r"\s*backward", l, re.I)), len(lines))
        lines = lines[:stop]
    pat = re.compile(rf"^(\s*){re.escape(variant)}\s{{2,}}(\S.*)$")
    for i in range(start, len(lines)):
        m = pat.match(lines[i])
        if not m:
            continue
        indent = len(m.group(1))
        out = [m.group(2).strip()]
        for nxt in lines[i + 1:]:
            if not nxt.strip() or len(nxt) - len(nxt.lstrip()) <= indent:
                break
            out.append(nxt.strip())
        return " ".join(out)
    return ""


def pieces(backend: str, primitive: str, variants: list[str]) -> list[Piece]:
    """Each variant's step of the file, in file order (variants not defined in it are left
    out). `variants` are the backend's variants of this primitive."""
    path = source_path(backend, primitive)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    prim = catalogue.get(primitive)
    # every primitive of the same file owns definitions: a variant's step starts after the
    # previous definition of *any* of them, so forward helpers never leak into a backward one
    siblings = [p for p in catalogue.PRIMITIVES.values() if p.file_stem == prim.file_stem]
    owners = []
    for name, (a, b) in SPANS[backend](text).items():
        for p in sorted(siblings, key=lambda p: -len(p.name)):          # longest prefix first
            if name.startswith(p.name + "_"):
                owners.append((b, a, p.name, name))
                break
    ends: dict[tuple[str, str], tuple[int, int]] = {}
    for b, a, pname, name in owners:
        v = _owner(name, pname, variants if pname == primitive else [name[len(pname) + 1:].split("__")[0]])
        if v is None:
            continue
        key = (pname, v)
        lo, hi = ends.get(key, (a, b))
        ends[key] = (min(lo, a), max(hi, b))
    ordered = sorted(ends.items(), key=lambda kv: kv[1][1])
    head = header(backend, text)
    out, prev_end = [], _first_code_line(backend, lines)
    for (pname, v), (_, end) in ordered:
        if pname == primitive:
            chunk = lines[prev_end:end]
            while chunk and not chunk[0].strip():
                chunk.pop(0)
                prev_end += 1
            out.append(Piece(v, "\n".join(chunk), prev_end + 1, header_note(head, v, prim.forward is not None)))
        prev_end = end
    return out
